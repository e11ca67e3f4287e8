"""The options of the Lambda-DARTS optimizer: its config keys. Kept apart from the components so that
registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs
from nas_darts.options import DartsOptions

#: the regularisers of the authors' ``--corr_regularization``: the cosine of the per-cell gradients
#: (the paper's layer alignment), its sign-corrected variant, or none (plain DARTS, Lambda still reported)
REGULARIZERS = ("corr", "signcorr", "none")


def _cell_types(_: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    if not value or len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} must name at least one cell type, each once, got {list(value)}")


@attrs.frozen
class LambdaDartsOptions(DartsOptions):
    """DARTS's options (its weight and architecture optimizers, freeze_alpha_epochs, ...) plus the
    regulariser's. The defaults are the authors' run_search.sh (docs/successors/lambda_darts.md)."""

    regularization: str = attrs.field(default="corr", validator=attrs.validators.in_(REGULARIZERS))
    # the regulariser's weight in the weight loss L - lambda_ * Lambda (their --lambda_)
    lambda_: float = attrs.field(default=0.25, validator=attrs.validators.ge(0))
    # the finite difference's step: eps = epsilon_0 / ||dLambda/dp|| (their --epsilon_0)
    epsilon_0: float = attrs.field(default=1e-3, validator=attrs.validators.gt(0))
    # lambda_ * e / (E - 1) at epoch e of E (their train_search.py); false: lambda_ throughout
    ramp: bool = True
    # the cell types whose cells are aligned; their code: normal only (the reduction term is commented out)
    cell_types: tuple[str, ...] = attrs.field(default=("normal",), validator=_cell_types)
    # the architecture step: first order (theirs by default), or DARTS's unrolled one (their --unrolled)
    second_order: bool = False
