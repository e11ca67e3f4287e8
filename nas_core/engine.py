"""One loop for search and training: epochs, steps, hooks, atomic checkpoints, resume, progress.

What differs between a search and a training run is a :class:`Phase`; the engine does the rest.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from nas_core import checkpoint as ckpt
from nas_core import distributed
from nas_core.config import to_dict
from nas_core.context import RunContext
from nas_core.errors import CheckpointError, DataError, NasError
from nas_core.interfaces import StepResult, Task
from nas_core.run import CHECKPOINT_FILE

log = logging.getLogger("nas")



class Phase:
    """What one kind of run does per epoch; the engine does the rest (steps under a progress bar,
    lifecycle hooks, atomic checkpoints of :meth:`parts` and :meth:`extra_state`, ``--resume``).

    The search and the training are phases; so is each of a discretizer's final phases
    (:meth:`~nas_core.interfaces.Discretizer.final_phases`), which sets ``name`` (its folder,
    ``RUN_DIR/final/<name>``, and ``run.phase``) and ``epochs`` (its length; an "epoch" is whatever
    unit it checkpoints after, e.g. one decision of DARTS-PT). Its run's ``components`` start as
    the search's. A phase implements the methods below that raise NotImplementedError."""

    task: Task
    name: str = ""
    epochs: int = 0
    max_steps_per_epoch: int | None = None
    strengths: Mapping[str, Tensor] = {}  # passed to nas_epoch_end (search: the latest op strengths)

    def describe(self) -> str:
        """One line for the log as the run starts."""
        raise NotImplementedError

    def parts(self) -> dict[str, Any]:
        """Objects with ``state_dict``/``load_state_dict`` that the checkpoint holds."""
        raise NotImplementedError

    def components(self) -> dict[str, Any]:
        """The run's components, by role (``run.components``); those with hooks are registered."""
        raise NotImplementedError

    def batches(self, run: RunContext) -> tuple[Iterable[Any], int]:
        """This epoch's step inputs and how many there are."""
        raise NotImplementedError

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        raise NotImplementedError

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        """Schedules, evaluation, derivation; returns metrics to add to the epoch's."""
        raise NotImplementedError

    def final(self, run: RunContext) -> dict[str, float]:
        """Metrics measured once, after the last epoch (training: the test set)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Plain values the checkpoint keeps beside the parts (e.g. the genotype, the results)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    def finish(self, run: RunContext) -> Any:
        """The result of the run, after the last epoch (also for a resumed, finished run)."""
        raise NotImplementedError


def restore(phase: Phase, run: RunContext) -> dict[str, Any]:
    """Load ``run.dir``'s checkpoint into ``phase`` and ``run`` before anything is written: the
    parts, the random streams (in a torchrun job each process's own, and its own buffers) and where
    the run stopped. A checkpoint of another number of processes is refused: each process's share
    of every batch, its batch statistics and its random streams depend on that number."""
    path = run.dir / CHECKPOINT_FILE
    state = ckpt.load_checkpoint(path)
    saved = ckpt.saved_world_size(state)
    if saved != run.world_size:
        raise CheckpointError(f"{run.dir} was run by {saved} process{'es' if saved > 1 else ''} and this job has "
                              f"{run.world_size}: a resume keeps the number, as the results depend on it; "
                              f"continue with: {distributed.resume_command(run.phase, run.dir, saved)}")
    ckpt.resume_from(path, state, phase.parts(), rank=run.rank)
    run.start_epoch, run.step = state["epoch"] + 1, state["step"]
    phase.load_extra_state(state.get("extra", {}))
    run.metrics, run.wall_time_s = dict(state.get("metrics", {})), float(state.get("wall_time_s", 0.0))
    run.epochs_done = run.start_epoch
    return state


def run_phase(phase: Phase, run: RunContext, *, restored: Mapping[str, Any] | None = None,
              progress: bool | None = None) -> Any:
    """Run ``phase`` in ``run.dir``, or continue it from ``restored`` (what :func:`restore`
    loaded): the epoch loop with its hooks and checkpoints."""
    pm = run.plugin_manager
    stopped: str | None = None
    if restored is not None:
        stopped = run.stopped = restored.get("stopped")
        if stopped or run.start_epoch >= run.epochs:
            log.info("%s is already complete (%d of %d epochs%s); reporting its result", run.dir,
                     run.start_epoch, run.epochs, f", stopped early: {stopped}" if stopped else "")
        else:
            log.info("resuming %s at epoch %d of %d", run.dir, run.start_epoch + 1, run.epochs)
    log.info("%s", phase.describe())
    run.components = phase.components()
    registered = _register_components(pm, run)
    pm.hook.nas_run_start(run=run)
    try:
        epoch = run.start_epoch
        base_time, started = run.wall_time_s, time.monotonic()
        while stopped is None and epoch < run.epochs:
            run.start_epoch_state(epoch)
            pm.hook.nas_epoch_start(run=run)
            metrics = run_steps(phase, run, progress)
            metrics.update(phase.end_epoch(run, metrics))
            metrics.update(run.epoch_metrics)
            stopped = run.stopped = distributed.broadcast(pm.hook.nas_should_stop(run=run, epoch=epoch,
                                                                                  metrics=metrics))
            metrics.update(run.epoch_metrics)  # and what the stopping rules measured (a Hessian eigenvalue)
            run.wall_time_s, run.epochs_done = base_time + time.monotonic() - started, epoch + 1
            if stopped is not None or epoch + 1 == run.epochs:
                metrics.update(phase.final(run))
            run.metrics = metrics
            ranks = distributed.gather(ckpt.rank_state(phase.parts())) if run.world_size > 1 else None
            if run.is_writer:
                ckpt.save_checkpoint(run.dir / CHECKPOINT_FILE, {
                    "world_size": run.world_size, "ranks": ranks,
                    "phase": run.phase, "epoch": epoch, "step": run.step, "stopped": stopped,
                    "metrics": metrics, "wall_time_s": run.wall_time_s,
                    **{name: part.state_dict() for name, part in phase.parts().items()},
                    "extra": phase.extra_state(), "rng": ckpt.rng_state(), "config": to_dict(run.config),
                })
            log.info("epoch %d/%d %s", epoch + 1, run.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
            pm.hook.nas_epoch_end(run=run, epoch=epoch, metrics=metrics, genotype=run.genotype,
                                  strengths=phase.strengths)
            if stopped is not None:
                log.info("stopped early after epoch %d: %s", epoch + 1, stopped)
            epoch += 1
        result = phase.finish(run)
    except BaseException as e:
        error: BaseException | None = e
        raise
    else:
        error = None
    finally:
        try:  # components registered for the run hear its end too
            pm.hook.nas_run_end(run=run, genotype=run.genotype, error=error)
        finally:
            for name in registered:
                pm.unregister(name=name)
    return result


def _register_components(pm: Any, run: RunContext) -> list[str]:
    """Let components implement lifecycle hooks themselves, for this run only."""
    names = []
    for role, obj in run.components.items():
        if any(name.startswith("nas_") for name in dir(type(obj))) and pm.get_name(obj) is None:
            name = f"{run.phase}:{role}:{id(obj)}"
            pm.register(obj, name=name)
            names.append(name)
    return names


PROGRESS_EVERY_S = 30.0  # without a progress bar, log a line this often


def run_steps(phase: Phase, run: RunContext, progress: bool | None) -> dict[str, float]:
    """One epoch of steps under a progress bar, firing ``nas_step_end`` after each; returns the
    epoch means of the step metrics, per group through ``task.report``."""
    batches, total = phase.batches(run)
    if phase.max_steps_per_epoch is not None:
        total = min(total, phase.max_steps_per_epoch)
    sums: dict[str, dict[str, Tensor]] = {}
    state: Mapping[str, Any] = {}
    done = 0
    started = last_log = time.monotonic()
    desc = f"epoch {run.epoch + 1}/{run.epochs}"
    with tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
              disable=not progress if progress is not None else None) as bar:
        for batch in limited(batches, total):
            result = phase.step(batch, state, run)
            state = result.state
            flat = {}
            for group, stats in result.metrics.items():
                into = sums.setdefault(group, {})
                for key, value in stats.items():
                    value = value.detach()
                    into[key] = into[key] + value if key in into else value
                    flat[f"{group}_{key}"] = value
            run.plugin_manager.hook.nas_step_end(run=run, step=run.step, metrics=flat)
            run.step += 1
            done += 1
            if run.world_size == 1 and done % CHECK_FINITE_EVERY == 0:  # one device sync per N steps
                _check_finite(flat, run, f"step {done}")
            bar.update()
            now = time.monotonic()
            if bar.disable and now - last_log >= PROGRESS_EVERY_S and done < total:
                last_log = now
                eta = (now - started) / done * (total - done)
                log.info("%s step %d/%d %s eta %s", desc, done, total, _loss_text(flat), _duration(eta))
            elif not bar.disable and (done % 10 == 1 or done == total):  # reading a loss waits for the device
                bar.set_postfix_str(_loss_text(flat))
    if done == 0:
        raise DataError(f"epoch {run.epoch + 1} had no batches: the data is smaller than one batch")
    keys = [(g, k) for g, stats in sums.items() for k in stats]
    totals = distributed.sum_floats([float(sums[g][k]) for g, k in keys])  # every rank ran `done` steps
    means: dict[str, dict[str, float]] = {}
    for (g, k), total in zip(keys, totals):
        means.setdefault(g, {})[k] = total / (done * run.world_size)
    _check_finite({f"{g}_{k}": v for g, m in means.items() for k, v in m.items()}, run, "the end")  # same on all ranks
    return report(phase.task, means)


CHECK_FINITE_EVERY = 10


def _check_finite(metrics: Mapping[str, Tensor | float], run: RunContext, when: str) -> None:
    """A diverged run stops before its next checkpoint, so the last one saved stays a good one."""
    bad = {k: float(v) for k, v in metrics.items() if k.endswith("loss") and not math.isfinite(float(v))}
    if not bad:
        return
    kept = (f"the checkpoint of epoch {run.epoch} in {run.dir} is kept" if (run.dir / CHECKPOINT_FILE).is_file()
            else "no epoch had finished, so no checkpoint was written")
    raise NasError(f"the run diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} at {when} of epoch "
                   f"{run.epoch + 1}; {kept}; lower the learning rates or check the data")


def report(task: Task, groups: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Flatten per-group means into ``group_metric`` after the task's own reporting."""
    return {f"{group}_{k}": v for group, means in groups.items() for k, v in task.report(means).items()}


def _loss_text(flat: Mapping[str, Tensor]) -> str:
    loss = flat.get("train_loss")
    return f"loss={float(loss):.3f}" if loss is not None else ""


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@torch.no_grad()
def evaluate(task: Task, model: Callable[..., Any], stream: str, *, batch_size: int, run: RunContext,
             group: str | None = None, max_batches: int | None = None) -> dict[str, float]:
    """The task's metrics of ``model`` over ``stream`` (every example, fixed order), as
    ``{group}_{metric}`` (group defaults to the stream's name). The caller sets eval mode."""
    sums: dict[str, float] = {}
    count = 0
    state = None
    for batch in limited(task.loader(stream, batch_size=batch_size, run=run, evaluation=True), max_batches):
        out = task.forward(model, batch, state)
        state = out.state
        for key, value in out.stats.items():
            sums[key] = sums.get(key, 0.0) + float(value) * out.count
        count += out.count
    keys = sorted(sums)
    *totals, count = distributed.sum_floats([sums[k] for k in keys] + [float(count)])  # all ranks' shards
    if count == 0:
        raise DataError(f"the {stream} data of dataset {run.config.dataset.name!r} is empty")
    return report(task, {group or stream: {k: v / count for k, v in zip(keys, totals)}})


def limited(it: Iterable[Any], limit: int | None) -> Iterator[Any]:
    for i, item in enumerate(it):
        if limit is not None and i >= limit:
            return
        yield item
