"""The options of the OLES optimizer: its config keys. Kept apart from the optimizer so that
registering it (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs
from nas_darts.options import DartsOptions

#: how the gradient-matching score reads the validation gradient (docs/successors/oles.md)
SCORES = ("clean", "authors")


@attrs.frozen
class OlesOptions(DartsOptions):
    """DARTS's optimizer options, plus OLES's operation-level early stopping (Jiang et al., NeurIPS 2023):
    every ``frequency`` architecture steps, a candidate op whose mean gradient-matching score fell
    under ``threshold`` stops training for the rest of the search."""

    # scores per decision; the authors' train_search.py hard-codes 20 (its --count is parsed but unused)
    frequency: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    # a cosine similarity's mean, so within [-1, 1]; theirs hard-codes 0.4 (its --patience is unused)
    threshold: float = attrs.field(default=0.4, validator=[attrs.validators.ge(-1.0), attrs.validators.le(1.0)])
    # "clean": the cosine of the validation gradient and the kept training gradient, as the paper
    # defines it. "authors": what their code computes, which never zeroes the weights' gradients before
    # the architecture step's backward, so its validation side is the kept training gradient plus the
    # validation gradient, and which averages frequency + 1 scores per decision (divided by frequency)
    score: str = attrs.field(default="clean", validator=attrs.validators.in_(SCORES))
