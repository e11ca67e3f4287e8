"""The parts' config keys (torch-free: nas imports them every time it starts)."""

from __future__ import annotations

import attrs


@attrs.frozen
class PartialChannelOptions:
    k: int = attrs.field(default=4, validator=attrs.validators.ge(1))  # 1/k of the channels go through the ops


@attrs.frozen
class DirichletOptions:
    prior: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))  # the concentration of Dir(prior)
    kl_weight: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))


@attrs.frozen
class SmoothingOptions:
    epsilon: float = attrs.field(default=0.03, validator=attrs.validators.ge(0))


@attrs.frozen
class PruningOptions:
    drop: int = attrs.field(default=0, validator=attrs.validators.ge(0))  # ops dropped after each stage
