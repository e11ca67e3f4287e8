"""Registers DARTS-PT's components (Wang et al., ICLR 2021) through the same hooks any third-party plugin
uses: the ``darts_pt`` discretizer (selection by masking on the trained supernet, as a final phase of
the search) and its presets. Factories are imported on first use: registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_darts_pt.options import DartsPtOptions


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("darts_pt", lazy("nas_darts_pt.selection:DartsPtDiscretizer"), options=DartsPtOptions,
             doc="DARTS-PT: after the search, each edge keeps the op whose masking hurts validation accuracy "
                 "most, then each node its 2 most needed inputs, fine-tuning between decisions.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("darts_pt_demo", "demo", "DARTS-PT on digits: the demo's DARTS search, then selection by masking"),
            ("darts_pt_paper", "paper", "DARTS-PT's CIFAR-10 search and selection (the authors' darts-proj-sota.sh)")):
        register(name, preset_file("nas_darts_pt", name), doc=doc, base=base)
