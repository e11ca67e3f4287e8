"""P-DARTS's mixed edge (Chen et al., ICCV 2019, sections 3.2-3.3; its model_search.py ``MixedOp``):
DARTS's weighted sum over the ops this edge still searches (pruned ones are neither built nor
computed: the memory that lets a deeper supernet fit), with Dropout(p) after the identity op,
p following the schedule of its train_search.py epoch by epoch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from nas_core import RunContext
from nas_darts.edges import WeightedSumEdge
from nas_pdarts.kept import kept_columns
from nas_pdarts.options import PdartsEdgeOptions


def skip_dropout_at(rate: float, epoch: int, epochs: int, warmup: int, decay: float = 0.2) -> float:
    """The skip dropout probability in ``epoch`` (from 0) of a stage of ``epochs``: during the
    weights-only warm-up it falls linearly, rate * (epochs - epoch - 1) / epochs; then
    rate * exp(-decay * (epoch - warmup)) (P-DARTS's train_search.py, verbatim in effect)."""
    if epoch < warmup:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-decay * (epoch - warmup))


class PdartsEdge(WeightedSumEdge):
    """Built by ``darts_cnn`` per edge (``space.edge: {name: pdarts, skip_dropout: 0.4}``). The ops
    pruned from this edge (``kept``, read at its ``cell_type`` and ``row``) are treated like the zero
    op: not built, not computed (their mixing weight must be 0: the ``masked_softmax`` relaxation's)."""

    def __init__(self, options: PdartsEdgeOptions, *, ops: tuple[str, ...], channels: int, stride: int,
                 make_op: Callable[[str, int], nn.Module], zero: frozenset[str], cell_type: str | None = None,
                 row: int | None = None, **context: Any):
        self.rate, self.warmup, self.decay = options.skip_dropout, options.warmup, options.decay
        self.space_ops = self.kept_ops = tuple(ops)  # the alpha columns; the ones this edge searches
        if options.kept is not None:
            if cell_type is None or row is None:
                raise ValueError("space.edge.kept needs a space that tells each edge its cell type and row "
                                 "(darts_cnn does)")
            table = kept_columns(options.kept, "space.edge.kept", ops)
            if cell_type not in table or row >= len(table[cell_type]):
                raise ValueError(f"space.edge.kept has no op list for edge {row} of the {cell_type} cell")
            self.kept_ops = tuple(ops[c] for c in table[cell_type][row])
        self.position = (cell_type, row)
        self.dropouts: list[nn.Dropout] = []

        def build(name: str, c: int) -> nn.Module:
            op = make_op(name, c)
            if isinstance(op, nn.Identity) and self.rate > 0:  # as theirs: the identity only, not FactorizedReduce
                dropout = nn.Dropout(self.rate)
                self.dropouts.append(dropout)
                return nn.Sequential(op, dropout)
            return op

        pruned = frozenset(ops) - frozenset(self.kept_ops)
        super().__init__(None, ops=ops, channels=channels, stride=stride, make_op=build, zero=zero | pruned,
                         cell_type=cell_type, row=row, **context)

    def start_epoch(self, run: RunContext) -> None:
        super().start_epoch(run)
        if run.phase != "search" or not self.dropouts:  # other phases (final selection) keep the last p
            return
        warmup = self.warmup
        if warmup is None:
            warmup = getattr(run.config.optimizer.options, "freeze_alpha_epochs", 0)
        p = skip_dropout_at(self.rate, run.epoch, run.epochs, warmup, self.decay)
        for dropout in self.dropouts:
            dropout.p = p
