"""Registers FairDARTS's components (Chu et al., ECCV 2020) through the same hooks any third-party
plugin uses: the sigmoid relaxation with its zero-one loss, the threshold derivation and the
presets. The optimizer is ``darts_1st``. Factories are imported on first use: registering loads no
torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_fairdarts.options import SigmoidOptions, ThresholdOptions


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("sigmoid", lazy("nas_fairdarts.sigmoid:SigmoidRelaxation"), options=SigmoidOptions,
             doc="FairDARTS: an independent sigmoid(alpha) per op, and the zero-one loss in the architecture loss.")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("threshold", lazy("nas_fairdarts.threshold:ThresholdDiscretizer"), options=ThresholdOptions,
             doc="FairDARTS: per node the 2 inputs with the strongest edges, each op kept if its weight "
                 "reaches 0.85; isolated nodes dropped.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("fairdarts_demo", "demo", "FairDARTS on digits: sigmoid weights, zero-one loss, threshold derivation"),
            ("fairdarts_paper", "paper", "FairDARTS's CIFAR-10 search settings (the authors' train_search.py)")):
        register(name, preset_file("nas_fairdarts", name), doc=doc, base=base)
