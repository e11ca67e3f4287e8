"""PC-DARTS's edge normalisation (Xu et al., ICLR 2020, section 3.3): besides alpha (per edge and op), a
beta per edge, softmax-normalised over the edges entering the same node. An edge's weights are
softmax(alpha) * softmax(beta): the edge output of PC-DARTS, beta times the mixed op, is linear in
them, and its derivation ranks edges and ops by the same products (what ``topk`` reads)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas_core import ArchSpec, MixingWeights, Relaxation
from nas_pcdarts.options import EdgeNormalizedOptions


class EdgeNormalizedRelaxation(Relaxation):
    """``alphas.<cell type>`` of shape [edges, ops] and ``betas.<cell type>`` of shape [edges]."""

    def __init__(self, options: EdgeNormalizedOptions, *, spec: ArchSpec):
        super().__init__()
        std = options.init_std
        self.alphas = nn.ParameterDict({t: nn.Parameter(std * torch.randn(spec.shape(t))) for t in spec.edges})
        self.betas = nn.ParameterDict({t: nn.Parameter(std * torch.randn(len(spec.edges[t]))) for t in spec.edges})
        # per cell type: the rows of each node's incoming edges, and where each row lands when the
        # per-node softmaxes are concatenated in node order
        self.groups: dict[str, list[list[int]]] = {}
        self.order: dict[str, list[int]] = {}
        for t, edges in spec.edges.items():
            dsts = sorted({dst for _, dst in edges})
            self.groups[t] = [[row for row, (_, d) in enumerate(edges) if d == dst] for dst in dsts]
            flat = [row for group in self.groups[t] for row in group]
            self.order[t] = sorted(range(len(flat)), key=flat.__getitem__)

    def edge_weights(self, cell_type: str) -> Tensor:
        """softmax(beta) over the edges entering each node, one value per edge (row)."""
        beta = self.betas[cell_type]
        parts = torch.cat([torch.softmax(beta[group], dim=0) for group in self.groups[cell_type]])
        return parts[self.order[cell_type]]

    def weights(self, sample: None = None) -> MixingWeights:
        return MixingWeights({t: torch.softmax(a, dim=-1) * self.edge_weights(t)[:, None]
                              for t, a in self.alphas.items()})

    def strengths(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {t: w.detach() for t, w in self.weights().items()}
