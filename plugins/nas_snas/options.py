"""The options of the SNAS components: their config keys. Kept apart from the components so that
registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs


@attrs.frozen
class SnasOptions:
    # the temperature of the relaxed sample at epoch e: tau_min + (tau0 - tau_min) * max(0, 1 - (e + 1) / H),
    # the authors' Temp_Scheduler (utils.py), which reaches tau_min at e = H - 1
    tau0: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    tau_min: float = attrs.field(default=0.03, validator=attrs.validators.gt(0))
    # H above; None: the run's epochs. The authors' scheduler hard-codes 150 whatever --epochs says
    anneal_epochs: int | None = attrs.field(default=None,
                                            validator=attrs.validators.optional(attrs.validators.ge(1)))
    init_mean: float = 1.0  # alpha ~ N(init_mean, init_std^2), the authors' --loc_mean
    init_std: float = attrs.field(default=0.01, validator=attrs.validators.ge(0))  # their --loc_std

    def __attrs_post_init__(self) -> None:
        if self.tau_min > self.tau0:
            raise ValueError(f"tau_min ({self.tau_min}) must not exceed tau0 ({self.tau0}): the temperature "
                             f"falls from tau0 to tau_min")


@attrs.frozen
class SnasOptimizerOptions:
    """SNAS's single-level step: weights and alpha descend one training loss on the same batch."""

    w_lr: float = attrs.field(default=0.025, validator=attrs.validators.gt(0))
    w_lr_min: float = attrs.field(default=0.001, validator=attrs.validators.ge(0))  # cosine schedule ends here
    w_momentum: float = attrs.field(default=0.9, validator=attrs.validators.ge(0))
    w_weight_decay: float = attrs.field(default=3e-4, validator=attrs.validators.ge(0))
    grad_clip: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))  # weights' gradient norm (0: off)
    # plain SGD (the authors' single-GPU search) or Adam (their distributed one, betas (0.5, 0.999), wd 1e-3)
    arch_optimizer: str = attrs.field(default="sgd", validator=attrs.validators.in_(("sgd", "adam")))
    arch_lr: float = attrs.field(default=3e-4, validator=attrs.validators.gt(0))
    arch_betas: tuple[float, float] = (0.5, 0.999)  # adam only
    arch_weight_decay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    arch_grad_clip: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))  # alpha's gradient norm (0: off)
    # SNAS has no validation split: the architecture stream's batch takes a second single-level step,
    # so that an epoch reads the whole training set; false leaves that stream unread
    read_arch_stream: bool = True


@attrs.frozen
class SnasArgmaxOptions:
    # the authors' genotype_edge_all() takes the argmax over all ops, the zero op included (such an edge
    # then contributes nothing); false takes the strongest non-zero op of every edge
    zero: bool = True
