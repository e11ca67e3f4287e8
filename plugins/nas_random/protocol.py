"""What ``nas random`` and ``nas select`` share: stage configs, training a candidate, records,
selection on validation and the candidate tables.

Selection reads only ``valid_*`` metrics (captured from the training engine's epoch reports, or the
run's last checkpoint when it was already complete); the test metrics a training run reports are
never read before the winner is chosen.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from nas_core import Config, ConfigError, Genotype, NasError, Toolkit, brief, write_text_atomic

log = logging.getLogger("nas")

RECORD_FILE = "record.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
RESULTS_FILE = "results.json"
#: the result keys a selection may read from a training run (never test_*)
SIZE_KEYS = ("params", "params_total", "multiply_adds")


# -- configs -----------------------------------------------------------------------------------

def stage_config(toolkit: Toolkit, args: argparse.Namespace, preset: str | None, extra_sets: Sequence[str]) -> Config:
    """The config of one stage: ``preset`` under the user's config files, flags and --set, then
    the stage's own --short-set/--final-set."""
    ns = copy.copy(args)
    ns.preset, ns.set = preset, [*args.set, *extra_sets]
    return toolkit.config_from_args(ns)


def short_stage_config(toolkit: Toolkit, args: argparse.Namespace, preset: str | None) -> Config:
    """The short-budget stage's config: its trainings select on validation and never read the test
    set (train.test_model=none, whatever the preset or --short-set say): only a final evaluation does."""
    return stage_config(toolkit, args, preset, [*args.short_set, "train.test_model=none"])


def save_stage_config(root: Path, stage: str, config: Config) -> None:
    path = root / "configs" / stage
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / CONFIG_FILE, yaml.safe_dump(config.layout(), sort_keys=False))


def load_stage_config(toolkit: Toolkit, root: Path, stage: str, device: str | None) -> Config:
    return toolkit.saved_config(root / "configs" / stage, device)


#: what may differ between the runs a protocol compares (each run has its own seed; the machine's)
IGNORED_KEYS = ("seed", "device", "threads", "data_root")


def check_same_data(configs: Mapping[str, Config]) -> None:
    """All stages must train on the same dataset, task and space."""
    first_name, first = next(iter(configs.items()))
    for name, config in configs.items():
        for key in ("dataset", "task", "space"):
            if getattr(config, key).name != getattr(first, key).name:
                raise ConfigError(f"the {first_name} stage uses {key} {getattr(first, key).name!r} but the {name} "
                                  f"stage uses {getattr(config, key).name!r}: choose presets for the same data "
                                  f"(e.g. --preset paper with --short-preset random_short_paper)")


def check_resume_flags(args: argparse.Namespace, flags: Iterable[str]) -> None:
    given = [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k, None) not in (None, [], False)]
    if given:
        raise ConfigError(f"--resume continues with the configs saved in {args.resume}; drop {', '.join(given)} "
                          f"(only --device may change)")


CONFIG_FLAGS = ("task", "dataset", "space", "relaxation", "optimizer", "trainer", "discretizer", "seed", "data_root",
                "threads", "preset", "config", "set", "out", "force", "short_set", "final_set")


# -- records -----------------------------------------------------------------------------------

def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NasError(f"cannot read {path}: {e}") from None


