"""Registers OLES's components (Jiang et al., "Operation-Level Early Stopping for Robustifying
Differentiable NAS", NeurIPS 2023) through the same hooks any third-party plugin uses: the ``oles``
and ``oles_2nd`` optimizers (DARTS first and second order with operation-level early stopping) and the
presets. Space, relaxation and derivation are DARTS's. Factories are imported on first use:
registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable

from nas_core import hookimpl, lazy, preset_file
from nas_oles.options import OlesOptions


@hookimpl
def nas_register_optimizers(register: Callable[..., None]) -> None:
    register("oles", lazy("nas_oles.optimizer:oles_first_order"), options=OlesOptions,
             doc="OLES: DARTS first order; an op whose training and validation gradients stop agreeing "
                 "(mean cosine < threshold over `frequency` steps) stops training.")
    register("oles_2nd", lazy("nas_oles.optimizer:oles_second_order"), options=OlesOptions,
             doc="OLES over DARTS second order: scores read the validation gradient at the unrolled weights.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("oles_demo", "demo", "OLES on digits: DARTS first order, ops frozen once their gradients stop matching"),
            ("oles_paper", "paper", "OLES's CIFAR-10 search settings (the authors' train_search.py defaults)")):
        register(name, preset_file("nas_oles", name), doc=doc, base=base)
