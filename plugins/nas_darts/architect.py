"""The DARTS bilevel optimizer (DARTS.md section 4): alternate an architecture step on a
validation batch and a weight step on a training batch.

Second order (xi > 0): the architecture gradient of L_val(w', alpha) with the virtual step
w' = w - xi * (momentum * buf + grad_w L_train(w, alpha) + wd * w), i.e. exactly the next
SGD iterate. The Hessian-vector product is a central finite difference in w. w' and w +- eps*v
live in plain tensors passed through ``torch.func.functional_call``: no copy of the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor
from torch.func import functional_call

from nas_core.interfaces import BilevelOptimizer, Relaxation, Supernet


@attrs.frozen
class DartsOptions:
    w_lr: float = 0.025
    w_lr_min: float = 0.001  # cosine schedule over the epochs ends here
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0  # max L2 norm of the weight gradient (0: off)
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    xi: float | None = None  # virtual step size; None: the current weight lr (darts_2nd only)
    fd_eps: float = 0.01  # finite-difference step is fd_eps / ||grad_w' L_val||


class DartsOptimizer(BilevelOptimizer):
    def __init__(self, options: DartsOptions, *, supernet: Supernet, relaxation: Relaxation,
                 criterion: Callable[[Tensor, Tensor], Tensor], epochs: int, second_order: bool):
        self.opts = options
        self.net, self.relax, self.criterion = supernet, relaxation, criterion
        self.second_order = second_order
        self.names = [n for n, _ in supernet.named_parameters()]
        self.weights = [p for _, p in supernet.named_parameters()]
        self.alphas = list(relaxation.parameters())
        self.w_opt = torch.optim.SGD(self.weights, lr=options.w_lr, momentum=options.w_momentum,
                                     weight_decay=options.w_weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=max(epochs, 1),
                                                                    eta_min=options.w_lr_min)
        self.a_opt = torch.optim.Adam(self.alphas, lr=options.arch_lr, betas=options.arch_betas,
                                      weight_decay=options.arch_weight_decay)

    # -- the two updates --------------------------------------------------------------------

    def step(self, train_batch: tuple[Tensor, Tensor], val_batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        val_loss, arch_grads = self.arch_gradient(train_batch, val_batch)
        for a, g in zip(self.alphas, arch_grads):
            a.grad = g
        self.a_opt.step()
        self.a_opt.zero_grad(set_to_none=True)
        return {"arch_loss": float(val_loss), **self.weight_step(train_batch)}

    def weight_step(self, batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        x, y = batch
        with torch.no_grad():
            mix = self.relax.weights()  # alpha gets no gradient from the weight step
        logits = self.net(x, mix)
        loss = self.criterion(logits, y)
        grads = _grad(loss, self.weights)
        for p, g in zip(self.weights, grads):
            p.grad = g
        if self.opts.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.weights, self.opts.grad_clip)
        self.w_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"train_loss": float(loss.detach()), "train_acc": float(acc)}

    # -- the architecture gradient ----------------------------------------------------------

    @property
    def xi(self) -> float:
        if not self.second_order:
            return 0.0
        return self.w_opt.param_groups[0]["lr"] if self.opts.xi is None else self.opts.xi

    def arch_gradient(self, train_batch: tuple[Tensor, Tensor],
                      val_batch: tuple[Tensor, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(L_val, d L_val(w', alpha) / d alpha) with w' the virtual step; w' = w when first order."""
        if not self.second_order:
            loss = self._loss(self.weights, val_batch)
            return loss.detach(), _grad(loss, self.alphas)
        xi = self.xi
        w_virtual = [w.requires_grad_(True) for w in self.virtual_step(train_batch, xi)]
        loss = self._loss(w_virtual, val_batch)
        grads = _grad(loss, [*self.alphas, *w_virtual])
        d_alpha, d_w = grads[:len(self.alphas)], grads[len(self.alphas):]
        hvp = self.hessian_vector_product(d_w, train_batch)
        return loss.detach(), [da - xi * h for da, h in zip(d_alpha, hvp)]

    def virtual_step(self, batch: tuple[Tensor, Tensor], xi: float) -> list[Tensor]:
        """The weights one SGD step ahead (momentum and weight decay included), as new tensors."""
        with torch.no_grad():
            mix = self.relax.weights()
        grads = _grad(self._forward_loss(self.weights, mix, batch), self.weights)
        out = []
        with torch.no_grad():
            for w, g in zip(self.weights, grads):
                d = g + self.opts.w_weight_decay * w
                buf = self.w_opt.state.get(w, {}).get("momentum_buffer")
                if buf is not None:
                    d = d + self.opts.w_momentum * buf
                out.append(w - xi * d)
        return out

    def hessian_vector_product(self, v: tuple[Tensor, ...] | list[Tensor], batch: tuple[Tensor, Tensor]) -> list[Tensor]:
        """grad^2_{alpha, w} L_train(w, alpha) . v by central differences in w."""
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in v]))
        if float(norm) == 0.0:
            return [torch.zeros_like(a) for a in self.alphas]
        eps = self.opts.fd_eps / norm
        with torch.no_grad():
            w_plus = [w + eps * t for w, t in zip(self.weights, v)]
            w_minus = [w - eps * t for w, t in zip(self.weights, v)]
        g_plus = _grad(self._loss(w_plus, batch), self.alphas)
        g_minus = _grad(self._loss(w_minus, batch), self.alphas)
        return [(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]

    def _loss(self, weights: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        return self._forward_loss(weights, self.relax.weights(), batch)

    def _forward_loss(self, weights: list[Tensor], mix: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        if weights is self.weights:
            return self.criterion(self.net(x, mix), y)
        return self.criterion(functional_call(self.net, dict(zip(self.names, weights)), (x, mix)), y)

    # -- schedule and state -----------------------------------------------------------------

    def end_epoch(self) -> dict[str, float]:
        lr = self.w_opt.param_groups[0]["lr"]
        self.scheduler.step()
        return {"lr": lr}

    def state_dict(self) -> dict[str, Any]:
        return {"w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.scheduler.load_state_dict(state["scheduler"])


def _grad(loss: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    """Gradients, with zeros for inputs the loss does not use (e.g. the normal-cell alphas
    of a network made only of reduction cells)."""
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


def darts_first_order(options: DartsOptions, **context: Any) -> DartsOptimizer:
    """DARTS, first order: the architecture gradient at the current weights (xi = 0)."""
    return DartsOptimizer(options, second_order=False, **context)


def darts_second_order(options: DartsOptions, **context: Any) -> DartsOptimizer:
    """DARTS, second order: the architecture gradient through one unrolled weight step."""
    return DartsOptimizer(options, second_order=True, **context)
