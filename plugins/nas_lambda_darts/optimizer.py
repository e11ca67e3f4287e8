"""Lambda-DARTS's optimizer (Movahedi et al., "Lambda-DARTS: Mitigating Performance Collapse by
Harmonizing Operation Selection among Cells", ICLR 2023; the authors' sota/cnn/model_search.py
``get_perturbations``, ``get_reg_grads`` and train_search.py).

Every cell of a type shares one alpha, yet each cell sends its own gradient to it; the paper traces
DARTS's collapse to these gradients disagreeing (the cells near the output win). Lambda-DARTS trains
the weights to align them. In the weight step each cell mixes by its own copy p_l of the mixing
weights (per-cell weights, see :class:`nas_core.MixingWeights`), so that g_l = dL_train/dp_l is cell
l's gradient alone (one copy shared by every cell would make all g_l equal and Lambda 1). The layer
alignment of a cell type with L cells is

    Lambda = mean over pairs i < j of cos(g_i, g_j)                         (``corr``)
    Lambda = mean over pairs of (g_i . g_j) / (|g_i| . |g_j|), |.| elementwise  (``signcorr``)

and the weights descend L_train - lambda * Lambda. Lambda's weight gradient is d/dw (v . g(w)) with
v = dLambda/dg held fixed, i.e. a directional derivative of grad_w L_train in p: a central difference
of two more forward and backward passes, at p - eps v and p + eps v, eps = epsilon_0 / ||v||. lambda
ramps linearly from 0 over the epochs. The architecture step is DARTS's (first order in the authors'
runs; their ``--unrolled`` is ``second_order``: its virtual step descends L_train alone, as ours).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
from nas_darts.architect import DartsOptimizer
from torch import Tensor

from nas_core import (
    MixingWeights,
    Outcome,
    Relaxation,
    RunContext,
    StepResult,
    Supernet,
    Task,
    add_loss_terms,
)
from nas_lambda_darts.options import LambdaDartsOptions

Reduce = Callable[[Sequence[Tensor]], list[Tensor]]


def _pairs(grads: Tensor) -> int:
    cells = grads.shape[0]
    return cells * (cells - 1) // 2


def cosine_alignment(grads: Tensor) -> tuple[Tensor, Tensor]:
    """(Lambda, dLambda/dg) for per-cell gradients ``grads`` [cells, n]: Lambda the mean cosine over
    the pairs of cells, its gradient for cell l (I - u_l u_l^T) sum_k u_k / (||g_l|| pairs), u = g/||g||
    (the authors' get_perturbations; the k = l term vanishes). A zero gradient counts as orthogonal."""
    norms = torch.linalg.vector_norm(grads, dim=1, keepdim=True).clamp_min(torch.finfo(grads.dtype).tiny)
    u = grads / norms
    gram = u @ u.T
    pairs = _pairs(grads)
    total = u.sum(0)
    direction = (total - u * (u @ total).unsqueeze(1)) / norms / pairs
    return (gram.sum() - gram.diagonal().sum()) / (2 * pairs), direction


def sign_alignment(grads: Tensor) -> tuple[Tensor, Tensor]:
    """(Lambda, dLambda/dg) for the authors' ``signcorr``: Lambda the mean over pairs of
    (g_i . g_j) / (|g_i| . |g_j|), its gradient for cell i the sum over j != i of
    (1 - r_ij sign(g_i) sign(g_j)) g_j / (|g_i| . |g_j|) / pairs, r_ij the pair's ratio."""
    absolute = grads.abs()
    absdots = (absolute @ absolute.T).clamp_min(torch.finfo(grads.dtype).tiny)
    ratio = (grads @ grads.T) / absdots
    off = 1 - torch.eye(grads.shape[0], dtype=grads.dtype, device=grads.device)  # pairs j != i only
    pairs = _pairs(grads)
    direction = ((off / absdots) @ grads - grads.sign() * ((off * ratio / absdots) @ absolute)) / pairs
    return (ratio * off).sum() / (2 * pairs), direction


def cells_per_type(supernet: Supernet) -> Counter[str]:
    """How many cells of each type the supernet stacks (``Supernet.cell_types``): the leading size of
    per-cell weights."""
    if not supernet.cell_types:
        raise ValueError("it needs a supernet that takes per-cell mixing weights (Supernet.cell_types; space "
                         "darts_cnn)")
    return Counter(supernet.cell_types)


class LambdaDartsOptimizer(DartsOptimizer):
    # a perturbation of the weight pass (SDARTS) is not composed with the per-cell copies
    supports_perturbation = False

    def __init__(self, options: LambdaDartsOptions, *, supernet: Supernet, relaxation: Relaxation, task: Task,
                 epochs: int):
        super().__init__(options, supernet=supernet, relaxation=relaxation, task=task, epochs=epochs,
                         second_order=options.second_order)
        counts = cells_per_type(supernet)
        for cell_type in options.cell_types:
            if cell_type not in counts:
                raise ValueError(f"cell_types: {cell_type!r} is not a cell type of this supernet; choose from "
                                 f"{sorted(counts)}")
            if counts[cell_type] < 2:
                raise ValueError(f"cell_types: aligning {cell_type!r} cells needs at least 2 of them; the supernet "
                                 f"has {counts[cell_type]} (cells of each type: {dict(counts)})")
        self.counts = {t: counts[t] for t in options.cell_types}
        self.epochs = epochs
        self.strength = self.coefficient(0)  # lambda of the current epoch

    def coefficient(self, epoch: int) -> float:
        """lambda at ``epoch`` (from 0): lambda_ * e / (E - 1) with ``ramp``, the authors' schedule
        (0 in the first epoch, lambda_ in the last), else lambda_."""
        if self.opts.regularization == "none":
            return 0.0
        if not self.opts.ramp:
            return self.opts.lambda_
        return self.opts.lambda_ * epoch / max(self.epochs - 1, 1)

    def step(self, train_batch: Any, val_batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        self.strength = self.coefficient(run.epoch)
        return super().step(train_batch, val_batch, state, run)

    def weight_step(self, batch: Any, state: Any = None, *, sample: Any = None, reduce: Reduce = list,
                    run: RunContext | None = None) -> Outcome:
        with torch.no_grad():
            mix = self.mixing(sample)  # alpha gets no gradient from the weight step
        cells = {t: mix[t].unsqueeze(0).repeat(n, 1, 1).requires_grad_(True) for t, n in self.counts.items()}
        out = self.cell_pass(mix, cells, batch, state)
        grads = reduce(self.gradients(out.loss, [*self.weights, *cells.values()]))
        w_grads, cell_grads = grads[:len(self.weights)], dict(zip(cells, grads[len(self.weights):]))
        corr, direction = self.alignment(cell_grads, cosine_alignment)  # reported whatever the regulariser
        stats = {**out.stats, "corr": corr.detach(), "lambda": torch.tensor(self.strength)}
        if self.opts.regularization == "signcorr":
            value, direction = self.alignment(cell_grads, sign_alignment)
            stats["signcorr"] = value.detach()
        if self.strength > 0:
            reg = self.alignment_gradient(direction, mix, {t: c.detach() for t, c in cells.items()}, batch, state,
                                          reduce)
            w_grads = [g - self.strength * r for g, r in zip(w_grads, reg)]
        self.apply_weight_gradient(w_grads, batch)
        return attrs.evolve(out, stats=stats)

    @staticmethod
    def alignment(cell_grads: Mapping[str, Tensor],
                  measure: Callable[[Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
        """(Lambda, dLambda/dp per cell type, shaped like the per-cell weights) by ``measure``
        (:func:`cosine_alignment` or :func:`sign_alignment`): summed over the aligned cell types, each
        the mean over its pairs of cells."""
        value, direction = 0.0, {}
        for t, g in cell_grads.items():
            v, d = measure(g.flatten(1))
            value, direction[t] = value + v, d.view_as(g)
        return value, direction

    def alignment_gradient(self, direction: Mapping[str, Tensor], mix: MixingWeights, cells: Mapping[str, Tensor],
                           batch: Any, state: Any = None, reduce: Reduce = list) -> list[Tensor]:
        """d Lambda / dw = d/deps grad_w L(p + eps v): (G(p + eps v) - G(p - eps v)) / (2 eps) with
        v = ``direction`` and eps = epsilon_0 / ||v|| (over all aligned cells), as the authors'
        get_reg_grads (which adds lambda times its negative). Their pass at p - eps v comes first
        (the order of batch norm's running-statistics updates)."""
        eps = self.finite_difference_step(direction)
        minus, plus = ({t: cells[t] + sign * eps * direction[t] for t in cells} for sign in (-1, 1))
        g_minus = self.gradients(self.cell_pass(mix, minus, batch, state).loss, self.weights)
        g_plus = self.gradients(self.cell_pass(mix, plus, batch, state).loss, self.weights)
        # linear in its two gradients: averaging the result averages both
        return reduce([(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)])

    def finite_difference_step(self, direction: Mapping[str, Tensor]) -> Tensor:
        """eps = epsilon_0 / ||v||, v all the aligned cells' directions together. A zero v gives
        p + eps v == p - eps v, hence an exact zero difference; clamping instead of testing keeps the host out."""
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in direction.values()]))
        return self.opts.epsilon_0 / norm.clamp_min(torch.finfo(norm.dtype).tiny)

    def cell_pass(self, mix: MixingWeights, cells: Mapping[str, Tensor], batch: Any, state: Any) -> Outcome:
        """The weight pass with the aligned cell types mixed by per-cell weights ``cells`` and the others by
        ``mix``; the components' weight-loss terms read ``mix`` (the relaxation's own 2-D weights)."""
        arch = MixingWeights({**mix, **cells}, chosen=mix.chosen)

        def model(*inputs: Any) -> Any:
            return self.net(*inputs, arch_weights=arch)

        return add_loss_terms(self.task.forward(model, batch, state), self.components, "weights", mix)
