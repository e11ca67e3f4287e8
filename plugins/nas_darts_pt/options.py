"""The options of the DARTS-PT discretizer: its config keys. Kept apart from the component so that
registering it (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs

_optional_count = attrs.validators.optional(attrs.validators.ge(1))


@attrs.frozen
class DartsPtOptions:
    # what a mask's harm is measured by on the validation data: "acc" (the authors' sota script: the op
    # whose masking leaves the lowest accuracy is kept) or "loss" (the highest loss); ties keep the first
    criterion: str = attrs.field(default="acc", validator=attrs.validators.in_(("acc", "loss")))
    # which undecided edge (and, in the second part, node) is decided next: "random" (the authors'
    # edge_decision), drawn from the run's seeded stream, or "fixed": the first one in the space's order
    edge_decision: str = attrs.field(default="random", validator=attrs.validators.in_(("random", "fixed")))
    # passes over the weight stream of fine-tuning after each decision (their proj_intv: 5 in
    # darts-proj-sota.sh, 10 in argparse); after the last decision one pass, as theirs
    proj_intv: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    # fine-tuning: SGD with a constant lr (theirs: the search's lr / 10 = 0.0025; their cosine
    # scheduler is built but never stepped), fresh momentum, weight decay and gradient clipping
    tune_lr: float = attrs.field(default=0.0025, validator=attrs.validators.gt(0))
    tune_momentum: float = attrs.field(default=0.9, validator=attrs.validators.ge(0))
    tune_weight_decay: float = attrs.field(default=3e-4, validator=attrs.validators.ge(0))
    grad_clip: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))  # 0: off
    # the architecture keeps learning during fine-tuning (first order, Adam), as theirs: only the
    # undecided edges' weights reach the network
    tune_alpha: bool = True
    arch_lr: float = attrs.field(default=3e-4, validator=attrs.validators.gt(0))
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))
    # caps for small runs; None: the whole data (theirs: every validation batch for each mask, every
    # training batch per pass). Unset, both follow search.max_steps_per_epoch when that is set
    max_eval_batches: int | None = attrs.field(default=None, validator=_optional_count)
    max_tune_steps: int | None = attrs.field(default=None, validator=_optional_count)  # per decision
    # edges kept per node; None: the space's own (2 for DARTS CNN cells)
    k: int | None = attrs.field(default=None, validator=_optional_count)
