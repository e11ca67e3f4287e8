"""SDARTS's perturbations of the weight pass's mixing weights (Chen & Hsieh, "Stabilizing Differentiable
Architecture Search via Perturbation-based Regularization", ICML 2020, section 4, algorithms 1 and 2).
The weights are trained to do well in a neighbourhood of the current mixing weights, which flattens
the validation loss in alpha and so shrinks the gap between the supernet and the derived cell.

- SDARTS-RS (``sdarts_rs``): softmax(alpha) plus uniform noise in [-eps, eps].
- SDARTS-ADV (``sdarts_adv``): a 7-step L-inf PGD attack on the weight pass's loss within the eps-ball,
  step 2 eps / 7 along the gradient's sign, from a random start; kept only if it does not lower the
  loss below the clean weights' (the authors' attacker/perturb.py).

Each candidate is clipped to [0, 1] and each row renormalised to sum 1 (a row clipped to all zeros
becomes one-hot at its largest entry), as the authors' ``Network.clip``; only the weight pass sees
the result (the DARTS optimizers route ``run.components["perturbation"]`` to their weight step). eps
grows linearly over the search from ``epsilon_min`` to ``epsilon_max``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nas_core import ArchSpec, MixingWeights, Perturbation, RunContext
from nas_sdarts.options import AdversarialOptions, SmoothingOptions


def clip_rows(w: Tensor) -> Tensor:
    """Each row clamped to [0, 1] and divided by its sum; a row left all zero becomes one-hot at the
    argmax of the unclamped row (the authors' ``Network.clip``)."""
    top = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, w.argmax(-1, keepdim=True), True)
    clamped = w.clamp(0, 1)
    empty = clamped.sum(-1, keepdim=True) == 0
    clamped = torch.where(empty & top, torch.ones_like(clamped), clamped)
    return clamped / clamped.sum(-1, keepdim=True)


class Smoothing(Perturbation):
    """SDARTS-RS; also the schedule and the noise SDARTS-ADV's random start shares."""

    def __init__(self, options: SmoothingOptions, *, spec: ArchSpec):
        self.options = options

    def epsilon(self, run: RunContext) -> float:
        """eps of the run's current epoch (from 0): the authors' 0.03 + (max - 0.03) * epoch / epochs. After
        the search (a discretizer's final phase fine-tuning the supernet, DARTS-PT's) the maximum, as
        DARTS-PT's code tunes an SDARTS supernet."""
        o = self.options
        if run.phase != "search":
            return o.epsilon_max
        return o.epsilon_min + (o.epsilon_max - o.epsilon_min) * run.epoch / max(run.epochs, 1)

    @staticmethod
    def noise(like: Tensor, epsilon: float, generator: torch.Generator) -> Tensor:
        """Uniform in [-eps, eps], shaped like ``like``, drawn on the CPU from ``generator`` (so a run
        draws the same noise on any device)."""
        u = torch.rand(like.shape, generator=generator, dtype=like.dtype)
        return ((2 * u - 1) * epsilon).to(like.device)

    def perturb(self, mix: MixingWeights, loss_of: Callable[[MixingWeights], Tensor], generator: torch.Generator,
                run: RunContext) -> MixingWeights:
        eps = self.epsilon(run)
        return MixingWeights({t: clip_rows(w + self.noise(w, eps, generator)) for t, w in mix.items()}, mix.chosen)


class Adversarial(Smoothing):
    """SDARTS-ADV. The attack's gradients and losses go through ``run.reduce``, so that the processes of a
    data-parallel run take the same steps and the same keep-or-discard decision."""

    options: AdversarialOptions

    def perturb(self, mix: MixingWeights, loss_of: Callable[[MixingWeights], Tensor], generator: torch.Generator,
                run: RunContext) -> MixingWeights:
        o, eps = self.options, self.epsilon(run)
        types = list(mix)
        clean = [mix[t].detach() for t in types]
        supernet = run.components.get("supernet")
        training = supernet.training if supernet is not None else False
        if supernet is not None and o.attack_mode == "eval":
            supernet.eval()

        def loss(ws: list[Tensor]) -> Tensor:
            return loss_of(MixingWeights(dict(zip(types, ws)), mix.chosen))

        try:
            with torch.no_grad():
                before = run.reduce([loss(clean)])[0]
            current = clean
            if o.random_start:
                current = [clip_rows(w + self.noise(w, eps, generator)) for w in clean]
            step = 2 * eps / o.steps
            for _ in range(o.steps):
                current = [w.detach().requires_grad_(True) for w in current]
                grads = torch.autograd.grad(loss(current), current, allow_unused=True)
                # a cell type the network does not use has no gradient: its step is 0, as theirs
                grads = run.reduce([torch.zeros_like(w) if g is None else g for w, g in zip(current, grads)])
                with torch.no_grad():
                    # ascend along the gradient's sign, project onto the eps-ball around the clean
                    # weights, then clip and renormalise (which may leave the ball again, as theirs)
                    current = [clip_rows(c + (w + step * g.sign() - c).clamp(-eps, eps))
                               for c, w, g in zip(clean, current, grads)]
            current = [w.detach() for w in current]
            with torch.no_grad():
                after = run.reduce([loss(current)])[0]
        finally:
            if supernet is not None:
                supernet.train(training)
        # the authors discard the attack only when it lowered the loss (equal losses keep it)
        chosen = current if bool(after >= before) else clean
        return MixingWeights(dict(zip(types, chosen)), mix.chosen)
