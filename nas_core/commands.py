"""What each built-in ``nas`` subcommand does, given parsed arguments and the toolkit."""

from __future__ import annotations

import argparse
import fnmatch
import logging
from pathlib import Path

import attrs

from nas_core import distributed
from nas_core.components import build, build_space
from nas_core.files import write_text_atomic
from nas_core.config import Component, Config, Layer, load_yaml_file, require, resolve, to_yaml
from nas_core.errors import ConfigError, GenotypeError, NasError
from nas_core.genotype import Genotype
from nas_core.genotype_io import format_genotype_text, load_genotype
from nas_core.plugins import REGISTRATION_HOOKS, distribution_of
from nas_core.run import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, RESULTS_FILE
from nas_core.toolkit import CONFIG_FLAGS, Toolkit, check_new_files, check_resume_flags

log = logging.getLogger("nas")


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _resume_dir(args: argparse.Namespace, extra_flags: tuple[str, ...] = ()) -> Path:
    check_resume_flags(args, (*CONFIG_FLAGS, "out", "force", *extra_flags))
    run_dir = Path(args.resume)
    if not (run_dir / CONFIG_FILE).is_file():
        raise NasError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    staged = (run_dir / "stage_1" / CHECKPOINT_FILE).is_file()  # a staged search: its stages checkpoint
    if not (run_dir / CHECKPOINT_FILE).is_file() and not staged:
        raise NasError(f"{run_dir} has no {CHECKPOINT_FILE} yet (no epoch finished): start it again instead")
    from nas_core.checkpoint import load_checkpoint
    from nas_core.run import run_kind

    kind = run_kind(run_dir) or ("search" if staged else load_checkpoint(run_dir / CHECKPOINT_FILE).get("phase"))
    if kind is not None and (kind == "search") != (args.command == "run"):  # `nas run` resumes searches only
        raise NasError(f"{run_dir} is a {'search' if kind == 'search' else 'training'} run, which nas "
                       f"{args.command} cannot continue; continue it with: {distributed.resume_command(kind, run_dir)}")
    return run_dir


def run(args: argparse.Namespace, toolkit: Toolkit) -> int:
    if args.resume:
        run_dir = _resume_dir(args)
        config = toolkit.resume_config(run_dir, args.device)
    else:
        config = toolkit.config_from_args(args)
        run_dir = toolkit.new_run_dir(args.out, config, "search", force=args.force)
    genotype = toolkit.search(config, run_dir, resume=bool(args.resume), progress=_progress(args))
    if genotype is not None and distributed.is_main():
        print(f"\ngenotype ({run_dir / GENOTYPE_FILE}):\n{genotype.to_json()}", end="")
    return 0


def _genotype_arg(toolkit: Toolkit, args: argparse.Namespace) -> Genotype:
    if not args.genotype:
        raise NasError(f"nas {args.command} needs --genotype FILE|RUN_DIR|NAME|TEXT; registered names: "
                       f"{', '.join(sorted(toolkit.registries.genotypes)) or '(none)'}")
    return load_genotype(args.genotype, toolkit.registries.genotypes)


def _train(args: argparse.Namespace, toolkit: Toolkit, config: Config, genotype: Genotype, run_dir: Path,
           phase: str, found_in: str | None = None) -> int:
    """Train ``genotype``; ``found_in``: the space it was found in, named if it does not fit."""
    from nas_core.train import format_results

    try:
        results = toolkit.train(config, genotype, run_dir, resume=bool(args.resume), progress=_progress(args),
                                phase=phase)
    except GenotypeError as e:
        if found_in and found_in != config.space.name:
            raise GenotypeError(f"{e}; the genotype was found in space {found_in!r}: pass --space {found_in}") from None
        raise
    if distributed.is_main():
        print(f"\n{format_results(results)}  ({run_dir / RESULTS_FILE})")
    return 0


