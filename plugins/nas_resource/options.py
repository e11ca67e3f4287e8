"""The ``resource`` config section. Torch-free, so that registering it imports no torch."""

from __future__ import annotations

import attrs

#: metric -> (unit, the factor from the measured count to that unit)
METRICS = {"params": ("M params", 1e-6), "madds": ("M multiply-adds", 1e-6), "latency": ("ms", 1e3)}


@attrs.frozen
class ResourceSettings:
    """A resource-aware search: the architecture loss gains ``weight * max(0, E[cost] - target) / target``
    (``weight * E[cost]`` without a target), E[cost] the expected cost of the derived cells."""

    metric: str = attrs.field(default="none", validator=attrs.validators.in_(("none", *METRICS)))
    target: float | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.gt(0)))
    weight: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    # latency: timed forward passes per op and shape (after 2 untimed ones); the median counts
    latency_repeats: int = attrs.field(default=20, validator=attrs.validators.ge(1))
