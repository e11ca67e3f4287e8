"""``nas random``, ``nas select`` and ``nas compare``.

Layout of a ``nas random`` directory::

    random.json              what was asked (samples or budget, seed, presets, metric)
    configs/{short,final}/   the resolved stage configs (config.yaml)
    candidates/NNN/          one training run per candidate (+ record.json when it ended)
    candidates.csv/.json     every candidate: genotype, validation metric, params, wall time, run dir
    genotype.json            the winner (so `nas train --genotype DIR` trains it)
    tb/                      TensorBoard scalars per candidate
    final/run_R/             --final: the winner trained with the full evaluation config

A ``nas select`` directory holds ``select.json``, ``configs/{search,short,final}``, ``seed_I/search``
and ``seed_I/short`` (+ ``seed_I/record.json``, and ``seed_I/running.json`` while a process works on
the seed), ``selection.csv/.json``, ``genotype.json``, ``tb/`` and ``final/``. It appears complete
with ``select.json`` and its configs (one rename), so processes started together with one ``--out``
(``--only-seed``) find either nothing, and race to create it, or a selection to join.
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from nas_core import (Config, ConfigError, Genotype, NasError, SearchSpace, Toolkit, brief, config_differences,
                      create_text_exclusive, load_yaml, mark_run_dir, write_text_atomic)
from nas_random.plugin import FINAL_PRESET_OF
from nas_random.protocol import (CHECKPOINT_FILE, CONFIG_FLAGS, IGNORED_KEYS, RECORD_FILE, RESULTS_FILE,
                                 check_resume_flags, check_same_data, diverged, error_text, format_test, is_number,
                                 load_stage_config, log_failures, pick_metric, read_mapping, read_record,
                                 save_stage_config, seconds, select_best, short_stage_config, stage_config,
                                 tensorboard_scalars, train_candidate, run_final, write_json, write_table)
from nas_random.sampler import sample_candidate

log = logging.getLogger("nas")

RANDOM_FILE = "random.json"
SELECT_FILE = "select.json"
GENOTYPE_FILE = "genotype.json"


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def network_space(toolkit: Toolkit, config: Config) -> SearchSpace:
    """The space as the training engine builds it: the space's name with the ``network`` options."""
    entry = toolkit.registries.spaces.get(config.space.name)
    space = entry.factory(config.network)
    if not isinstance(space, SearchSpace):
        raise NasError(f"space {config.space.name!r} built a {type(space).__name__}, not a SearchSpace")
    return space


def _final_config(toolkit: Toolkit, args: argparse.Namespace, preset: str) -> Config | None:
    try:
        return stage_config(toolkit, args, preset, args.final_set)
    except NasError:
        if args.final:
            raise
        log.warning("no final evaluation config (preset %r): --final will not be available", preset)
        return None


def _save_configs(root: Path, configs: Mapping[str, Config | None]) -> None:
    for stage, config in configs.items():
        if config is not None:
            save_stage_config(root, stage, config)


def _load_configs(toolkit: Toolkit, root: Path, stages: Sequence[str], device: str | None) -> dict[str, Config | None]:
    return {s: load_stage_config(toolkit, root, s, device) if (root / "configs" / s / "config.yaml").is_file()
            else None for s in stages}


def _need_final(configs: Mapping[str, Config | None], root: Path) -> Config:
    if configs.get("final") is None:
        raise ConfigError(f"{root} has no final evaluation config; train its genotype.json with nas train instead")
    return configs["final"]  # type: ignore[return-value]


def _repeats(args: argparse.Namespace) -> int:
    if args.final_repeats is not None and args.final_repeats < 1:
        raise ConfigError(f"--final-repeats must be at least 1, got {args.final_repeats}")
    return args.final_repeats or 1


