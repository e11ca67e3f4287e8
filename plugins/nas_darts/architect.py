"""The DARTS bilevel optimizer (Liu et al., ICLR 2019, section 2.3): alternate an architecture step on a
validation batch and a weight step on a training batch, with the same relaxation sample (or, with
``sample: pass``, a sample per forward pass). ``freeze_alpha_epochs`` skips the architecture step
in the first epochs (a weights-only warm-up).

Second order (xi > 0): the architecture gradient of L_val(w', alpha) with the virtual step
w' = w - xi * (momentum * buf + grad_w L_train(w, alpha) + wd * w), i.e. exactly the next
SGD iterate. The Hessian-vector product is a central finite difference in w (the paper's), or exact
by double backward (``hvp: exact``). w' and w +- eps*v live in plain tensors passed through
``torch.func.functional_call``: no copy of the network.

Options that reproduce the public RNN code (Liu et al.'s ``rnn/architect.py``; docs/architecture.md):
a training batch's ``lr_scale`` (a language-model window's drawn length / bptt) scales the weight step's
lr and xi (``scale_lr_by_window``); the virtual step's gradient and the finite difference's
direction are clipped to ``grad_clip`` (``clip_virtual_step``, ``clip_hessian_vector``); tied
weights can stay at w in the virtual step (``step_tied_weights=False``).

Every forward goes through the task (its loss, its carried state), so the same optimizer
searches image and language-model spaces; the components' loss terms (``add_loss_terms``) are
added to each pass's loss, and so enter the virtual step and the hypergradient too. The weight pass
alone reads mixing weights changed by the configured perturbation (SDARTS).

The class is a public base (docs/writing-a-plugin.md): a plugin changes one pass by overriding
:meth:`DartsOptimizer.forward_pass`, :meth:`weight_step` (with :meth:`apply_weight_gradient`), :meth:`arch_gradient`,
:meth:`virtual_step` or :meth:`hessian_vector_product` without copying the unrolled step.

Gradients pass through ``run.reduce`` where a data-parallel run must agree on them: the virtual
step's, the finite-difference direction, the architecture gradient and the weight gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor
from torch.func import functional_call

from nas_core import (BilevelOptimizer, MixingWeights, Outcome, Perturbation, Relaxation, RunContext, StepResult,
                      Supernet, Task, add_loss_terms)
from nas_darts.options import DartsOptions

Reduce = Callable[[Sequence[Tensor]], list[Tensor]]


@attrs.frozen
class PerPass:
    """The ``sample`` of a step whose passes each draw their own (``DartsOptions.sample: pass``)."""

    generator: torch.Generator


class DartsOptimizer(BilevelOptimizer):
    supports_perturbation = True

    def __init__(self, options: DartsOptions, *, supernet: Supernet, relaxation: Relaxation, task: Task,
                 epochs: int, second_order: bool):
        self.opts = options
        self.net, self.relax, self.task = supernet, relaxation, task
        # whose loss_terms the passes add: the run's components once a step has seen them
        self.components: tuple[object, ...] = (relaxation, supernet, task)
        self.perturbation: Perturbation | None = None
        self.second_order = second_order
        self.names = [n for n, _ in supernet.named_parameters()]
        self.weights = [p for _, p in supernet.named_parameters()]
        tied = tied_parameters(supernet)
        # functional_call re-ties tensors registered under several names by walking every module, on
        # every call (about 40 ms per call on the demo's supernet): only where there are any
        self.aliased = _aliased(supernet)
        self.held = [not options.step_tied_weights and n in tied for n in self.names]  # w' = w for these
        self.alphas = list(relaxation.parameters())
        if options.w_nesterov and options.w_momentum == 0:
            raise ValueError("w_nesterov needs a momentum: set w_momentum > 0 or w_nesterov false")
        # foreach: one operator call per step for all weights (torch picks it on CUDA only); the same arithmetic
        self.w_opt = torch.optim.SGD(self.weights, lr=options.w_lr, momentum=options.w_momentum,
                                     weight_decay=options.w_weight_decay, nesterov=options.w_nesterov, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=max(epochs, 1),
                                                                    eta_min=options.w_lr_min)
        self.a_opt = torch.optim.Adam(self.alphas, lr=options.arch_lr, betas=options.arch_betas,
                                      weight_decay=options.arch_weight_decay)

    # -- the two updates --------------------------------------------------------------------

    def step(self, train_batch: Any, val_batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        self.components = tuple(run.components.values()) or self.components
        self.perturbation = run.components.get("perturbation")
        generator = run.generator("relaxation")
        # one draw for every pass of this step, or a fresh one per pass
        sample = PerPass(generator) if self.opts.sample == "pass" else self.relax.sample(generator)
        train_state = state.get("weights")
        metrics: dict[str, dict[str, Tensor]] = {}
        out_state = {}
        if run.epoch >= self.opts.freeze_alpha_epochs:  # else a weights-only warm-up: alpha stays frozen
            val_out, arch_grads = self.arch_gradient(train_batch, val_batch, train_state, state.get("arch"),
                                                     sample=sample, reduce=run.reduce)
            for a, g in zip(self.alphas, arch_grads):
                a.grad = g
            self.a_opt.step()
            self.a_opt.zero_grad(set_to_none=True)
            # besides the losses, in the groups of the passes they belong to (every group goes through
            # task.report, which expects a loss): the step sizes taken and the architecture gradient's
            # norm, which monitors plot per step (epoch means: train_lr, arch_lr, arch_grad_norm)
            metrics["arch"] = {**val_out.stats, "lr": torch.tensor(self.a_opt.param_groups[0]["lr"]),
                               "grad_norm": _norm(arch_grads)}
            out_state["arch"] = val_out.state
        w_lr = self.w_opt.param_groups[0]["lr"] * self.lr_scale(train_batch)
        train_out = self.weight_step(train_batch, train_state, sample=sample, reduce=run.reduce, run=run)
        metrics = {"train": {**train_out.stats, "lr": torch.tensor(w_lr)}, **metrics}
        return StepResult(metrics, {"weights": train_out.state, **out_state})

    def mixing(self, sample: Any) -> MixingWeights:
        """The relaxation's mixing weights for one pass of a step drawn with ``sample``."""
        if isinstance(sample, PerPass):
            sample = self.relax.sample(sample.generator)
        return self.relax.weights(sample)

    def weight_step(self, batch: Any, state: Any = None, *, sample: Any = None, reduce: Reduce = list,
                    run: RunContext | None = None) -> Outcome:
        with torch.no_grad():
            mix = self.mixing(sample)  # alpha gets no gradient from the weight step
        if self.perturbation is not None and run is not None:  # this pass alone reads perturbed weights
            def loss_of(m: MixingWeights) -> Tensor:
                return self.forward_pass(self.weights, m, batch, state, "weights").loss

            mix = self.perturbation.perturb(mix, loss_of, run.generator("perturbation"), run)
        out = self.forward_pass(self.weights, mix, batch, state, "weights")
        self.apply_weight_gradient(reduce(_grad(out.loss, self.weights)), batch)
        return out

    @staticmethod
    def gradients(loss: Tensor, inputs: Sequence[Tensor]) -> list[Tensor]:
        """d ``loss`` / d ``inputs``, with zeros for inputs the loss does not reach: what every pass of
        this class differentiates with, for a plugin's own passes."""
        return _grad(loss, list(inputs))

    def apply_weight_gradient(self, grads: Sequence[Tensor], batch: Any) -> None:
        """The weight optimizer's step on ``grads`` (already reduced): clipped to ``grad_clip``, at the
        batch's lr scale. A plugin whose weight step computes its own gradient ends with this."""
        if self.opts.grad_clip > 0:  # clip_grad_norm_'s rule, without its copy of every norm
            grads, _ = _clip(grads, self.opts.grad_clip)
        for p, g in zip(self.weights, grads):
            p.grad = g
        group = self.w_opt.param_groups[0]
        lr = group["lr"]
        group["lr"] = lr * self.lr_scale(batch)  # this batch's step only: the schedule keeps lr
        self.w_opt.step()
        group["lr"] = lr
        self.w_opt.zero_grad(set_to_none=True)

    # -- the architecture gradient ----------------------------------------------------------

    @property
    def xi(self) -> float:
        if not self.second_order:
            return 0.0
        return self.w_opt.param_groups[0]["lr"] if self.opts.xi is None else self.opts.xi

    def lr_scale(self, batch: Any) -> float:
        """The factor on this training batch's step size: the batch's ``lr_scale`` where it has one
        (a language-model window: its drawn length / bptt, so a short window's mean loss moves w less)."""
        return float(getattr(batch, "lr_scale", 1.0)) if self.opts.scale_lr_by_window else 1.0

    def arch_gradient(self, train_batch: Any, val_batch: Any, train_state: Any = None, val_state: Any = None, *,
                      sample: Any = None, reduce: Reduce = list) -> tuple[Outcome, list[Tensor]]:
        """(the validation pass, d L_val(w', alpha) / d alpha) with w' the virtual step; w' = w when first order."""
        if not self.second_order:
            out = self.forward_pass(self.weights, self.mixing(sample), val_batch, val_state, "arch")
            return out, reduce(_grad(out.loss, self.alphas))
        xi = self.xi * self.lr_scale(train_batch)  # the step the weight step will take on this batch
        coef: list[Tensor] = []
        w_virtual = [w.requires_grad_(True)
                     for w in self.virtual_step(train_batch, xi, train_state, sample, reduce, clip_coef=coef)]
        out = self.forward_pass(w_virtual, self.mixing(sample), val_batch, val_state, "arch")
        grads = _grad(out.loss, [*self.alphas, *w_virtual])
        d_alpha, d_w = grads[:len(self.alphas)], reduce(grads[len(self.alphas):])
        if self.opts.clip_hessian_vector and self.opts.grad_clip > 0:
            d_w, _ = _clip(d_w, self.opts.grad_clip)
        hvp = self.hessian_vector_product(d_w, train_batch, train_state, sample)
        if coef:  # w' moved by the clipped gradient: its derivative in alpha scales alike (coef held constant)
            hvp = [h * coef[0] for h in hvp]
        # the finite difference is linear in its two gradients: averaging the result averages both
        return out, reduce([da - xi * h for da, h in zip(d_alpha, hvp)])

    def virtual_step(self, batch: Any, xi: float, state: Any = None, sample: Any = None,
                     reduce: Reduce = list, clip_coef: list[Tensor] | None = None) -> list[Tensor]:
        """The weights one SGD step ahead (momentum and weight decay included), as new tensors.
        With ``clip_virtual_step`` the gradient is clipped to ``grad_clip`` first, as the weight
        step clips it; the factor applied is appended to ``clip_coef``. Weights in ``self.held``
        (tied ones, with ``step_tied_weights=False``) stay at w."""
        with torch.no_grad():
            mix = self.mixing(sample)
        grads = reduce(_grad(self.forward_pass(self.weights, mix, batch, state, "weights").loss, self.weights))
        if self.opts.clip_virtual_step and self.opts.grad_clip > 0:
            grads, coef = _clip(grads, self.opts.grad_clip)
            if clip_coef is not None:
                clip_coef.append(coef)
        # list arithmetic (one operator call for all weights), in SGD's own order of operations
        with torch.no_grad():
            d = torch._foreach_add(grads, self.weights, alpha=self.opts.w_weight_decay)
            bufs = [self.w_opt.state.get(w, {}).get("momentum_buffer") for w in self.weights]
            step = list(d)
            have = [i for i, buf in enumerate(bufs) if buf is not None]  # none before the first weight step
            if have:  # SGD's next momentum buffer
                moved = torch._foreach_add([d[i] for i in have], [bufs[i] for i in have], alpha=self.opts.w_momentum)
                for i, m in zip(have, moved):
                    step[i] = m
            if self.opts.w_nesterov:  # SGD's Nesterov step: the gradient plus momentum times that buffer
                step = torch._foreach_add(d, step, alpha=self.opts.w_momentum)
            out = torch._foreach_add(self.weights, step, alpha=-xi)
            return [w.detach().clone() if held else o for w, o, held in zip(self.weights, out, self.held)]

    def hessian_vector_product(self, v: Sequence[Tensor], batch: Any, state: Any = None,
                               sample: Any = None) -> list[Tensor]:
        """grad^2_{alpha, w} L_train(w, alpha) . v: by central differences in w (the paper's), or
        exactly by double backward (``hvp: exact``)."""
        if isinstance(sample, PerPass):  # one draw for both sides of the difference
            sample = self.relax.sample(sample.generator)
        if self.opts.hvp == "exact":
            return self.exact_hessian_vector_product(v, batch, state, sample)
        norm = _norm(v)
        # a zero v gives w+ == w-, hence an exact zero; clamping instead of testing keeps the host out
        eps = self.opts.fd_eps / norm.clamp_min(torch.finfo(norm.dtype).tiny)
        with torch.no_grad():
            step = torch._foreach_mul(list(v), eps)
            w_plus = torch._foreach_add(self.weights, step)
            w_minus = torch._foreach_sub(self.weights, step)
        g_plus = _grad(self.forward_pass(w_plus, self.mixing(sample), batch, state, "weights").loss, self.alphas)
        g_minus = _grad(self.forward_pass(w_minus, self.mixing(sample), batch, state, "weights").loss, self.alphas)
        return [(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]

    def exact_hessian_vector_product(self, v: Sequence[Tensor], batch: Any, state: Any = None,
                                     sample: Any = None) -> list[Tensor]:
        """d/d alpha of (grad_w L_train(w, alpha) . v): the mixed second derivative applied to v,
        with no step size to choose. Costs the memory of a backward graph kept for the second pass."""
        out = self.forward_pass(self.weights, self.mixing(sample), batch, state, "weights")
        g_w = torch.autograd.grad(out.loss, self.weights, create_graph=True, allow_unused=True)
        dot = sum((g * t).sum() for g, t in zip(g_w, v) if g is not None)
        if not isinstance(dot, Tensor) or not dot.requires_grad:  # no weight reaches the loss through alpha
            return [torch.zeros_like(a) for a in self.alphas]
        return _grad(dot, self.alphas)

    def forward_pass(self, weights: list[Tensor], mix: MixingWeights, batch: Any, state: Any,
                     objective: str) -> Outcome:
        """The task's loss of the supernet at ``weights`` (``self.weights`` or tensors standing in for
        them) under ``mix``, plus the components' loss terms of ``objective`` ("arch" or "weights"),
        each also reported in the outcome's stats under its name."""
        if weights is self.weights:
            def model(*inputs: Any) -> Any:
                return self.net(*inputs, arch_weights=mix)
        else:
            params = dict(zip(self.names, weights))

            def model(*inputs: Any) -> Any:
                return functional_call(self.net, params, inputs, {"arch_weights": mix}, tie_weights=self.aliased)
        return add_loss_terms(self.task.forward(model, batch, state), self.components, objective, mix)

    # -- schedule and state -----------------------------------------------------------------

    def end_epoch(self, run: RunContext | None = None) -> dict[str, float]:
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


def tied_parameters(net: torch.nn.Module) -> set[str]:
    """Names (as ``named_parameters`` gives them) of parameters that serve in more than one role:
    registered under several names, or listed in the network's ``tied_parameters`` attribute (a
    weight it reuses directly, as the DARTS RNN's decoder reuses the embedding)."""
    first: dict[int, str] = {}
    tied = set(getattr(net, "tied_parameters", ()))
    for name, p in net.named_parameters(remove_duplicate=False):
        if id(p) in first:
            tied.add(first[id(p)])
        first.setdefault(id(p), name)
    return tied


def _aliased(net: torch.nn.Module) -> bool:
    """Whether a parameter or buffer of ``net`` is registered under more than one name."""
    return any(len(list(named(remove_duplicate=False))) != len(list(named()))
               for named in (net.named_parameters, net.named_buffers))


def _clip(grads: Sequence[Tensor], max_norm: float) -> tuple[list[Tensor], Tensor]:
    """The gradients scaled to a total L2 norm of at most ``max_norm``, and the factor applied
    (the rule of ``torch.nn.utils.clip_grad_norm_``)."""
    with torch.no_grad():
        coef = (max_norm / (_norm(grads) + 1e-6)).clamp(max=1.0)
        return list(torch._foreach_mul(list(grads), coef)), coef


def _norm(tensors: Sequence[Tensor]) -> Tensor:
    """The L2 norm of all ``tensors`` together, as a 0-dim tensor (no wait for the device)."""
    with torch.no_grad():
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


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
