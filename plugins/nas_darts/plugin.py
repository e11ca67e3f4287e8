"""Registers the DARTS components through the same hooks any third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib import resources
from typing import Any


from nas_core import Genotype, hookimpl, lazy, preset_file
from nas_darts.options import (CNN_OPS, PARAMETER_FREE, RNN_OPS, DartsCnnOptions, DartsOptions, DartsRnnOptions,
                               SoftmaxOptions, TopKOptions)

# Factories are imported on first use (lazy), so that `nas list` and `nas --help` load no torch.


@hookimpl
def nas_register_spaces(register: Callable[..., None]) -> None:
    register("darts_cnn", lazy("nas_darts.cnn_space:DartsCnnSpace"), options=DartsCnnOptions,
             doc="DARTS CNN cells: 8 candidate ops, 2 inputs, 4 nodes, reduction cells at 1/3 and 2/3.")
    register("darts_rnn", lazy("nas_darts.rnn_space:DartsRnnSpace"), options=DartsRnnOptions,
             doc="DARTS recurrent cells: 5 ops, 8 nodes, k=1, highway nodes; a tied-embedding language model.")


def _cnn_op(name: str, channels: int, stride: int, affine: bool, search: bool) -> Any:
    from nas_darts.ops import OP_FACTORIES

    return OP_FACTORIES[name](channels, stride, affine, search)


def _activation(name: str) -> Any:
    from nas_darts.rnn_space import ACTIVATIONS

    return ACTIVATIONS[name]


@hookimpl
def nas_register_operations(register: Callable[..., None]) -> None:
    # family darts_cnn: factory(channels, stride, affine, search) -> nn.Module (see nas_darts.ops)
    for name in CNN_OPS:
        register(name, partial(_cnn_op, name), family="darts_cnn", parameter_free=name in PARAMETER_FREE,
                 zero=name == "none", doc="DARTS candidate op (Liu et al., ICLR 2019, section 3.1.1)")
    # family darts_rnn: factory() -> the activation of a recurrent node's highway
    for name in RNN_OPS:
        register(name, partial(_activation, name), family="darts_rnn", zero=name == "none",
                 doc="DARTS recurrent-cell activation (Liu et al., ICLR 2019, appendix A)")


@hookimpl
def nas_register_mixed_edges(register: Callable[..., None]) -> None:
    register("weighted_sum", lazy("nas_darts.edges:WeightedSumEdge"),
             doc="DARTS's mixed op: the sum of every candidate op weighted by its mixing weight.")


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("softmax", lazy("nas_darts.softmax:SoftmaxRelaxation"), options=SoftmaxOptions,
             doc="alpha per cell type, shape [edges, ops]; weights = softmax over ops.")


@hookimpl
def nas_register_optimizers(register: Callable[..., None]) -> None:
    register("darts_1st", lazy("nas_darts.architect:darts_first_order"), options=DartsOptions,
             doc="DARTS, first order: the architecture gradient at the current weights (xi = 0).")
    register("darts_2nd", lazy("nas_darts.architect:darts_second_order"), options=DartsOptions,
             doc="DARTS, second order: the architecture gradient through one unrolled weight step.")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("topk", lazy("nas_darts.topk:TopKDiscretizer"), options=TopKOptions,
             doc="Per node, the k strongest edges from distinct inputs, each with its best non-zero op.")


@hookimpl
def nas_register_genotypes(register: Callable[..., None]) -> None:
    for name, space, doc in (
            ("darts_v1", "darts_cnn", "DARTS (first order) CIFAR-10 cell, Liu et al. 2019"),
            ("darts_v2", "darts_cnn", "DARTS (second order) CIFAR-10 cell, Liu et al. 2019: 2.76 % error, 3.3 M params"),
            ("darts_rnn", "darts_rnn", "DARTS recurrent cell found on PTB, Liu et al. 2019")):
        text = resources.files("nas_darts").joinpath("genotypes", f"{name}.json").read_text()
        register(name, Genotype.from_json(text, source=f"nas_darts/genotypes/{name}.json"), doc=doc, space=space)


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, doc in (("demo", "small CPU search and training on the embedded digits set"),
                      ("paper", "the DARTS paper's CIFAR-10 search and evaluation settings"),
                      ("rnn_demo", "small CPU search and training of a recurrent cell on the embedded pydoc_topics text"),
                      ("rnn_paper", "the DARTS paper's PTB recurrent-cell search and evaluation settings")):
        register(name, preset_file("nas_darts", name), doc=doc, default=name == "demo")