def _manifest(root: Path, name: str, command: str) -> dict[str, Any]:
    """``root``'s select.json or random.json, checked where a damaged one would misbehave."""
    if not root.is_dir():
        raise NasError(f"{root} does not exist" if not root.exists() else f"{root} is not a directory")
    if not (root / name).is_file():
        raise NasError(f"{root} is not a nas {command} directory (no {name})")
    manifest = read_mapping(root / name)
    bad = [] if type(manifest.get("seed")) is int else ["seed"]  # type(): a bool is no seed
    if name == SELECT_FILE and not (type(manifest.get("seeds")) is int and manifest["seeds"] >= 1):
        bad.append("seeds")
    if name == RANDOM_FILE and manifest.get("samples") is None and not _positive(manifest.get("budget_s")):
        bad.append("budget_s")
    if bad:
        raise NasError(f"{root / name} is damaged: " + ", ".join(f"{k} is {brief(manifest.get(k))}" for k in bad))
    return manifest


def _positive(value: Any) -> bool:
    return is_number(value) and math.isfinite(value) and value > 0


# -- nas random --------------------------------------------------------------------------------

def budget_seconds(path: Path) -> float:
    """The recorded wall time of a finished search run, or of a nas select directory's searches
    and short trainings (the selection protocol's whole cost): a positive number of seconds."""
    what = f"--budget-from {path}"
    if not path.is_dir():
        raise ConfigError(f"{what}: the directory does not exist" if not path.exists() else f"{what}: not a directory")
    if (path / SELECT_FILE).is_file():
        records = [read_record(seed_dir) or {} for seed_dir in sorted(path.glob("seed_*"))]
        total = sum(float((r.get(stage) or {}).get("wall_time_s") or 0.0) for r in records
                    for stage in ("search", "short"))  # read_record checked each wall time
        if total <= 0:
            raise ConfigError(f"{what}: no seed of this selection has a recorded wall time yet")
        return total
    results = path / RESULTS_FILE
    wall_time = read_mapping(results).get("wall_time_s") if results.is_file() else None
    if wall_time is None:
        raise ConfigError(f"{what}: no {RESULTS_FILE} with wall_time_s (name a finished search run directory or a "
                          f"nas select directory)")
    total = seconds(wall_time, f"{what}: {results}")
    if total <= 0:
        raise ConfigError(f"{what}: {results} records a wall time of 0 s: no budget to spend")
    return total


def _budget(args: argparse.Namespace) -> float | None:
    """The time budget in seconds (None: --samples), checked before anything is written: a NaN
    or infinite budget would never be spent."""
    if args.budget_from:
        return sum(budget_seconds(Path(p)) for p in args.budget_from)
    if args.budget_hours is None:
        return None
    if not _positive(args.budget_hours):
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
    progress, repeats = _progress(args), _repeats(args)
    if args.resume:
        check_resume_flags(args, (*CONFIG_FLAGS, "samples", "budget_from", "budget_hours", "final_preset", "metric"))
        root = Path(args.resume)
        manifest = _manifest(root, RANDOM_FILE, "random")
        configs = _load_configs(toolkit, root, ("short", "final"), args.device)
    else:
        if args.samples is None and not args.budget_from and args.budget_hours is None:
            raise ConfigError("nas random needs --samples N, --budget-from DIR or --budget-hours H")
        if args.samples is not None and args.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {args.samples}")
        preset = args.preset or "random_short"
        short = short_stage_config(toolkit, args, preset)
        final_preset = args.final_preset or FINAL_PRESET_OF.get(preset) or toolkit.registries.default_preset()
        final = _final_config(toolkit, args, final_preset)
        check_same_data({"short-budget": short, **({"final": final} if final is not None else {})})
        budget_from = [str(p) for p in args.budget_from or []]
        budget_s = _budget(args)
        if args.out and (Path(args.out) / RANDOM_FILE).is_file():
            raise NasError(f"{args.out} already holds a random search; continue it with --resume {args.out}")
        root = toolkit.new_run_dir(args.out, short, "random", force=args.force)
        mark_run_dir(root, "random")
        configs = {"short": short, "final": final}
        _save_configs(root, configs)
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
                                                               progress=progress))
            except Exception as e:  # noqa: BLE001 - recorded and reported, the search goes on
                record.update(status="failed", error=error_text(e), wall_time_s=time.monotonic() - t0)
            if record["status"] == "done" and (why := diverged(record["valid"], manifest["metric"])):
                record.update(status="failed", error=why)
            if record["status"] == "failed":
                log.error("candidate %d failed: %s", index, record["error"])
            write_json(cand_dir / RECORD_FILE, record)
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
        results = run_final(toolkit, root, _need_final(configs, root), Genotype.from_dict(best["genotype"]),
                            repeats, device=args.device, progress=progress,
                            winner={"index": best["index"], "metric": metric, "valid": best["valid"][metric]})
        print(f"final: {format_test(results)} ({root / 'final'})")
    return 1 if failed else 0


