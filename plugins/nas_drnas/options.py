"""The options of the DrNAS components and its ``drnas`` config section: their config keys. Kept apart
from the components so that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

from typing import Any

import attrs

#: DrNAS's candidate ops on the DARTS space: DARTS's without ``none`` (its DARTS-space/genotypes.py)
DRNAS_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                              "dil_conv_3x3", "dil_conv_5x5")


def _each_at_least_one(_: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if any(n < 1 for n in value):
        raise ValueError(f"{attribute.name}: every stage keeps at least 1 op per edge, got {list(value)}")


@attrs.frozen
class DirichletOptions:
    init_std: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))  # alpha ~ init_std * N(0, 1)
    # the regulariser of the architecture loss: l2 = reg_scale/2 * ||alpha||^2 (DrNAS's default, which
    # its code applies as Adam's weight decay: set optimizer.arch_weight_decay to 0 beside it), kl =
    # reg_scale * KL(Dir(elu(alpha)+1) || Dir(1)) summed over edges, or none
    regularizer: str = attrs.field(default="l2", validator=attrs.validators.in_(("l2", "kl", "none")))
    reg_scale: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))
    # the deterministic weights (supernet evaluation, what topk derives from): softmax(alpha), as
    # DrNAS's genotype() derives, or the Dirichlet mean (elu(alpha)+1 normalised)
    eval_weights: str = attrs.field(default="softmax", validator=attrs.validators.in_(("softmax", "mean")))
    # the ops each edge still searches, {cell type: [[op names] per edge, in the space's edge order]};
    # None: every op. Written by the progressive search between stages (drnas.prune_to): the weights
    # of the other ops are 0 and the rest renormalised, as DrNAS masks its pruned ops
    kept: Any = None


@attrs.frozen
class DrnasSettings:
    """The progressive search (Chen et al., ICLR 2021, section 3.3) of a staged search whose relaxation
    is ``dirichlet``: between stages each edge keeps its strongest ops, and the next stage starts
    from the previous one's alphas and supernet weights."""

    # ops kept per edge at the start of stage 2, 3, ... (DrNAS: [4]); empty: no pruning
    prune_to: tuple[int, ...] = attrs.field(default=(), validator=_each_at_least_one)
    # the next stage starts from the previous one's supernet weights (DrNAS widens its partial-channel
    # ops from C/6 to C/4 channels by copying channels, net2wider); false: freshly initialised
    inherit_weights: bool = True
