"""Registers each part through the hooks any plugin uses; the parts load torch on first use."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from nas_core import hookimpl, lazy
from nas_contract_example.options import DirichletOptions, PartialChannelOptions, PruningOptions, SmoothingOptions
from nas_contract_example.pruning import nas_run_start, nas_stage_config  # noqa: F401 (hooks of this plugin)


@hookimpl
def nas_register_operations(register: Callable[..., None]) -> None:
    register("conv_7x1_1x7", lazy("nas_contract_example.conv7:conv_7x1_1x7"), family="darts_cnn",
             doc="ReLU, 1x7 then 7x1 convolution, BN (NASNet's factorised 7x7)")


@hookimpl
def nas_register_mixed_edges(register: Callable[..., None]) -> None:
    register("partial_channels", lazy("nas_contract_example.partial_edge:PartialChannelEdge"),
             options=PartialChannelOptions, doc="PC-DARTS: 1/k of the channels through the ops, then a shuffle")


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("dirichlet", lazy("nas_contract_example.dirichlet:DirichletRelaxation"), options=DirichletOptions,
             doc="DrNAS: mixing weights drawn from Dirichlet(elu(beta) + 1), a KL term to the prior")


@hookimpl
def nas_register_perturbations(register: Callable[..., None]) -> None:
    register("random_smoothing", lazy("nas_contract_example.smoothing:RandomSmoothing"), options=SmoothingOptions,
             doc="SDARTS-RS: uniform noise on the weight pass's mixing weights")


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register("pruning", PruningOptions, doc="staged searches: the weakest ops each stage drops")


@hookimpl
def nas_register_commands(register: Callable[..., None]) -> None:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", help="a finished search run directory")

    def run(args: argparse.Namespace, toolkit: Any) -> int:
        from nas_contract_example.alphas import print_alphas

        return print_alphas(toolkit, args.run_dir)

    register("alphas", run, configure=configure, help="print softmax(alpha) per edge of a finished search")
