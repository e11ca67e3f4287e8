"""The options of DARTS-'s mixed edge: its config keys (``space.edge``). Kept apart from the edge so
that registering it (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs

DECAYS = ("linear", "none")
AUXILIARIES = ("skip", "conv1")


@attrs.frozen
class DartsMinusEdgeOptions:
    # beta at the first search epoch (the authors' --skip_beta, 1 by default)
    beta_start: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    # "linear": beta_e = beta_start * (1 - e / epochs) over the search's epochs (the paper, and the authors'
    # script's --decay linear); "none": beta stays beta_start (their argparse default, decay=None)
    decay: str = attrs.field(default="linear", validator=attrs.validators.in_(DECAYS))
    # the auxiliary path on stride-1 edges: "skip" (the identity, the paper's) or "conv1" (a 1x1 conv
    # initialised to the identity, their --auxiliary_operation conv1); stride-2 edges always use the
    # space's skip_connect at stride 2 (FactorizedReduce), as their code does
    aux: str = attrs.field(default="skip", validator=attrs.validators.in_(AUXILIARIES))
