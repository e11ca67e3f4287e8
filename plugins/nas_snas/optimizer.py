"""SNAS's single-level search step (Xie et al., ICLR 2019, section 2.3; the authors' train_search.py):
one forward pass under one relaxed sample, one loss, and one backward that gives both the weights'
and alpha's gradients; the weights take a clipped SGD step (momentum, weight decay), alpha a step of
plain SGD (their single-GPU code) or Adam (their distributed code) on its gradient clipped to norm 10.
There is no validation split: with ``read_arch_stream`` the architecture stream's batch takes a
second such step, so that an epoch reads the whole training set.

Built on the public DARTS optimizer base (its weight optimizer, cosine schedule, checkpointed state
and task-driven forward pass); the loss is the task's plus every component's terms of both
objectives (``weights`` and ``arch``), since one loss trains both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from nas_darts.architect import DartsOptimizer
from nas_darts.options import DartsOptions
from torch import Tensor

from nas_core import Outcome, Relaxation, RunContext, StepResult, Supernet, Task, add_loss_terms
from nas_snas.options import SnasOptimizerOptions


class SnasOptimizer(DartsOptimizer):
    supports_perturbation = False  # a perturbation (SDARTS) acts on a weight pass SNAS does not have apart

    def __init__(self, options: SnasOptimizerOptions, *, supernet: Supernet, relaxation: Relaxation, task: Task,
                 epochs: int):
        darts = DartsOptions(w_lr=options.w_lr, w_lr_min=options.w_lr_min, w_momentum=options.w_momentum,
                             w_weight_decay=options.w_weight_decay, grad_clip=options.grad_clip,
                             arch_lr=options.arch_lr, arch_betas=options.arch_betas,
                             arch_weight_decay=options.arch_weight_decay)
        super().__init__(darts, supernet=supernet, relaxation=relaxation, task=task, epochs=epochs,
                         second_order=False)
        self.snas = options
        if options.arch_optimizer == "sgd":
            self.a_opt = torch.optim.SGD(self.alphas, lr=options.arch_lr, weight_decay=options.arch_weight_decay)

    def step(self, train_batch: Any, val_batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        self.components = tuple(run.components.values()) or self.components
        generator = run.generator("relaxation")
        lr = torch.tensor(self.w_opt.param_groups[0]["lr"])
        arch_lr = torch.tensor(self.a_opt.param_groups[0]["lr"])
        out, norm = self.single_level_step(train_batch, state.get("weights"), self.relax.sample(generator), run.reduce)
        metrics = {"train": {**out.stats, "lr": lr}}
        new_state = {"weights": out.state}
        if self.snas.read_arch_stream:  # a second step, on the other part of the training set
            arch_out, arch_norm = self.single_level_step(val_batch, state.get("arch"), self.relax.sample(generator),
                                                         run.reduce)
            metrics["arch"] = {**arch_out.stats, "lr": arch_lr, "grad_norm": (norm + arch_norm) / 2}
            new_state["arch"] = arch_out.state
        else:
            metrics["arch"] = {"lr": arch_lr, "grad_norm": norm}
        return StepResult(metrics, new_state)

    def single_level_step(self, batch: Any, state: Any, sample: Any,
                          reduce: Callable[[Sequence[Tensor]], list[Tensor]] = list) -> tuple[Outcome, Tensor]:
        """One SNAS update on ``batch`` under the relaxation's draw ``sample``: the pass's outcome and
        alpha's gradient norm before clipping (what the authors log as arch_grad_norm)."""
        mix = self.relax.weights(sample)
        out = add_loss_terms(self.forward_pass(self.weights, mix, batch, state, "weights"), self.components,
                             "arch", mix)
        params = [*self.weights, *self.alphas]
        grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        grads = reduce([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])
        for p, g in zip(params, grads):
            p.grad = g
        if self.opts.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.weights, self.opts.grad_clip)
        norm = torch.nn.utils.clip_grad_norm_(self.alphas, self.snas.arch_grad_clip or float("inf"))
        self.w_opt.step()
        self.a_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        return out, norm.detach()