def train(args: argparse.Namespace, toolkit: Toolkit) -> int:
    if args.resume:
        run_dir = _resume_dir(args, ("genotype",))
        config = toolkit.resume_config(run_dir, args.device)
        genotype = load_genotype(str(run_dir / GENOTYPE_FILE), {})
        from nas_core.checkpoint import load_checkpoint

        phase = load_checkpoint(run_dir / CHECKPOINT_FILE).get("phase", "train")
    else:
        genotype, found_in = _genotype_arg(toolkit, args), _genotype_space(toolkit, args.genotype)
        config = toolkit.config_from_args(args, default_space=found_in)
        run_dir, phase = toolkit.new_run_dir(args.out, config, "train", force=args.force), "train"
        return _train(args, toolkit, config, genotype, run_dir, phase, found_in)
    return _train(args, toolkit, config, genotype, run_dir, phase)


def transfer(args: argparse.Namespace, toolkit: Toolkit) -> int:
    from nas_core.interfaces import Evaluator

    registries = toolkit.registries
    if not args.target:
        raise NasError(f"nas transfer needs --target; valid targets: {', '.join(registries.evaluators.names())}")
    entry = registries.evaluators.get(args.target)
    evaluator = build(registries.evaluators, Component(args.target, entry.options() if entry.options else None),
                      Evaluator)
    genotype, found_in = _genotype_arg(toolkit, args), _genotype_space(toolkit, args.genotype)
    config = toolkit.config_from_args(args, [Layer(evaluator.config_layer(), f"target {args.target!r}", strict=False)],
                                      default_space=found_in)
    run_dir = toolkit.new_run_dir(args.out, config, f"transfer-{args.target}", force=args.force)
    return _train(args, toolkit, config, genotype, run_dir, "transfer", found_in)


def derive(args: argparse.Namespace, toolkit: Toolkit) -> int:
    from nas_core.checkpoint import load_checkpoint
    from nas_core.interfaces import Discretizer, Relaxation
    from nas_core.records import search_dir

    registries = toolkit.registries
    source = Path(args.source)
    path = search_dir(source)[0] / CHECKPOINT_FILE if source.is_dir() else source  # a staged search: its last stage
    state = load_checkpoint(path)
    if "relaxation" not in state:
        raise NasError(f"{path} is not a search checkpoint (it holds no architecture parameters)")
    config = toolkit.read_config(state["config"], f"config saved in {path}")
    space = build_space(registries, config.space)
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
        try:
            options = attrs.evolve(options, k=args.k)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--k {args.k}: {e.args[0] if e.args else e}") from None
    out = Path(args.out) if args.out else path.parent / f"derived_{name}{'' if args.k is None else f'_k{args.k}'}.json"
    check_new_files([out], "--out", force=args.force)
    discretizer = build(registries.discretizers, Component(name, options), Discretizer)
    genotype = discretizer.derive(relaxation.strengths(), spec)
    if not isinstance(genotype, Genotype):
        raise NasError(f"discretizer {name!r} returned {type(genotype).__name__}, not a Genotype")
    space.validate(genotype)
    write_text_atomic(out, genotype.to_json())
    print(f"{format_genotype_text(genotype)}\n\n{genotype.to_json()}\nwritten to {out}")
    return 0


def show(args: argparse.Namespace, toolkit: Toolkit) -> int:
    from nas_core.draw import dot_available, draw, drawing_paths

    registries = toolkit.registries
    genotype = load_genotype(args.genotype, registries.genotypes)
    space_name = args.space or _genotype_space(toolkit, args.genotype)
    config = resolve(registries, [Layer({"space": {"name": space_name}} if space_name else {}, "command line")],
                     preset=None if space_name else registries.default_preset())
    require(config, registries, ("space",), "nas show")
    space = build_space(registries, config.space)
    space.validate(genotype)
    if args.out:  # checked before anything is printed or written
        check_new_files(drawing_paths(genotype, Path(args.out)), "--out", force=args.force)
    print(format_genotype_text(genotype))
    if not args.out:
        print("(draw the cells with --out PREFIX)")
        return 0
    for path in draw(genotype, Path(args.out), num_inputs=space.arch_spec().num_inputs):
        print(f"wrote {path}")
    if not dot_available():
        print("PNG and SVG need Graphviz's `dot` program (Debian/Ubuntu: apt-get install graphviz; "
              "macOS: brew install graphviz)")
    return 0


