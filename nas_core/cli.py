"""The ``nas`` command. Thin: parses arguments and calls the engine; user errors are one line."""

from __future__ import annotations

import argparse
import logging
import sys

from nas_core import __version__
from nas_core.errors import NasError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", help="search space name (see `nas list`)")
    p.add_argument("--optimizer", help="bilevel optimizer name, e.g. darts_1st, darts_2nd")
    p.add_argument("--relaxation", help="relaxation name, e.g. softmax")
    p.add_argument("--discretizer", help="discretizer name, e.g. topk")
    p.add_argument("--dataset", help="dataset name, e.g. digits (embedded), cifar10, cifar100")
    p.add_argument("--data-root", help="directory holding real datasets")
    p.add_argument("--preset", help="config preset (default: demo; see `nas plugins`)")
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config file (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set search.epochs=3 (repeatable)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Plugin-based neural architecture search.")
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run an architecture search")
    _config_args(run)
    run.add_argument("--out", help="run directory (default: runs/<space>-<optimizer>-<dataset>-seed<N>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, help_text in (("train", "train a cell from scratch and test it"),
                            ("transfer", "train a cell on another task (see `nas list` for targets)")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--genotype", help="genotype JSON or DARTS text file, search run directory, or registered "
                                            "name (darts_v1, darts_v2, ...)")
        if name == "transfer":
            cmd.add_argument("--target", help="evaluator name, e.g. imagenet, cifar100")
        _config_args(cmd)
        cmd.add_argument("--out", help="run directory (default: runs/<space>-<kind>-<dataset>-seed<N>-<time>)")
        cmd.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
        cmd.add_argument("--no-progress", action="store_true", help="no progress bar")

    der = sub.add_parser("derive", help="derive a genotype from a search checkpoint's architecture parameters")
    der.add_argument("source", metavar="RUN_DIR|CHECKPOINT")
    der.add_argument("--discretizer", help="discretizer name (default: the run's)")
    der.add_argument("--k", type=int, help="inputs kept per node (discretizers with a k option)")
    der.add_argument("--out", help="genotype JSON to write (default: beside the checkpoint)")

    shw = sub.add_parser("show", help="print a genotype in DARTS text form and draw its cells (DOT, PNG, SVG)")
    shw.add_argument("genotype", metavar="GENOTYPE", help="file, search run directory or registered name")
    shw.add_argument("--out", metavar="PREFIX", help="output prefix (default: the genotype's name)")

    sub.add_parser("plugins", help="list plugins, their distributions and what they registered")
    lst = sub.add_parser("list", help="list registered components and presets by name")
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'darts_*'")

    cfg = sub.add_parser("config", help="config tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    show = cfg_sub.add_parser("show", help="print the fully resolved config as YAML")
    _config_args(show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_console_logging()
    try:
        return _dispatch(args)
    except NasError as e:
        print(f"nas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130


def _setup_console_logging() -> None:
    logger = logging.getLogger("nas")
    if not any(getattr(h, "_nas_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._nas_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _dispatch(args: argparse.Namespace) -> int:
    from nas_core import commands

    if args.command in ("run", "train", "transfer", "derive", "show"):
        return getattr(commands, args.command)(args)
    if args.command == "plugins":
        return commands.plugins()
    if args.command == "list":
        return commands.list_names(args.pattern)
    if args.command == "config":
        return commands.config_show(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
