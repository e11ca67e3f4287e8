"""Softmax mixing (Liu et al., ICLR 2019, section 2.2): one alpha vector per edge, mixed by its softmax."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas_core import ArchSpec, MixingWeights, Relaxation
from nas_darts.options import SoftmaxOptions


class SoftmaxRelaxation(Relaxation):
    """alpha per cell type, shape [edges, ops]; weights = softmax over ops (over the kept ones once pruned)."""

    supports_pruning = True

    def __init__(self, options: SoftmaxOptions, *, spec: ArchSpec):
        super().__init__()
        self.alphas = nn.ParameterDict({
            cell_type: nn.Parameter(options.init_std * torch.randn(spec.shape(cell_type)))
            for cell_type in spec.edges
        })

    def weights(self, sample: None = None) -> MixingWeights:
        return MixingWeights({k: torch.softmax(self.masked(k, a), dim=-1) for k, a in self.alphas.items()})

    def strengths(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {k: w.detach() for k, w in self.weights().items()}
