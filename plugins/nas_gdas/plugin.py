"""Registers GDAS's components (Dong & Yang, CVPR 2019) through the same hooks any third-party plugin
uses: the hard Gumbel-softmax relaxation, its derivation rule and the presets. The optimizer is
``darts_1st`` with Nesterov momentum and a draw per pass. Factories are imported on first use:
registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_gdas.options import GdasOptions, GdasTopKOptions


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("gdas", lazy("nas_gdas.gumbel:GdasRelaxation"), options=GdasOptions,
             doc="GDAS: one op per edge per pass by a hard Gumbel-softmax (one-hot forward, softmax gradient, "
                 "or ReinMax's with estimator: reinmax), tau annealed linearly.")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("gdas_topk", lazy("nas_gdas.topk:GdasTopKDiscretizer"), options=GdasTopKOptions,
             doc="GDAS: per node the k strongest non-zero (op, input) pairs by softmax(alpha); two may share "
                 "an input.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("gdas_demo", "demo", "GDAS on digits: hard Gumbel-softmax sampling, tau 10 -> 0.1, its derivation rule"),
            ("gdas_paper", "paper", "GDAS's CIFAR-10 search settings (the authors' NASNet-space GDAS scripts)"),
            ("reinmax_demo", "demo", "GDAS with ReinMax's second-order gradient on digits, tau 10 -> 1")):
        register(name, preset_file("nas_gdas", name), doc=doc, base=base)
