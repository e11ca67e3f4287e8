"""Registers the DARTS components through the same hooks any third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import yaml

from nas_core import Genotype, hookimpl
from nas_darts import architect
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation
from nas_darts.topk import TopKDiscretizer, TopKOptions


@hookimpl
def nas_register_spaces(register: Callable[..., None]) -> None:
    register("darts_cnn", DartsCnnSpace, options=DartsCnnOptions)


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("softmax", SoftmaxRelaxation, options=SoftmaxOptions)


@hookimpl
def nas_register_optimizers(register: Callable[..., None]) -> None:
    register("darts_1st", architect.darts_first_order, options=architect.DartsOptions)
    register("darts_2nd", architect.darts_second_order, options=architect.DartsOptions)


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("topk", TopKDiscretizer, options=TopKOptions,
             doc="Per node, the k strongest edges from distinct inputs, each with its best non-zero op.")


@hookimpl
def nas_register_genotypes(register: Callable[..., None]) -> None:
    for name, doc in (("darts_v1", "DARTS (first order) CIFAR-10 cell, Liu et al. 2019"),
                      ("darts_v2", "DARTS (second order) CIFAR-10 cell, Liu et al. 2019: 2.76 % error, 3.3 M params"),
                      ("darts_rnn", "DARTS recurrent cell found on PTB, Liu et al. 2019")):
        text = resources.files("nas_darts").joinpath("genotypes", f"{name}.json").read_text()
        register(name, Genotype.from_json(text, source=f"nas_darts/genotypes/{name}.json"), doc=doc)


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, doc in (("demo", "small CPU search and training on the embedded digits set"),
                      ("paper", "the DARTS paper's CIFAR-10 search and evaluation settings")):
        text = resources.files("nas_darts").joinpath("presets", f"{name}.yaml").read_text()
        register(name, yaml.safe_load(text), doc=doc, default=name == "demo")
