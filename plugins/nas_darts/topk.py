"""Top-k derivation (Liu et al., DARTS, ICLR 2019, section 2.4): per node, the k strongest edges from distinct
predecessors, each with its strongest op other than the zero op."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from nas_core import ArchSpec, Cell, Discretizer, Genotype, RunContext
from nas_darts.options import TopKOptions


class TopKDiscretizer(Discretizer):
    def __init__(self, options: TopKOptions):
        self.k = options.k

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        k = self.k or spec.inputs_per_node
        live = [i for i, op in enumerate(spec.ops) if op != spec.zero_op]
        cells = {}
        for cell_type, edges in spec.edges.items():
            table = spec.table(strengths, cell_type)
            dsts = sorted({dst for _, dst in edges})
            nodes = []
            for dst in dsts:
                # (strength, best op, src) per incoming edge; ties keep the lower row first
                scored = []
                for row, (src, d) in enumerate(edges):
                    if d == dst:
                        best = max(live, key=lambda i: (table[row][i], -i))
                        scored.append((table[row][best], row, best, src))
                scored.sort(key=lambda t: (-t[0], t[1]))
                chosen, seen = [], set()
                for _, _, op, src in scored:
                    if src not in seen and len(chosen) < k:
                        seen.add(src)
                        chosen.append((spec.ops[op], src))
                nodes.append(tuple(chosen))
            cells[cell_type] = Cell(tuple(nodes), tuple(dsts))
        return Genotype(cells)
