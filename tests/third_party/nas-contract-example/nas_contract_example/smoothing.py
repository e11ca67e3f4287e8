"""SDARTS-RS (Chen & Hsieh, ICML 2020): the weight pass trains under mixing weights with uniform
noise in [-epsilon, epsilon], clipped to [0, 1] and renormalised; the architecture passes stay clean."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nas_core import ArchSpec, MixingWeights, Perturbation, RunContext
from nas_contract_example.options import SmoothingOptions


class RandomSmoothing(Perturbation):
    def __init__(self, options: SmoothingOptions, *, spec: ArchSpec):
        self.epsilon = options.epsilon

    def perturb(self, mix: MixingWeights, loss_of: Callable[[MixingWeights], Tensor], generator: torch.Generator,
                run: RunContext) -> MixingWeights:
        out = {}
        for cell_type, w in mix.items():
            noise = (torch.rand(w.shape, generator=generator) * 2 - 1) * self.epsilon
            noisy = (w + noise.to(w.device)).clamp(0, 1)
            out[cell_type] = noisy / noisy.sum(-1, keepdim=True).clamp_min(1e-12)
        return MixingWeights(out, mix.chosen)
