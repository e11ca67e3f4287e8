"""The training phase: a discrete network from scratch (``nas train``; transfer evaluators reuse it).

Selection reads the ``valid`` stream every epoch; the ``test`` stream is read once, at the end.
``train.test_model`` says which weights the test reads: ``best_valid``, those of the epoch with
the lowest ``valid_loss`` (ties: the earlier), as the DARTS RNN evaluation code tests the model
it saved whenever validation improved; or ``last``, the last epoch's (the DARTS CNN evaluation,
which holds out no validation data). The weights are those validation read: with a trainer that
averages (``nt_asgd``), the averages. They are kept in ``best.pt`` beside the checkpoint, and the
checkpoint records which epoch they are, so a resumed run tests the same weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nas_core import checkpoint as ckpt
from nas_core.components import build, build_space
from nas_core.config import Component, Config, apply_threads, require, resolve_device, sync_batchnorm
from nas_core.context import RunContext
from nas_core.data import build_task
from nas_core.engine import Phase, evaluate
from nas_core.errors import CheckpointError, ConfigError
from nas_core.files import write_text_atomic
from nas_core.genotype import Genotype
from nas_core.interfaces import SearchSpace, StepResult, Task, Trainer
from nas_core.plugins import Registries
from nas_core.run import BEST_FILE, CHECKPOINT_FILE, RESULTS_FILE

TRAIN_KINDS = ("task", "dataset", "space", "trainer")

log = logging.getLogger("nas")


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


def resolve_test_model(setting: str, task: Task) -> str:
    """``train.test_model`` resolved for ``task``: ``auto`` is ``best_valid`` where the task has a
    validation stream and ``last`` where it has none; ``best_valid`` without one is an error."""
    has_valid = "valid" in task.streams("train")
    if setting == "auto":
        return "best_valid" if has_valid else "last"
    if setting == "best_valid" and not has_valid:
        raise ConfigError("train.test_model=best_valid needs validation data, and this task holds none out "
                          "(classification: set task.valid_split above 0); or set train.test_model=last")
    return setting


class TrainPhase(Phase):
    def __init__(self, config: Config, device: torch.device, genotype: Genotype, task: Task, space: SearchSpace,
                 network: nn.Module, trainer: Trainer, sizes: dict[str, int]):
        self.config, self.device, self.genotype, self.task, self.space = config, device, genotype, task, space
        self.network, self.trainer, self.sizes = network, trainer, sizes
        self.settings = config.train
        self.max_steps_per_epoch = self.settings.max_steps_per_epoch
        self.results: dict[str, Any] | None = None
        self.valid: dict[str, float] = {}  # the last validation metrics, what selection reads
        self.test_model = resolve_test_model(self.settings.test_model, task)
        self.best: dict[str, Any] | None = None  # {"epoch", "valid"} of the best validation so far (best_valid)
        self._best_weights: dict[str, Tensor] | None = None  # on the CPU; after a resume read from best.pt

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
            with self._evaluation_weights():
                out.update(self._read("valid", run))
                self.valid = {k: v for k, v in out.items() if k.startswith("valid_")}
                if self.test_model == "best_valid" and self._improves():
                    self._keep_best(run)
        out.update(self.trainer.end_epoch(run, {**metrics, **out}))
        return out

    @contextlib.contextmanager
    def _evaluation_weights(self) -> Iterator[None]:
        """Eval mode and the weights the trainer evaluates (its averages, if it keeps any)."""
        self.network.eval()
        try:
            with self.trainer.evaluating():
                yield
        finally:
            self.network.train()

    def _read(self, stream: str, run: RunContext) -> dict[str, float]:
        return evaluate(self.task, self.network, stream, batch_size=self.settings.batch_size, run=run,
                        max_batches=self.max_steps_per_epoch)

    def evaluate(self, stream: str, run: RunContext) -> dict[str, float]:
        with self._evaluation_weights():
            return self._read(stream, run)

    def _improves(self) -> bool:
        """Strictly lower ``valid_loss`` than the best so far (the DARTS RNN code's rule)."""
        if "valid_loss" not in self.valid:
            raise ConfigError(f"task {self.config.task.name!r} reports no loss on its valid stream, which "
                              f"train.test_model=best_valid selects on; set train.test_model=last")
        return self.best is None or self.valid["valid_loss"] < self.best["valid"]["valid_loss"]

    def _keep_best(self, run: RunContext) -> None:
        """Keep the weights validation just read (every rank, for its share of the test) and write
        them to best.pt (the writer); every rank takes the same decision from the same metrics."""
        self.best = {"epoch": run.epoch, "valid": dict(self.valid)}
        self._best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}
        if run.is_writer:
            ckpt.save_checkpoint(run.dir / BEST_FILE, {**self.best, "network": self._best_weights})

    @staticmethod
    def _stored_best(run: RunContext, epoch: int) -> dict[str, Tensor]:
        """The best weights after a resume: best.pt, checked to be of the epoch the checkpoint names."""
        path = run.dir / BEST_FILE
        state = ckpt.load_checkpoint(path)
        if state.get("epoch") != epoch or not isinstance(state.get("network"), dict):
            raise CheckpointError(f"{path} does not hold the weights of epoch {epoch + 1}, the best validation that "
                                  f"{run.dir / CHECKPOINT_FILE} records; it was left untouched")
        return state["network"]

    def _test(self, run: RunContext) -> dict[str, Any]:
        """The test metrics of the weights ``test_model`` names, and which weights they were."""
        if self.test_model == "none":
            return {"tested": "none"}
        if self.test_model == "last" or self.best is None:
            if self.test_model == "best_valid":
                log.info("no epoch was validated: testing the last weights")
            return {**self.evaluate("test", run), "tested": "last", "tested_epoch": run.epochs_done,
                    **{f"tested_{k}": v for k, v in self.valid.items()}}
        weights = self._best_weights if self._best_weights is not None else self._stored_best(run, self.best["epoch"])
        current = {k: v.clone() for k, v in self.network.state_dict().items()}
        self.network.load_state_dict(weights)
        self.network.eval()
        try:  # the kept weights are already those validation read: no swap by the trainer
            test = self._read("test", run)
        finally:
            self.network.load_state_dict(current)  # training goes on from (and checkpoints) the last weights
            self.network.train()
        log.info("tested the weights of epoch %d, the best validation (valid_loss=%.4g)", self.best["epoch"] + 1,
                 self.best["valid"]["valid_loss"])
        return {**test, "tested": "best_valid", "tested_epoch": self.best["epoch"] + 1,
                **{f"tested_{k}": v for k, v in self.best["valid"].items()}}

    def final(self, run: RunContext) -> dict[str, float]:
        tested = self._test(run)
        test = {k: v for k, v in tested.items() if k.startswith("test_")}
        self.results = {**self.valid, **tested, **self.sizes, "epochs": run.epochs_done,
                        "dataset": self.config.dataset.name, "space": self.config.space.name,
                        "task": self.config.task.name, "wall_time_s": run.wall_time_s, "device": run.device_name}
        return test

    def extra_state(self) -> dict[str, Any]:
        return {"results": self.results, "valid": self.valid, "best": self.best}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.results = state.get("results")
        self.valid = dict(state.get("valid") or {})
        self.best = state.get("best")  # its weights are read from best.pt when the test needs them

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
    resolve_test_model(config.train.test_model, task)  # fail before the network is built
    space: SearchSpace = build_space(registries, Component(config.space.name, config.network))
    space.validate(genotype)
    network = sync_batchnorm(space.build_network(genotype, task.info), config.train.sync_batchnorm, device,
                             "train.sync_batchnorm").to(device)
    sizes = measure(network, task.example_inputs(device))
    trainer: Trainer = build(registries.trainers, config.trainer, Trainer, network=network, task=task,
                             epochs=config.train.epochs)
    return TrainPhase(config, device, genotype, task, space, network, trainer, sizes)


def format_results(results: Mapping[str, Any]) -> str:
    """The test metrics (or, where the test set was not read, the last validation ones) and sizes."""
    group = "test" if any(k.startswith("test_") for k in results) else "valid"
    keys = sorted((k for k in results if k.startswith(f"{group}_")), key=lambda k: (k.endswith("_loss"), k))
    parts = [f"{k[len(group) + 1:].replace('_', ' ')} {_value(k, results[k])}" for k in keys]
    parts += [f"{results['params'] / 1e6:.3f} M params", f"{results['multiply_adds'] / 1e6:.1f} M multiply-adds"]
    return f"{group} " + ", ".join(parts)


def _value(key: str, value: float) -> str:
    return f"{100 * value:.2f} %" if key.endswith(("error", "acc")) else f"{value:.2f}"
