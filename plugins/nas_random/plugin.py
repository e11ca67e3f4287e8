"""Registers the random-search baselines through the same hooks any third-party plugin uses
(``nas select`` and ``nas compare`` are plugin nas_select's).

Factories and commands are imported on first use, so that `nas list` and `nas --help` load no torch."""

from __future__ import annotations

import argparse
from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_random.options import UniformPathOptions, WsRandomOptions, WsSelectOptions
from nas_select.plugin import lazy_command, protocol_arguments

#: short-budget preset -> the full evaluation preset used by --final by default
FINAL_PRESET_OF = {"random_short": "demo", "random_short_paper": "paper"}


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("uniform_path", lazy("nas_random.weight_sharing:UniformPathRelaxation"), options=UniformPathOptions,
             doc="No architecture parameters: one uniformly sampled path (one op per edge) per step.")


@hookimpl
def nas_register_optimizers(register: Callable[..., None]) -> None:
    register("ws_random", lazy("nas_random.weight_sharing:WsRandomOptimizer"), options=WsRandomOptions,
             doc="Weight-sharing random search: weight steps along sampled paths, no architecture gradient.")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("ws_select", lazy("nas_random.weight_sharing:WsSelectDiscretizer"), options=WsSelectOptions,
             doc="Samples candidate cells, scores each with the supernet on the arch stream, keeps the best.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    register("ws_random_demo", preset_file("nas_random", "ws_random_demo"),
             doc="weight-sharing random search on digits (uniform_path, ws_random, ws_select)")


def _configure_random(toolkit_add: Callable[[argparse.ArgumentParser], None]) -> Callable[..., None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        toolkit_add(parser)
        how = parser.add_mutually_exclusive_group()
        how.add_argument("--samples", type=int, metavar="N", help="train N uniformly sampled cells")
        how.add_argument("--budget-from", action="append", metavar="DIR",
                         help="equal compute: sample until the recorded wall time of these runs is spent (a search "
                              "run directory, or a nas select directory: its searches plus short trainings; "
                              "repeatable, summed)")
        how.add_argument("--budget-hours", type=float, metavar="H", help="sample until H hours of wall time are spent")
        protocol_arguments(parser)
        parser.description = ("Random search baseline (Liu et al., ICLR 2019, section 3.2): cells drawn uniformly "
                              "from the space, each trained with the short-budget preset (--preset, default "
                              "random_short), the best kept by validation. --final trains it with --final-preset "
                              "(default: demo for random_short, paper for random_short_paper).")
    return configure


@hookimpl
def nas_register_commands(register: Callable[..., None]) -> None:
    from nas_core import Toolkit

    register("random", lazy_command("nas_random.commands:random_search"),
             configure=_configure_random(Toolkit.add_config_arguments),
             help="random search baseline: sample cells uniformly, train each briefly, keep the best by validation")
