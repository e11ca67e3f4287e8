"""GDAS's derivation rule (the authors' ``genotype()`` of their NASNet-space search network): per
node, the k strongest (op, input) pairs by ``softmax(alpha)`` over every edge into the node, the zero
op excluded. Unlike DARTS's ``topk``, two pairs may share an input (two ops on one edge)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from nas_core import ArchSpec, Cell, Discretizer, Genotype, RunContext
from nas_gdas.options import GdasTopKOptions


class GdasTopKDiscretizer(Discretizer):
    def __init__(self, options: GdasTopKOptions):
        self.k = options.k

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        live = [col for col, op in enumerate(spec.ops) if op != spec.zero_op]
        cells = {}
        for cell_type, edges in spec.edges.items():
            table = spec.table(strengths, cell_type)
            dsts = sorted({dst for _, dst in edges})
            nodes = []
            for dst in dsts:
                pairs = [(table[row][col], src, col) for row, (src, d) in enumerate(edges) if d == dst for col in live]
                # strongest first; ties keep the lower input, then the lower column (the authors' stable sort
                # of a list built input by input, op by op in their op order)
                pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
                nodes.append(tuple((spec.ops[col], src) for _, src, col in pairs[:self.k]))
            cells[cell_type] = Cell(tuple(nodes), tuple(dsts))
        return Genotype(cells)
