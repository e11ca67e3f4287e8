"""Registers Lambda-DARTS's components (Movahedi et al., ICLR 2023) through the same hooks any third-party
plugin uses: the ``lambda_darts`` optimizer (DARTS with the layer-alignment regulariser in its weight
step) and the presets. Factories are imported on first use: registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable

from nas_core import hookimpl, lazy, preset_file
from nas_lambda_darts.options import LambdaDartsOptions


@hookimpl
def nas_register_optimizers(register: Callable[..., None]) -> None:
    register("lambda_darts", lazy("nas_lambda_darts.optimizer:LambdaDartsOptimizer"), options=LambdaDartsOptions,
             doc="Lambda-DARTS: DARTS whose weights also ascend the alignment (mean cosine) of the gradients "
                 "the normal cells send to their mixing weights; lambda ramped from 0.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("lambda_darts_demo", "demo", "Lambda-DARTS on digits: the layer-alignment regulariser, first order"),
            ("lambda_darts_paper", "paper",
             "Lambda-DARTS's CIFAR-10 search settings (the authors' run_search.sh, DARTS space)")):
        register(name, preset_file("nas_lambda_darts", name), doc=doc, base=base)
