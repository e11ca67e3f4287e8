"""``nas compare``: the paper's Table 1 (Liu et al., ICLR 2019, tables 1 and 2) from finished runs:
the test metric's mean +- std over the final runs of each method, parameters and search cost.

Final runs are read as :class:`nas_core.TrainingRecord` (``load_training``), the selection's and
random search's costs from their step records (``nas_core.read_record``)."""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas_core import (CONFIG_FILE, RESULTS_FILE, Config, ConfigError, Genotype, NasError, Toolkit, TrainingRecord,
                      build_space, config_changes, has_stage_config, load_stage_config, load_training, run_type, write_text_atomic)
from nas_select.protocol import (RANDOM_FILE, SELECT_FILE, candidate_records, pick_metric, read_manifest,
                                 seed_records, selection_cost)

FINAL_SECTIONS = ("task", "dataset", "network", "trainer", "train")  # and the space's name
#: the columns of PREFIX.csv; its header line is how nas compare knows a CSV file it wrote
CSV_COLUMNS = ("method", "metric", "mean", "std", "n", "params_M", "madds_M", "cell_cost", "cell_cost_unit",
               "search_cost_hours", "cost_device", "devices", "dataset", "param_free_ops", "runs")
#: the headers of the tables earlier versions wrote, which nas compare may replace too
OLD_CSV_COLUMNS = (("method", "metric", "mean", "std", "n", "params_M", "search_cost_hours", "cost_device", "devices",
                    "dataset", "param_free_ops", "runs"),)


def _eval_differences(a: Config, b: Config) -> list[str]:
    """What differs between two training configs in what the trained network and its test depend on."""
    diffs = config_changes(a, b, FINAL_SECTIONS)
    if a.space.name != b.space.name:
        diffs.append("space.name")
    return diffs


def _final_runs(root: Path) -> list[Path]:
    runs = sorted(p for p in (root / "final").glob("run_*") if (p / RESULTS_FILE).is_file())
    if not runs:
        raise NasError(f"{root} has no final evaluation ({root / 'final'}): run it with --resume {root} --final")
    return runs


def describe_run(toolkit: Toolkit, arg: str) -> dict[str, Any]:
    """What nas compare needs from one argument ``[LABEL=]RUN_DIR``."""
    label, sep, path_text = arg.partition("=")
    if not sep or Path(arg).exists():
        label, path_text = "", arg
    root = Path(path_text)
    if not root.is_dir():
        raise NasError(f"{root} does not exist" if not root.exists() else f"{root} is not a directory")
    if (root / SELECT_FILE).is_file():
        manifest = read_manifest(root, SELECT_FILE, "select")
        records = seed_records(root, manifest["seeds"])
        searched = [Genotype.from_dict(r["genotype"], source=f"{root} seed record") for r in records if r.get("genotype")]
        cost = selection_cost(records)
        devices = {str((r.get("search") or {}).get("device", "")) for r in records} - {""}
        method, runs = label or str(manifest.get("optimizer")), _final_runs(root)
        kind = f"select ({manifest['seeds']} seeds)"
        cell_costs = [r["search"]["cell_cost"] for r in records if isinstance((r.get("search") or {}).get("cell_cost"), dict)]
    elif (root / RANDOM_FILE).is_file():
        records = candidate_records(root)
        searched = []
        cost = sum(float(r.get("wall_time_s") or 0.0) for r in records)
        devices = {str(r.get("device", "")) for r in records} - {""}
        method, runs = label or "random", _final_runs(root)
        kind = f"random ({len(records)} candidates)"
        cell_costs = []
    elif (root / RESULTS_FILE).is_file() and (root / CONFIG_FILE).is_file():
        method, runs, cost, devices, kind = label or "train", [root], None, set(), "train"
        searched, cell_costs = [], []
    else:
        raise NasError(f"{root} is neither a nas select, a nas random nor a finished nas train directory")
    short = load_stage_config(toolkit, root, "short") if kind != "train" and has_stage_config(root, "short") else None
    finals = [_final_results(toolkit, p) for p in runs]
    return {"dir": str(root), "method": method, "kind": kind, "finals": finals, "cost_s": cost, "devices": devices,
            "short": short, "param_free": _param_free_counts(toolkit, searched or [f.genotype for f in finals], finals),
            "cell_costs": cell_costs}