def _genotype_space(toolkit: Toolkit, source: str) -> str | None:
    """The space a registered genotype was published for, or the space of a run directory."""
    if source in toolkit.registries.genotypes:
        return toolkit.registries.genotypes[source][3]
    try:
        saved = Path(source) / CONFIG_FILE
        if not saved.is_file():
            return None
    except OSError:  # inline genotype text, too long to be a path
        return None
    space = load_yaml_file(saved).get("space")
    return space.get("name") if isinstance(space, dict) and isinstance(space.get("name"), str) else None


def plugins(args: argparse.Namespace, toolkit: Toolkit) -> int:
    pm, registries = toolkit.plugin_manager, toolkit.registries
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda t: t[0]):
        if plugin is None:  # blocked
            print(f"{name}  ({distribution_of(name)}) [disabled]")
            continue
        print(f"{name}  ({distribution_of(name)})")
        for attr, (_, kind) in REGISTRATION_HOOKS.items():
            names = [e.name for e in getattr(registries, attr) if e.plugin == name]
            if names:
                print(f"  {kind}s: {', '.join(names)}")
        for family in registries.operations.families():
            ops = [op for op in registries.operations.names(family) if registries.operations.get(family, op).plugin == name]
            if ops:
                print(f"  operations ({family}): {', '.join(ops)}")
        for label, table in (("presets", registries.presets), ("genotypes", registries.genotypes),
                             ("config sections", registries.settings), ("commands", registries.commands)):
            owned = sorted(n for n, item in table.items() if _owner(item) == name)
            if owned:
                print(f"  {label}: {', '.join(owned)}")
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [] if not h.name.startswith("nas_register"))
        if hooks:
            print(f"  lifecycle hooks: {', '.join(hooks)}")
    return 0


def _owner(item: object) -> str:
    return item[1] if isinstance(item, tuple) else item.plugin


def list_names(args: argparse.Namespace, toolkit: Toolkit) -> int:
    registries, pattern = toolkit.registries, args.pattern
    rows = []
    for attr, (_, kind) in REGISTRATION_HOOKS.items():
        registry = getattr(registries, attr)
        rows += [(kind, e.name, e.plugin, e.doc) for e in registry if fnmatch.fnmatch(e.name, pattern)]
    for family in registries.operations.families():
        ops = [registries.operations.get(family, n) for n in registries.operations.names(family)]
        rows += [(f"op {family}", op.name, op.plugin, op.doc + (" (no weights)" if op.parameter_free else "")
                  + (" (the zero op)" if op.zero else "")) for op in ops if fnmatch.fnmatch(op.name, pattern)]
    for kind, table in (("preset", registries.presets), ("genotype", registries.genotypes),
                        ("config section", registries.settings), ("command", registries.commands)):
        for name in sorted(n for n in table if fnmatch.fnmatch(n, pattern)):
            item = table[name]
            doc = item[2] if isinstance(item, tuple) else getattr(item, "doc", "") or getattr(item, "help", "")
            if kind == "preset" and item.default:
                doc = f"(default) {doc}"
            if kind == "genotype" and item[3] and item[3] not in registries.spaces:
                doc = f"{doc} (space {item[3]!r} is not installed: no installed space builds it)"
            rows.append((kind, name, _owner(item), doc))
    for kind, name, plugin, doc in rows:
        print(f"{kind:14s} {name:16s} {plugin:12s} {doc}")
    if not rows:
        print(f"nothing registered matches {pattern!r} (nas list without a pattern lists everything)")
    return 0


def config_show(args: argparse.Namespace, toolkit: Toolkit) -> int:
    print(to_yaml(toolkit.config_from_args(args)), end="")
    return 0