# -- nas select --------------------------------------------------------------------------------

class SeedLock:
    """``seed_I/running.json`` (pid and host) while a process works on seed I: a second process
    skips that seed. The file is created complete in one step, so one that does not read as a pid
    and a host was left damaged by a crash; it is taken over, like one left by a process that
    died on this host."""

    def __init__(self, seed_dir: Path):
        self.path = seed_dir / "running.json"
        self.held = False

    def acquire(self) -> str | None:
        """None when acquired, else who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                create_text_exclusive(self.path, json.dumps(me))
            except FileExistsError:
                try:
                    data = self.path.read_bytes()
                except FileNotFoundError:
                    continue  # released meanwhile
                holder = _live_holder(data, me["host"])
                if holder is not None:
                    return holder
                self._remove_stale(data)
                continue
            self.held = True
            return None
        return "another process"

    def _remove_stale(self, data: bytes) -> None:
        """Remove the stale lock that held ``data``; moved aside and compared first, so that a lock
        another process took over meanwhile is put back, not removed."""
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if aside.read_bytes() != data:
                os.link(aside, self.path)
        except FileExistsError:  # a third process locked it meanwhile: it holds the seed
            pass
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _live_holder(data: bytes, host: str) -> str | None:
    """Who holds a lock that reads ``data``; None when it is stale: not a pid and a host, or a
    process that is gone from this host (one on another host cannot be checked from here)."""
    try:
        holder = json.loads(data)
    except ValueError:  # not JSON, or not text
        return None
    if not isinstance(holder, dict) or type(holder.get("pid")) is not int or not isinstance(holder.get("host"), str):
        return None
    if holder["host"] == host and not _alive(holder["pid"]):
        return None
    return f"process {holder['pid']} on {holder['host']}"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def run_seed(toolkit: Toolkit, root: Path, configs: Mapping[str, Config | None], index: int, base_seed: int, *,
             metric: str, device: str | None, progress: bool | None) -> dict[str, Any] | None:
    """Search, then short training, for seed ``base_seed + index``; the record (None: another
    process holds this seed). Finished stages are not run again; a failure, or a short training
    whose selection ``metric`` is not finite, is recorded as a failed seed."""
    seed_dir = root / f"seed_{index}"
    previous = read_record(seed_dir) or {}
    if previous.get("status") == "done":
        return previous
    lock = SeedLock(seed_dir)
    holder = lock.acquire()
    if holder is not None:
        log.warning("seed %d is being run by %s; skipping it here (remove %s if that process is gone)", index, holder,
                    lock.path)
        return None
    try:
        seed = base_seed + index
        record: dict[str, Any] = {"seed_index": index, "seed": seed, "run_dir": f"seed_{index}"}
        stage = "search"
        t0 = time.monotonic()
        try:
            if previous.get("search"):
                record["search"], record["genotype"] = previous["search"], previous["genotype"]
            else:
                search_dir = seed_dir / "search"
                config = attrs.evolve(configs["search"], seed=seed)
                resume = (search_dir / CHECKPOINT_FILE).is_file()
                if resume:
                    config = toolkit.saved_config(search_dir, device)
                log.info("seed %d: search (%s)", seed, search_dir)
                genotype = toolkit.search(config, search_dir, resume=resume, progress=progress)
                if genotype is None:
                    raise NasError(f"{search_dir}: the search derived no genotype")
                results = read_mapping(search_dir / RESULTS_FILE) if (search_dir / RESULTS_FILE).is_file() else {}
                record["search"] = {"wall_time_s": float(results.get("wall_time_s", time.monotonic() - t0)),
                                    "device": results.get("device", str(config.device)),
                                    "run_dir": str(search_dir.relative_to(root))}
                record["genotype"] = genotype.to_dict()
                write_json(seed_dir / RECORD_FILE, {**record, "status": "searched"})
            stage = "short"
            genotype = Genotype.from_dict(record["genotype"])
            short_dir = seed_dir / "short"
            log.info("seed %d: short-budget training (%s)", seed, short_dir)
            t0 = time.monotonic()
            short = train_candidate(toolkit, attrs.evolve(configs["short"], seed=seed), genotype, short_dir,
                                    device=device, progress=progress)
            record["short"] = {**short, "run_dir": str(short_dir.relative_to(root))}
            record.update(status="done", valid=short["valid"], **{k: short[k] for k in ("params", "multiply_adds")
                                                                  if k in short},
                          wall_time_s=record["search"]["wall_time_s"] + short["wall_time_s"],
                          device=record["search"]["device"])
        except Exception as e:  # noqa: BLE001 - recorded and reported; the other seeds go on
            record.update(status="failed", stage=stage, error=error_text(e))
            if stage == "short" and "search" in record:
                record["wall_time_s"] = record["search"]["wall_time_s"] + time.monotonic() - t0
        if record["status"] == "done" and (why := diverged(record["valid"], metric)):
            record.update(status="failed", stage="short", error=why)
        if record["status"] == "failed":
            log.error("seed %d failed in its %s: %s", seed, record["stage"], record["error"])
        write_json(seed_dir / RECORD_FILE, record)
        return record
    finally:
        lock.release()


def select(args: argparse.Namespace, toolkit: Toolkit) -> int:
    progress, repeats = _progress(args), _repeats(args)
    stages = ("search", "short", "final")
    if args.resume:
        check_resume_flags(args, (*CONFIG_FLAGS, "seeds", "short_preset", "final_preset", "metric"))
        root = Path(args.resume)
        manifest = _manifest(root, SELECT_FILE, "select")
        _check_only_seed(args, manifest["seeds"])
        configs = _load_configs(toolkit, root, stages, args.device)
    else:
        if not args.seeds or args.seeds < 1:
            raise ConfigError("nas select needs --seeds N (at least 1)")
        _check_only_seed(args, args.seeds)
        search_preset = args.preset or toolkit.registries.default_preset()
        short_preset = args.short_preset or "random_short"
        final_preset = args.final_preset or search_preset
        search = stage_config(toolkit, args, search_preset, [])
        short = short_stage_config(toolkit, args, short_preset)
        final = _final_config(toolkit, args, final_preset)
        check_same_data({"search": search, "short-budget": short, **({"final": final} if final is not None else {})})
        configs = {"search": search, "short": short, "final": final}
        manifest = {"command": "select", "seed": search.seed, "seeds": args.seeds, "search_preset": search_preset,
                    "short_preset": short_preset, "final_preset": final_preset, "metric": args.metric or "auto",
                    "optimizer": search.optimizer.name,
                    "space": search.space.name, "dataset": search.dataset.name}
        root = _create_or_join(toolkit, args, configs, manifest)
    n = manifest["seeds"]
    indices = [args.only_seed] if args.only_seed is not None else list(range(n))
    for i in indices:
        record = run_seed(toolkit, root, configs, i, manifest["seed"], metric=manifest["metric"], device=args.device,
                          progress=progress)
        if record is not None and record.get("status") == "done":
            metric = pick_metric(record["valid"], manifest["metric"])
            search_s = (record.get("search") or {}).get("wall_time_s")
            tensorboard_scalars(root, [(f"select/short_{metric}", record["valid"][metric], i),
                                       ("select/search_wall_time_s", search_s, i),
                                       ("select/params_M", record.get("params", 0) / 1e6, i)])
    # which seed a record is for follows from where it lies, whatever the file says
    records = [{**(read_record(root / f"seed_{i}") or {"status": "not run"}), "seed_index": i,
                "seed": manifest["seed"] + i, "run_dir": f"seed_{i}"} for i in range(n)]
    for r in records:
        if r.get("status") == "searched":
            r["status"] = "running" if (root / r["run_dir"] / "running.json").is_file() else "interrupted"
    done = [r for r in records if r["status"] == "done"]
    failed = [r for r in records if r["status"] == "failed"]
    if done:
        best, metric = select_best(records, manifest["metric"])
        write_table(root, "selection", records, metric, best, "seed_index")
    else:
        write_table(root, "selection", records, None, None, "seed_index")
    log_failures(failed, "seed {seed}")
    if args.only_seed is not None:
        r = records[args.only_seed]
        print(f"\nseed {r['seed']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else "")
              + f"; select once every seed is done: nas select --resume {root}")
        return 0 if r["status"] == "done" else 1
    pending = [r for r in records if r["status"] not in ("done", "failed")]
    if pending:
        print(f"\nseeds {', '.join(str(r['seed']) for r in pending)} are not finished (running in another process, "
              f"or interrupted): nothing selected yet; continue with nas select --resume {root}")
        return 1
    if not done:
        raise NasError(f"every seed of {root} failed (see selection.csv)")
    write_text_atomic(root / GENOTYPE_FILE, Genotype.from_dict(best["genotype"]).to_json())
    print(f"\nselection: {len(done)} of {n} seeds finished; best by {metric}: seed {best['seed']} "
          f"({best['valid'][metric]:.4g}, {best.get('params', 0) / 1e6:.3f} M params) -> {root / GENOTYPE_FILE}; "
          f"table {root / 'selection.csv'}")
    if failed:
        print(f"failed seeds (recorded in selection.csv): {', '.join(str(r['seed']) for r in failed)}; "
              f"nas select --resume {root} retries them")
    if args.final:
        results = run_final(toolkit, root, _need_final(configs, root), Genotype.from_dict(best["genotype"]),
                            repeats, device=args.device, progress=progress,
                            winner={"seed": best["seed"], "metric": metric, "valid": best["valid"][metric]})
        print(f"final: {format_test(results)} ({root / 'final'})")
    return 1 if failed else 0


def _check_only_seed(args: argparse.Namespace, n: int) -> None:
    if args.only_seed is not None and not 0 <= args.only_seed < n:
        raise ConfigError(f"--only-seed {args.only_seed}: this selection has seed indices 0..{n - 1}")


def _create_or_join(toolkit: Toolkit, args: argparse.Namespace, configs: Mapping[str, Config | None],
                    manifest: Mapping[str, Any]) -> Path:
    """A new selection directory; or, when --out holds this selection already, that one (processes
    started together with one --out, one per GPU, share it). Whichever process renames its complete
    directory into place first creates it; the others find its select.json and join."""
    search = configs["search"]
    assert search is not None
    for _ in range(3):  # each pass either returns, raises, or finds the directory another process made
        if args.out and (Path(args.out) / SELECT_FILE).is_file():
            return _join(Path(args.out), manifest, configs)
        try:
            root = toolkit.new_run_dir(args.out, search, f"select-{search.optimizer.name}", force=args.force)
        except NasError:
            if args.out and (Path(args.out) / SELECT_FILE).is_file():
                continue  # created by another process since the check above
            raise
        if root.is_dir() and any(root.iterdir()):
            # --force into a folder that holds other files: written in place, select.json last and
            # exclusively, so of processes started together one creates the selection, the others join
            mark_run_dir(root, "select")
            _save_configs(root, configs)
            try:
                create_text_exclusive(root / SELECT_FILE, json.dumps(manifest, indent=2) + "\n")
                return root
            except FileExistsError:
                continue
        if _create_dir(root, lambda d: (mark_run_dir(d, "select"), _save_configs(d, configs),
                                        write_json(d / SELECT_FILE, manifest))):
            return root
    raise NasError(f"--out {args.out}: other processes keep creating and removing it; try again")


def _create_dir(root: Path, fill: Callable[[Path], Any]) -> bool:
    """Create ``root`` (absent or an empty folder) complete: filled by ``fill`` beside it, then
    renamed into place (rename(2) is atomic). False when another process created it first."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f".{root.name}.{os.getpid()}.{time.time_ns()}.tmp")
    staging.mkdir()
    try:
        fill(staging)
        os.rename(staging, root)
        return True
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise NasError(f"cannot create {root}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _join(root: Path, manifest: Mapping[str, Any], configs: Mapping[str, Config | None]) -> Path:
    """``root``, the selection another process started, if it was started with these settings."""
    saved = _manifest(root, SELECT_FILE, "select")
    diffs = [k for k in ("seed", "seeds", "search_preset", "short_preset", "final_preset", "metric")
             if saved.get(k) != manifest.get(k)]
    for stage, config in configs.items():
        path = root / "configs" / stage / "config.yaml"
        if config is not None and path.is_file():
            diffs += [f"{stage}: {k}" for k in config_differences(read_config(path), config.layout(), IGNORED_KEYS)]
    if diffs:
        raise NasError(f"{root} already holds a selection with other settings ({', '.join(diffs)}); continue it with "
                       f"nas select --resume {root} [--only-seed I], or choose another --out")
    log.info("joining the selection in %s", root)
    return root


# -- nas compare -------------------------------------------------------------------------------

FINAL_SECTIONS = ("task", "dataset", "network", "trainer", "train")  # and the space's name
#: the columns of PREFIX.csv; its header line is how nas compare knows a CSV file it wrote
CSV_COLUMNS = ("method", "metric", "mean", "std", "n", "params_M", "search_cost_hours", "cost_device", "devices",
               "dataset", "runs")


def read_config(path: Path) -> dict[str, Any]:
    """A saved ``config.yaml`` (read safely, within bounds: no YAML tag builds an object), checked as far as a
    comparison reads it: a mapping of sections with the dataset's name."""
    try:
        data = load_yaml(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise NasError(f"cannot read {path}: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise NasError(f"{path} is not a saved nas config: " + ("it is empty" if data is None else
                                                                f"a {type(data).__name__}, not a mapping"))
    bad = [k for k in (*FINAL_SECTIONS, "space") if k in data and not isinstance(data[k], dict)]
    if bad or not (data.get("dataset") or {}).get("name"):
        raise NasError(f"{path} is not a saved nas config: " + (f"{bad[0]} is not a section" if bad
                                                                else "no dataset.name"))
    return data


def _eval_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two training configs in what the trained network and its test depend on."""
    diffs = config_differences(a, b, IGNORED_KEYS, FINAL_SECTIONS)
    if (a.get("space") or {}).get("name") != (b.get("space") or {}).get("name"):
        diffs.append("space.name")
    return diffs


def _final_runs(root: Path) -> list[Path]:
    runs = sorted(p for p in (root / "final").glob("run_*") if (p / RESULTS_FILE).is_file())
    if not runs:
        raise NasError(f"{root} has no final evaluation ({root / 'final'}): run it with --resume {root} --final")
    return runs


def describe_run(arg: str) -> dict[str, Any]:
    """What nas compare needs from one argument ``[LABEL=]RUN_DIR``."""
    label, sep, path_text = arg.partition("=")
    if not sep or Path(arg).exists():
        label, path_text = "", arg
    root = Path(path_text)
    if not root.is_dir():
        raise NasError(f"{root} does not exist" if not root.exists() else f"{root} is not a directory")
    if (root / SELECT_FILE).is_file():
        manifest = _manifest(root, SELECT_FILE, "select")
        records = [read_record(root / f"seed_{i}") or {} for i in range(manifest["seeds"])]
        cost = sum(float((r.get(s) or {}).get("wall_time_s") or 0.0) for r in records for s in ("search", "short"))
        devices = {str((r.get("search") or {}).get("device", "")) for r in records} - {""}
        method, runs = label or str(manifest.get("optimizer")), _final_runs(root)
        short = root / "configs/short/config.yaml"
        kind = f"select ({manifest['seeds']} seeds)"
    elif (root / RANDOM_FILE).is_file():
        records = [read_record(p.parent) or {} for p in sorted((root / "candidates").glob(f"*/{RECORD_FILE}"))]
        cost = sum(float(r.get("wall_time_s") or 0.0) for r in records)
        devices = {str(r.get("device", "")) for r in records} - {""}
        method, runs, short = label or "random", _final_runs(root), root / "configs/short/config.yaml"
        kind = f"random ({len(records)} candidates)"
    elif (root / RESULTS_FILE).is_file() and (root / "config.yaml").is_file():
        method, runs, short, cost, devices, kind = label or "train", [root], None, None, set(), "train"
    else:
        raise NasError(f"{root} is neither a nas select, a nas random nor a finished nas train directory")
    return {"dir": str(root), "method": method, "kind": kind, "finals": [_final_results(p) for p in runs],
            "cost_s": cost, "devices": devices, "short": read_config(short) if short is not None and short.is_file()
            else None}


def _final_results(run_dir: Path) -> dict[str, Any]:
    """The results of one finished training run (its test metrics, params) and its config."""
    path = run_dir / RESULTS_FILE
    results = read_mapping(path)
    if "genotype" in results and not any(k.startswith("test_") for k in results):
        raise NasError(f"{run_dir} is a search run: it has no test metric to compare; train the cell it found with "
                       f"nas train --genotype {run_dir} and compare that training run")
    bad = [k for k, v in results.items() if (k.startswith("test_") or k == "params") and not is_number(v)]
    if bad:
        raise NasError(f"{path} is damaged: {bad[0]} is {brief(results[bad[0]])}, not a number")
    return {**results, "config": read_config(run_dir / "config.yaml"), "dir": str(run_dir)}


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def check_comparable(runs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse runs on different data or with different evaluation (or short-budget) settings."""
    finals = [(run["dir"], f) for run in runs for f in run["finals"]]
    datasets = {f["config"]["dataset"]["name"] for _, f in finals}
    if len(datasets) > 1:
        per = ", ".join(f"{d}: {f['config']['dataset']['name']}" for d, f in finals)
        raise NasError(f"nas compare refuses to mix datasets ({per})")
    ref_dir, ref = finals[0]
    for d, f in finals[1:]:
        diffs = _eval_differences(ref["config"], f["config"])
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
        return first == ",".join(CSV_COLUMNS)
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
    runs = [describe_run(a) for a in args.runs]
    check_comparable(runs)
    prefix = compare_prefix(args, runs)
    md_path, csv_path = prefix.with_name(prefix.name + ".md"), prefix.with_name(prefix.name + ".csv")
    check_outputs((md_path, csv_path), args.force)
    first = runs[0]["finals"][0]
    metric = pick_metric({k: v for k, v in first.items() if k.startswith("test_")}, args.metric, prefix="test_")
    dataset = first["config"]["dataset"]["name"]  # the same for all: check_comparable
    methods: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        methods.setdefault(run["method"], []).append(run)
    percent = metric.endswith(("error", "acc"))
    name = metric[len("test_"):].replace("_", " ")
    header = ["Method", f"Test {name}{' (%)' if percent else ''}", "Params (M)", "Search cost", "Final runs",
              "Directories"]
    rows, csv_rows = [], []
    for method, group in methods.items():
        values = [float(f[metric]) for run in group for f in run["finals"] if metric in f]
        if not values:
            raise NasError(f"no {metric} in the final runs of {', '.join(r['dir'] for r in group)}")
        mean, std = _mean_std(values)
        scale = 100 if percent else 1
        params = [float(f["params"]) / 1e6 for run in group for f in run["finals"] if "params" in f]
        costs = [run["cost_s"] for run in group if run["cost_s"] is not None]
        devices = set().union(*(run["devices"] for run in group))
        unit = "GPU" if devices and all("cuda" in d for d in devices) else "CPU" if devices and not any(
            "cuda" in d for d in devices) else "mixed"
        cost_h = sum(costs) / len(costs) / 3600 if costs else None
        metric_text = f"{scale * mean:.2f}" + (f" +- {scale * std:.2f}" if std is not None else "")
        cost_text = "-" if cost_h is None else f"{cost_h:.3g} {unit}-hours"
        rows.append([method, metric_text, f"{sum(params) / len(params):.3f}" if params else "-", cost_text,
                     str(len(values)), ", ".join(run["dir"] for run in group)])
        csv_rows.append({"method": method, "metric": metric, "mean": scale * mean,
                         "std": "" if std is None else scale * std, "n": len(values),
                         "params_M": sum(params) / len(params) if params else "",
                         "search_cost_hours": "" if cost_h is None else cost_h, "cost_device": unit,
                         "devices": "; ".join(sorted(devices)), "dataset": dataset,
                         "runs": "; ".join(run["dir"] for run in group)})
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    text = (f"Dataset {dataset}; test metric {metric} (mean +- std over final runs; search cost per run of the "
            f"method: searches plus short trainings, or all random candidates)\n\n" + "\n".join(md) + "\n")
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
