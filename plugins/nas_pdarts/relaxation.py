"""Softmax mixing over each edge's own op set (P-DARTS, Chen et al., ICCV 2019, section 3.2): after a
stage prunes an edge's weakest ops, its mixing weights are the softmax of the kept ops' alphas alone,
as P-DARTS's supernet holds only their columns; a pruned op's weight is exactly 0 (no gradient)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas_core import ArchSpec, MixingWeights, Relaxation
from nas_pdarts.kept import kept_columns
from nas_pdarts.options import MaskedSoftmaxOptions


class MaskedSoftmaxRelaxation(Relaxation):
    """``alphas.<cell type>`` of shape [edges, ops] over the space's ops; ``mask(cell type)`` the kept
    ops (bool [edges, ops]), None where nothing was pruned. Without ``kept`` it is DARTS's softmax.
    A scheduled pruning (``prune``) masks on top of ``kept``."""

    supports_pruning = True

    def __init__(self, options: MaskedSoftmaxOptions, *, spec: ArchSpec):
        super().__init__()
        self.alphas = nn.ParameterDict({t: nn.Parameter(options.init_std * torch.randn(spec.shape(t)))
                                        for t in spec.edges})
        columns = kept_columns(options.kept, "relaxation.kept", spec.ops, {t: len(e) for t, e in spec.edges.items()})
        for cell_type, rows in (columns or {}).items():  # buffers follow the relaxation's device
            mask = torch.zeros(spec.shape(cell_type), dtype=torch.bool)
            for row, cols in enumerate(rows):
                mask[row, cols] = True
            self.register_buffer(f"mask_{cell_type}", mask, persistent=False)

    def mask(self, cell_type: str) -> Tensor | None:
        return getattr(self, f"mask_{cell_type}", None)

    def weights(self, sample: None = None) -> MixingWeights:
        out = {}
        for cell_type, alpha in self.alphas.items():
            mask = self.mask(cell_type)
            logits = alpha if mask is None else alpha.masked_fill(~mask, float("-inf"))
            out[cell_type] = torch.softmax(self.masked(cell_type, logits), dim=-1)
        return MixingWeights(out)

    def strengths(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {t: w.detach() for t, w in self.weights().items()}