def _cell_cost(costs: Sequence[Mapping[str, Any]]) -> tuple[float, str] | None:
    """The mean cost of the cells a method's searches derived (their results' ``cell_cost``, written by
    a resource-aware search) and its unit; None without one, or when the searches measured different things."""
    units = {str(c.get("unit")) for c in costs}
    values = [c.get("value") for c in costs]
    if not costs or len(units) > 1 or not all(isinstance(v, int | float) for v in values):
        return None
    return sum(values) / len(values), units.pop()


def _param_free_counts(toolkit: Toolkit, genotypes: Sequence[Genotype | None], finals: Sequence[TrainingRecord]
                       ) -> list[tuple[int, int]]:
    """(parameter-free ops, ops) in the normal cell of each cell a method found (its searches' cells,
    else the trained ones): the count that DARTS's collapse drives up. Empty where the space does
    not say which of its ops have no weights."""
    if not finals or not any(genotypes):
        return []
    free = build_space(toolkit.registries, finals[0].config.space).arch_spec().parameter_free
    counts = []
    for genotype in genotypes:
        if genotype is None or not free:
            continue
        cell = genotype.cells.get("normal") or next(iter(genotype.cells.values()))
        ops = [op for node in cell.nodes for op, _ in node]
        counts.append((sum(op in free for op in ops), len(ops)))
    return counts


