"""The toolkit as commands see it: plugins, registries, config resolution and the engines.

Built-in commands and plugin commands (``nas_register_commands``) get the same object."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pluggy

from nas_core.files import write_text_atomic
from nas_core.config import Config, Layer, load_yaml_file, parse_set, resolve, to_yaml
from nas_core.context import RunContext
from nas_core.errors import ConfigError, NasError
from nas_core.genotype import Genotype
from nas_core.plugins import Registries, collect_registries, make_plugin_manager
from nas_core.run import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, attach_log_file, default_run_dir

log = logging.getLogger("nas")

NAME_FLAGS = ("task", "dataset", "space", "relaxation", "optimizer", "trainer", "discretizer")


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
        parser.add_argument("--seed", type=int, help="random seed")
        parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
        parser.add_argument("--threads", type=int, help="CPU threads (default: torch's; recorded in config.yaml)")

    def config_from_args(self, args: argparse.Namespace, extra: Sequence[Layer] = (),
                         default_preset: str | None = None) -> Config:
        """Preset (``--preset``, else ``default_preset``, else the registered default) < ``extra``
        layers < --config files < flags < --set."""
        layers = list(extra)
        layers += [Layer(load_yaml_file(path), f"config file {path}") for path in args.config]
        flags: dict[str, Any] = {k: {"name": getattr(args, k)} for k in NAME_FLAGS if getattr(args, k, None)}
        for key in ("seed", "device", "data_root", "threads"):
            if getattr(args, key, None) is not None:
                flags[key] = getattr(args, key)
        layers.append(Layer(flags, "command line"))
        layers.append(Layer(parse_set(args.set), "--set"))
        preset = args.preset or default_preset or self.registries.default_preset()
        return resolve(self.registries, layers, preset=preset)

    def saved_config(self, run_dir: Path, device: str | None = None) -> Config:
        """The fully resolved config a run directory was started with (``--device`` may change)."""
        if not (run_dir / CONFIG_FILE).is_file():
            raise NasError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
        layers = [Layer(load_yaml_file(run_dir / CONFIG_FILE), f"saved config {run_dir / CONFIG_FILE}")]
        if device:
            layers.append(Layer({"device": device}, "command line"))
        return resolve(self.registries, layers, preset=None)

    # -- running ------------------------------------------------------------------------------

    def search(self, config: Config, run_dir: Path, *, resume: bool = False, progress: bool | None = None,
               phase: str = "search") -> Genotype | None:
        """Prepare (validating everything), then run or resume a search in ``run_dir``."""
        from nas_core.search import prepare_search

        prepared = prepare_search(self.registries, config)
        return self.execute(prepared, run_dir, phase=phase, resume=resume, progress=progress,
                            spec=prepared.spec)

    def train(self, config: Config, genotype: Genotype, run_dir: Path, *, resume: bool = False,
              progress: bool | None = None, phase: str = "train") -> dict[str, Any]:
        """Prepare, then train ``genotype`` from scratch (or resume) in ``run_dir``."""
        from nas_core.train import prepare_training

        prepared = prepare_training(self.registries, config, genotype)
        return self.execute(prepared, run_dir, phase=phase, resume=resume, progress=progress,
                            spec=prepared.space.arch_spec(), genotype=genotype)

    def execute(self, prepared: Any, run_dir: Path, *, phase: str, resume: bool, progress: bool | None,
                spec: Any = None, genotype: Genotype | None = None) -> Any:
        """Create ``run_dir`` (unless resuming) and run a prepared phase there, logging to its log file."""
        from nas_core.engine import run_phase

        from nas_core import distributed

        config = prepared.config
        rank, world = distributed.init(prepared.device)
        if not resume and rank == 0:  # only rank 0 writes the run directory
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / CONFIG_FILE, to_yaml(config))
            if genotype is not None:
                write_text_atomic(run_dir / GENOTYPE_FILE, genotype.to_json())
        epochs = config.search.epochs if phase == "search" else config.train.epochs
        run = RunContext(dir=run_dir, config=config, phase=phase, device=prepared.device,
                         plugin_manager=self.plugin_manager, epochs=epochs, spec=spec, genotype=genotype,
                         rank=rank, world_size=world)
        if rank > 0:  # one console and one log file per job: rank 0's
            logging.getLogger("nas").setLevel(logging.WARNING)
        handler = attach_log_file(run_dir) if rank == 0 else logging.NullHandler()
        try:
            return run_phase(prepared, run, resume=resume, progress=progress)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (nas_core.cli turns it into Terminated)
            what = "terminated (SIGTERM)" if type(e).__name__ == "Terminated" else "interrupted"
            if (run_dir / CHECKPOINT_FILE).is_file() and rank == 0:
                command = "run" if phase == "search" else "train"
                log.info("%s; continue with: nas %s --resume %s", what, command, run_dir)
            elif rank == 0:
                log.info("%s before the first epoch ended (nothing to resume); start it again", what)
            raise
        except RuntimeError as e:
            if world > 1 and distributed.is_collective_failure(e):
                raise NasError(f"another process of this torchrun job died or stopped answering "
                               f"(NAS_DIST_TIMEOUT={distributed.timeout_s():g} s; {str(e).strip().splitlines()[0][-160:]}); "
                               f"the last checkpoint is intact: continue with nas "
                               f"{'run' if phase == 'search' else 'train'} --resume {run_dir}") from e
            raise
        except OSError as e:  # a full disk, a folder made read-only mid-run: the last checkpoint is intact
            raise NasError(f"cannot write in {run_dir}: {e.strerror or e}; its last complete checkpoint is "
                           f"intact: continue with --resume {run_dir} once that is fixed") from e
        finally:
            logging.getLogger("nas").removeHandler(handler)
            handler.close()

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


MIN_FREE_BYTES = 16 * 2**20  # a checkpoint of the demo is a few MB; the paper's about 30 MB


def check_new_run_dir(run_dir: Path, *, force: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise NasError(f"--out {run_dir} is a file, not a directory")
    if (run_dir / CHECKPOINT_FILE).exists():
        raise NasError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    ours = (run_dir / CONFIG_FILE).is_file()  # started before, never finished an epoch: redone
    if run_dir.is_dir() and not ours and any(run_dir.iterdir()) and not force:
        raise NasError(f"--out {run_dir} is a folder with files that is not a nas run directory; choose an empty "
                       f"or new folder, or pass --force to write into it (files nas writes are replaced)")
    writable_parent(run_dir, "--out")


def check_resume_flags(args: argparse.Namespace, flags: Iterable[str]) -> None:
    """--resume continues with the saved config: any flag that would change it is refused."""
    overridden = [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k, None) not in (None, [], False)]
    if overridden:
        raise ConfigError(f"--resume continues a run with its saved {CONFIG_FILE}; drop {', '.join(overridden)} "
                          f"(only --device may change)")


CONFIG_FLAGS = (*NAME_FLAGS, "seed", "data_root", "threads", "preset", "config", "set")
Runner = Callable[[argparse.Namespace, Toolkit], int]
