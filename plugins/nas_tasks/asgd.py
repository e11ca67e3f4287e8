"""The ``nt_asgd`` trainer: SGD that switches to averaged SGD when validation stops improving
(non-monotonically triggered ASGD, Merity et al. 2017; the DARTS RNN evaluation, Liu et al., ICLR 2019, appendix A).

* SGD without momentum, weight decay, gradient-norm clipping; each step's learning rate times
  the window's ``lr_scale`` (its drawn length / bptt) when the task's batches carry one, as the public
  code does.
* The trigger, decided in ``end_epoch`` from ``valid_loss`` exactly as the public code:
  ``len(history) > nonmono and valid_loss > min(history[:-nonmono])``, checked before the loss is
  appended to the history. It then switches to ``torch.optim.ASGD(lr, t0=0, lambd=0,
  weight_decay)``, which keeps the running average ``ax`` of the iterates in its state.
* While averaging, ``evaluating()`` swaps the averages into the network (validation and the final
  test read them) and back. The checkpoint holds the current weights (the network) and the
  averages (this trainer's state), so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from nas_core import RunContext, StepResult, Task, Trainer
from nas_tasks.gradients import store_gradients
from nas_tasks.options import NtAsgdOptions


class NtAsgdTrainer(Trainer):
    def __init__(self, options: NtAsgdOptions, *, network: nn.Module, task: Task, epochs: int):
        self.opts, self.network, self.task = options, network, task
        self.params = list(network.parameters())
        self.history: list[float] = []  # validation losses while not averaging
        self.switched_at: int | None = None  # the epoch after which averaging began
        self.optimizer: torch.optim.Optimizer = self._sgd()

    @property
    def averaging(self) -> bool:
        return self.switched_at is not None

    def _sgd(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.params, lr=self.opts.lr, weight_decay=self.opts.weight_decay)

    def _asgd(self) -> torch.optim.Optimizer:
        return torch.optim.ASGD(self.params, lr=self.opts.lr, t0=0, lambd=0.0, weight_decay=self.opts.weight_decay)

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        out = self.task.forward(self.network, batch, state.get("train"))
        store_gradients(out.loss, self.params, run)
        if self.opts.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.opts.grad_clip)
        group = self.optimizer.param_groups[0]
        scale = float(getattr(batch, "lr_scale", 1.0)) if self.opts.scale_lr_by_window else 1.0
        group["lr"] = self.opts.lr * scale
        self.optimizer.step()
        group["lr"] = self.opts.lr
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult({"train": out.stats}, {"train": out.state})

    def should_switch(self, valid_loss: float) -> bool:
        """The public code's non-monotone trigger, before ``valid_loss`` joins the history."""
        n = self.opts.nonmono
        return len(self.history) > n and valid_loss > min(self.history[:-n] if n else self.history)

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        valid = metrics.get("valid_loss")
        if not self.averaging and valid is not None:
            if self.should_switch(valid):
                self.switched_at = run.epoch
                self.optimizer = self._asgd()
            self.history.append(float(valid))
        return {"lr": self.opts.lr, "averaging": float(self.averaging)}

    def averages(self) -> list[torch.Tensor | None]:
        """The averaged weights, per parameter (None before the first averaged step)."""
        if not self.averaging:
            return [None] * len(self.params)
        return [self.optimizer.state.get(p, {}).get("ax") for p in self.params]

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        saved = []
        with torch.no_grad():
            for p, ax in zip(self.params, self.averages()):
                if ax is not None:
                    saved.append((p, p.detach().clone()))
                    p.copy_(ax)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in saved:
                    p.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "history": list(self.history),
                "switched_at": -1 if self.switched_at is None else self.switched_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [float(v) for v in state["history"]]
        self.switched_at = None if state["switched_at"] < 0 else int(state["switched_at"])
        self.optimizer = self._asgd() if self.averaging else self._sgd()
        self.optimizer.load_state_dict(state["optimizer"])
