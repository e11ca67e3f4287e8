"""GDAS's relaxation (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours",
CVPR 2019, section 3.2): every edge runs one op per forward pass, drawn by a hard Gumbel-softmax.

With Gumbel noise g (one draw per edge and op), ``p = softmax((log_softmax(alpha) + g) / tau)``; the
forward weight is the one-hot vector of ``argmax p``, the backward the gradient of ``p``
(straight-through): ``h = one_hot + (p - p.detach())``, exactly one-hot in value. ``MixingWeights.chosen``
holds the sampled column of every edge, so ``darts_cnn`` computes only that op, multiplied by its
weight (1 in value) so that the gradient still reaches alpha. The temperature falls linearly from
``tau_max`` to ``tau_min`` over the epochs; docs/successors/gdas.md compares all this with the
authors' code.

``estimator: reinmax`` keeps the forward (the Gumbel-max sample is a draw from
``Cat(softmax(alpha))``, what ReinMax samples) and replaces the straight-through backward by
ReinMax's second-order one (:class:`ReinMax`; docs/successors/reinmax.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_core import ArchSpec, MixingWeights, Relaxation, RunContext, hookimpl
from nas_gdas.options import GdasOptions


def _exponential(shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    return torch.empty(shape, dtype=dtype).exponential_(generator=generator)


def gumbel_noise(shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    """Gumbel(0, 1) noise on the CPU as the authors draw it, ``-log E`` with ``E ~ Exp(1)``, drawn
    again while any value is infinite (an ``E`` of exactly 0). Drawn from ``generator`` alone, so a
    redraw repeats on resume. The authors also redraw when the probabilities are not finite; with
    finite noise that happens only for a non-finite alpha, which no redraw mends (their loop never
    ends there), so it is not tested for: the check would make every step wait for the device."""
    while True:
        noise = -_exponential(shape, dtype, generator).log()
        if bool(torch.isfinite(noise).all()):
            return noise


def hard_one_hot(probs: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The one-hot rows of ``argmax probs`` with the gradient of ``probs``, and the argmax columns.
    ``p - p.detach()`` is exactly zero, so the value is exactly one-hot."""
    index = probs.argmax(-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, index[:, None], 1.0)
    return one_hot + (probs - probs.detach()), tuple(index.tolist())


def softmax_jvp(p: Tensor, g: Tensor) -> Tensor:
    """``J(p) g`` with ``J(p) = diag(p) - p p^T``, the softmax's Jacobian at probabilities ``p``, per row."""
    return p * g - p * (p * g).sum(-1, keepdim=True)


class ReinMax(torch.autograd.Function):
    """ReinMax (Liu et al., "Bridging Discrete and Backpropagation: Straight-Through and Beyond",
    NeurIPS 2023, Algorithm 2): the one-hot sample ``D`` passes forward unchanged; for an upstream
    gradient ``g`` the logits receive ``2 J(pi_bar) g - J(pi) g / 2``, with ``pi = softmax(logits)``
    and ``pi_bar = (softmax(logits / tau) + D) / 2``: a second-order (Heun) approximation of the
    gradient of the expected loss, where straight-through is first order."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, one_hot: Tensor, tau: Tensor) -> Tensor:
        ctx.save_for_backward(logits, one_hot, tau)
        return one_hot.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, one_hot, tau = ctx.saved_tensors
        pi = torch.softmax(logits, dim=-1)
        pi_bar = (torch.softmax(logits / tau, dim=-1) + one_hot) / 2
        return 2 * softmax_jvp(pi_bar, grad) - softmax_jvp(pi, grad) / 2, None, None


class GdasRelaxation(Relaxation):
    """alpha per cell type, shape [edges, ops]; each step samples one op per edge."""

    def __init__(self, options: GdasOptions, *, spec: ArchSpec):
        super().__init__()
        self.options = options
        self.alphas = nn.ParameterDict({t: nn.Parameter(options.init_std * torch.randn(spec.shape(t)))
                                        for t in spec.edges})
        # a buffer so that it checkpoints and a search read back shows its last temperature
        self.register_buffer("tau", torch.tensor(options.tau_max, dtype=torch.float64))

    @hookimpl
    def nas_epoch_start(self, run: RunContext) -> None:
        # linear in the epoch, tau_max at the first and tau_min at the last (the authors' GDAS.py)
        progress = run.epoch / max(run.epochs - 1, 1)
        tau = self.options.tau_max - (self.options.tau_max - self.options.tau_min) * progress
        self.tau.fill_(tau)
        run.epoch_metrics["tau"] = tau

    def sample(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Gumbel noise per cell type (normal first, then reduce: the authors' order of draws)."""
        return {t: gumbel_noise(a.shape, a.dtype, generator) for t, a in self.alphas.items()}

    def weights(self, sample: dict[str, Tensor] | None = None) -> MixingWeights:
        """The hard sample for a draw; without one, the most likely path (``argmax alpha``, with the
        gradient of ``softmax(alpha)``): what the engine evaluates the supernet with."""
        hard, chosen = {}, {}
        for t, a in self.alphas.items():
            if sample is None:
                probs = torch.softmax(a, dim=-1)
            else:
                probs = torch.softmax((torch.log_softmax(a, dim=-1) + sample[t].to(a.device)) / self.tau, dim=-1)
            if sample is not None and self.options.estimator == "reinmax":
                index = probs.detach().argmax(-1)
                hard[t] = ReinMax.apply(a, F.one_hot(index, a.shape[-1]).to(a.dtype), self.tau)
                chosen[t] = tuple(index.tolist())
            else:
                hard[t], chosen[t] = hard_one_hot(probs)
        return MixingWeights(hard, chosen)

    def strengths(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {t: torch.softmax(a, dim=-1).detach() for t, a in self.alphas.items()}
