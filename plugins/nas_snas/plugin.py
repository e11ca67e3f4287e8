"""Registers SNAS's components (Xie et al., ICLR 2019) through the same hooks any third-party plugin
uses: the relaxed Gumbel-softmax relaxation, the single-level optimizer, the derivation rule and the
presets. Factories are imported on first use: registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable

from nas_core import hookimpl, lazy, preset_file
from nas_snas.options import SnasArgmaxOptions, SnasOptimizerOptions, SnasOptions


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("snas", lazy("nas_snas.relaxation:SnasRelaxation"), options=SnasOptions,
             doc="SNAS: a soft Gumbel-softmax sample softmax((alpha + G) / tau) per step mixes every op, "
                 "tau annealed linearly.")


@hookimpl
def nas_register_optimizers(register: Callable[..., None]) -> None:
    register("snas", lazy("nas_snas.optimizer:SnasOptimizer"), options=SnasOptimizerOptions,
             doc="SNAS: single level, weights and alpha descend one training loss on the same batch.")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("snas_argmax", lazy("nas_snas.argmax:SnasArgmaxDiscretizer"), options=SnasArgmaxOptions,
             doc="SNAS: every edge kept with its strongest op, the zero op included; all nodes concatenated.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("snas_demo", "demo", "SNAS on digits: soft Gumbel-softmax samples, tau 1 -> 0.03, single-level steps"),
            ("snas_paper", "paper", "SNAS's CIFAR-10 search settings (the authors' README command, single GPU)")):
        register(name, preset_file("nas_snas", name), doc=doc, base=base)
