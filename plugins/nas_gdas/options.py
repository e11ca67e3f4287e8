"""The options of the GDAS components: their config keys. Kept apart from the components so that
registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs


@attrs.frozen
class GdasOptions:
    # the Gumbel-softmax temperature falls linearly from tau_max (first epoch) to tau_min (last epoch)
    tau_max: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    tau_min: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    init_std: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))  # alpha ~ init_std * N(0, 1)
    # the hard sample's gradient: GDAS's straight-through softmax, or ReinMax's second-order estimator
    # (Liu et al., NeurIPS 2023), whose temperature must stay >= 1
    estimator: str = attrs.field(default="straight_through",
                                 validator=attrs.validators.in_(("straight_through", "reinmax")))

    def __attrs_post_init__(self) -> None:
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min ({self.tau_min}) must not exceed tau_max ({self.tau_max}): the temperature "
                             f"falls from tau_max to tau_min")
        if self.estimator == "reinmax" and self.tau_min < 1:
            raise ValueError(f"estimator reinmax needs tau_min >= 1 (got {self.tau_min}): ReinMax refuses a "
                             f"temperature below 1")


@attrs.frozen
class GdasTopKOptions:
    k: int = attrs.field(default=2, validator=attrs.validators.ge(1))  # (op, input) pairs kept per node
