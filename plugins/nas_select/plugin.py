"""Registers ``nas select`` and ``nas compare`` through the same hook any third-party plugin uses.

The commands are imported on first use, so that `nas list` and `nas --help` load no torch."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any


from nas_core import hookimpl, preset_file


def lazy_command(target: str) -> Callable[[argparse.Namespace, Any], int]:
    """The command ``module:function``, imported when it runs."""
    module, _, name = target.partition(":")

    def run(args: argparse.Namespace, toolkit: Any) -> int:
        return getattr(importlib.import_module(module), name)(args, toolkit)

    return run


def protocol_arguments(parser: argparse.ArgumentParser, *, final: bool = True) -> None:
    """The flags of a selection protocol (nas select, nas random): its directory, its stages' settings, --final."""
    parser.add_argument("--out", help="directory of the whole run (default: a fresh one under runs/)")
    parser.add_argument("--resume", metavar="DIR", help="continue it: finished parts are not run again")
    parser.add_argument("--force", action="store_true", help="write into an existing folder that holds other files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--metric",
                        help="valid_* metric to select on (auto: valid_top1_error, else valid_perplexity, "
                             "else valid_loss; lower is better unless it ends in acc)")
    parser.add_argument("--short-set", action="append", default=[], metavar="KEY=VALUE",
                        help="--set for the short-budget training only (repeatable)")
    if final:
        parser.add_argument("--final", action="store_true",
                            help="then train the winner with the full evaluation preset and report its test metric")
        parser.add_argument("--final-preset", help="full evaluation preset (default: see the command's help)")
        parser.add_argument("--final-set", action="append", default=[], metavar="KEY=VALUE",
                            help="--set for the final training only (repeatable)")
        parser.add_argument("--final-repeats", type=int, metavar="R",
                            help="train the winner R times (seeds seed..seed+R-1) for a mean +- std (default 1; "
                                 "may be raised on --resume)")


def _configure_select(toolkit_add: Callable[[argparse.ArgumentParser], None]) -> Callable[..., None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        toolkit_add(parser)
        parser.add_argument("--seeds", type=int, metavar="N", help="searches to run: seeds seed .. seed+N-1")
        parser.add_argument("--short-preset", default=None,
                            help="short-budget training preset (default random_short; random_short_paper with "
                                 "--preset paper)")
        parser.add_argument("--only-seed", type=int, metavar="I",
                            help="run only seed index I's search and short training (processes started together "
                                 "with one --out share the directory, e.g. one per GPU); then `nas select --resume "
                                 "DIR` selects")
        protocol_arguments(parser)
        parser.description = ("The selection protocol (Liu et al., ICLR 2019, section 3.2): search with N seeds "
                              "(--preset, default the default preset), train each derived cell with the short budget, "
                              "keep the best by validation; --final trains it with --final-preset (default: the "
                              "search preset) and reports its test metric.")
    return configure


def _configure_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR",
                        help="nas select, nas random or nas train directories; runs of one method (the same "
                             "LABEL, or the same search optimizer) are averaged")
    parser.add_argument("--metric", default="auto",
                        help="test metric (auto: test_top1_error, else test_perplexity, else test_loss)")
    parser.add_argument("--out", metavar="PREFIX",
                        help="write PREFIX.md and PREFIX.csv (default: comparison.md and comparison.csv in the "
                             "folder holding the compared run directories; runs in different folders need --out). "
                             "Tables nas compare wrote before are replaced; any other file is refused")
    parser.add_argument("--force", action="store_true", help="replace PREFIX.md and PREFIX.csv whoever wrote them")


@hookimpl
def nas_register_commands(register: Callable[..., None]) -> None:
    from nas_core import Toolkit

    register("select", lazy_command("nas_select.select:select"), configure=_configure_select(
        Toolkit.add_config_arguments),
             help="selection protocol: N search seeds, short training of each cell, best by validation, --final")
    register("compare", lazy_command("nas_select.compare:compare"), configure=_configure_compare,
             help="Table 1 of the paper: test metric mean +- std, params and search cost per method")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    # the short-budget trainings of a selection (nas select, and nas random's candidates)
    for name, doc in (("random_short", "short-budget training of candidate cells on digits (nas random/select)"),
                      ("random_short_paper", "the paper's short budget: 100 epochs CIFAR-10 per candidate cell")):
        register(name, preset_file("nas_select", name), doc=doc)
