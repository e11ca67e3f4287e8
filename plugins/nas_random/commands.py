"""``nas random``: the random search baseline (Liu et al., ICLR 2019, section 3.2), selected with
the selection protocol of plugin nas_select (``nas_select.protocol``).

Layout of a ``nas random`` directory::

    random.json              what was asked (samples or budget, seed, presets, metric)
    configs/{short,final}/   the resolved stage configs (config.yaml)
    candidates/NNN/          one training run per candidate (+ record.json when it ended)
    candidates.csv/.json     every candidate: genotype, validation metric, params, wall time, run dir
    genotype.json            the winner (so `nas train --genotype DIR` trains it)
    tb/                      TensorBoard scalars per candidate
    final/run_R/             --final: the winner trained with the full evaluation config
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas_core import (CHECKPOINT_FILE, CONFIG_FLAGS, GENOTYPE_FILE, RESULTS_FILE, Component, Config, ConfigError,
                      Genotype, NasError, SearchSpace, Toolkit, build_space, check_resume_flags, check_same_data,
                      mark_run_dir, read_record, read_results, recorded_seconds, write_json, write_record,
                      write_text_atomic)
from nas_random.plugin import FINAL_PRESET_OF
from nas_random.sampler import sample_candidate
from nas_select.protocol import (RANDOM_FILE, SAME_DATA_HINT, SELECT_FILE, diverged, error_text, final_config,
                                 load_configs, log_failures, need_final, pick_metric, positive, progress,
                                 read_manifest, repeats, run_final, save_configs, seed_records, select_best,
                                 selection_cost, short_stage_config, tensorboard_scalars, train_candidate, write_table)

log = logging.getLogger("nas")


def network_space(toolkit: Toolkit, config: Config) -> SearchSpace:
    """The space as the training engine builds it: the space's name with the ``network`` options."""
    return build_space(toolkit.registries, Component(config.space.name, config.network))


# -- nas random --------------------------------------------------------------------------------

def budget_seconds(path: Path) -> float:
    """The recorded wall time of a finished search run, or of a nas select directory's searches
    and short trainings (the selection protocol's whole cost): a positive number of seconds."""
    what = f"--budget-from {path}"
    if not path.is_dir():
        raise ConfigError(f"{what}: the directory does not exist" if not path.exists() else f"{what}: not a directory")
    if (path / SELECT_FILE).is_file():
        total = selection_cost(seed_records(path, read_manifest(path, SELECT_FILE, "select")["seeds"]))
        if total <= 0:
            raise ConfigError(f"{what}: no seed of this selection has a recorded wall time yet")
        return total
    try:
        results = read_results(path) or {}
    except NasError as e:
        raise ConfigError(f"{what}: {e}") from None
    if "wall_time_s" not in results:
        raise ConfigError(f"{what}: no {RESULTS_FILE} with wall_time_s (name a finished search run directory or a "
                          f"nas select directory)")
    total = recorded_seconds(results["wall_time_s"], what)
    if total <= 0:
        raise ConfigError(f"{what}: {path / RESULTS_FILE} records a wall time of 0 s: no budget to spend")
    return total


def _budget(args: argparse.Namespace) -> float | None:
    """The time budget in seconds (None: --samples), checked before anything is written: a NaN
    or infinite budget would never be spent."""
    if args.budget_from:
        return sum(budget_seconds(Path(p)) for p in args.budget_from)
    if args.budget_hours is None:
        return None
    if not positive(args.budget_hours):
        raise ConfigError(f"--budget-hours must be a positive number of hours, got {args.budget_hours}")
    return args.budget_hours * 3600


def _should_stop(manifest: Mapping[str, Any], index: int, records: Sequence[Mapping[str, Any]]) -> bool:
    if manifest.get("samples") is not None:
        return index >= manifest["samples"]
    spent = sum(float(r.get("wall_time_s") or 0.0) for r in records)
    if not records:
        return False
    # start another candidate only if the budget left covers the mean candidate so far (written
    # so that a NaN anywhere stops the search instead of never stopping it)
    return not spent + spent / len(records) <= manifest["budget_s"]


