"""The toolkit as commands see it: plugins, registries, config resolution and the engines.

Built-in commands and plugin commands (``nas_register_commands``) get the same object."""

from __future__ import annotations

import argparse
import functools
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pluggy

from nas_core.files import write_text_atomic
from nas_core.config import Config, Layer, config_differences, load_yaml_file, parse_set, read_saved, resolve, to_yaml
from nas_core.context import RunContext
from nas_core.errors import ConfigError, NasError, brief
from nas_core.genotype import Genotype
from nas_core.plugins import Registries, collect_registries, make_plugin_manager
from nas_core.run import (CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, MARKER_FILE, attach_log_file, default_run_dir,
                          mark_run_dir)

log = logging.getLogger("nas")

NAME_FLAGS = ("task", "dataset", "space", "relaxation", "optimizer", "trainer", "discretizer", "perturbation")


@attrs.define
class Toolkit:
    plugin_manager: pluggy.PluginManager
    registries: Registries

    @classmethod
    def load(cls, plugins: Iterable[object] = (), autoload: bool | None = None) -> Toolkit:
        """Every installed plugin (unless ``autoload`` is False) plus ``plugins``."""
        pm = make_plugin_manager(autoload=autoload, extra_plugins=plugins)
        return cls(pm, collect_registries(pm))

    # -- configuration ------------------------------------------------------------------------

    @staticmethod
    def add_config_arguments(parser: argparse.ArgumentParser) -> None:
        """The flags that choose components and settings: --space, --preset, --set, ..."""
        for kind in NAME_FLAGS:
            parser.add_argument(f"--{kind}", help=f"{kind} name (see `nas list`)")
        parser.add_argument("--data-root", help="directory holding real datasets")
        parser.add_argument("--preset", help="config preset (see `nas list`; default: the one a plugin marks default)")
        parser.add_argument("--config", action="append", default=[], metavar="FILE",
                            help="YAML config file (repeatable)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override one config key, e.g. --set search.epochs=3 (repeatable)")
        parser.add_argument("--seed", help="random seed (an integer)")
        parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
        parser.add_argument("--threads", help="CPU threads (default: torch's; recorded in config.yaml)")

    def config_from_args(self, args: argparse.Namespace, extra: Sequence[Layer] = (),
                         default_space: str | None = None) -> Config:
        """Preset < ``extra`` layers < ``default_space`` < --config files < flags < --set. The preset
        is ``--preset``, else the one registered for the space (``--space``, else ``default_space``,
        e.g. the space a genotype was found in), else the registered default. ``default_space``
        applies only where neither --space nor --preset chose."""
        layers = list(extra)
        if default_space and not getattr(args, "space", None) and not args.preset:
            layers.append(Layer({"space": {"name": default_space}}, "the genotype's space"))
        layers += [Layer(load_yaml_file(path), f"config file {path}") for path in args.config]
        flags: dict[str, Any] = {k: {"name": getattr(args, k)} for k in NAME_FLAGS if getattr(args, k, None)}
        for key in ("seed", "device", "data_root", "threads"):
            if getattr(args, key, None) is not None:
                flags[key] = _integer_flag(args, key) if key in ("seed", "threads") else getattr(args, key)
        layers.append(Layer(flags, "command line"))
        layers.append(Layer(parse_set(args.set), "--set"))
        preset = args.preset or self.registries.preset_for_space(getattr(args, "space", None) or default_space)
        return resolve(self.registries, layers, preset=preset)

    def saved_config(self, run_dir: Path, device: str | None = None) -> Config:
        """The fully resolved config a run directory was started with (``--device`` may change)."""
        if not (run_dir / CONFIG_FILE).is_file():
            raise NasError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
        return self.read_config(load_yaml_file(run_dir / CONFIG_FILE), f"saved config {run_dir / CONFIG_FILE}",
                                device)

    def read_config(self, data: Mapping[str, Any], source: str, device: str | None = None, *,
                    resuming: bool = False) -> Config:
        """A saved config (``config.yaml``, a checkpoint's): :func:`nas_core.config.read_saved`."""
        return read_saved(self.registries, data, source, device, resuming=resuming)

    def resume_config(self, run_dir: Path, device: str | None = None) -> Config:
        """The config to continue ``run_dir`` with: its ``config.yaml``, which must still be the one
        its checkpoint was written with (an edited seed would otherwise be reported but not used)."""
        from nas_core.checkpoint import load_checkpoint

        data = load_yaml_file(run_dir / CONFIG_FILE)
        config = self.read_config(data, f"saved config {run_dir / CONFIG_FILE}", device, resuming=True)
        # a staged search has none at its top: each stage's is checked as that stage resumes
        saved = load_checkpoint(run_dir / CHECKPOINT_FILE).get("config") if (run_dir / CHECKPOINT_FILE).is_file() else None
        # the files as written, not as resolved now: an option added since has a default in one only
        changed = config_differences(data, saved, ignore=("device",)) if isinstance(saved, Mapping) else []
        if changed:
            raise ConfigError(f"{run_dir / CONFIG_FILE} no longer matches the config its checkpoint was written with "
                              f"({', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''}); a resume continues "
                              f"the run as it started: undo the edit, or start a new run with the new settings")
        return config

    # -- running ------------------------------------------------------------------------------

    def search(self, config: Config, run_dir: Path, *, resume: bool = False, progress: bool | None = None,
               phase: str = "search", stage: int | None = None, previous_stage: Any = None) -> Genotype | None:
        """Prepare (validating everything), then run or resume a search in ``run_dir``; a config
        with ``search.stages`` runs its stages in ``run_dir/stage_N`` (nas_core.staged_search)."""
        if config.search.stages and stage is None:
            from nas_core.staged_search import run_staged_search

            return run_staged_search(self, config, run_dir, resume=resume, progress=progress)
        from nas_core.search import prepare_search

        prepared = prepare_search(self.registries, config)
        return self.execute(prepared, run_dir, phase=phase, resume=resume, progress=progress,
                            spec=prepared.spec, stage=stage, previous_stage=previous_stage)

    def train(self, config: Config, genotype: Genotype, run_dir: Path, *, resume: bool = False,
              progress: bool | None = None, phase: str = "train") -> dict[str, Any]:
        """Prepare, then train ``genotype`` from scratch (or resume) in ``run_dir``."""
        from nas_core.train import prepare_training

        prepared = prepare_training(self.registries, config, genotype)
        return self.execute(prepared, run_dir, phase=phase, resume=resume, progress=progress,
                            spec=prepared.space.arch_spec(), genotype=genotype)

    def execute(self, prepared: Any, run_dir: Path, *, phase: str, resume: bool, progress: bool | None,
                spec: Any = None, genotype: Genotype | None = None, stage: int | None = None,
                stages: int | None = None, previous_stage: Any = None) -> Any:
        """Check what only the run can check (the batch's split over processes, the checkpoint it
        resumes), then create ``run_dir`` (unless resuming) and run a prepared phase there, logging
        to its log file. In a torchrun job nothing is written until every process has passed every
        check (nas_core.distributed.start_check)."""
        from nas_core import distributed
        from nas_core.checkpoint import remove_stale_temporaries
        from nas_core.engine import restore, run_phase

        config = prepared.config
        rank, world = distributed.init(prepared.device)
        section = "search" if phase == "search" else "train"
        settings = getattr(config, section)
        distributed.check_batch_split(settings.batch_size, f"{section}.batch_size")
        run = RunContext(dir=run_dir, config=config, phase=phase, device=prepared.device,
                         plugin_manager=self.plugin_manager, epochs=settings.epochs, spec=spec, genotype=genotype,
                         rank=rank, world_size=world, stage=stage, stages=stages,
                         previous_stage=previous_stage)
        restored = restore(prepared, run) if resume else None
        run.components = prepared.components()
        self.plugin_manager.hook.nas_check_run(run=run)
        distributed.start_check()  # every process is ready: from here on rank 0 writes
        if rank == 0 and resume:
            remove_stale_temporaries(run_dir)
        if rank == 0 and not resume:  # only rank 0 writes the run directory
            mark_run_dir(run_dir, phase)
            write_text_atomic(run_dir / CONFIG_FILE, to_yaml(config))
            if genotype is not None:
                write_text_atomic(run_dir / GENOTYPE_FILE, genotype.to_json())
        if rank > 0:  # one console and one log file per job: rank 0's
            logging.getLogger("nas").setLevel(logging.WARNING)
        handler = attach_log_file(run_dir) if rank == 0 else logging.NullHandler()
        resume_hint = distributed.resume_command(phase, run_dir)
        try:
            result = run_phase(prepared, run, restored=restored, progress=progress)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (nas_core.cli turns it into Terminated)
            what = "terminated (SIGTERM)" if type(e).__name__ == "Terminated" else "interrupted"
            if (run_dir / CHECKPOINT_FILE).is_file() and rank == 0:
                log.info("%s; continue with: %s", what, resume_hint)
            elif rank == 0:
                log.info("%s before the first epoch ended (nothing to resume); start it again", what)
            raise
        except RuntimeError as e:
            if world > 1 and distributed.is_collective_failure(e):
                raise NasError(f"another process of this torchrun job died or stopped answering "
                               f"(NAS_DIST_TIMEOUT={distributed.timeout_s():g} s; {str(e).strip().splitlines()[0][-160:]}); "
                               f"the last checkpoint is intact: continue with: {resume_hint}") from e
            raise
        except OSError as e:  # a full disk, a folder made read-only mid-run: the last checkpoint is intact
            raise NasError(f"cannot write in {run_dir}: {e.strerror or e}; its last complete checkpoint is "
                           f"intact: once that is fixed, continue with: {resume_hint}") from e
        finally:
            logging.getLogger("nas").removeHandler(handler)
            handler.close()
        distributed.run_finished()
        return result

    def new_run_dir(self, out: str | None, config: Config, kind: str, *, force: bool = False) -> Path:
        """The run directory for a new run, checked (nothing is created yet): ``out`` or a fresh
        name under ``runs/``. A folder that holds files but is not one of our run directories
        is refused unless ``force``: nas never overwrites a user's files. In a torchrun job rank 0
        chooses (and checks) it and every rank gets the same name."""
        from nas_core import distributed
        from nas_core.config import resolve_device

        distributed.init(resolve_device(config.device))
        chosen: tuple[str, str | None] = ("", None)
        try:
            if distributed.is_main():
                run_dir = Path(out) if out else default_run_dir(Path("runs"), config, kind)
                check_new_run_dir(run_dir, force=force)
                chosen = (str(run_dir), None)
        except NasError as e:
            chosen = ("", str(e))
        path, error = distributed.broadcast(chosen)
        if error is not None:
            raise NasError(error)
        return Path(path)

    # -- reading runs back (nas_core.records) -------------------------------------------------

    def load_search(self, run_dir: Path | str, *, device: str = "cpu", stage: int | None = None) -> Any:
        """The search in ``run_dir`` as a :class:`~nas_core.records.SearchRecord`: its config,
        supernet and architecture parameters loaded on ``device``, its genotypes and metrics."""
        from nas_core.records import load_search

        return load_search(self, run_dir, device=device, stage=stage)

    def load_training(self, run_dir: Path | str) -> Any:
        """The training in ``run_dir`` as a :class:`~nas_core.records.TrainingRecord`."""
        from nas_core.records import load_training

        return load_training(self, run_dir)


