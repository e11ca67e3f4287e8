"""Argmax per edge: every edge is kept, with its strongest op. The derivation of the NAS-Bench-201
searches (the ``genotype()`` of the authors' search models, xautodl/models/cell_searchs/), where
an edge's argmax may be the zero op: that edge is then ``none`` in the cell string."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from nas_core import ArchSpec, Cell, Discretizer, Genotype, RunContext
from nas_nb201.options import ArgmaxEdgeOptions


class ArgmaxEdgeDiscretizer(Discretizer):
    """Node by node, one pair per incoming edge in input order; the cell outputs its last node."""

    def __init__(self, options: ArgmaxEdgeOptions):
        self.zero = options.zero

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        columns = [i for i, op in enumerate(spec.ops) if self.zero or op != spec.zero_op]
        cells = {}
        for cell_type, edges in spec.edges.items():
            table = spec.table(strengths, cell_type)
            nodes: dict[int, list[tuple[int, str]]] = {}
            for row, (src, dst) in enumerate(edges):
                best = max(columns, key=lambda i: (table[row][i], -i))  # ties: the first op, as torch's argmax
                nodes.setdefault(dst, []).append((src, spec.ops[best]))
            cells[cell_type] = Cell(tuple(tuple((op, src) for src, op in sorted(pairs)) for _, pairs in
                                          sorted(nodes.items())),
                                    (max(nodes),))
        return Genotype(cells)
