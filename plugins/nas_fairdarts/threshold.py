"""FairDARTS's derivation rule (the authors' ``parse`` with ``threshold_sparse``, fairdarts/utils.py):
per node, the k inputs whose edges hold the largest weight; each keeps its strongest op only if that
op's weight reaches the threshold (0.85). A node may so end with 0, 1 or 2 inputs.

A node left without inputs is isolated: the authors' evaluation cell (``DCOCell``) builds no such
node, skips the inputs that would read it and concatenates the nodes it built. A genotype here
numbers its nodes by position (``Cell.nodes``), and a node is a non-empty list of pairs, so the
isolated nodes are dropped and the later ones renumbered: the same network, node for node, sum for
sum. A node whose every input was isolated is isolated too (the authors' cell would fail on it).
A cell left with no node at all (no weight reaches the threshold yet, as in a search's first
epochs, where the authors' code cannot build the network) keeps its strongest op from an input
node, with a warning, so that every epoch's genotype can be trained and drawn."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import Tensor

from nas_core import ArchSpec, Cell, Discretizer, Genotype, RunContext
from nas_fairdarts.options import ThresholdOptions

log = logging.getLogger("nas")


class ThresholdDiscretizer(Discretizer):
    def __init__(self, options: ThresholdOptions):
        self.threshold, self.k = options.threshold, options.k
        self.warned: set[str] = set()  # cell types already warned about: once per run, not every epoch

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        live = [col for col, op in enumerate(spec.ops) if op != spec.zero_op]
        cells = {}
        for cell_type, edges in spec.edges.items():
            table = spec.table(strengths, cell_type)
            # each edge's strongest op (the first of equals, as the authors' strict > keeps it)
            best = [max(live, key=lambda col: (row[col], -col)) for row in table]
            renumbered = {i: i for i in range(spec.num_inputs)}  # kept node -> its index in the genotype
            nodes = []
            for dst in sorted({dst for _, dst in edges}):
                rows = [row for row, (_, d) in enumerate(edges) if d == dst]
                rows.sort(key=lambda row: -table[row][best[row]])  # stable: equal edges keep the lower input
                pairs = tuple((spec.ops[best[row]], renumbered[edges[row][0]]) for row in rows[:self.k]
                              if table[row][best[row]] >= self.threshold and edges[row][0] in renumbered)
                if pairs:
                    renumbered[dst] = spec.num_inputs + len(nodes)
                    nodes.append(pairs)
            if not nodes:
                nodes.append(self._fallback(cell_type, table, best, edges, spec))
            cells[cell_type] = Cell(tuple(nodes), tuple(range(spec.num_inputs, spec.num_inputs + len(nodes))))
        return Genotype(cells)

    def _fallback(self, cell_type: str, table: list[list[float]], best: list[int],
                  edges: tuple[tuple[int, int], ...], spec: ArchSpec) -> tuple[tuple[str, int]]:
        row = max((r for r, (src, _) in enumerate(edges) if src < spec.num_inputs),
                  key=lambda r: (table[r][best[r]], -r))
        op, src = spec.ops[best[row]], edges[row][0]
        if cell_type not in self.warned:
            self.warned.add(cell_type)
            log.warning("threshold: no op of the %s cell reaches %g yet; keeping its strongest op from an input "
                        "node (%s from node %d, weight %.3f) so that the cell can be built", cell_type,
                        self.threshold, op, src, table[row][best[row]])
        return ((op, src),)
