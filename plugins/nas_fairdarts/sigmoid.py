"""FairDARTS's relaxation (Chu et al., "Fair DARTS: Eliminating Unfair Advantages in Differentiable
Architecture Search", ECCV 2020): every op of an edge is weighted by its own
``sigmoid(alpha)``, so the ops do not compete for one softmax's mass, and a zero-one loss in the
architecture loss pushes every weight towards 0 or 1, where thresholding them loses little."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from nas_core import ArchSpec, MixingWeights, Relaxation
from nas_fairdarts.options import SigmoidOptions


def zero_one_loss(alphas: Iterable[Tensor], kind: str = "l2") -> Tensor:
    """``-mean((sigmoid(alpha) - 0.5)^2)`` (``l2``) or ``-mean(|sigmoid(alpha) - 0.5|)`` (``l1``), the
    mean over the weights of all cell types together (the authors concatenate both cells' weights)."""
    deviation = torch.cat([torch.sigmoid(a).reshape(-1) for a in alphas]) - 0.5
    return -(deviation.square().mean() if kind == "l2" else deviation.abs().mean())


class SigmoidRelaxation(Relaxation):
    """alpha per cell type, shape [edges, ops]; weights = sigmoid(alpha), each op on its own."""

    def __init__(self, options: SigmoidOptions, *, spec: ArchSpec):
        super().__init__()
        self.options = options
        self.alphas = nn.ParameterDict({
            t: nn.Parameter(options.init_std * torch.randn(spec.shape(t)) if options.init_std
                            else torch.zeros(spec.shape(t)))
            for t in spec.edges})

    def weights(self, sample: None = None) -> MixingWeights:
        return MixingWeights({t: torch.sigmoid(a) for t, a in self.alphas.items()})

    def strengths(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {t: torch.sigmoid(a).detach() for t, a in self.alphas.items()}

    def loss_terms(self, objective: str, mix: MixingWeights) -> Mapping[str, Tensor]:
        """The weighted zero-one loss in the architecture loss (metric ``arch_zero_one``). The
        authors add it to the weight loss too, where it changes no weight's gradient."""
        if objective != "arch" or self.options.zero_one_weight == 0:
            return {}
        return {"zero_one": self.options.zero_one_weight * zero_one_loss(self.alphas.values(), self.options.zero_one)}
