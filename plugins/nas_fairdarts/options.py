"""The options of the FairDARTS components: their config keys. Kept apart from the components so
that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs

ZERO_ONE_KINDS = ("l2", "l1")  # the authors' --sep_loss: l2 (their default) or l1


def _unit_interval(_: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be in [0, 1] (a sigmoid weight), got {value}")


@attrs.frozen
class SigmoidOptions:
    # alpha ~ init_std * N(0, 1); 0 starts every weight at sigmoid(0) = 0.5, as the authors do
    init_std: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    # the zero-one loss added to the architecture loss: l2 = -mean((sigmoid(alpha) - 0.5)^2),
    # l1 = -mean(|sigmoid(alpha) - 0.5|), the mean over every weight of every cell type
    zero_one: str = attrs.field(default="l2", validator=attrs.validators.in_(ZERO_ONE_KINDS))
    zero_one_weight: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))  # 0: no zero-one loss


@attrs.frozen
class ThresholdOptions:
    # an input keeps its strongest op only if that op's weight reaches this
    threshold: float = attrs.field(default=0.85, validator=_unit_interval)
    k: int = attrs.field(default=2, validator=attrs.validators.ge(1))  # inputs considered per node
