"""SNAS's relaxation (Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019, section
2.2): every step mixes each edge's ops by a relaxed one-hot sample of a categorical over them,
``Z = softmax((alpha + G) / tau)`` with Gumbel noise ``G``. The soft sample itself enters the
forward pass (no straight-through, unlike GDAS): its gradient in alpha is the reparameterised one.
One draw per step and cell type is shared by every cell of that type, as the authors' search network
draws it. The temperature falls linearly over the epochs; docs/successors/snas.md compares all this
with the authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas_core import ArchSpec, MixingWeights, Relaxation, RunContext, hookimpl
from nas_snas.options import SnasOptions


def gumbel_noise(shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    """Gumbel(0, 1) noise ``-log(-log u)``, ``u ~ U[0, 1)``, as the authors draw it, on the CPU from
    ``generator`` alone (a resumed run draws the same). ``u = 0`` gives an infinite value, which would
    zero an op's weight exactly: drawn again then."""
    while True:
        noise = -(-torch.rand(shape, dtype=dtype, generator=generator).log()).log()
        if bool(torch.isfinite(noise).all()):
            return noise


def temperature(options: SnasOptions, epoch: int, epochs: int) -> float:
    """The authors' Temp_Scheduler (utils.py) at ``epoch`` (from 0): stepped once before each epoch
    after a first step at construction, so epoch e reads step e + 1 of ``anneal_epochs`` (or ``epochs``)."""
    horizon = options.anneal_epochs or epochs
    return options.tau_min + (options.tau0 - options.tau_min) * max(0.0, 1 - (epoch + 1) / horizon)


class SnasRelaxation(Relaxation):
    """alpha per cell type, shape [edges, ops], initialised N(init_mean, init_std^2) as the authors'.
    Pruned ops (``prune``) get weight and strength 0."""

    supports_pruning = True

    def __init__(self, options: SnasOptions, *, spec: ArchSpec):
        super().__init__()
        self.options = options
        self.alphas = nn.ParameterDict({
            t: nn.Parameter(torch.empty(spec.shape(t)).normal_(options.init_mean, options.init_std))
            for t in spec.edges})
        # a buffer, so that it checkpoints and a search read back shows its last temperature
        self.register_buffer("tau", torch.tensor(options.tau0, dtype=torch.float64))

    @hookimpl
    def nas_epoch_start(self, run: RunContext) -> None:
        tau = temperature(self.options, run.epoch, run.epochs)
        self.tau.fill_(tau)
        run.epoch_metrics["tau"] = tau

    def sample(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Gumbel noise per cell type, normal first, then reduce (the authors' order of draws)."""
        return {t: gumbel_noise(a.shape, a.dtype, generator) for t, a in self.alphas.items()}

    def weights(self, sample: dict[str, Tensor] | None = None) -> MixingWeights:
        """The relaxed sample for a draw; without one (the engine's supernet evaluation), the sample
        with zero noise, ``softmax(alpha / tau)``: near one-hot on ``argmax alpha`` once tau is low."""
        if sample is None:
            return MixingWeights({t: torch.softmax(self.masked(t, a / self.tau), dim=-1)
                                  for t, a in self.alphas.items()})
        return MixingWeights({t: torch.softmax(self.masked(t, (a + sample[t].to(a.device)) / self.tau), dim=-1)
                              for t, a in self.alphas.items()})

    def strengths(self) -> dict[str, Tensor]:
        """``softmax(alpha)``, the class probabilities the authors' genotype reads."""
        with torch.no_grad():
            return {t: torch.softmax(self.masked(t, a), dim=-1).detach() for t, a in self.alphas.items()}
