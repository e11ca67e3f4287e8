"""Registers nb201's components through the same hooks any third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib import resources
from typing import Any


from nas_core import hookimpl, lazy, parse_cell_string, preset_file
from nas_nb201 import lookup
from nas_nb201.options import FAMILY, NB201_OPS, PARAMETER_FREE, ArgmaxEdgeOptions, Nb201Options

# Factories are imported on first use (lazy), so that `nas list` and `nas --help` load no torch.


@hookimpl
def nas_register_spaces(register: Callable[..., None]) -> None:
    register("nb201", lazy("nas_nb201.space:Nb201Space"), options=Nb201Options,
             doc="NAS-Bench-201 cells: 4 nodes, every edge kept, 5 ops; 3 stages of 5 cells, residual reductions.")


def _op(name: str, c_in: int, c_out: int, stride: int, affine: bool, track_running_stats: bool) -> Any:
    from nas_nb201.ops import OP_FACTORIES

    return OP_FACTORIES[name](c_in, c_out, stride, affine, track_running_stats)


@hookimpl
def nas_register_operations(register: Callable[..., None]) -> None:
    # family nb201: factory(c_in, c_out, stride, affine, track_running_stats) -> nn.Module (see nas_nb201.ops)
    for name in NB201_OPS:
        register(name, partial(_op, name), family=FAMILY, parameter_free=name in PARAMETER_FREE,
                 zero=name == "none", doc="NAS-Bench-201 candidate op (Dong & Yang, ICLR 2020, section 2.1)")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("argmax_edge", lazy("nas_nb201.argmax:ArgmaxEdgeDiscretizer"), options=ArgmaxEdgeOptions,
             doc="Every edge kept with its strongest op (the zero op included); the cell outputs its last node.")


@hookimpl
def nas_register_genotypes(register: Callable[..., None]) -> None:
    text = resources.files("nas_nb201").joinpath("genotypes", "nb201_resnet.txt").read_text()
    register("nb201_resnet", parse_cell_string(text), space="nb201",
             doc="the ResNet cell of NAS-Bench-201 (the authors' ResNet_CODE; 0.559 M parameters)")


@hookimpl
def nas_register_commands(register: Callable[..., None]) -> None:
    register("nb201-lookup", lookup.run, configure=lookup.configure,
             help="the accuracies NAS-Bench-201 recorded for a cell, read from its benchmark file")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    # nb201_demo first: `--space nb201` without --preset brings the first preset naming the space
    for name, base, doc in (
            ("nb201_demo", "demo", "small CPU search and training of an nb201 cell on the embedded digits set"),
            ("nb201_train", None, "NAS-Bench-201's training protocol on CIFAR-10: 200 epochs, Nesterov SGD 0.1 "
                                  "cosine"),
            ("nb201_paper", "nb201_train", "DARTS (first order) on nb201 with the NAS-Bench-201 paper's CIFAR-10 "
                                           "search settings, then its training protocol")):
        register(name, preset_file("nas_nb201", name), doc=doc, base=base)
