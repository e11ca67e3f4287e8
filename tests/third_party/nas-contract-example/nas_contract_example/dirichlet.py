"""DrNAS's Dirichlet relaxation (Chen et al., ICLR 2021): mixing weights drawn from Dir(elu(beta)+1)
with pathwise gradients, and a KL term to the prior Dir(prior) in the architecture loss."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Dirichlet, kl_divergence

from nas_core import ArchSpec, MixingWeights, Relaxation
from nas_contract_example.options import DirichletOptions


class DirichletRelaxation(Relaxation):
    def __init__(self, options: DirichletOptions, *, spec: ArchSpec):
        super().__init__()
        self.options = options
        self.beta = nn.ParameterDict({t: nn.Parameter(1e-3 * torch.randn(spec.shape(t))) for t in spec.edges})

    def concentration(self) -> dict[str, Tensor]:
        return {t: F.elu(b) + 1 for t, b in self.beta.items()}

    def sample(self, generator: torch.Generator) -> int:
        # a seed from the run's stream: the draw repeats on resume and in every pass that shares it
        return int(torch.randint(2**62, (), generator=generator))

    def weights(self, sample: int | None = None) -> MixingWeights:
        conc = self.concentration()
        if sample is None:  # evaluation: the Dirichlet mean
            return MixingWeights({t: c / c.sum(-1, keepdim=True) for t, c in conc.items()})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample)
            return MixingWeights({t: Dirichlet(c).rsample() for t, c in conc.items()})

    def strengths(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {t: w.detach() for t, w in self.weights(None).items()}

    def loss_terms(self, objective: str, mix: MixingWeights) -> Mapping[str, Tensor]:
        if objective != "arch" or self.options.kl_weight == 0:
            return {}
        kl = sum(kl_divergence(Dirichlet(c), Dirichlet(torch.full_like(c, self.options.prior))).sum()
                 for c in self.concentration().values())
        return {"kl": self.options.kl_weight * kl}
