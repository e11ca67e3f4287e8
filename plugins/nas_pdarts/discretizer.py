"""P-DARTS's final cell (Chen et al., ICCV 2019, sections 3.2-3.3; its train_search.py): each edge
keeps its strongest op, the zero op dropped first (the last stage's pruning), each node its k
strongest edges; then, while the normal cell holds more than M skip connections, the weakest chosen
skip_connect leaves its edge's candidates and the cell is chosen again (their ``delete_min_sk_prob``,
``keep_1_on``, ``keep_2_branches``). Pruned ops (strength exactly 0) are never chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from nas_core import ArchSpec, Cell, Discretizer, Genotype, RunContext
from nas_pdarts.kept import strongest
from nas_pdarts.options import SKIP_OP, PdartsDiscretizerOptions

CAPPED = "normal"  # the cell type whose skip connections are capped, as theirs


def choose(table: Sequence[Sequence[float]], candidates: Sequence[Sequence[int]], edges: Sequence[tuple[int, int]],
           k: int, zero: int | None) -> dict[int, int]:
    """{row: op column} of the chosen edges: per edge its strongest candidate (zero op dropped first),
    per node the k edges whose chosen op is strongest (ties: the lower row)."""
    best = {row: strongest(table[row], cols, 1, zero)[0] for row, cols in enumerate(candidates)
            if [c for c in cols if c != zero]}
    chosen = {}
    for dst in sorted({d for _, d in edges}):
        rows = sorted((r for r, (_, d) in enumerate(edges) if d == dst and r in best),
                      key=lambda r: (-table[r][best[r]], r))
        chosen.update({r: best[r] for r in rows[:k]})
    return chosen


def capped_cell(table: Sequence[Sequence[float]], edges: Sequence[tuple[int, int]], k: int, zero: int | None,
                skip: int | None, max_skip: int | None) -> dict[int, int]:
    """:func:`choose`, then while more than ``max_skip`` chosen edges hold ``skip``: the one whose skip
    is weakest (ties: the lower row) loses it, if it has another candidate, and the cell is chosen again."""
    candidates = [[c for c, value in enumerate(row) if value > 0] for row in table]
    chosen = choose(table, candidates, edges, k, zero)
    while skip is not None and max_skip is not None:
        skips = [r for r, c in sorted(chosen.items()) if c == skip and len(candidates[r]) > 1 + (zero in candidates[r])]
        if sum(c == skip for c in chosen.values()) <= max_skip or not skips:
            break
        weakest = min(skips, key=lambda r: (table[r][skip], r))
        candidates[weakest] = [c for c in candidates[weakest] if c != skip]
        chosen = choose(table, candidates, edges, k, zero)
    return chosen


class PdartsDiscretizer(Discretizer):
    def __init__(self, options: PdartsDiscretizerOptions):
        self.max_skip = options.max_skip

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        k = spec.inputs_per_node
        zero = spec.ops.index(spec.zero_op) if spec.zero_op in spec.ops else None
        skip = spec.ops.index(SKIP_OP) if SKIP_OP in spec.ops else None
        cells = {}
        for cell_type, edges in spec.edges.items():
            chosen = capped_cell(spec.table(strengths, cell_type), edges, k, zero, skip,
                                 self.max_skip if cell_type == CAPPED else None)
            dsts = sorted({d for _, d in edges})
            # a node's inputs in edge order, as their parse_network lists them
            nodes = tuple(tuple((spec.ops[c], edges[r][0]) for r, c in sorted(chosen.items()) if edges[r][1] == dst)
                          for dst in dsts)
            cells[cell_type] = Cell(nodes, tuple(dsts))
        return Genotype(cells)
