"""What each ``nas`` subcommand does, given parsed arguments."""

from __future__ import annotations

import argparse
import fnmatch
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from nas_core.checkpoint import load_checkpoint, write_text_atomic
from nas_core.components import build
from nas_core.config import Component, Config, Layer, load_yaml_file, parse_set, resolve, to_yaml
from nas_core.errors import ConfigError, NasError
from nas_core.genotype import Genotype
from nas_core.genotype_io import format_darts_text, load_genotype
from nas_core.interfaces import Discretizer, Evaluator, Relaxation, SearchSpace
from nas_core.plugins import REGISTRATION_HOOKS, Registries, collect_registries, distribution_of, make_plugin_manager
from nas_core.run import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, attach_log_file, default_run_dir

log = logging.getLogger("nas")

_NAME_FLAGS = ("space", "optimizer", "relaxation", "discretizer", "dataset")


def config_from_args(registries: Registries, args: argparse.Namespace, target: Layer | None = None) -> Config:
    layers = [target] if target is not None else []
    layers += [Layer(load_yaml_file(path), f"config file {path}") for path in args.config]
    flags: dict[str, Any] = {key: {"name": getattr(args, key)} for key in _NAME_FLAGS if getattr(args, key, None)}
    for key in ("seed", "device", "data_root"):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    layers.append(Layer(flags, "command line"))
    layers.append(Layer(parse_set(args.set), "--set"))
    return resolve(registries, layers, preset=args.preset or "demo")


def _resumed_config(registries: Registries, args: argparse.Namespace, run_dir: Path) -> Config:
    flags = [*_NAME_FLAGS, "seed", "data_root", "preset", "genotype", "target"]
    overridden = [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k, None) is not None]
    overridden += (["--config"] if args.config else []) + (["--set"] if args.set else []) + \
                  (["--out"] if args.out else [])
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
    return resolve(registries, layers, preset=None)


def _execute(args: argparse.Namespace, kind: str, pm: Any, registries: Registries, make_config: Callable[[], Config],
             prepare: Callable[[Config, Path | None], Any], run: Callable[..., Any],
             write_inputs: Callable[[Path, Any], None] = lambda run_dir, prepared: None) -> tuple[Any, Path]:
    """The shared shape of search, train and transfer: resolve the config, prepare (validating
    everything; ``run_dir`` is given when resuming), only then create the run directory, run,
    and keep the log."""
    if args.resume:
        run_dir = Path(args.resume)
        config = _resumed_config(registries, args, run_dir)
        prepared = prepare(config, run_dir)
    else:
        config = make_config()
        run_dir = Path(args.out) if args.out else default_run_dir(Path("runs"), config, kind)
        if (run_dir / CHECKPOINT_FILE).exists():
            raise NasError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                           f"or choose another --out")
        prepared = prepare(config, None)  # bad data or options fail before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / CONFIG_FILE, to_yaml(config))  # a run that never finished an epoch is redone
        write_inputs(run_dir, prepared)
    handler = attach_log_file(run_dir)
    try:
        result = run(prepared, pm=pm, run_dir=run_dir, resume=bool(args.resume),
                     progress=False if args.no_progress else None)
    except KeyboardInterrupt:
        log.info("interrupted; continue with: nas %s --resume %s", args.command, run_dir)
        raise
    finally:
        logging.getLogger("nas").removeHandler(handler)
        handler.close()
    return result, run_dir


def _plugins() -> tuple[Any, Registries]:
    pm = make_plugin_manager()
    return pm, collect_registries(pm)


def run(args: argparse.Namespace) -> int:
    from nas_core.search import prepare_search, run_search

    pm, registries = _plugins()
    genotype, run_dir = _execute(args, "search", pm, registries, lambda: config_from_args(registries, args),
                                 lambda config, run_dir: prepare_search(registries, config), run_search)
    print(f"\ngenotype ({run_dir / GENOTYPE_FILE}):\n{genotype.to_json()}", end="")
    return 0


def _trained_genotype(registries: Registries, args: argparse.Namespace, run_dir: Path | None) -> Genotype:
    if run_dir is not None:  # resuming: the genotype the run started with
        return load_genotype(str(run_dir / GENOTYPE_FILE), {})
    if not args.genotype:
        raise NasError(f"nas {args.command} needs --genotype FILE|RUN_DIR|NAME; registered names: "
                       f"{', '.join(sorted(registries.genotypes))}")
    return load_genotype(args.genotype, registries.genotypes)


def _save_genotype(run_dir: Path, setup: Any) -> None:
    write_text_atomic(run_dir / GENOTYPE_FILE, setup.genotype.to_json())


def train(args: argparse.Namespace) -> int:
    from nas_core.train import format_results, prepare_training, run_training

    pm, registries = _plugins()
    results, run_dir = _execute(
        args, "train", pm, registries, lambda: config_from_args(registries, args),
        lambda config, run_dir: prepare_training(registries, config, _trained_genotype(registries, args, run_dir)),
        run_training, _save_genotype)
    print(f"\n{format_results(results)}  ({run_dir / 'results.json'})")
    return 0


