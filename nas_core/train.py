"""The training phase: a discrete network from scratch (``nas train``; transfer evaluators reuse it).

Selection reads the ``valid`` stream every epoch; the ``test`` stream is read once, at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nas_core import checkpoint as ckpt
from nas_core.components import build
from nas_core.config import Component, Config, apply_threads, require, resolve_device, sync_batchnorm
from nas_core.context import RunContext
from nas_core.data import build_task
from nas_core.engine import Phase, evaluate
from nas_core.files import write_text_atomic
from nas_core.genotype import Genotype
from nas_core.interfaces import SearchSpace, StepResult, Task, Trainer
from nas_core.plugins import Registries
from nas_core.run import RESULTS_FILE

TRAIN_KINDS = ("task", "dataset", "space", "trainer")


def _tensors(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, list | tuple):
        return [t for item in output for t in _tensors(item)]
    return []


def measure(network: nn.Module, inputs: tuple[Any, ...]) -> dict[str, int]:
    """Parameters and multiply-adds of one example's inference (eval mode).

    Parameters are those inference uses (they receive a gradient from the eval-mode output), so
    training-only parts such as an auxiliary head are left out, as papers count them."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = network.training
    network.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            output = network(*inputs)
        network.zero_grad(set_to_none=True)
        tensors = [t for t in _tensors(output) if t.requires_grad]
        if tensors:
            torch.autograd.backward([t.sum() for t in tensors])
        used = sum(p.numel() for p in network.parameters() if p.grad is not None)
        network.zero_grad(set_to_none=True)
    finally:
        network.train(was_training)
    return {"params": used, "params_total": sum(p.numel() for p in network.parameters()),
            "multiply_adds": counter.get_total_flops() // 2}  # the counter counts a multiply-add as two FLOPs


class TrainPhase(Phase):
    def __init__(self, config: Config, device: torch.device, genotype: Genotype, task: Task, space: SearchSpace,
                 network: nn.Module, trainer: Trainer, sizes: dict[str, int]):
        self.config, self.device, self.genotype, self.task, self.space = config, device, genotype, task, space
        self.network, self.trainer, self.sizes = network, trainer, sizes
        self.settings = config.train
        self.max_steps_per_epoch = self.settings.max_steps_per_epoch
        self.results: dict[str, Any] | None = None
        self.valid: dict[str, float] = {}  # the last validation metrics, what selection reads

    def describe(self) -> str:
        c = self.config
        return (f"training: space={c.space.name} dataset={c.dataset.name} task={c.task.name} trainer={c.trainer.name} "
                f"{self.sizes['params'] / 1e6:.3f}M params, {self.sizes['multiply_adds'] / 1e6:.1f}M multiply-adds, "
                f"device {self.device}")

    def parts(self) -> dict[str, Any]:
        return {"network": self.network, "trainer": self.trainer}

    def components(self) -> dict[str, Any]:
        return {"task": self.task, "space": self.space, "network": self.network, "trainer": self.trainer}

    def batches(self, run: RunContext) -> tuple[Iterable[Any], int]:
        loader = self.task.loader("train", batch_size=self.settings.batch_size, run=run)
        return loader, len(loader)

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        self.network.train()
        return self.trainer.step(batch, state, run)

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        every, last = self.settings.eval_every, run.epoch + 1 == run.epochs
        if "valid" in self.task.streams("train") and (last or (every and (run.epoch + 1) % every == 0)):
            out.update(self.evaluate("valid", run))
            self.valid = {k: v for k, v in out.items() if k.startswith("valid_")}
        out.update(self.trainer.end_epoch(run, {**metrics, **out}))
        return out

    def evaluate(self, stream: str, run: RunContext) -> dict[str, float]:
        self.network.eval()
        try:
            with self.trainer.evaluating():
                return evaluate(self.task, self.network, stream, batch_size=self.settings.batch_size, run=run,
                                max_batches=self.max_steps_per_epoch)
        finally:
            self.network.train()

    def final(self, run: RunContext) -> dict[str, float]:
        test = self.evaluate("test", run)
        self.results = {**self.valid, **test, **self.sizes, "epochs": run.epochs_done, "dataset": self.config.dataset.name,
                        "space": self.config.space.name, "task": self.config.task.name,
                        "wall_time_s": run.wall_time_s, "device": run.device_name}
        return test

    def extra_state(self) -> dict[str, Any]:
        return {"results": self.results}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.results = state.get("results")

    def finish(self, run: RunContext) -> dict[str, Any]:
        if self.results is None:  # resumed a checkpoint written before the last epoch's test
            self.final(run)
        if run.is_writer:
            write_text_atomic(run.dir / RESULTS_FILE, json.dumps(self.results, indent=2) + "\n")
        return self.results


def prepare_training(registries: Registries, config: Config, genotype: Genotype) -> TrainPhase:
    """Seed, load the data and build a freshly initialised network from ``genotype``."""
    require(config, registries, TRAIN_KINDS, "nas train")
    device = resolve_device(config.device)
    config = apply_threads(config)
    ckpt.seed_everything(config.seed)
    torch.backends.cudnn.benchmark = False
    task = build_task(registries, config)
    task.check_batch_size("train", config.train.batch_size, "train.batch_size")
    space: SearchSpace = build(registries.spaces, Component(config.space.name, config.network), SearchSpace)
    space.validate(genotype)
    network = sync_batchnorm(space.build_network(genotype, task.info), config.train.sync_batchnorm, device,
                             "train.sync_batchnorm").to(device)
    sizes = measure(network, task.example_inputs(device))
    trainer: Trainer = build(registries.trainers, config.trainer, Trainer, network=network, task=task,
                             epochs=config.train.epochs)
    return TrainPhase(config, device, genotype, task, space, network, trainer, sizes)


def format_results(results: Mapping[str, Any]) -> str:
    tests = sorted((k for k in results if k.startswith("test_")), key=lambda k: (k == "test_loss", k))
    parts = [f"{k[len('test_'):].replace('_', ' ')} {_value(k, results[k])}" for k in tests]
    parts += [f"{results['params'] / 1e6:.3f} M params", f"{results['multiply_adds'] / 1e6:.1f} M multiply-adds"]
    return "test " + ", ".join(parts)


def _value(key: str, value: float) -> str:
    return f"{100 * value:.2f} %" if key.endswith(("error", "acc")) else f"{value:.2f}"
