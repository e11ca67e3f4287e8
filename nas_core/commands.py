"""What each ``nas`` subcommand does, given parsed arguments."""

from __future__ import annotations

import argparse
import fnmatch
import logging
from pathlib import Path
from typing import Any

from nas_core.checkpoint import write_text_atomic
from nas_core.config import Config, Layer, load_yaml_file, parse_set, resolve, to_yaml
from nas_core.errors import ConfigError, NasError
from nas_core.plugins import REGISTRATION_HOOKS, Registries, collect_registries, distribution_of, make_plugin_manager
from nas_core.run import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, attach_log_file, default_run_dir

log = logging.getLogger("nas")

_NAME_FLAGS = ("space", "optimizer", "relaxation", "discretizer", "dataset")


def config_from_args(registries: Registries, args: argparse.Namespace) -> Config:
    layers = [Layer(load_yaml_file(path), f"config file {path}") for path in args.config]
    flags: dict[str, Any] = {key: {"name": getattr(args, key)} for key in _NAME_FLAGS if getattr(args, key)}
    for key in ("seed", "device", "data_root"):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    layers.append(Layer(flags, "command line"))
    layers.append(Layer(parse_set(args.set), "--set"))
    return resolve(registries, layers, preset=args.preset or "demo")


def run(args: argparse.Namespace) -> int:
    from nas_core.search import prepare_search, run_search

    pm = make_plugin_manager()
    registries = collect_registries(pm)
    if args.resume:
        run_dir = Path(args.resume)
        overridden = [f"--{k.replace('_', '-')}" for k in (*_NAME_FLAGS, "seed", "data_root", "preset")
                      if getattr(args, k) is not None] + (["--config"] if args.config else []) + \
                     (["--set"] if args.set else []) + (["--out"] if args.out else [])
        if overridden:
            raise ConfigError(f"--resume continues a run with its saved {CONFIG_FILE}; drop {', '.join(overridden)} "
                              f"(only --device may change)")
        if not (run_dir / CONFIG_FILE).is_file():
            raise NasError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
        if not (run_dir / CHECKPOINT_FILE).is_file():
            raise NasError(f"{run_dir} has no {CHECKPOINT_FILE} yet (no epoch finished): start it again instead")
        layers = [Layer(load_yaml_file(run_dir / CONFIG_FILE), f"saved config {run_dir / CONFIG_FILE}")]
        if args.device:
            layers.append(Layer({"device": args.device}, "command line"))
        config = resolve(registries, layers, preset=None)
        setup = prepare_search(registries, config)
    else:
        config = config_from_args(registries, args)
        run_dir = Path(args.out) if args.out else default_run_dir(Path("runs"), config)
        if (run_dir / CHECKPOINT_FILE).exists():
            raise NasError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                           f"or choose another --out")
        setup = prepare_search(registries, config)  # bad data or options fail before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / CONFIG_FILE, to_yaml(config))  # a run that never finished an epoch is redone

    handler = attach_log_file(run_dir)
    try:
        genotype = run_search(setup, pm=pm, run_dir=run_dir, resume=bool(args.resume),
                              progress=False if args.no_progress else None)
    except KeyboardInterrupt:
        log.info("interrupted; continue with: nas run --resume %s", run_dir)
        raise
    finally:
        logging.getLogger("nas").removeHandler(handler)
        handler.close()
    print(f"\ngenotype ({run_dir / GENOTYPE_FILE}):\n{genotype.to_json()}", end="")
    return 0


def plugins() -> int:
    pm = make_plugin_manager()
    registries = collect_registries(pm)
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda t: t[0]):
        if plugin is None:  # blocked
            print(f"{name}  ({distribution_of(name)}) [disabled]")
            continue
        print(f"{name}  ({distribution_of(name)})")
        for attr, (_, kind) in REGISTRATION_HOOKS.items():
            names = [e.name for e in getattr(registries, attr) if e.plugin == name]
            if names:
                print(f"  {kind}s: {', '.join(names)}")
        presets = sorted(p for p, (_, owner, _) in registries.presets.items() if owner == name)
        if presets:
            print(f"  presets: {', '.join(presets)}")
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [] if not h.name.startswith("nas_register"))
        if hooks:
            print(f"  lifecycle hooks: {', '.join(hooks)}")
    return 0


def list_names(pattern: str) -> int:
    registries = collect_registries(make_plugin_manager())
    for attr, (_, kind) in REGISTRATION_HOOKS.items():
        registry = getattr(registries, attr)
        for name in registry.names(pattern):
            entry = registry.get(name)
            print(f"{kind:13s} {name:16s} {entry.plugin:12s} {entry.doc}")
    for name in sorted(registries.presets):
        if fnmatch.fnmatch(name, pattern):
            _, plugin, doc = registries.presets[name]
            print(f"{'preset':13s} {name:16s} {plugin:12s} {doc}")
    return 0


def config_show(args: argparse.Namespace) -> int:
    registries = collect_registries(make_plugin_manager())
    print(to_yaml(config_from_args(registries, args)), end="")
    return 0
