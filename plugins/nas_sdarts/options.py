"""The options of SDARTS's perturbations: their config keys (the ``perturbation`` section). Kept apart
from the perturbations so that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs

ATTACK_MODES = ("eval", "train")


@attrs.frozen
class SmoothingOptions:
    # epsilon grows linearly from epsilon_min at the first search epoch towards epsilon_max, as the
    # authors' train_search.py: eps_e = min + (max - min) * e / epochs (the last epoch stays just below max);
    # equal values keep it constant
    epsilon_min: float = attrs.field(default=0.03, validator=attrs.validators.ge(0))
    epsilon_max: float = attrs.field(default=0.3, validator=attrs.validators.ge(0))  # their --epsilon_alpha

    def __attrs_post_init__(self) -> None:
        if self.epsilon_min > self.epsilon_max:
            raise ValueError(f"epsilon_min ({self.epsilon_min}) must not exceed epsilon_max ({self.epsilon_max})")


@attrs.frozen
class AdversarialOptions(SmoothingOptions):
    steps: int = attrs.field(default=7, validator=attrs.validators.ge(1))  # PGD steps, each of size 2 eps / steps
    random_start: bool = True  # start the attack from a uniform draw in the eps-ball
    # the supernet's mode during the attack's forward passes: "eval" (the authors' attacker/perturb.py:
    # batch norm reads its running statistics and does not update them) or "train" (batch statistics,
    # as the weight step itself; each of the attack's forward passes then updates the running statistics)
    attack_mode: str = attrs.field(default="eval", validator=attrs.validators.in_(ATTACK_MODES))
