"""DARTS-ES and DARTS-ADA (Zela et al., ICLR 2020, section 5): the stop rule on the dominant eigenvalue's
local averages (the authors' src/utils.py ``EVLocalAvg``), and the per-run monitor that measures the
eigenvalue, applies the rule and, for ADA, rolls back with a larger weight decay.

The monitor keeps its history in ``RUN_DIR/robust_darts.json``, each entry keyed by the engine epoch
it was taken at, written before the engine's checkpoint of that epoch; a resumed run drops the
entries of epochs its checkpoint does not hold, so it decides exactly as an uninterrupted run."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from nas_core import ConfigError, Genotype, RunContext, hookimpl, write_text_atomic
from nas_robust_darts.hessian import arch_weight_decay, dominant_eigenvalue
from nas_robust_darts.options import RobustDartsSettings

log = logging.getLogger("nas")

STATE_FILE = "robust_darts.json"
SNAPSHOT_DIR = "robust_darts_snapshots"  # ADA: the parts at each reading, to roll back to
METRIC = "hessian_eigenvalue"
PARTS = ("supernet", "relaxation", "optimizer")  # what the search checkpoints, and ADA restores


def local_averages(values: Sequence[float], window: int) -> list[float]:
    """The authors' local averages: one per reading from the ceil(window/2)-th on, the mean of the
    last ``window`` readings (of all of them while there are fewer)."""
    first = math.ceil(window / 2)
    return [float(np.mean(values[max(0, n - window):n])) for n in range(first, len(values) + 1)]


def stop_epoch(readings: Sequence[tuple[int, float]], *, every: int, window: int, delta: int, factor: float,
               start_epoch: int) -> int | None:
    """``EVLocalAvg.early_stop`` after the reading ``readings[-1]`` ((epoch, eigenvalue) pairs, epochs
    from 0, not the search's last epoch): the epoch whose cell to return, or None to go on. The latest
    local average stands for epoch ``e - every * (window // 2)``; it is compared with the one ``delta``
    readings earlier, which stands for ``every * delta`` epochs before, and the rule stops when their
    ratio exceeds ``factor``, returning that earlier epoch, only if it is ``start_epoch`` or later."""
    if len(readings) < math.ceil(window / 2):
        return None
    earlier = readings[-1][0] - every * (window // 2) - every * delta
    averages = local_averages([v for _, v in readings], window)
    if earlier < start_epoch or len(averages) <= delta:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):  # as numpy divides in theirs
        ratio = np.float64(averages[-1]) / np.float64(averages[-1 - delta])
    return earlier if ratio > factor else None


@attrs.define
class History:
    """What the monitor measured and did, by engine epoch: ``readings`` (epoch, ``at``: the epoch on
    the search's own clock, which ADA sets back, eigenvalue, the cell derived then), ``rollbacks``
    (epoch, ``to``: the clock's epoch restored, the weight decay from then on) and the ``stop``."""

    readings: list[dict[str, Any]] = attrs.Factory(list)
    rollbacks: list[dict[str, Any]] = attrs.Factory(list)
    stop: dict[str, Any] | None = None

    def before(self, epoch: int) -> History:
        """The history of the epochs before ``epoch`` (what a checkpoint of epoch - 1 goes with)."""
        stop = self.stop if self.stop is not None and self.stop["epoch"] < epoch else None
        return History([r for r in self.readings if r["epoch"] < epoch],
                       [r for r in self.rollbacks if r["epoch"] < epoch], stop)

    def clock(self, epoch: int) -> int:
        """Engine epoch -> the search's own epoch: each earlier rollback set it back."""
        return epoch - sum(r["epoch"] - r["to"] for r in self.rollbacks if r["epoch"] < epoch)

    def timeline(self) -> list[dict[str, Any]]:
        """The readings the rule sees now: a rollback to epoch s forgets those taken after s, as the
        authors' reloaded EVLocalAvg does."""
        line: list[dict[str, Any]] = []
        events = sorted([(r["epoch"], 0, r) for r in self.readings] + [(r["epoch"], 1, r) for r in self.rollbacks],
                        key=lambda t: (t[0], t[1]))
        for _, kind, entry in events:
            if kind == 0:
                line.append(entry)
            else:
                line = [r for r in line if r["at"] <= entry["to"]]
        return line


def read_history(run_dir: Path) -> History:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return History()
    data = json.loads(path.read_text())
    return History(data.get("readings", []), data.get("rollbacks", []), data.get("stop"))


class RobustDartsMonitor:
    """One search's eigenvalue readings and the rule on them (registered for the run by the plugin)."""

    def __init__(self, settings: RobustDartsSettings, run: RunContext):
        self.s = settings
        self.run, self.dir = run, run.dir
        self.history = read_history(run.dir).before(run.start_epoch)
        self.initial_weight_decay: float | None = None

    # -- the run ------------------------------------------------------------------------------

    def start(self, run: RunContext) -> None:
        """Reapply a resumed run's weight decay (``check`` has accepted the components)."""
        if self.s.early_stop == "ada":
            optimizer = run.components["optimizer"]
            self.initial_weight_decay = float(optimizer.opts.w_weight_decay)
            if self.history.rollbacks:  # resumed after a rollback: the raised decay (the checkpoint's SGD has it too)
                set_weight_decay(optimizer, self.history.rollbacks[-1]["weight_decay"])

    @hookimpl
    def nas_should_stop(self, run: RunContext, epoch: int) -> str | None:
        if run is not self.run:  # a discretizer's final phase (its own run) is not measured
            return None
        at = self.history.clock(epoch)
        last = epoch + 1 == run.epochs
        if not (at % self.s.every == 0 or last):
            return None
        value = self.measure(run)
        run.epoch_metrics[METRIC] = value
        genotype = run.genotype.to_dict() if run.genotype is not None else None
        self.history.readings.append({"epoch": epoch, "at": at, "eigenvalue": value, "genotype": genotype})
        line = self.history.timeline()
        reason = None
        if self.s.early_stop != "none" and not last:
            earlier = stop_epoch([(r["at"], r["eigenvalue"]) for r in line], every=self.s.every, window=self.s.window,
                                 delta=self.s.delta, factor=self.s.factor, start_epoch=self.s.start_epoch)
            target = next((r for r in line if r["at"] == earlier), None)
            if target is not None and self.s.early_stop == "es":
                reason = (f"RobustDARTS early stop: the Hessian eigenvalue's local average exceeded {self.s.factor}x "
                          f"its value {self.s.delta} readings before; the result is the cell derived at epoch "
                          f"{target['epoch'] + 1}")
                self.history.stop = {"epoch": epoch, "result_epoch": target["epoch"], "genotype": target["genotype"],
                                     "reason": reason}
            elif target is not None and not self.final_iteration(run):
                self.roll_back(run, epoch, target)
        if run.is_writer:
            if self.s.early_stop == "ada" and not last:
                self.snapshot(run, epoch)
            write_text_atomic(self.dir / STATE_FILE, json.dumps(attrs.asdict(self.history)) + "\n")
        return reason

    @hookimpl
    def nas_run_end(self, run: RunContext, error: BaseException | None) -> None:
        if run is not self.run:
            return
        done = error is None and (self.history.stop is not None or run.epochs_done >= run.epochs)
        if done and run.is_writer:  # nothing left to roll back to
            shutil.rmtree(self.dir / SNAPSHOT_DIR, ignore_errors=True)
        run.plugin_manager.unregister(self)

    # -- measuring ----------------------------------------------------------------------------

    def measure(self, run: RunContext) -> float:
        """The eigenvalue on the first batch of the architecture stream in evaluation order: the
        same examples at every reading (the authors take the epoch's last random batch)."""
        c = run.components
        size = self.s.batch_size or run.config.search.batch_size
        batch = next(iter(c["task"].loader("arch", batch_size=size, run=run, evaluation=True)))
        eigen = dominant_eigenvalue(c["supernet"], c["relaxation"], c["task"], batch, generator=run.generator("hessian"),
                                    l2=arch_weight_decay(c.get("optimizer")), tol=self.s.tol, max_iter=self.s.max_iter,
                                    components=c.values(), reduce=run.reduce)
        log.info("Hessian eigenvalue %.6g (%d Lanczos steps, residual %.2g)", eigen.value, eigen.iterations,
                 eigen.residual)
        return eigen.value

    # -- DARTS-ADA ----------------------------------------------------------------------------

    def weight_decay(self) -> float:
        rollbacks = self.history.rollbacks
        return rollbacks[-1]["weight_decay"] if rollbacks else float(self.initial_weight_decay or 0.0)

    def final_iteration(self, run: RunContext) -> bool:
        """The authors' last iteration: the weight decay has reached its maximum (they test
        round(log max / log wd, 1) == 1); from then on the rule is ignored."""
        return self.weight_decay() >= self.s.max_weight_decay * (1 - 1e-9)

    def roll_back(self, run: RunContext, epoch: int, target: Mapping[str, Any]) -> None:
        """Restore the parts saved at ``target``'s epoch and raise the weight decay (their
        DARTS-ADA_search.sh: --early_stop 3 --mul_factor 10 --max_weight_decay 0.03)."""
        path = self.dir / SNAPSHOT_DIR / f"epoch_{target['epoch'] + 1:03d}.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)
        for role in PARTS:
            run.components[role].load_state_dict(state[role])
        wd = min(self.weight_decay() * self.s.mul_factor, self.s.max_weight_decay)
        set_weight_decay(run.components["optimizer"], wd)
        self.history.rollbacks.append({"epoch": epoch, "to": target["at"], "weight_decay": wd})
        run.epoch_metrics["weight_decay"] = wd
        log.info("RobustDARTS-ADA: rolled back to the state of epoch %d, weight decay now %g", target["epoch"] + 1, wd)

    def snapshot(self, run: RunContext, epoch: int) -> None:
        buffer = io.BytesIO()
        torch.save({role: run.components[role].state_dict() for role in PARTS}, buffer)
        folder = self.dir / SNAPSHOT_DIR
        folder.mkdir(exist_ok=True)
        _write_bytes_atomic(folder / f"epoch_{epoch + 1:03d}.pt", buffer.getvalue())


def check(settings: Any, run: RunContext) -> None:
    """Refuse, before anything is written, a rule the run's components cannot carry out."""
    from nas_robust_darts.discretizer import EarlyStoppedDiscretizer

    if settings.early_stop == "es" and not isinstance(run.components.get("discretizer"), EarlyStoppedDiscretizer):
        raise ConfigError(f"robust_darts.early_stop=es returns the cell of an earlier epoch, which discretizer "
                          f"{run.config.discretizer.name!r} cannot: set discretizer=robust_darts_es (its base: "
                          f"{run.config.discretizer.name})")
    if settings.early_stop == "ada" and not _has_weight_decay(run.components.get("optimizer")):
        raise ConfigError(f"robust_darts.early_stop=ada raises the weight decay of the weight step, which "
                          f"optimizer {run.config.optimizer.name!r} does not expose: choose darts_1st or "
                          f"darts_2nd (or an optimizer built on them)")


def _has_weight_decay(optimizer: Any) -> bool:
    return (isinstance(getattr(optimizer, "w_opt", None), torch.optim.Optimizer)
            and hasattr(getattr(optimizer, "opts", None), "w_weight_decay"))


def set_weight_decay(optimizer: Any, value: float) -> None:
    """The weight step's decay in a DARTS optimizer: its SGD groups and the options its virtual step
    reads (the authors' new Architect keeps the old value in the virtual step; docs/successors/robust_darts.md)."""
    for group in optimizer.w_opt.param_groups:
        group["weight_decay"] = value
    optimizer.opts = attrs.evolve(optimizer.opts, w_weight_decay=value)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stopped_genotype(run_dir: Path) -> tuple[Genotype, int] | None:
    """The cell a search stopped by the rule returns, and its epoch (from 0); None if it was not stopped."""
    stop = read_history(run_dir).stop
    if stop is None or stop.get("genotype") is None:
        return None
    return Genotype.from_dict(stop["genotype"], source=str(Path(run_dir) / STATE_FILE)), int(stop["result_epoch"])
