"""The ``sgd`` trainer: SGD with momentum and weight decay, a cosine or step schedule, and
gradient-norm clipping (the DARTS evaluation schedules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nas_core import RunContext, StepResult, Task, Trainer
from nas_tasks.gradients import store_gradients
from nas_tasks.options import SgdOptions


class SgdTrainer(Trainer):
    def __init__(self, options: SgdOptions, *, network: nn.Module, task: Task, epochs: int):
        self.opts, self.network, self.task = options, network, task
        self.params = list(network.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=options.lr, momentum=options.momentum,
                                         weight_decay=options.weight_decay, nesterov=options.nesterov)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(epochs, 1), eta_min=options.lr_min)
            if options.lr_schedule == "cosine" else torch.optim.lr_scheduler.StepLR(self.optimizer, 1, options.lr_gamma))

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        out = self.task.forward(self.network, batch, state.get("train"))
        store_gradients(out.loss, self.params, run)
        if self.opts.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.opts.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult({"train": out.stats}, {"train": out.state})

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        lr = self.optimizer.param_groups[0]["lr"]
        # Stepped after the epoch (torch's documented order since 1.1), epoch e of E trains at
        # lr_min + (lr - lr_min) (1 + cos(pi e / E)) / 2, from lr at epoch 0 to just above lr_min.
        # The DARTS code steps before each epoch under PyTorch 0.3, whose scheduler starts at
        # last_epoch -1: the same sequence (under torch >= 1.1 that order skips the first value).
        self.scheduler.step()
        return {"lr": lr}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
