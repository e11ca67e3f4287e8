"""Registers DARTS-'s components (Chu et al., ICLR 2021) through the same hooks any third-party plugin
uses: its mixed edge for ``darts_cnn`` (DARTS's weighted sum plus a decaying auxiliary skip) and the
presets. The optimizer, relaxation and discretizer are DARTS's. Factories are imported on first use:
registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_darts_minus.options import DartsMinusEdgeOptions


@hookimpl
def nas_register_mixed_edges(register: Callable[..., None]) -> None:
    register("darts_minus", lazy("nas_darts_minus.edge:DartsMinusEdge"), options=DartsMinusEdgeOptions,
             doc="DARTS-: DARTS's weighted sum plus beta * skip(x) outside the softmax, beta decaying 1 -> 0.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("darts_minus_demo", "demo", "DARTS- on digits: the auxiliary skip decaying over the search, first order"),
            ("darts_minus_paper", "paper", "DARTS-'s CIFAR-10 search settings (the authors' run_darts_minus.sh)")):
        register(name, preset_file("nas_darts_minus", name), doc=doc, base=base)
