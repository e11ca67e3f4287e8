"""Reading a run back: a search or a training as a typed record, and the checked readers under it.

``load_search`` rebuilds a search's components from the config its checkpoint was written with
and loads their weights (its supernet and its architecture parameters), so a command never
guesses a checkpoint's keys; ``load_training`` reads a training's ``results.json`` (or, before it
finished, its checkpoint). Both read what the engines write (README, "Run directory"); a folder
that is not such a run is one NasError naming what is missing.

Metric names keep their prefix everywhere, as in ``results.json`` and ``--metric``:
``record.valid["valid_top1_error"]``, ``record.test["test_top1_error"]``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import yaml

from nas_core.config import SCALARS, Config, load_yaml, read_saved
from nas_core.errors import CheckpointError, NasError, brief
from nas_core.files import write_text_atomic
from nas_core.genotype import Genotype
from nas_core.run import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, RESULTS_FILE, run_kind

if TYPE_CHECKING:
    from nas_core.interfaces import ArchSpec, Relaxation, SearchSpace, Supernet, Task
    from nas_core.plugins import Registries
    from nas_core.toolkit import Toolkit

GENOTYPES_DIR = "genotypes"  # a search's genotypes/epoch_NNN.json, one per epoch counted from 1
STAGE_DIR = re.compile(r"stage_(\d{1,6})")  # the stages of a staged search, each a complete search run
EPOCH_GENOTYPE = re.compile(r"epoch_(\d{1,9})\.json")
#: results.json keys that hold numbers besides the metrics (valid_*, test_*, tested_valid_*)
NUMBER_KEYS = ("params", "params_total", "multiply_adds", "epochs", "tested_epoch")


# -- JSON files --------------------------------------------------------------------------------

def is_number(value: Any) -> bool:
    """An int or a float, not a bool (JSON's true is no number of seconds or parameters)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def recorded_seconds(value: Any, where: str) -> float:
    """A recorded wall time: a finite number of seconds >= 0, else a NasError naming ``where``."""
    if not is_number(value) or not math.isfinite(value) or value < 0:
        raise NasError(f"{where}: wall_time_s is {brief(value)}, not a finite number of seconds >= 0")
    return float(value)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file nas wrote as an object (results, records, manifests), checked."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NasError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise NasError(f"{path} is damaged: expected a JSON object, got {type(value).__name__}")
    return value


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON, written atomically (its folder created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/results.json`` (None while the run has not finished), checked: an object whose
    metrics and sizes are numbers and whose wall time is a finite number of seconds."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    results = read_json_object(path)
    bad = [k for k, v in results.items() if (k in NUMBER_KEYS or k.startswith(("valid_", "test_", "tested_valid_")))
           and not is_number(v)]
    if bad:
        raise NasError(f"{path} is damaged: {bad[0]} is {brief(results[bad[0]])}, not a number")
    if "wall_time_s" in results:
        recorded_seconds(results["wall_time_s"], str(path))
    return results


def read_saved_config(path: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` as written (read safely, within bounds: no YAML tag builds an
    object), checked as far as its readers rely on: a mapping of sections with the dataset's name."""
    try:
        data = load_yaml(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise NasError(f"cannot read {path}: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise NasError(f"{path} is not a saved nas config: " + ("it is empty" if data is None else
                                                                f"a {type(data).__name__}, not a mapping"))
    bad = [k for k, v in data.items() if k not in SCALARS and not isinstance(v, dict)]
    if bad or not (data.get("dataset") or {}).get("name"):
        raise NasError(f"{path} is not a saved nas config: " + (f"{bad[0]} is not a section" if bad
                                                                else "no dataset.name"))
    return data


def run_type(run_dir: Path) -> str | None:
    """What wrote ``run_dir``: its marker's kind (search, train, transfer, random, select...);
    without a marker, a search if its results hold a genotype or it has per-epoch genotypes, a
    training if it has results; else None."""
    kind = run_kind(Path(run_dir))
    if kind is not None:
        return kind
    results = read_results(run_dir)
    if (results is not None and "genotype" in results) or (Path(run_dir) / GENOTYPES_DIR).is_dir():
        return "search"
    return "train" if results is not None else None


def epoch_genotype_paths(run_dir: Path) -> dict[int, Path]:
    """A search's ``genotypes/epoch_NNN.json`` files by epoch (counted from 1), in epoch order."""
    found = {int(m.group(1)): p for p in (Path(run_dir) / GENOTYPES_DIR).glob("epoch_*.json")
             if (m := EPOCH_GENOTYPE.fullmatch(p.name))}
    return dict(sorted(found.items()))


def read_genotype(path: Path) -> Genotype:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise NasError(f"cannot read {path}: {e}") from None
    return Genotype.from_json(text, source=str(path))


# -- the records -------------------------------------------------------------------------------

@attrs.frozen
class SearchRecord:
    """A search run read back, its modules on the device ``load_search`` was given, in eval mode.

    ``genotype`` is the search's result once it is complete, else the latest epoch's;
    ``genotypes`` holds one per finished epoch (from ``genotypes/epoch_NNN.json``, counted from
    1; a file of an epoch after the checkpoint, whose run was killed before saving it, is left
    out); ``metrics`` are the last finished epoch's. ``wall_time_s`` and ``device`` are those
    the run recorded (``device``: where it ran; the configured device while it is unfinished)."""

    dir: Path
    stage: int | None  # which stage_N of a staged search this is; None for a plain search
    config: Config  # as the checkpoint saved it
    task: Task
    space: SearchSpace
    spec: ArchSpec
    supernet: Supernet
    relaxation: Relaxation
    genotype: Genotype | None
    genotypes: Mapping[int, Genotype]
    metrics: Mapping[str, float]
    epochs_done: int
    complete: bool  # results.json written: every epoch (or an early stop) and the final steps done
    stopped: str | None  # why the search stopped early, if it did
    wall_time_s: float
    device: str


@attrs.frozen
class TrainingRecord:
    """A training run (``nas train``, ``nas transfer``, a protocol's candidate) read back.

    ``test`` is empty where the test set was not read (``train.test_model=none``, as in short-budget
    trainings) or the run has not finished; ``tested`` names the weights the test read
    (``best_valid``, ``last``, ``none``). Sizes are None until the run has finished."""

    dir: Path
    config: Config
    genotype: Genotype | None  # None where the folder holds no genotype.json
    valid: Mapping[str, float]
    test: Mapping[str, float]
    params: int | None  # the parameters inference uses (no auxiliary head)
    params_total: int | None
    multiply_adds: int | None
    tested: str | None
    tested_epoch: int | None
    epochs: int  # epochs done
    complete: bool
    wall_time_s: float
    device: str


def _registries(source: Toolkit | Registries) -> Registries:
    return getattr(source, "registries", source)


def _require_dir(path: Path) -> None:
    if not path.is_dir():
        raise NasError(f"{path} does not exist" if not path.exists() else f"{path} is not a directory")


def _check_run_dir(run_dir: Path, what: str) -> None:
    _require_dir(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise NasError(f"{run_dir} is not a {what} run directory (no {CONFIG_FILE})")


def _stages(run_dir: Path) -> dict[int, Path]:
    found = {int(m.group(1)): p for p in run_dir.glob("stage_*") if (m := STAGE_DIR.fullmatch(p.name)) and p.is_dir()}
    return dict(sorted(found.items()))


def search_dir(run_dir: Path, stage: int | None = None) -> tuple[Path, int | None]:
    """The search run to read in ``run_dir`` and its stage: ``run_dir`` itself, or in a staged
    search (``stage_1``, ``stage_2``, ... each a complete search run, no checkpoint at the top)
    stage ``stage``, by default the highest-numbered one that has a checkpoint."""
    run_dir = Path(run_dir)
    _require_dir(run_dir)
    stages = _stages(run_dir)
    if stage is not None:
        if stage not in stages:
            have = f"its stages are {', '.join(map(str, stages))}" if stages else "it is not a staged search"
            raise NasError(f"{run_dir} has no stage_{stage} ({have})")
        return stages[stage], stage
    if (run_dir / CHECKPOINT_FILE).is_file() or not stages:
        return run_dir, None
    started = [i for i, path in stages.items() if (path / CHECKPOINT_FILE).is_file()]
    if not started:
        raise NasError(f"{run_dir} is a staged search whose stages ({', '.join(p.name for p in stages.values())}) "
                       f"have no {CHECKPOINT_FILE} yet: no epoch has finished")
    return stages[started[-1]], started[-1]


def load_search(source: Toolkit | Registries, run_dir: Path | str, *, device: str = "cpu",
                stage: int | None = None) -> SearchRecord:
    """The search in ``run_dir`` (or a stage of a staged search, see :func:`search_dir`) from its
    last checkpoint: components built from the checkpoint's config with the core's builders,
    weights and architecture parameters loaded (``weights_only``), on ``device``, in eval mode.
    Building the task reads the dataset (the supernet's shape depends on it)."""
    import torch

    from nas_core.checkpoint import load_checkpoint
    from nas_core.components import build, build_space
    from nas_core.config import resolve_device
    from nas_core.data import build_task
    from nas_core.interfaces import Relaxation

    run_dir, stage = search_dir(Path(run_dir), stage)
    _check_run_dir(run_dir, "search")
    kind = run_type(run_dir)
    if kind not in (None, "search"):
        raise NasError(f"{run_dir} is a {kind} run, not a search" + (": read it with load_training"
                                                                      if kind in ("train", "transfer") else ""))
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise NasError(f"{run_dir} has no {CHECKPOINT_FILE} yet (no epoch has finished): nothing to load")
    state = load_checkpoint(path)
    if not all(isinstance(state.get(k), Mapping) for k in ("supernet", "relaxation", "config")):
        raise CheckpointError(f"{path} is not a search checkpoint (no supernet, architecture parameters or config)")
    registries = _registries(source)
    config = read_saved(registries, state["config"], f"config saved in {path}")
    target = resolve_device(device)
    with torch.random.fork_rng(devices=[]):  # fresh modules draw their initial weights: leave the caller's streams
        task = build_task(registries, config)
        space = build_space(registries, config.space)
        spec = space.arch_spec()
        supernet = space.build_supernet(task.info)
        relaxation = build(registries.relaxations, config.relaxation, Relaxation, spec=spec)
    try:
        supernet.load_state_dict(state["supernet"])
        relaxation.load_state_dict(state["relaxation"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} does not match the components its config builds ({reason})") from None
    epochs_done = _epochs_done(state, path)
    results = read_results(run_dir)
    latest = (state.get("extra") or {}).get("genotype")
    genotype = (Genotype.from_dict(results["genotype"], source=str(run_dir / RESULTS_FILE))
                if results is not None and "genotype" in results
                else Genotype.from_dict(latest, source=str(path)) if latest else None)
    return SearchRecord(
        dir=run_dir, stage=stage, config=config, task=task, space=space, spec=spec,
        supernet=supernet.to(target).eval(), relaxation=relaxation.to(target).eval(), genotype=genotype,
        genotypes={e: read_genotype(p) for e, p in epoch_genotype_paths(run_dir).items() if e <= epochs_done},
        metrics=_metrics(state.get("metrics"), path), epochs_done=epochs_done, complete=results is not None,
        stopped=state.get("stopped"), wall_time_s=_wall_time(results, state, path),
        device=str(results.get("device", config.device) if results is not None else config.device))


def load_training(source: Toolkit | Registries, run_dir: Path | str) -> TrainingRecord:
    """The training in ``run_dir``: its ``results.json`` once it has finished, else what its last
    checkpoint holds (validation metrics, epochs, wall time; no sizes, no test)."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, "training")
    if run_type(run_dir) == "search":
        raise NasError(f"{run_dir} is a search run, not a training: read it with load_search")
    config = read_saved(_registries(source), read_saved_config(run_dir / CONFIG_FILE),
                        f"saved config {run_dir / CONFIG_FILE}")
    genotype = read_genotype(run_dir / GENOTYPE_FILE) if (run_dir / GENOTYPE_FILE).is_file() else None
    results, path = read_results(run_dir), run_dir / RESULTS_FILE
    if results is None:
        if not (run_dir / CHECKPOINT_FILE).is_file():
            raise NasError(f"{run_dir} has neither {RESULTS_FILE} nor {CHECKPOINT_FILE} (no epoch has finished): "
                           f"nothing to read yet")
        from nas_core.checkpoint import load_checkpoint

        path = run_dir / CHECKPOINT_FILE
        state = load_checkpoint(path)
        extra = state.get("extra") or {}
        if not isinstance(extra.get("results"), Mapping):  # unfinished (else only results.json was not written)
            return TrainingRecord(
                dir=run_dir, config=config, genotype=genotype,
                valid=_prefixed(extra.get("valid") or {}, "valid_", path), test={}, params=None, params_total=None,
                multiply_adds=None, tested=None, tested_epoch=None,
                epochs=_epochs_done(state, path), complete=False,
                wall_time_s=recorded_seconds(state.get("wall_time_s", 0.0), str(path)), device=str(config.device))
        results = extra["results"]
    missing = [k for k in ("epochs", "wall_time_s", "device") if k not in results]
    if missing:
        raise NasError(f"{path} is damaged: it records no {missing[0]}")
    return TrainingRecord(
        dir=run_dir, config=config, genotype=genotype, valid=_prefixed(results, "valid_", path),
        test=_prefixed(results, "test_", path), params=_count(results, "params"),
        params_total=_count(results, "params_total"), multiply_adds=_count(results, "multiply_adds"),
        tested=results.get("tested"), tested_epoch=_count(results, "tested_epoch"), epochs=int(results["epochs"]),
        complete=True, wall_time_s=recorded_seconds(results["wall_time_s"], str(path)), device=str(results["device"]))


def _epochs_done(state: Mapping[str, Any], path: Path) -> int:
    epoch = state.get("epoch")
    if type(epoch) is not int or epoch < 0:
        raise CheckpointError(f"{path} is damaged: epoch is {brief(epoch)}")
    return epoch + 1


def _wall_time(results: Mapping[str, Any] | None, state: Mapping[str, Any], path: Path) -> float:
    """The finished run's recorded wall time, else its checkpoint's (the time up to its last epoch)."""
    if results is not None and "wall_time_s" in results:
        return recorded_seconds(results["wall_time_s"], str(path.parent / RESULTS_FILE))
    return recorded_seconds(state.get("wall_time_s", 0.0), str(path))


def _metrics(metrics: Any, path: Path) -> dict[str, float]:
    if not isinstance(metrics, Mapping) or not all(is_number(v) for v in metrics.values()):
        raise CheckpointError(f"{path} is damaged: its metrics are {brief(metrics)}")
    return {str(k): float(v) for k, v in metrics.items()}


def _prefixed(values: Mapping[str, Any], prefix: str, path: Path) -> dict[str, float]:
    return _metrics({k: v for k, v in values.items() if k.startswith(prefix)}, path)


def _count(results: Mapping[str, Any], key: str) -> int | None:
    return int(results[key]) if is_number(results.get(key)) else None
