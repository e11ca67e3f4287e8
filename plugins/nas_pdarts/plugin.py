"""Registers P-DARTS's components (Chen et al., ICCV 2019) through the same hooks any third-party plugin
uses: the ``pdarts`` mixed edge (per-edge op sets, skip dropout), the ``masked_softmax`` relaxation,
the ``pdarts`` optimizer (first order, clipped architecture gradient), the ``pdarts`` discretizer (the
skip cap), the ``pdarts`` config section and the hook of its staged search, and the presets. The
warm-up is the DARTS optimizers' ``freeze_alpha_epochs``. Registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_pdarts.options import (MaskedSoftmaxOptions, PdartsDiscretizerOptions, PdartsEdgeOptions,
                                PdartsOptimizerOptions, PdartsSettings)
from nas_pdarts.progressive import nas_stage_config  # noqa: F401 (a hook of this plugin)


@hookimpl
def nas_register_mixed_edges(register: Callable[..., None]) -> None:
    register("pdarts", lazy("nas_pdarts.edge:PdartsEdge"), options=PdartsEdgeOptions,
             doc="P-DARTS: the weighted sum over this edge's own (pruned) op set, Dropout(p) after skip_connect.")


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("masked_softmax", lazy("nas_pdarts.relaxation:MaskedSoftmaxRelaxation"), options=MaskedSoftmaxOptions,
             doc="Softmax over each edge's kept ops (relaxation.kept); pruned ops weigh exactly 0.")


@hookimpl
def nas_register_optimizers(register: Callable[..., None]) -> None:
    register("pdarts", lazy("nas_pdarts.optimizer:PdartsOptimizer"), options=PdartsOptimizerOptions,
             doc="P-DARTS: DARTS first order with the architecture gradient's norm clipped (arch_grad_clip).")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("pdarts", lazy("nas_pdarts.discretizer:PdartsDiscretizer"), options=PdartsDiscretizerOptions,
             doc="P-DARTS: top-2 edges per node, best non-zero op each, at most max_skip skip_connect in the normal cell.")


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register("pdarts", PdartsSettings, doc="P-DARTS's staged search: ops kept per edge after each stage")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("pdarts_demo", "demo", "P-DARTS on digits: 3 stages of 2, 3, 4 cells, ops pruned 8 -> 5 -> 3 per edge, "
                                    "skip dropout, at most 2 skips"),
            ("pdarts_paper", "paper", "P-DARTS's CIFAR-10 progressive search settings (the authors' train_search.py "
                                      "and README command)")):
        register(name, preset_file("nas_pdarts", name), doc=doc, base=base)