def _integer_flag(args: argparse.Namespace, key: str) -> int:
    """An integer flag read here, not by argparse, whose error would be several lines and echo any
    length of text; its range is checked with the config (INT_RANGES)."""
    text = str(getattr(args, key)).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,40}", text):
        raise ConfigError(f"--{key} must be an integer, got {brief(text)}")
    return int(text)


def writable_parent(path: Path, what: str) -> Path:
    """The nearest existing ancestor of ``path``; a NasError unless it is a writable directory."""
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise NasError(f"{what} {path}: {parent} is a file, not a directory")
    try:  # a real probe: permissions, read-only mounts and special file systems all show here
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise NasError(f"{what} {path}: cannot write in {parent} ({e.strerror or e})") from None
    if shutil.disk_usage(parent).free < MIN_FREE_BYTES:
        raise NasError(f"{what} {path}: no space left on the device holding {parent}")
    return parent


def check_new_files(paths: Iterable[Path], what: str, *, force: bool) -> None:
    """Refuse to write ``paths`` where one is a folder or, unless ``force``, an existing file:
    nas cannot tell a file it wrote before from one of the user's, so it replaces none unasked."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.is_dir():
            raise NasError(f"{what} {path} is a directory; name a file")
        if path.exists() and not force:
            raise NasError(f"{what}: {path} exists and nas does not replace files; choose another {what} "
                           f"or pass --force to replace it")
    for parent in {path.parent for path in paths}:
        writable_parent(parent, what)


MIN_FREE_BYTES = 16 * 2**20  # a checkpoint of the demo is a few MB; the paper's about 30 MB


def check_new_run_dir(run_dir: Path, *, force: bool) -> None:
    """A new run may go into a new or empty folder, or one that nas created for a run that never
    finished an epoch (it is redone); any other folder holding files is the user's."""
    if run_dir.exists() and not run_dir.is_dir():
        raise NasError(f"--out {run_dir} is a file, not a directory")
    if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / "stage_1" / CHECKPOINT_FILE).exists():
        raise NasError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    ours = (run_dir / MARKER_FILE).is_file()
    if run_dir.is_dir() and not ours and any(run_dir.iterdir()) and not force:
        raise NasError(f"--out {run_dir} is a folder with files that nas did not create (no {MARKER_FILE}); choose "
                       f"an empty or new folder, or pass --force to write into it (files there with the names nas "
                       f"writes, such as {CONFIG_FILE}, would be replaced)")
    writable_parent(run_dir, "--out")


def check_resume_flags(args: argparse.Namespace, flags: Iterable[str]) -> None:
    """--resume continues with the saved config: any flag that would change it is refused."""
    overridden = [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k, None) not in (None, [], False)]
    if overridden:
        raise ConfigError(f"--resume continues a run with its saved {CONFIG_FILE}; drop {', '.join(overridden)} "
                          f"(only --device may change)")


CONFIG_FLAGS = (*NAME_FLAGS, "seed", "data_root", "threads", "preset", "config", "set")
Runner = Callable[[argparse.Namespace, Toolkit], int]


@functools.cache
def installed_catalog() -> Any:
    """The :class:`~nas_core.interfaces.Catalog` of every installed plugin, loaded once: what a space
    built directly in a script or notebook (``DartsCnnSpace(options)``) builds from."""
    from nas_core.interfaces import Catalog

    registries = Toolkit.load().registries
    return Catalog(registries.operations, registries.mixed_edges)
