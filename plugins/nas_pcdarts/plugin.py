"""Registers PC-DARTS's components (Xu et al., ICLR 2020) through the same hooks any third-party plugin
uses: the partial-channel mixed edge for ``darts_cnn``, edge normalisation as a relaxation, and the
presets. The alpha warm-up is the DARTS optimizers' ``freeze_alpha_epochs``, which freezes every
relaxation parameter (beta too). Factories are imported on first use: registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_pcdarts.options import EdgeNormalizedOptions, PartialChannelOptions


@hookimpl
def nas_register_mixed_edges(register: Callable[..., None]) -> None:
    register("partial_channels", lazy("nas_pcdarts.partial_channels:PartialChannelEdge"),
             options=PartialChannelOptions,
             doc="PC-DARTS: the ops see 1/k of the channels, the rest bypass them, then a channel shuffle.")


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("edge_normalized", lazy("nas_pcdarts.edge_normalized:EdgeNormalizedRelaxation"),
             options=EdgeNormalizedOptions,
             doc="PC-DARTS: softmax(alpha) over ops times softmax(beta) over the edges entering each node.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("pcdarts_demo", "demo", "PC-DARTS on digits: partial channels K=4, edge normalisation, first order"),
            ("pcdarts_paper", "paper", "PC-DARTS's CIFAR-10 search settings (the authors' train_search.py)")):
        register(name, preset_file("nas_pcdarts", name), doc=doc, base=base)
