"""GDAS's derivation rule (the authors' ``genotype()`` of their NASNet-space search network): per
node, the k strongest (op, input) pairs by ``softmax(alpha)`` over every edge into the node, the zero
op excluded. Unlike DARTS's ``topk``, two pairs may share an input (two ops on one edge)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from nas_core import ArchSpec, Discretizer, Genotype, RunContext, genotype_by_node
from nas_gdas.options import GdasTopKOptions


class GdasTopKDiscretizer(Discretizer):
    def __init__(self, options: GdasTopKOptions):
        self.k = options.k

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        live = [col for col, op in enumerate(spec.ops) if op != spec.zero_op]

        def choose(table: Sequence[Sequence[float]], incoming: list[tuple[int, int]]) -> list[tuple[str, int]]:
            pairs = [(table[row][col], src, col) for row, src in incoming for col in live]
            # strongest first; ties keep the lower input, then the lower column (the authors' stable sort
            # of a list built input by input, op by op in their op order)
            pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
            return [(spec.ops[col], src) for _, src, col in pairs[:self.k]]

        return genotype_by_node(strengths, spec, choose)
