"""Weight-sharing random search (Li & Talwalkar 2019) as three components of an ordinary search.

* ``uniform_path`` (relaxation, no parameters): ``sample(generator)`` draws one path through the
  supernet per step; ``weights(sample)`` is its one-hot ``[edges, ops]`` matrix with
  ``MixingWeights.chosen`` set, so the supernet runs only the chosen op of each edge;
  ``weights(None)`` is the uniform mixture (what the engine's supernet evaluation uses).
* ``ws_random`` (optimizer): weight steps only, on a freshly sampled path each step; no
  architecture gradient. Every forward goes through ``task.forward``, gradients through ``run.reduce``.
* ``ws_select`` (discretizer): samples ``candidates`` cells and scores each with the trained supernet
  on the ``arch`` stream (``nas_core.evaluate``, at most ``max_batches`` batches), keeps the best.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from nas_core import (ArchSpec, BilevelOptimizer, Discretizer, Genotype, MixingWeights, Relaxation, RunContext,
                      StepResult, Supernet, Task, add_loss_terms, evaluate)
from nas_random.options import UniformPathOptions, WsRandomOptions, WsSelectOptions
from nas_random.sampler import genotype_columns, live_ops, one_hot, sample_candidate, sample_genotype
from nas_select.protocol import higher_is_better, pick_metric

log = logging.getLogger("nas")

SELECT_STREAM = "nas_random.ws_select"


class UniformPathRelaxation(Relaxation):
    """No architecture parameters: a uniformly sampled path per step (see the module docstring)."""

    def __init__(self, options: UniformPathOptions, *, spec: ArchSpec):
        super().__init__()
        self.spec, self.mode = spec, options.mode
        if self.mode == "cell":
            genotype_columns(sample_genotype(spec, torch.Generator().manual_seed(0)), spec)  # needs a zero op
            live_ops(spec)
        # a buffer only to know the device the supernet lives on (moves with .to(device))
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def sample(self, generator: torch.Generator) -> dict[str, tuple[int, ...]]:
        """Per cell type, one op column per edge (the ``MixingWeights.chosen`` form)."""
        if self.mode == "cell":
            return genotype_columns(sample_genotype(self.spec, generator), self.spec)
        n = len(self.spec.ops)
        return {t: tuple(torch.randint(n, (len(edges),), generator=generator).tolist())
                for t, edges in self.spec.edges.items()}

    def weights(self, sample: Mapping[str, tuple[int, ...]] | None = None) -> MixingWeights:
        device = self._anchor.device
        if sample is None:
            return MixingWeights({t: torch.full(self.spec.shape(t), 1.0 / len(self.spec.ops), device=device)
                                  for t in self.spec.edges})
        return MixingWeights(one_hot(sample, self.spec, device), chosen={t: tuple(c) for t, c in sample.items()})

    def strengths(self) -> dict[str, Tensor]:
        return {t: w.detach() for t, w in self.weights(None).items()}


class WsRandomOptimizer(BilevelOptimizer):
    """SGD on the supernet's weights along one sampled path per step; the arch batch is not trained on."""

    def __init__(self, options: WsRandomOptions, *, supernet: Supernet, relaxation: Relaxation, task: Task,
                 epochs: int):
        self.opts, self.net, self.relax, self.task = options, supernet, relaxation, task
        self.weights = list(supernet.parameters())
        self.w_opt = torch.optim.SGD(self.weights, lr=options.w_lr, momentum=options.w_momentum,
                                     weight_decay=options.w_weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=max(epochs, 1),
                                                                    eta_min=options.w_lr_min)

    def step(self, train_batch: Any, val_batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        sample = self.relax.sample(run.generator("relaxation"))
        with torch.no_grad():
            mix = self.relax.weights(sample)
        out = add_loss_terms(self.task.forward(lambda *inputs: self.net(*inputs, arch_weights=mix), train_batch,
                                               state.get("weights")), run.components.values(), "weights", mix)
        grads = torch.autograd.grad(out.loss, self.weights, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(self.weights, grads)]  # ops off the path
        for p, g in zip(self.weights, run.reduce(grads)):
            p.grad = g
        if self.opts.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.weights, self.opts.grad_clip)
        self.w_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        return StepResult({"train": out.stats}, {"weights": out.state, "arch": state.get("arch")})

    def end_epoch(self, run: RunContext | None = None) -> dict[str, float]:
        lr = self.w_opt.param_groups[0]["lr"]
        self.scheduler.step()
        return {"lr": lr}

    def state_dict(self) -> dict[str, Any]:
        return {"w_opt": self.w_opt.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_opt.load_state_dict(state["w_opt"])
        self.scheduler.load_state_dict(state["scheduler"])


class WsSelectDiscretizer(Discretizer):
    """Scores ``candidates`` uniformly sampled cells with the supernet; keeps the best.

    The candidates depend only on the run's seed (the same cells are scored every epoch, so the
    scores are comparable across epochs). Without a run (``nas derive``) there is no supernet to
    score with: it returns the uniformly sampled cell of ``seed`` and logs that it did."""

    def __init__(self, options: WsSelectOptions):
        self.opts = options

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        if run is None:
            log.warning("ws_select: no supernet to score candidates with (nas derive); returning the uniformly "
                        "sampled cell of seed %d. The search run's own genotype.json holds the scored choice.",
                        self.opts.seed)
            return sample_candidate(spec, self.opts.seed, 0, SELECT_STREAM)
        supernet, task = run.components["supernet"], run.components["task"]
        best: tuple[float, int, Genotype] | None = None
        metric = None
        supernet.eval()
        try:
            for i in range(self.opts.candidates):
                genotype = sample_candidate(spec, run.seed, i, SELECT_STREAM)
                columns = genotype_columns(genotype, spec)
                with torch.no_grad():
                    mix = MixingWeights(one_hot(columns, spec, run.device), chosen=columns)
                scores = evaluate(task, lambda *inputs, mix=mix: supernet(*inputs, arch_weights=mix), "arch",
                                  batch_size=run.config.search.batch_size, run=run, group="valid",
                                  max_batches=self.opts.max_batches)
                metric = metric or pick_metric(scores, self.opts.metric)
                score = -scores[metric] if higher_is_better(metric) else scores[metric]
                if best is None or score < best[0]:
                    best = (score, i, genotype)
        finally:
            supernet.train()
        assert best is not None and metric is not None
        value = -best[0] if higher_is_better(metric) else best[0]
        run.epoch_metrics[f"ws_select_{metric}"] = value
        run.epoch_metrics["ws_select_candidate"] = float(best[1])
        return best[2]
