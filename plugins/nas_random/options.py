"""The options of the random-search components: their config keys. Kept apart from the
components so that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs


@attrs.frozen
class UniformPathOptions:
    # "cell": each step trains one uniformly sampled discrete cell (k inputs per node, non-zero ops;
    #         the other edges get the zero op), the cells ws_select scores (Li & Talwalkar 2019);
    # "edge": each edge draws one op uniformly from all ops, the zero op included
    mode: str = attrs.field(default="cell", validator=attrs.validators.in_(("cell", "edge")))


@attrs.frozen
class WsRandomOptions:
    w_lr: float = attrs.field(default=0.025, validator=attrs.validators.gt(0))
    w_lr_min: float = attrs.field(default=0.001, validator=attrs.validators.ge(0))  # cosine schedule ends here
    w_momentum: float = attrs.field(default=0.9, validator=attrs.validators.ge(0))
    w_weight_decay: float = attrs.field(default=3e-4, validator=attrs.validators.ge(0))
    grad_clip: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))  # max L2 norm (0: off)


@attrs.frozen
class WsSelectOptions:
    candidates: int = attrs.field(default=32, validator=attrs.validators.ge(1))  # cells sampled and scored
    # batches of the arch stream each candidate is scored on (None: all of it)
    max_batches: int | None = attrs.field(default=8, validator=attrs.validators.optional(attrs.validators.ge(1)))
    metric: str = "auto"  # valid_* metric to minimise (auto: valid_top1_error, valid_perplexity, valid_loss)
    seed: int = 0  # without a run (nas derive): the seed of the one uniformly sampled cell returned