def random_search(args: argparse.Namespace, toolkit: Toolkit) -> int:
    show, times = progress(args), repeats(args)
    if args.resume:
        check_resume_flags(args, (*CONFIG_FLAGS, "out", "force", "short_set", "final_set", "samples", "budget_from",
                                  "budget_hours", "final_preset", "metric"))
        root = Path(args.resume)
        manifest = read_manifest(root, RANDOM_FILE, "random")
        configs = load_configs(toolkit, root, ("short", "final"), args.device)
    else:
        if args.samples is None and not args.budget_from and args.budget_hours is None:
            raise ConfigError("nas random needs --samples N, --budget-from DIR or --budget-hours H")
        if args.samples is not None and args.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {args.samples}")
        preset = args.preset or "random_short"
        short = short_stage_config(toolkit, args, preset)
        final_preset = args.final_preset or FINAL_PRESET_OF.get(preset) or toolkit.registries.default_preset()
        final = final_config(toolkit, args, final_preset)
        check_same_data({"short-budget": short, **({"final": final} if final is not None else {})}, SAME_DATA_HINT)
        budget_from = [str(p) for p in args.budget_from or []]
        budget_s = _budget(args)
        if args.out and (Path(args.out) / RANDOM_FILE).is_file():
            raise NasError(f"{args.out} already holds a random search; continue it with --resume {args.out}")
        root = toolkit.new_run_dir(args.out, short, "random", force=args.force)
        mark_run_dir(root, "random")
        configs = {"short": short, "final": final}
        save_configs(root, configs)
        manifest = {"command": "random", "seed": short.seed, "samples": args.samples, "budget_s": budget_s,
                    "budget_from": budget_from, "short_preset": preset, "final_preset": final_preset,
                    "metric": args.metric or "auto", "space": short.space.name,
                    "dataset": short.dataset.name}
        write_json(root / RANDOM_FILE, manifest)
    short = configs["short"]
    assert short is not None
    space = network_space(toolkit, short)
    spec = space.arch_spec()
    seed = manifest["seed"]
    if manifest.get("budget_s") is not None:
        log.info("random search: sampling until %.0f s of training are spent", manifest["budget_s"])
    records: list[dict[str, Any]] = []
    metric: str | None = None
    index = 0
    while True:
        cand_dir = root / "candidates" / f"{index:03d}"
        record = read_record(cand_dir)
        if record is None or record.get("status") != "done":
            started = (cand_dir / CHECKPOINT_FILE).is_file() or record is not None
            if not started and _should_stop(manifest, index, records):
                break
            genotype = sample_candidate(spec, seed, index)
            space.validate(genotype)
            record = {"index": index, "genotype": genotype.to_dict(), "run_dir": str(cand_dir.relative_to(root))}
            log.info("candidate %d (%s)", index, cand_dir)
            t0 = time.monotonic()
            try:
                record.update(status="done", **train_candidate(toolkit, short, genotype, cand_dir, device=args.device,
                                                               progress=show))
            except Exception as e:  # noqa: BLE001 - recorded and reported, the search goes on
                record.update(status="failed", error=error_text(e), wall_time_s=time.monotonic() - t0)
            if record["status"] == "done" and (why := diverged(record["valid"], manifest["metric"])):
                record.update(status="failed", error=why)
            if record["status"] == "failed":
                log.error("candidate %d failed: %s", index, record["error"])
            write_record(cand_dir, record)
            if record["status"] == "done":
                metric = metric or pick_metric(record["valid"], manifest["metric"])
                best_so_far = select_best([*records, record], manifest["metric"])[0]
                tensorboard_scalars(root, [(f"random/{metric}", record["valid"].get(metric), index),
                                           (f"random/best_{metric}", best_so_far["valid"].get(metric), index),
                                           ("random/params_M", record.get("params", 0) / 1e6, index),
                                           ("random/wall_time_s", record["wall_time_s"], index)])
        records.append(record)
        index += 1
        done = [r for r in records if r["status"] == "done"]
        if done:
            best, metric = select_best(records, manifest["metric"])
            write_table(root, "candidates", records, metric, best, "index")
    failed = [r for r in records if r["status"] == "failed"]
    if not any(r["status"] == "done" for r in records):
        write_table(root, "candidates", records, None, None, "index")
        log_failures(failed, "candidate {index}")
        raise NasError(f"no candidate of {root} finished (see candidates.csv)")
    best, metric = select_best(records, manifest["metric"])
    write_text_atomic(root / GENOTYPE_FILE, Genotype.from_dict(best["genotype"]).to_json())
    spent = sum(float(r.get("wall_time_s") or 0.0) for r in records)
    print(f"\nrandom search: {len(records)} candidates ({len(failed)} failed), {spent:.0f} s of training"
          + (f" of a {manifest['budget_s']:.0f} s budget" if manifest.get("budget_s") is not None else ""))
    print(f"best by {metric}: candidate {best['index']} ({best['valid'][metric]:.4g}, "
          f"{best.get('params', 0) / 1e6:.3f} M params) -> {root / GENOTYPE_FILE}; table {root / 'candidates.csv'}")
    log_failures(failed, "candidate {index}")
    if args.final:
        run_final(toolkit, root, need_final(configs, root), Genotype.from_dict(best["genotype"]), times,
                  device=args.device, progress=show,
                  winner={"index": best["index"], "metric": metric, "valid": best["valid"][metric]})
    return 1 if failed else 0
