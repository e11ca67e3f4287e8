"""``nas select``: the selection protocol.

A ``nas select`` directory holds ``select.json``, ``configs/{search,short,final}``, ``seed_I/search``
and ``seed_I/short`` (+ ``seed_I/record.json``, and ``seed_I/running.json`` while a process works on
the seed), ``selection.csv/.json``, ``genotype.json``, ``tb/`` and ``final/``. It appears complete
with ``select.json`` and its configs (one rename), so processes started together with one ``--out``
(``--only-seed``) find either nothing, and race to create it, or a selection to join.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from nas_core import (CHECKPOINT_FILE, CONFIG_FLAGS, GENOTYPE_FILE, LOCK_FILE, Config, ConfigError, Genotype,
                      NasError, RunLock, Toolkit, check_resume_flags, check_same_data, config_changes,
                      create_text_exclusive, has_stage_config, load_stage_config, mark_run_dir, read_record,
                      read_results, write_json, write_record, write_text_atomic)
from nas_select.protocol import (SAME_DATA_HINT, SELECT_FILE, SELECT_STAGES, diverged, error_text, final_config,
                                 load_configs, log_failures, need_final, pick_metric, progress,
                                 read_manifest, repeats, run_final, save_configs, select_best, short_stage_config,
                                 stage_config, tensorboard_scalars, train_candidate, write_table)

log = logging.getLogger("nas")

STAGES = ("search", "short", "final")


def run_seed(toolkit: Toolkit, root: Path, configs: Mapping[str, Config | None], index: int, base_seed: int, *,
             metric: str, device: str | None, progress: bool | None) -> dict[str, Any] | None:
    """Search, then short training, for seed ``base_seed + index``; the record (None: another
    process holds this seed). Finished stages are not run again; a failure, or a short training
    whose selection ``metric`` is not finite, is recorded as a failed seed."""
    seed_dir = root / f"seed_{index}"
    previous = read_record(seed_dir, SELECT_STAGES) or {}
    if previous.get("status") == "done":
        return previous
    lock = RunLock(seed_dir)
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
                results = read_results(search_dir) or {}
                record["search"] = {"wall_time_s": float(results.get("wall_time_s", time.monotonic() - t0)),
                                    "device": results.get("device", str(config.device)),
                                    "run_dir": str(search_dir.relative_to(root)),
                                    **({"cell_cost": results["cell_cost"]} if "cell_cost" in results else {})}
                record["genotype"] = genotype.to_dict()
                write_record(seed_dir, {**record, "status": "searched"})
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
        write_record(seed_dir, record)
        return record
    finally:
        lock.release()


def select(args: argparse.Namespace, toolkit: Toolkit) -> int:
    show, times = progress(args), repeats(args)
    if args.resume:
        check_resume_flags(args, (*CONFIG_FLAGS, "out", "force", "short_set", "final_set", "seeds", "short_preset",
                                  "final_preset", "metric"))
        root = Path(args.resume)
        manifest = read_manifest(root, SELECT_FILE, "select")
        _check_only_seed(args, manifest["seeds"])
        configs = load_configs(toolkit, root, STAGES, args.device)
    else:
        if not args.seeds or args.seeds < 1:
            raise ConfigError("nas select needs --seeds N (at least 1)")
        _check_only_seed(args, args.seeds)
        search_preset = args.preset or toolkit.registries.default_preset()
        short_preset = args.short_preset or "random_short"
        final_preset = args.final_preset or search_preset
        search = stage_config(toolkit, args, search_preset, [])
        short = short_stage_config(toolkit, args, short_preset)
        final = final_config(toolkit, args, final_preset)
        check_same_data({"search": search, "short-budget": short, **({"final": final} if final is not None else {})},
                        SAME_DATA_HINT)
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
                          progress=show)
        if record is not None and record.get("status") == "done":
            metric = pick_metric(record["valid"], manifest["metric"])
            search_s = (record.get("search") or {}).get("wall_time_s")
            tensorboard_scalars(root, [(f"select/short_{metric}", record["valid"][metric], i),
                                       ("select/search_wall_time_s", search_s, i),
                                       ("select/params_M", record.get("params", 0) / 1e6, i)])
    # which seed a record is for follows from where it lies, whatever the file says
    records = [{**(read_record(root / f"seed_{i}", SELECT_STAGES) or {"status": "not run"}), "seed_index": i,
                "seed": manifest["seed"] + i, "run_dir": f"seed_{i}"} for i in range(n)]
    for r in records:
        if r.get("status") == "searched":
            r["status"] = "running" if (root / r["run_dir"] / LOCK_FILE).is_file() else "interrupted"
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
        run_final(toolkit, root, need_final(configs, root), Genotype.from_dict(best["genotype"]), times,
                  device=args.device, progress=show,
                  winner={"seed": best["seed"], "metric": metric, "valid": best["valid"][metric]})
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
            return _join(toolkit, Path(args.out), manifest, configs)
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
            save_configs(root, configs)
            try:
                create_text_exclusive(root / SELECT_FILE, json.dumps(manifest, indent=2) + "\n")
                return root
            except FileExistsError:
                continue
        if _create_dir(root, lambda d: (mark_run_dir(d, "select"), save_configs(d, configs),
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


def _join(toolkit: Toolkit, root: Path, manifest: Mapping[str, Any], configs: Mapping[str, Config | None]) -> Path:
    """``root``, the selection another process started, if it was started with these settings."""
    saved = read_manifest(root, SELECT_FILE, "select")
    diffs = [k for k in ("seed", "seeds", "search_preset", "short_preset", "final_preset", "metric")
             if saved.get(k) != manifest.get(k)]
    for stage, config in configs.items():
        if config is not None and has_stage_config(root, stage):
            diffs += [f"{stage}: {k}" for k in config_changes(load_stage_config(toolkit, root, stage), config)]
    if diffs:
        raise NasError(f"{root} already holds a selection with other settings ({', '.join(diffs)}); continue it with "
                       f"nas select --resume {root} [--only-seed I], or choose another --out")
    log.info("joining the selection in %s", root)
    return root
