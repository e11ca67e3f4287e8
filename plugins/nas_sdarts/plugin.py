"""Registers SDARTS's components (Chen & Hsieh, ICML 2020) through the same hooks any third-party plugin
uses: the perturbations of the weight pass's mixing weights, random (SDARTS-RS) and adversarial
(SDARTS-ADV), and the presets. The optimizer is DARTS's (it applies a configured perturbation to its
weight step). Factories are imported on first use: registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_sdarts.options import AdversarialOptions, SmoothingOptions


@hookimpl
def nas_register_perturbations(register: Callable[..., None]) -> None:
    register("sdarts_rs", lazy("nas_sdarts.perturbations:Smoothing"), options=SmoothingOptions,
             doc="SDARTS-RS: uniform noise in [-eps, eps] on the weight pass's mixing weights, eps 0.03 -> 0.3.")
    register("sdarts_adv", lazy("nas_sdarts.perturbations:Adversarial"), options=AdversarialOptions,
             doc="SDARTS-ADV: a 7-step L-inf PGD attack on the weight pass's mixing weights, eps 0.03 -> 0.3.")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("sdarts_rs_demo", "demo", "SDARTS-RS on digits: random smoothing of the weight pass, first order"),
            ("sdarts_adv_demo", "demo", "SDARTS-ADV on digits: a PGD attack on the weight pass, first order"),
            ("sdarts_rs_paper", "paper", "SDARTS-RS's CIFAR-10 search settings (the authors' sota/cnn/train_search.py)"),
            ("sdarts_adv_paper", "paper", "SDARTS-ADV's CIFAR-10 search settings (the authors' sota/cnn/train_search.py)")):
        register(name, preset_file("nas_sdarts", name), doc=doc, base=base)