def transfer(args: argparse.Namespace) -> int:
    from nas_core.train import format_results

    pm, registries = _plugins()
    if args.resume:
        raise NasError("a transfer run continues with: nas train --resume RUN_DIR (its config is saved there)")
    if not args.target:
        raise NasError(f"nas transfer needs --target; valid targets: {', '.join(registries.evaluators.names())}")
    entry = registries.evaluators.get(args.target)
    evaluator = build(registries.evaluators, Component(args.target, entry.options() if entry.options else None),
                      Evaluator)
    target = Layer(evaluator.config_layer(), f"target {args.target!r}", strict=False)
    results, run_dir = _execute(
        args, f"transfer-{args.target}", pm, registries, lambda: config_from_args(registries, args, target),
        lambda config, run_dir: evaluator.prepare(_trained_genotype(registries, args, None),
                                                  registries=registries, config=config),
        lambda prepared, pm, **kw: evaluator.run(prepared, plugin_manager=pm, **kw), _save_genotype)
    print(f"\n{format_results(results)}  ({run_dir / 'results.json'})")
    return 0


def derive(args: argparse.Namespace) -> int:
    source = Path(args.source)
    path = source / CHECKPOINT_FILE if source.is_dir() else source
    state = load_checkpoint(path)
    if "relaxation" not in state:
        raise NasError(f"{path} is not a search checkpoint (it holds no architecture parameters)")
    _, registries = _plugins()
    config = resolve(registries, [Layer(state["config"], f"config saved in {path}")], preset=None)
    space = build(registries.spaces, config.space, SearchSpace)
    spec = space.arch_spec()
    relaxation = build(registries.relaxations, config.relaxation, Relaxation, spec=spec)
    relaxation.load_state_dict(state["relaxation"])
    name = args.discretizer or config.discretizer.name
    entry = registries.discretizers.get(name)
    options = config.discretizer.options if name == config.discretizer.name else (
        entry.options() if entry.options else None)
    if args.k is not None:
        if options is None or "k" not in attrs.fields_dict(type(options)):
            raise ConfigError(f"--k: discretizer {name!r} has no option 'k'")
        options = attrs.evolve(options, k=args.k)
    discretizer = build(registries.discretizers, Component(name, options), Discretizer)
    genotype = discretizer.derive(relaxation.strengths(), spec)
    if not isinstance(genotype, Genotype):
        raise NasError(f"discretizer {name!r} returned {type(genotype).__name__}, not a Genotype")
    out = Path(args.out) if args.out else path.parent / f"derived_{name}{'' if args.k is None else f'_k{args.k}'}.json"
    write_text_atomic(out, genotype.to_json())
    print(f"{format_darts_text(genotype)}\n\n{genotype.to_json()}\nwritten to {out}")
    return 0


def show(args: argparse.Namespace) -> int:
    from nas_core.draw import dot_available, draw

    _, registries = _plugins()
    genotype = load_genotype(args.genotype, registries.genotypes)
    print(format_darts_text(genotype))
    prefix = Path(args.out) if args.out else Path(Path(args.genotype).stem if Path(args.genotype).is_file()
                                                    else Path(args.genotype).name or "genotype")
    for path in draw(genotype, prefix):
        print(f"wrote {path}")
    if not dot_available():
        print("PNG and SVG need Graphviz's `dot` program (Debian/Ubuntu: apt-get install graphviz; "
              "macOS: brew install graphviz)")
    return 0


def plugins() -> int:
    pm, registries = _plugins()
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda t: t[0]):
        if plugin is None:  # blocked
            print(f"{name}  ({distribution_of(name)}) [disabled]")
            continue
        print(f"{name}  ({distribution_of(name)})")
        for attr, (_, kind) in REGISTRATION_HOOKS.items():
            names = [e.name for e in getattr(registries, attr) if e.plugin == name]
            if names:
                print(f"  {kind}s: {', '.join(names)}")
        for attr in ("presets", "genotypes"):
            owned = sorted(p for p, (_, owner, _) in getattr(registries, attr).items() if owner == name)
            if owned:
                print(f"  {attr}: {', '.join(owned)}")
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [] if not h.name.startswith("nas_register"))
        if hooks:
            print(f"  lifecycle hooks: {', '.join(hooks)}")
    return 0


def list_names(pattern: str) -> int:
    _, registries = _plugins()
    for attr, (_, kind) in REGISTRATION_HOOKS.items():
        registry = getattr(registries, attr)
        for name in registry.names(pattern):
            entry = registry.get(name)
            print(f"{kind:13s} {name:16s} {entry.plugin:12s} {entry.doc}")
    for attr, kind in (("presets", "preset"), ("genotypes", "genotype")):
        table = getattr(registries, attr)
        for name in sorted(n for n in table if fnmatch.fnmatch(n, pattern)):
            _, plugin, doc = table[name]
            print(f"{kind:13s} {name:16s} {plugin:12s} {doc}")
    return 0


def config_show(args: argparse.Namespace) -> int:
    _, registries = _plugins()
    print(to_yaml(config_from_args(registries, args)), end="")
    return 0


