"""Derivation rules that several discretizers share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from nas_core.genotype import Cell, Genotype
from nas_core.interfaces import ArchSpec

#: ``choose(table, incoming)``: a node's (op, input) pairs from its cell type's strength table (one
#: row per edge) and its incoming edges as (row, input node) pairs, in row order
NodeRule = Callable[[Sequence[Sequence[float]], list[tuple[int, int]]], Sequence[tuple[str, int]]]


def genotype_by_node(strengths: Mapping[str, Tensor], spec: ArchSpec, choose: NodeRule) -> Genotype:
    """A genotype built node by node by ``choose``; every node concatenated into the cell's output."""
    cells = {}
    for cell_type, edges in spec.edges.items():
        table = spec.table(strengths, cell_type)
        dsts = sorted({dst for _, dst in edges})
        nodes = tuple(tuple(choose(table, [(row, src) for row, (src, d) in enumerate(edges) if d == dst]))
                      for dst in dsts)
        cells[cell_type] = Cell(nodes, tuple(dsts))
    return Genotype(cells)


def top_k_genotype(strengths: Mapping[str, Tensor], spec: ArchSpec, k: int) -> Genotype:
    """DARTS's rule (Liu et al., ICLR 2019, section 2.4): per node, the k incoming edges from distinct
    inputs whose strongest op other than the zero op is strongest, each with that op. Ties keep the
    lower op column, then the lower edge row."""
    live = [i for i, op in enumerate(spec.ops) if op != spec.zero_op]

    def choose(table: Sequence[Sequence[float]], incoming: list[tuple[int, int]]) -> list[tuple[str, int]]:
        # (strength, row, best op, src) per incoming edge; ties keep the lower row first
        scored = []
        for row, src in incoming:
            best = max(live, key=lambda i: (table[row][i], -i))
            scored.append((table[row][best], row, best, src))
        scored.sort(key=lambda t: (-t[0], t[1]))
        chosen, seen = [], set()
        for _, _, op, src in scored:
            if src not in seen and len(chosen) < k:
                seen.add(src)
                chosen.append((spec.ops[op], src))
        return chosen

    return genotype_by_node(strengths, spec, choose)
