"""What ``nas select``, ``nas random`` and ``nas compare`` share: the stage configs, the manifests of
their directories, training a candidate, selection on validation, the tables and the final evaluation.
The files of a step (configs, records, locks) are the core's (``nas_core.steps``).

Selection reads only ``valid_*`` metrics (captured from the training engine's epoch reports, or the
run's last checkpoint when it was already complete); the test metrics a training run reports are
never read before the winner is chosen.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from nas_core import (CHECKPOINT_FILE, SIZE_KEYS, Config, ConfigError, Genotype, NasError, Toolkit, brief,
                      has_stage_config, is_number, load_stage_config, read_json_object, read_record, save_stage_config,
                      write_json, write_text_atomic)

log = logging.getLogger("nas")

SELECT_FILE = "select.json"  # a nas select directory's manifest: what was asked
RANDOM_FILE = "random.json"  # a nas random directory's
#: the stages of a nas select seed, each recorded in seed_I/record.json
SELECT_STAGES = ("search", "short")
#: how to choose configs on the same data, for check_same_data
SAME_DATA_HINT = "e.g. --preset paper with --short-preset random_short_paper"


def progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def repeats(args: argparse.Namespace) -> int:
    if args.final_repeats is not None and args.final_repeats < 1:
        raise ConfigError(f"--final-repeats must be at least 1, got {args.final_repeats}")
    return args.final_repeats or 1


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


def final_config(toolkit: Toolkit, args: argparse.Namespace, preset: str) -> Config | None:
    """The final evaluation's config; None (with a warning) where ``preset`` cannot give one and
    --final was not asked for."""
    try:
        return stage_config(toolkit, args, preset, args.final_set)
    except NasError:
        if args.final:
            raise
        log.warning("no final evaluation config (preset %r): --final will not be available", preset)
        return None


def save_configs(root: Path, configs: Mapping[str, Config | None]) -> None:
    for stage, config in configs.items():
        if config is not None:
            save_stage_config(root, stage, config)


def load_configs(toolkit: Toolkit, root: Path, stages: Sequence[str], device: str | None) -> dict[str, Config | None]:
    return {s: load_stage_config(toolkit, root, s, device) if has_stage_config(root, s) else None for s in stages}


def need_final(configs: Mapping[str, Config | None], root: Path) -> Config:
    if configs.get("final") is None:
        raise ConfigError(f"{root} has no final evaluation config; train its genotype.json with nas train instead")
    return configs["final"]  # type: ignore[return-value]


# -- the directories ---------------------------------------------------------------------------

def read_manifest(root: Path, name: str, command: str) -> dict[str, Any]:
    """``root``'s select.json or random.json, checked where a damaged one would misbehave."""
    if not root.is_dir():
        raise NasError(f"{root} does not exist" if not root.exists() else f"{root} is not a directory")
    if not (root / name).is_file():
        raise NasError(f"{root} is not a nas {command} directory (no {name})")
    manifest = read_json_object(root / name)
    bad = [] if type(manifest.get("seed")) is int else ["seed"]  # type(): a bool is no seed
    if name == SELECT_FILE and not (type(manifest.get("seeds")) is int and manifest["seeds"] >= 1):
        bad.append("seeds")
    if name == RANDOM_FILE and manifest.get("samples") is None and not positive(manifest.get("budget_s")):
        bad.append("budget_s")
    if bad:
        raise NasError(f"{root / name} is damaged: " + ", ".join(f"{k} is {brief(manifest.get(k))}" for k in bad))
    return manifest


def positive(value: Any) -> bool:
    return is_number(value) and math.isfinite(value) and value > 0


def seed_records(root: Path, seeds: int) -> list[dict[str, Any]]:
    """The records of a nas select directory's seeds ({} for a seed not run yet)."""
    return [read_record(root / f"seed_{i}", SELECT_STAGES) or {} for i in range(seeds)]


def candidate_records(root: Path) -> list[dict[str, Any]]:
    """The records of a nas random directory's candidates that have one."""
    return [r for p in sorted((root / "candidates").iterdir() if (root / "candidates").is_dir() else [])
            if (r := read_record(p)) is not None]


def selection_cost(records: Iterable[Mapping[str, Any]]) -> float:
    """The seconds of a selection's searches and short trainings (the protocol's whole cost)."""
    return sum(float((r.get(stage) or {}).get("wall_time_s") or 0.0) for r in records for stage in SELECT_STAGES)


# -- training a candidate ----------------------------------------------------------------------

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


def log_failures(failed: Sequence[Mapping[str, Any]], what: str) -> None:
    for r in failed:
        log.error("%s failed%s: %s", what.format(**r), f" in its {r['stage']}" if r.get("stage") else "",
                  r.get("error"))


# -- the final evaluation ----------------------------------------------------------------------

def run_final(toolkit: Toolkit, root: Path, config: Config, genotype: Genotype, repeats: int, *,
              device: str | None, progress: bool | None, winner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Train the winner ``repeats`` times (seeds seed .. seed+repeats-1) with the full evaluation
    config and print the test metrics: they are read here, after the selection, and only here."""
    final = root / "final"
    marker = final / "winner.json"
    if marker.is_file() and read_json_object(marker).get("genotype") != genotype.to_dict():
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
    print(f"final: {format_test(out)} ({final})")
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