def read_mapping(path: Path) -> dict[str, Any]:
    """A JSON file nas wrote as an object (results, records, manifests), checked."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise NasError(f"{path} is damaged: expected a JSON object, got {type(value).__name__}")
    return value


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def seconds(value: Any, where: str) -> float:
    """A recorded wall time: a finite number of seconds >= 0, else a NasError naming ``where``."""
    if not is_number(value) or not math.isfinite(value) or value < 0:
        raise NasError(f"{where}: wall_time_s is {brief(value)}, not a finite number of seconds >= 0")
    return float(value)


def read_record(path: Path) -> dict[str, Any] | None:
    """``path/record.json`` (None when there is none yet), checked: a finished record has numeric
    validation metrics; recorded wall times are finite numbers of seconds."""
    file = path / RECORD_FILE
    if not file.is_file():
        return None
    record = read_mapping(file)
    valid, genotype = record.get("valid"), record.get("genotype")
    if record.get("status") == "done" and not (isinstance(valid, dict) and valid and isinstance(genotype, dict)
                                               and all(is_number(v) for v in valid.values())):
        raise NasError(f"{file} is damaged: a finished record needs numeric valid metrics (has {brief(valid)}) and a "
                       f"genotype; move it away to run that part again")
    parts = {"record": record, **{stage: record[stage] for stage in ("search", "short") if stage in record}}
    for name, part in parts.items():
        if not isinstance(part, dict):
            raise NasError(f"{file} is damaged: {name} is {brief(part)}, not an object")
        if part.get("wall_time_s") is not None:
            seconds(part["wall_time_s"], f"{file} ({name})")
    sizes = [k for k in SIZE_KEYS if k in record and not is_number(record[k])]
    if sizes:
        raise NasError(f"{file} is damaged: {sizes[0]} is {brief(record[sizes[0]])}, not a number")
    return record


def error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else "(no message)"
    return text if isinstance(e, NasError) else f"{type(e).__name__}: {text}"


def train_run(toolkit: Toolkit, config: Config, genotype: Genotype, run_dir: Path, *, device: str | None,
              progress: bool | None, phase: str = "train") -> tuple[dict[str, Any], dict[str, float]]:
    """Train (or resume, or report) ``genotype`` in ``run_dir``; returns (results, valid metrics)."""
    resume = (run_dir / CHECKPOINT_FILE).is_file()
    if resume:
        config = toolkit.resume_config(run_dir, device)
    results = toolkit.train(config, genotype, run_dir, resume=resume, progress=progress, phase=phase)
    return results, {k: float(v) for k, v in results.items() if k.startswith("valid_")}


def train_candidate(toolkit: Toolkit, config: Config, genotype: Genotype, run_dir: Path, *, device: str | None,
                    progress: bool | None) -> dict[str, Any]:
    """Short-budget training of one candidate; the record selection reads (no test metric in it)."""
    started = time.monotonic()
    results, valid = train_run(toolkit, config, genotype, run_dir, device=device, progress=progress)
    if not valid:
        raise ConfigError(f"{run_dir}: training reported no valid_* metric; selection needs a validation stream "
                          f"(classification: task.valid_split > 0)")
    return {"valid": valid, **{k: results[k] for k in SIZE_KEYS if k in results},
            "wall_time_s": float(results["wall_time_s"]) if "wall_time_s" in results else time.monotonic() - started,
            "device": results["device"] if "device" in results else str(config.device)}


# -- selection ---------------------------------------------------------------------------------

def pick_metric(metrics: Mapping[str, float], requested: str = "auto", prefix: str = "valid_") -> str:
    if requested != "auto":
        if not requested.startswith(prefix):
            raise ConfigError(f"--metric {requested}: selection reads {prefix}* metrics only")
        if requested not in metrics:
            raise ConfigError(f"--metric {requested}: not measured; measured: {', '.join(sorted(metrics))}")
        return requested
    for name in ("top1_error", "perplexity", "loss"):
        if f"{prefix}{name}" in metrics:
            return f"{prefix}{name}"
    raise ConfigError(f"no {prefix}top1_error, {prefix}perplexity or {prefix}loss among: "
                      f"{', '.join(sorted(metrics)) or '(none)'}; name one with --metric")


def higher_is_better(metric: str) -> bool:
    return metric.endswith(("acc", "accuracy"))


def diverged(valid: Mapping[str, float], requested: str = "auto") -> str | None:
    """Why a finished training cannot be selected: its selection metric is NaN or infinite (it
    diverged). Such a candidate counts as failed; None when the metric is a finite number."""
    metric = pick_metric(valid, requested)
    return None if math.isfinite(valid[metric]) else f"{metric} is {valid[metric]} (the training diverged)"


def select_best(records: Sequence[Mapping[str, Any]], requested: str = "auto") -> tuple[Mapping[str, Any], str]:
    """The finished record with the best validation metric (ties: the first), and that metric's name.

    Reads ``record["valid"]`` only; a NaN or infinite metric never wins."""
    done = [r for r in records if r.get("status") == "done"]
    if not done:
        raise NasError("no candidate finished: nothing to select")
    metric = pick_metric(done[0]["valid"], requested)
    sign = -1.0 if higher_is_better(metric) else 1.0
    for r in done:
        if metric not in r["valid"]:
            raise NasError(f"{r.get('run_dir')}: no {metric} recorded")
    finite = [r for r in done if math.isfinite(r["valid"][metric])]
    if not finite:
        raise NasError(f"every finished candidate has a non-finite {metric} "
                       f"({', '.join(str(r['valid'][metric]) for r in done)}): nothing to select")
    best = min(range(len(finite)), key=lambda i: (sign * float(finite[i]["valid"][metric]), i))
    return finite[best], metric


# -- tables ------------------------------------------------------------------------------------

def compact_genotype(genotype: Mapping[str, Any] | None) -> str:
    if not genotype:
        return ""
    return "; ".join(f"{name}: " + " | ".join(",".join(f"{op}<-{src}" for op, src in node) for node in cell["nodes"])
                     for name, cell in genotype.items())


def write_table(root: Path, name: str, rows: Sequence[Mapping[str, Any]], metric: str | None,
                best: Mapping[str, Any] | None, key: str) -> None:
    """``name``.csv and ``name``.json: one row per candidate (seed), the best marked."""
    columns = [key, "status", "metric", "valid", "params", "multiply_adds", "wall_time_s", "device", "run_dir",
               "genotype", "error", "best"]
    table = []
    for r in rows:
        value = r.get("valid", {}).get(metric) if metric else None
        table.append({key: r[key], "status": r.get("status"), "metric": metric, "valid": value,
                      "params": r.get("params"), "multiply_adds": r.get("multiply_adds"),
                      "wall_time_s": r.get("wall_time_s"), "device": r.get("device"), "run_dir": r.get("run_dir"),
                      "genotype": r.get("genotype"), "error": r.get("error"),
                      "best": best is not None and r[key] == best[key]})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    for row in table:
        writer.writerow({**row, "genotype": compact_genotype(row["genotype"]),
                         "valid": "" if row["valid"] is None else f"{row['valid']:.6g}",
                         "wall_time_s": "" if row["wall_time_s"] is None else f"{row['wall_time_s']:.2f}"})
    write_text_atomic(root / f"{name}.csv", buf.getvalue())
    write_json(root / f"{name}.json", {"metric": metric, "best": None if best is None else best[key], "rows": table})


def tensorboard_scalars(root: Path, points: Iterable[tuple[str, float, int]]) -> None:
    """Append scalars to ``root/tb`` (torch's SummaryWriter); silently skipped without tensorboard."""
    points = [(tag, value, step) for tag, value, step in points if value is not None and math.isfinite(value)]
    if not points:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return
    writer = SummaryWriter(str(root / "tb"))
    try:
        for tag, value, step in points:
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()


# -- the final evaluation ----------------------------------------------------------------------

def run_final(toolkit: Toolkit, root: Path, config: Config, genotype: Genotype, repeats: int, *,
              device: str | None, progress: bool | None, winner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Train the winner ``repeats`` times (seeds seed .. seed+repeats-1) with the full evaluation
    config; the test metrics are read here, after the selection, and only here."""
    final = root / "final"
    marker = final / "winner.json"
    if marker.is_file() and read_mapping(marker).get("genotype") != genotype.to_dict():
        raise NasError(f"{final} trained another winner than the one selected now ({winner}); move {final} away "
                       f"to train the new one")
    write_json(marker, {**winner, "genotype": genotype.to_dict()})
    out = []
    for r in range(repeats):
        run_dir = final / f"run_{r}"
        seeded = attrs.evolve(config, seed=config.seed + r)
        results, _ = train_run(toolkit, seeded, genotype, run_dir, device=device, progress=progress, phase="train")
        out.append({"run_dir": str(run_dir.relative_to(root)), **dict(results)})
    write_json(final / "summary.json", {"winner": winner, "runs": out})
    return out


def format_test(results: Sequence[Mapping[str, Any]]) -> str:
    if not results:
        return ""
    keys = sorted(k for k in results[0] if k.startswith("test_"))
    parts = []
    for k in keys:
        values = [float(r[k]) for r in results if k in r]
        scale, unit = (100, " %") if k.endswith(("error", "acc")) else (1, "")
        mean = sum(values) / len(values)
        text = f"{k[5:].replace('_', ' ')} {scale * mean:.2f}{unit}"
        if len(values) > 1:
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            text = f"{k[5:].replace('_', ' ')} {scale * mean:.2f} +- {scale * std:.2f}{unit} ({len(values)} runs)"
        parts.append(text)
    return "test " + ", ".join(parts) + f", {results[0].get('params', 0) / 1e6:.3f} M params"


def log_failures(failed: Sequence[Mapping[str, Any]], what: str) -> None:
    for r in failed:
        log.error("%s failed%s: %s", what.format(**r), f" in its {r['stage']}" if r.get("stage") else "",
                  r.get("error"))
