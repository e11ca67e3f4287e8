"""The options of the PC-DARTS components: their config keys. Kept apart from the components so
that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs


@attrs.frozen
class PartialChannelOptions:
    # 1/k of an edge's channels go through its candidate ops, the rest bypass them (PC-DARTS: 4;
    # DrNAS: 6, then 4); k must divide the channels of every edge
    k: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    # multiply the bypassed channels by the edge's total mixing weight (the sum of its row): PC-DARTS
    # multiplies the whole edge output, bypass included, by the edge's beta, and under edge_normalized
    # mixing that sum is beta; under softmax or Dirichlet mixing it is 1. False leaves them unscaled
    # (for relaxations whose rows do not sum to an edge weight, e.g. independent sigmoids)
    scale_bypass: bool = True
    # skip the ops whose mixing weight is exactly 0, as DrNAS does for the ops it pruned from an edge
    # (one device-to-host read of the row per edge). Only for relaxations whose zero weights carry no
    # gradient: a hard Gumbel sample's zeros do (the straight-through estimator)
    skip_zero_weights: bool = False


@attrs.frozen
class EdgeNormalizedOptions:
    init_std: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))  # alpha, beta ~ init_std * N(0, 1)
