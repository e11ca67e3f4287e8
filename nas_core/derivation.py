"""Derivation rules that several discretizers share."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from nas_core.genotype import Cell, Genotype
from nas_core.interfaces import ArchSpec


def top_k_genotype(strengths: Mapping[str, Tensor], spec: ArchSpec, k: int) -> Genotype:
    """DARTS's rule (Liu et al., ICLR 2019, section 2.4): per node, the k incoming edges from distinct
    inputs whose strongest op other than the zero op is strongest, each with that op. Ties keep the
    lower op column, then the lower edge row."""
    live = [i for i, op in enumerate(spec.ops) if op != spec.zero_op]
    cells = {}
    for cell_type, edges in spec.edges.items():
        table = spec.table(strengths, cell_type)
        dsts = sorted({dst for _, dst in edges})
        nodes = []
        for dst in dsts:
            # (strength, row, best op, src) per incoming edge; ties keep the lower row first
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
