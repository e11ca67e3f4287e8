"""The options of RobustDARTS (Zela et al., "Understanding and Robustifying Differentiable Architecture
Search", ICLR 2020): their config keys. Kept apart from the components so that registering them (every
time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs

from nas_core import Component, component_field

EARLY_STOP = ("none", "es", "ada")  # (not "off": YAML reads it as false)


@attrs.frozen
class RobustDartsSettings:
    """The ``robust_darts`` config section: the dominant eigenvalue of the architecture Hessian of the
    validation loss, measured during any search, and the authors' rules on it (docs/successors/robust_darts.md)."""

    # measure at the epochs (counted from 0) divisible by `every`, and at the last one, as the authors'
    # train_search.py does with report_freq_hessian; 0: never (the default)
    every: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    # none; es: stop when the eigenvalue's local average rises past `factor` and return the cell derived
    # `every * (window // 2 + delta)` epochs earlier (needs discretizer robust_darts_es); ada: roll back
    # to that epoch's weights, alphas and optimizer state, multiply the weight decay by `mul_factor`, go on
    early_stop: str = attrs.field(default="none", validator=attrs.validators.in_(EARLY_STOP))
    window: int = attrs.field(default=5, validator=attrs.validators.ge(1))  # readings in a local average
    delta: int = attrs.field(default=4, validator=attrs.validators.ge(1))  # compare with the average this many readings back
    factor: float = attrs.field(default=1.3, validator=attrs.validators.gt(0))  # stop when the ratio exceeds it
    start_epoch: int = attrs.field(default=10, validator=attrs.validators.ge(0))  # the earliest epoch returned
    mul_factor: float = attrs.field(default=10.0, validator=attrs.validators.gt(1))  # ada: weight decay multiplier
    max_weight_decay: float = attrs.field(default=0.03, validator=attrs.validators.gt(0))  # ada: the last value
    # examples in the (fixed) architecture batch the Hessian is taken on; None: search.batch_size
    batch_size: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    # Lanczos stops when the residual ||H y - theta y|| <= tol * |theta| (a bound on theta's error),
    # or after max_iter Hessian-vector products (or as many as there are architecture parameters)
    tol: float = attrs.field(default=1e-6, validator=attrs.validators.gt(0))
    max_iter: int = attrs.field(default=100, validator=attrs.validators.ge(1))

    def __attrs_post_init__(self) -> None:
        if self.early_stop != "none" and self.every == 0:
            raise ValueError(f"early_stop {self.early_stop!r} reads the eigenvalue: set every >= 1 (the authors: 2)")


@attrs.frozen
class EarlyStoppedOptions:
    # the discretizer that derives every epoch's cell; a search stopped by robust_darts.early_stop=es
    # returns the one it derived at the epoch the rule looked back to
    base: Component = component_field("discretizers", "topk")
