"""The dominant eigenvalue of the architecture Hessian of the validation loss (Zela et al., ICLR 2020,
section 4): Lanczos iteration on Hessian-vector products, each one double backward through the
gradient in the architecture parameters. The Hessian itself is never formed (the authors' analyze.py
forms it row by row: one backward per architecture parameter)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from nas_core import Relaxation, Supernet, Task, add_loss_terms

Reduce = Callable[[Sequence[Tensor]], list[Tensor]]


@attrs.frozen
class Eigen:
    value: float  # the largest (algebraic) eigenvalue found
    iterations: int  # Hessian-vector products taken
    residual: float  # ||H y - value * y|| for the unit Ritz vector y: |true eigenvalue - value| <= residual


def hessian_operator(loss: Tensor, params: Sequence[Tensor], *, l2: float = 0.0,
                     reduce: Reduce = list) -> Callable[[Tensor], Tensor]:
    """v -> (d^2 loss / d params^2 + l2 I) v on flat float64 vectors: one backward with its graph kept
    here, then one double backward per product. ``reduce`` averages each product over the processes of
    a data-parallel run (each holds its shard of the batch)."""
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]  # others: a zero row
    sizes = [p.numel() for p in params]

    def hvp(v: Tensor) -> Tensor:
        parts = torch.split(v, sizes)
        products = [torch.zeros_like(p) for p in params]
        if live:
            outs = torch.autograd.grad([grads[i] for i in live], params, retain_graph=True, allow_unused=True,
                                       grad_outputs=[parts[i].view_as(params[i]).to(params[i].dtype) for i in live])
            products = [torch.zeros_like(p) if h is None else h for h, p in zip(outs, params)]
        products = reduce(products)
        return torch.cat([h.reshape(-1) for h in products]).to(torch.float64) + l2 * v

    return hvp


def lanczos_max(hvp: Callable[[Tensor], Tensor], start: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Eigen:
    """The largest eigenvalue of the symmetric operator ``hvp`` by Lanczos with full
    reorthogonalisation, from ``start`` (a float64 vector). Power iteration would find the eigenvalue
    of largest magnitude, which may be a negative one; the authors take the largest (numpy's
    ``max(eigvals(H))``). Stops when the residual bound is below ``tol * |value|`` or the Krylov space
    is the whole space (then exact up to round-off)."""
    dim = start.numel()
    basis = [start / torch.linalg.vector_norm(start)]
    diag: list[float] = []
    off: list[float] = []
    value, residual = 0.0, float("inf")
    for j in range(min(max_iter, dim)):
        w = hvp(basis[-1])
        diag.append(float(w @ basis[-1]))
        q = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w = w - q.T @ (q @ w)
        beta = float(torch.linalg.vector_norm(w))
        t = torch.diag(torch.tensor(diag, dtype=torch.float64))
        if off:
            t += torch.diag(torch.tensor(off, dtype=torch.float64), 1) + torch.diag(torch.tensor(off, dtype=torch.float64), -1)
        values, vectors = torch.linalg.eigh(t)
        value, residual = float(values[-1]), abs(beta * float(vectors[-1, -1]))
        # converged, or the Krylov space is invariant (beta ~ 0: exact), or it is the whole space
        if residual <= tol * abs(value) or beta <= 1e-13 * float(values.abs().max()) or j + 1 == dim:
            return Eigen(value, j + 1, residual)
        off.append(beta)
        basis.append(w / beta)
    return Eigen(value, len(diag), residual)


def dominant_eigenvalue(supernet: Supernet, relaxation: Relaxation, task: Task, batch: Any, *,
                        generator: torch.Generator, l2: float = 0.0, tol: float = 1e-6, max_iter: int = 100,
                        components: Iterable[object] = (), reduce: Reduce = list) -> Eigen:
    """The largest eigenvalue of d^2 L_val / d alpha^2 + l2 I over all the relaxation's parameters, at
    the supernet's current weights w (the authors' analyze.py ``compute_Hw``: not the unrolled w'),
    on ``batch`` of the architecture stream, with the network in training mode (batch statistics) as
    theirs is at the end of an epoch, and the deterministic mixing weights. L_val is the task's loss
    plus the components' ``loss_terms("arch", ...)``, the loss the architecture step descends; ``l2``
    is that step's weight decay on alpha, which their Hessian includes. Batch-norm running statistics
    are put back afterwards: measuring does not change the search. The start vector is drawn from
    ``generator`` (deterministic given the run's seed and epoch)."""
    params = list(relaxation.parameters())
    buffers = {name: b.clone() for name, b in supernet.named_buffers()}
    was_training = supernet.training
    supernet.train()
    try:
        mix = relaxation.weights(None)
        out = task.forward(lambda *inputs: supernet(*inputs, arch_weights=mix), batch, None)
        loss = add_loss_terms(out, components, "arch", mix).loss
        hvp = hessian_operator(loss, params, l2=l2, reduce=reduce)
        dim = sum(p.numel() for p in params)
        start = torch.randn(dim, generator=generator, dtype=torch.float64)
        return lanczos_max(hvp, start, tol=tol, max_iter=max_iter)
    finally:
        with torch.no_grad():
            for name, b in supernet.named_buffers():
                b.copy_(buffers[name])
        supernet.train(was_training)


def arch_weight_decay(optimizer: Any) -> float:
    """The weight decay of an optimizer's architecture step where it has one (the DARTS optimizers'
    ``a_opt``: Adam's L2 term, which the authors add to the Hessian), else 0."""
    a_opt = getattr(optimizer, "a_opt", None)
    if isinstance(a_opt, torch.optim.Optimizer):
        return float(a_opt.param_groups[0].get("weight_decay", 0.0))
    return 0.0

