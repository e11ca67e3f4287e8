"""Top-k derivation (Liu et al., DARTS, ICLR 2019, section 2.4): per node, the k strongest edges from distinct
predecessors, each with its strongest op other than the zero op."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from nas_core import ArchSpec, Discretizer, Genotype, RunContext, top_k_genotype
from nas_darts.options import TopKOptions


class TopKDiscretizer(Discretizer):
    def __init__(self, options: TopKOptions):
        self.k = options.k

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        return top_k_genotype(strengths, spec, self.k or spec.inputs_per_node)