def _final_results(toolkit: Toolkit, run_dir: Path) -> TrainingRecord:
    """One finished training run: its test metrics, params and config."""
    if run_type(run_dir) == "search":
        raise NasError(f"{run_dir} is a search run: it has no test metric to compare; train the cell it found with "
                       f"nas train --genotype {run_dir} and compare that training run")
    return load_training(toolkit, run_dir)


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def check_comparable(runs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse runs on different data or with different evaluation (or short-budget) settings."""
    finals: list[tuple[str, TrainingRecord]] = [(run["dir"], f) for run in runs for f in run["finals"]]
    datasets = {f.config.dataset.name for _, f in finals}
    if len(datasets) > 1:
        per = ", ".join(f"{d}: {f.config.dataset.name}" for d, f in finals)
        raise NasError(f"nas compare refuses to mix datasets ({per})")
    ref_dir, ref = finals[0]
    for d, f in finals[1:]:
        diffs = _eval_differences(ref.config, f.config)
        if diffs:
            raise NasError(f"nas compare refuses to mix evaluation settings: {ref_dir} and {d} differ in "
                           f"{', '.join(diffs)}")
    shorts = [(run["dir"], run["short"]) for run in runs if run["short"] is not None]
    for d, s in shorts[1:]:
        diffs = _eval_differences(shorts[0][1], s)
        if diffs:
            raise NasError(f"nas compare refuses to mix short-budget settings: {shorts[0][0]} and {d} differ in "
                           f"{', '.join(diffs)}")


def compare_prefix(args: argparse.Namespace, runs: Sequence[Mapping[str, Any]]) -> Path:
    """--out, else ``comparison`` in the folder that holds the compared run directories."""
    if args.out:
        if Path(args.out).name in ("", ".", ".."):
            raise ConfigError(f"--out {args.out}: name the files' prefix, e.g. --out runs/table1")
        return Path(args.out)
    folders = sorted({os.path.dirname(os.path.abspath(run["dir"])) for run in runs})
    if len(folders) > 1:
        raise ConfigError(f"the compared runs are in different folders ({', '.join(folders)}); name the table's "
                          f"files with --out PREFIX")
    return Path(runs[0]["dir"]).parent / "comparison"


def _written_by_compare(path: Path) -> bool:
    """Whether ``path`` starts as the tables nas compare writes do (those it may replace)."""
    try:
        with path.open() as f:
            first = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".csv":
        return first in {",".join(c) for c in (CSV_COLUMNS, *OLD_CSV_COLUMNS)}
    return first.startswith("Dataset ") and "; test metric " in first


def check_outputs(paths: Sequence[Path], force: bool) -> None:
    """Before writing anything: no output may be a folder, nor, unless ``force``, a file that
    nas compare did not write."""
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"{path} is a directory; name the table's files with another --out PREFIX")
        if path.exists() and not force and not _written_by_compare(path):
            raise ConfigError(f"{path} exists and nas compare did not write it; name the table's files with another "
                              f"--out PREFIX, or pass --force to replace it")


def compare(args: argparse.Namespace, toolkit: Toolkit) -> int:
    runs = [describe_run(toolkit, a) for a in args.runs]
    check_comparable(runs)
    prefix = compare_prefix(args, runs)
    md_path, csv_path = prefix.with_name(prefix.name + ".md"), prefix.with_name(prefix.name + ".csv")
    check_outputs((md_path, csv_path), args.force)
    first: TrainingRecord = runs[0]["finals"][0]
    metric = pick_metric(first.test, args.metric, prefix="test_")
    dataset = first.config.dataset.name  # the same for all: check_comparable
    methods: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        methods.setdefault(run["method"], []).append(run)
    percent = metric.endswith(("error", "acc"))
    name = metric[len("test_"):].replace("_", " ")
    header = ["Method", f"Test {name}{' (%)' if percent else ''}", "Params (M)", "Mult-adds (M)", "Cell cost", "Search cost",
              "Parameter-free ops (normal cell)", "Final runs", "Directories"]
    rows, csv_rows = [], []
    for method, group in methods.items():
        finals: list[TrainingRecord] = [f for run in group for f in run["finals"]]
        values = [f.test[metric] for f in finals if metric in f.test]
        if not values:
            raise NasError(f"no {metric} in the final runs of {', '.join(r['dir'] for r in group)}")
        mean, std = _mean_std(values)
        scale = 100 if percent else 1
        params = [f.params / 1e6 for f in finals if f.params is not None]
        madds = [f.multiply_adds / 1e6 for f in finals if f.multiply_adds is not None]
        cell = _cell_cost([c for run in group for c in run["cell_costs"]])
        costs = [run["cost_s"] for run in group if run["cost_s"] is not None]
        devices = set().union(*(run["devices"] for run in group))
        unit = "GPU" if devices and all("cuda" in d for d in devices) else "CPU" if devices and not any(
            "cuda" in d for d in devices) else "mixed"
        cost_h = sum(costs) / len(costs) / 3600 if costs else None
        metric_text = f"{scale * mean:.2f}" + (f" +- {scale * std:.2f}" if std is not None else "")
        free = [c for run in group for c in run["param_free"]]
        free_text = ", ".join(f"{n}/{total}" for n, total in free) or "-"
        cost_text = "-" if cost_h is None else f"{cost_h:.3g} {unit}-hours"
        rows.append([method, metric_text, f"{sum(params) / len(params):.3f}" if params else "-",
                     f"{sum(madds) / len(madds):.1f}" if madds else "-", f"{cell[0]:.4g} {cell[1]}" if cell else "-",
                     cost_text, free_text,
                     str(len(values)), ", ".join(run["dir"] for run in group)])
        csv_rows.append({"method": method, "metric": metric, "mean": scale * mean,
                         "std": "" if std is None else scale * std, "n": len(values),
                         "params_M": sum(params) / len(params) if params else "",
                         "madds_M": sum(madds) / len(madds) if madds else "",
                         "cell_cost": cell[0] if cell else "", "cell_cost_unit": cell[1] if cell else "",
                         "search_cost_hours": "" if cost_h is None else cost_h, "cost_device": unit,
                         "devices": "; ".join(sorted(devices)), "dataset": dataset,
                         "param_free_ops": "; ".join(f"{n}/{total}" for n, total in free),
                         "runs": "; ".join(run["dir"] for run in group)})
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    text = (f"Dataset {dataset}; test metric {metric} (mean +- std over final runs; search cost per run of the "
            f"method: searches plus short trainings, or all random candidates; parameter-free ops of the normal "
            f"cell each search derived, or of the trained cell; cell cost: of the cells a resource-aware search derived)\n\n" + "\n".join(md) + "\n")
    print(text, end="")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows)
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(md_path, text)
        write_text_atomic(csv_path, buf.getvalue())
    except OSError as e:
        raise NasError(f"cannot write {prefix}.md/.csv: {e.strerror or e}") from None
    print(f"\nwritten: {md_path}, {csv_path}")
    return 0
