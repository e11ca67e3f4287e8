"""SNAS's derivation rule (the ``genotype_edge_all()`` of the authors' search network, which their
README's evaluation cells come from): every edge is kept, with its strongest op by ``softmax(alpha)``,
the zero op included (such an edge contributes nothing). A node's pairs are listed strongest edge
first, as theirs; the cell concatenates all its intermediate nodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from nas_core import ArchSpec, Discretizer, Genotype, RunContext, genotype_by_node
from nas_snas.options import SnasArgmaxOptions


class SnasArgmaxDiscretizer(Discretizer):
    def __init__(self, options: SnasArgmaxOptions):
        self.zero = options.zero

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        columns = [c for c, op in enumerate(spec.ops) if self.zero or op != spec.zero_op]

        def choose(table: Sequence[Sequence[float]], incoming: list[tuple[int, int]]) -> list[tuple[str, int]]:
            # ties: the first op (their loop keeps the first maximum); edges by strength, stable in input
            best = {row: max(columns, key=lambda c: (table[row][c], -c)) for row, _ in incoming}
            rows = sorted(incoming, key=lambda r: -table[r[0]][best[r[0]]])
            return [(spec.ops[best[row]], src) for row, src in rows]

        return genotype_by_node(strengths, spec, choose)
