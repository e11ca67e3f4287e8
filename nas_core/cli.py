"""The ``nas`` command. Thin: parses arguments and calls the command; user errors are one line.

A bug (an exception that is not a NasError) is one line too, naming where it came from;
``--traceback`` or ``NAS_TRACEBACK=1`` shows the whole traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterable, Sequence

from nas_core import __version__, allocator, distributed
from nas_core.errors import NasError, one_line

EXAMPLES = """examples:
  nas run                                        search with the default preset
  nas run --optimizer NAME --seed 3 --out runs/first
  nas run --resume runs/first                    continue an interrupted run
  nas train --genotype runs/first                train the cell a search found
  nas list                                       everything plugins registered (a pattern narrows it)
  nas <command> --help                           the options of one command
"""


def build_parser(toolkit: object) -> argparse.ArgumentParser:
    from nas_core import commands

    parser = argparse.ArgumentParser(prog="nas", description="Plugin-based neural architecture search.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_config = toolkit.add_config_arguments

    def run_options(cmd: argparse.ArgumentParser, default_dir: str) -> None:
        add_config(cmd)
        cmd.add_argument("--out", help=f"run directory (default: {default_dir})")
        cmd.add_argument("--force", action="store_true",
                         help="write into an existing folder that holds other files (nas never does otherwise)")
        cmd.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
        cmd.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="run an architecture search")
    run_options(run, "runs/<space>-<optimizer>-<dataset>-seed<N>-<time>")
    run.set_defaults(handler=commands.run)

    train = sub.add_parser("train", help="train a cell from scratch, select on validation, test once")
    train.add_argument("--genotype", help="genotype JSON or DARTS text file, search run directory, registered name "
                                          "(see `nas list`), or the text itself: 'Genotype(normal=...)' or '{...}'")
    run_options(train, "runs/<space>-train-<dataset>-seed<N>-<time>")
    train.set_defaults(handler=commands.train)

    transfer = sub.add_parser("transfer", help="train a cell on another task (see `nas list` for targets); "
                                               "continue one with `nas train --resume RUN_DIR`")
    transfer.add_argument("--genotype", help="as for nas train")
    transfer.add_argument("--target", help="evaluator name, e.g. imagenet, cifar100")
    add_config(transfer)
    transfer.add_argument("--out", help="run directory (default: runs/<space>-transfer-<target>-...)")
    transfer.add_argument("--force", action="store_true", help="as for nas train")
    transfer.add_argument("--no-progress", action="store_true", help="no progress bar")
    transfer.set_defaults(handler=commands.transfer, resume=None)

    der = sub.add_parser("derive", help="derive a genotype from a search checkpoint's architecture parameters")
    der.add_argument("source", metavar="RUN_DIR|CHECKPOINT", help="a search run directory or its checkpoint.pt")
    der.add_argument("--discretizer", help="discretizer name (default: the run's)")
    der.add_argument("--k", type=int, help="inputs kept per node (discretizers with a k option)")
    der.add_argument("--out", help="genotype JSON to write (default: beside the checkpoint)")
    der.add_argument("--force", action="store_true", help="replace an existing --out file")
    der.set_defaults(handler=commands.derive)

    shw = sub.add_parser("show", help="print a genotype in DARTS text form and draw its cells (DOT, PNG, SVG)")
    shw.add_argument("genotype", metavar="GENOTYPE", help="file, search run directory, registered name or the "
                                                          "genotype's text")
    shw.add_argument("--out", metavar="PREFIX", help="draw the cells into PREFIX_<cell>.dot (and .png, .svg with "
                                                     "Graphviz's dot); without it nothing is written")
    shw.add_argument("--force", action="store_true", help="replace existing drawings")
    shw.add_argument("--space", help="the space to check the genotype against (default: the one it was found in, "
                                     "else the default preset's)")
    shw.set_defaults(handler=commands.show)

    sub.add_parser("plugins", help="list plugins, their distributions and what they registered").set_defaults(
        handler=commands.plugins)
    lst = sub.add_parser("list", help="list registered components, presets, genotypes and commands by name")
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'darts_*'")
    lst.set_defaults(handler=commands.list_names)

    cfg = sub.add_parser("config", help="config tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    show = cfg_sub.add_parser("show", help="print the fully resolved config as YAML")
    add_config(show)
    show.set_defaults(handler=commands.config_show)

    for name, command in sorted(toolkit.registries.commands.items()):
        cmd = sub.add_parser(name, help=f"{command.help} [plugin {command.plugin}]")
        if command.configure is not None:
            command.configure(cmd)
        cmd.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None, *, plugins: Iterable[object] = (), autoload: bool | None = None) -> int:
    """Run ``nas`` with ``argv``; ``plugins`` are registered beside the installed ones (tests,
    programs embedding nas), ``autoload=False`` loads no installed plugin."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv or os.environ.get("NAS_TRACEBACK", "") not in ("", "0")
    _setup_console_logging()
    allocator.reuse_freed_memory()  # the process is nas's: a CPU step's freed memory is kept for the next
    previous = _terminate_like_interrupt()
    try:
        from nas_core.toolkit import Toolkit

        toolkit = Toolkit.load(plugins, autoload)
        args = _parse(build_parser(toolkit), argv)
        return args.handler(args, toolkit)
    except distributed.JobStopped as e:  # another process of the torchrun job failed before the run began
        return _end(e.status, e.line)
    except _UsageError as e:
        return _end(e.status, e.text)
    except NasError as e:
        if show_traceback:
            raise
        return _end(2, f"nas: error: {one_line(str(e))}")
    except Terminated:
        return _end(143, "nas: terminated (SIGTERM)", agree=False)
    except BrokenPipeError:  # `nas list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return _end(130, "nas: interrupted", agree=False)
    except Exception as e:
        if show_traceback:
            raise
        return _end(1, f"nas: error: unexpected {type(e).__name__} in {_origin(e)}: {_first_line(e)} (a bug; rerun "
                       f"with --traceback or NAS_TRACEBACK=1 to see where)")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        distributed.finish()


def _end(status: int, line: str | None, *, agree: bool = True) -> int:
    """Print ``line`` on stderr and return ``status``; in a torchrun job, the job's processes
    agree on how they end and rank 0 alone prints (nas_core.distributed.conclude)."""
    status, line = distributed.conclude(status, line, agree=agree)
    if line:
        print(line, file=sys.stderr, flush=True)
    return status


class _UsageError(Exception):
    """argparse's error in a torchrun job: its exit status and its text (usage and message)."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args``; in a torchrun job argparse's error (usage and message) is held back
    and reported like any other failure, by rank 0 alone."""
    if distributed.world_size() == 1:
        return parser.parse_args(argv)
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            return parser.parse_args(argv)
    except SystemExit as e:
        if not e.code:
            raise
        raise _UsageError(e.code if isinstance(e.code, int) else 2, held.getvalue().rstrip()) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM, as schedulers (Slurm, Kubernetes) send it: handled like Ctrl-C, so the step in
    progress is abandoned, the last checkpoint kept and the resume command logged."""


def _terminate_like_interrupt() -> object:
    """Raise Terminated on SIGTERM (main thread only); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


def _origin(e: BaseException) -> str:
    """The innermost frame's module: usually the plugin at fault."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return "nas"
    last = frames[-1]
    return f"{last.filename}:{last.lineno}"


class _Console(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record arrives (it may be replaced after
    set-up, as by a program embedding nas or by pytest's capture)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _setup_console_logging() -> None:
    logger = logging.getLogger("nas")
    if not any(isinstance(h, _Console) for h in logger.handlers):
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
