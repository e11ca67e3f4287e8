"""The search phase: bilevel steps on the task's weight and architecture streams, then the
discretizer's genotype every epoch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from nas_core import checkpoint as ckpt
from nas_core.components import build, build_space
from nas_core.config import Config, apply_threads, require, resolve_device, sync_batchnorm
from nas_core.context import RunContext
from nas_core.data import build_task
from nas_core.engine import Phase, evaluate, restore, run_phase
from nas_core.files import write_text_atomic
from nas_core.errors import ConfigError, PluginError
from nas_core.genotype import Genotype
from nas_core.interfaces import (ArchSpec, BilevelOptimizer, Discretizer, Perturbation, Relaxation, SearchSpace,
                                 StepResult, Supernet, Task)
from nas_core.plugins import Registries
from nas_core.run import CHECKPOINT_FILE, GENOTYPE_FILE, RESULTS_FILE, mark_run_dir


SEARCH_KINDS = ("task", "dataset", "space", "relaxation", "optimizer", "discretizer")


class SearchPhase(Phase):
    """Everything a search needs, built (and validated) before a run directory is created."""

    def __init__(self, config: Config, device: torch.device, task: Task, space: SearchSpace, supernet: Supernet,
                 relaxation: Relaxation, optimizer: BilevelOptimizer, discretizer: Discretizer,
                 perturbation: Perturbation | None = None):
        self.config, self.device, self.task, self.space = config, device, task, space
        self.spec: ArchSpec = space.arch_spec()
        self.supernet, self.relaxation, self.optimizer, self.discretizer = supernet, relaxation, optimizer, discretizer
        self.perturbation = perturbation
        self.settings = config.search
        self.max_steps_per_epoch = self.settings.max_steps_per_epoch
        self.genotype: Genotype | None = None
        self.strengths: Mapping[str, Tensor] = {}

    def describe(self) -> str:
        c = self.config
        params = sum(p.numel() for p in self.supernet.parameters())
        return (f"search: space={c.space.name} optimizer={c.optimizer.name} dataset={c.dataset.name} task={c.task.name} "
                f"device={self.device} supernet={params / 1e6:.3f}M params")

    def parts(self) -> dict[str, Any]:
        return {"supernet": self.supernet, "relaxation": self.relaxation, "optimizer": self.optimizer}

    def components(self) -> dict[str, Any]:
        parts = {"task": self.task, "space": self.space, "supernet": self.supernet, "relaxation": self.relaxation,
                 "optimizer": self.optimizer, "discretizer": self.discretizer}
        return parts if self.perturbation is None else {**parts, "perturbation": self.perturbation}

    def batches(self, run: RunContext) -> tuple[Iterable[Any], int]:
        size = self.settings.batch_size
        weights = self.task.loader("weights", batch_size=size, run=run)
        arch = self.task.loader("arch", batch_size=size, run=run)
        return zip(weights, arch), min(len(weights), len(arch))

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        self.supernet.train()
        return self.optimizer.step(batch[0], batch[1], state, run)

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        out = self.optimizer.end_epoch(run)
        every = self.settings.eval_every
        if every and (run.epoch + 1) % every == 0:
            out.update(self.evaluate(run))
        self.strengths = self.relaxation.strengths()
        genotype = self._checked(self.discretizer.derive(self.strengths, self.spec, run))
        self.genotype = run.genotype = genotype
        if run.is_writer:
            (run.dir / "genotypes").mkdir(exist_ok=True)
            text = genotype.to_json()
            write_text_atomic(run.dir / "genotypes" / f"epoch_{run.epoch + 1:03d}.json", text)
            write_text_atomic(run.dir / GENOTYPE_FILE, text)
        return out

    def _checked(self, genotype: Any) -> Genotype:
        if not isinstance(genotype, Genotype):
            raise PluginError(f"discretizer {self.config.discretizer.name!r} returned {type(genotype).__name__}, "
                              f"not a Genotype")
        return genotype

    def evaluate(self, run: RunContext) -> dict[str, float]:
        """The supernet (eval mode, deterministic mixing weights) on the architecture stream."""
        self.supernet.eval()
        try:
            with torch.no_grad():
                mix = self.relaxation.weights(None)
            return evaluate(self.task, lambda *inputs: self.supernet(*inputs, arch_weights=mix), "arch",
                            batch_size=self.settings.batch_size, run=run, group="valid",
                            max_batches=self.max_steps_per_epoch)
        finally:
            self.supernet.train()

    def extra_state(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict() if self.genotype is not None else None}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if state.get("genotype"):
            self.genotype = Genotype.from_dict(state["genotype"], source="checkpoint")

    def finish(self, run: RunContext) -> Genotype | None:
        """The discretizer's final phases and final genotype, then ``results.json``: the genotype,
        the last validation metrics, the search's cost. A resumed, finished search passes through
        here again: its final phases are complete, so the final rule sees what it saw before."""
        # at least one epoch ran, and this is the search's end (a staged search's last stage)
        if self.genotype is not None and run.stage == run.stages:
            for phase in self.discretizer.final_phases(run):
                run_final_phase(phase, run)
            final = self.discretizer.final(self.relaxation.strengths(), self.spec, run)
            if final is not None:
                self.genotype = self._checked(final)
                if run.is_writer:
                    write_text_atomic(run.dir / GENOTYPE_FILE, self.genotype.to_json())
        run.genotype = self.genotype
        if run.is_writer and self.genotype is not None:
            c = self.config
            results = {"genotype": self.genotype.to_dict(), **{k: v for k, v in run.metrics.items()
                                                                 if k.startswith("valid_")},
                       "epochs": run.epochs_done, "wall_time_s": run.wall_time_s,
                       "device": run.device_name, "space": c.space.name, "optimizer": c.optimizer.name,
                       "dataset": c.dataset.name, "task": c.task.name, "seed": c.seed,
                       **({"stopped": run.stopped} if run.stopped else {})}
            run.plugin_manager.hook.nas_search_results(run=run, genotype=self.genotype, results=results)
            write_text_atomic(run.dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
        return self.genotype


FINAL_DIR = "final"  # RUN_DIR/final/<phase name>: the discretizer's final phases


def run_final_phase(phase: Phase, parent: RunContext) -> Any:
    """Run one of the discretizer's final phases in ``RUN_DIR/final/<name>``, a run directory of its
    own (checkpoint, log, monitors), continued from its checkpoint when there is one."""
    name = getattr(phase, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or not isinstance(getattr(phase, "epochs", None), int):
        raise PluginError(f"discretizer {parent.config.discretizer.name!r}: a final phase needs a `name` (an "
                          f"identifier) and `epochs` (an int), got {name!r}")
    sub = RunContext(dir=parent.dir / FINAL_DIR / name, config=parent.config, phase=name, device=parent.device,
                     plugin_manager=parent.plugin_manager, epochs=phase.epochs, spec=parent.spec,
                     genotype=parent.genotype, components=dict(parent.components), rank=parent.rank,
                     world_size=parent.world_size)
    restored = restore(phase, sub) if (sub.dir / CHECKPOINT_FILE).is_file() else None
    if sub.is_writer:
        mark_run_dir(sub.dir, name)
    return run_phase(phase, sub, restored=restored)


def prepare_search(registries: Registries, config: Config) -> SearchPhase:
    """Seed, load the data and build every component; raises NasError on bad input."""
    require(config, registries, SEARCH_KINDS, "nas run")
    device = resolve_device(config.device)
    config = apply_threads(config)
    ckpt.seed_everything(config.seed)
    torch.backends.cudnn.benchmark = False  # autotuned kernels would break run-to-run identity
    task = build_task(registries, config)
    task.check_batch_size("search", config.search.batch_size, "search.batch_size")
    space: SearchSpace = build_space(registries, config.space)
    spec = space.arch_spec()
    supernet: Supernet = sync_batchnorm(space.build_supernet(task.info), config.search.sync_batchnorm, device,
                                        "search.sync_batchnorm").to(device)
    relaxation: Relaxation = build(registries.relaxations, config.relaxation, Relaxation, spec=spec).to(device)
    optimizer: BilevelOptimizer = build(registries.optimizers, config.optimizer, BilevelOptimizer,
                                        supernet=supernet, relaxation=relaxation, task=task,
                                        epochs=config.search.epochs)
    discretizer: Discretizer = build(registries.discretizers, config.discretizer, Discretizer)
    perturbation = None
    if config.perturbation.name is not None:
        if not optimizer.supports_perturbation:
            raise ConfigError(f"perturbation {config.perturbation.name!r}: optimizer {config.optimizer.name!r} does not "
                              f"apply perturbations (its supports_perturbation is false); choose one that does")
        perturbation = build(registries.perturbations, config.perturbation, Perturbation, spec=spec)
    return SearchPhase(config, device, task, space, supernet, relaxation, optimizer, discretizer, perturbation)
