"""Registers RobustDARTS (Zela et al., ICLR 2020) through the same hooks any third-party plugin uses: the
``robust_darts`` config section (the architecture Hessian's dominant eigenvalue, measured during any
search that asks, and the DARTS-ES / DARTS-ADA rules on it), the ``robust_darts_es`` discretizer that
returns the early-stopped cell, and the presets. Factories are imported on first use: registering
loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import RunContext, hookimpl, lazy, preset_file
from nas_robust_darts.options import EarlyStoppedOptions, RobustDartsSettings

SECTION = "robust_darts"


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register(SECTION, RobustDartsSettings,
             doc="RobustDARTS: the architecture Hessian's dominant eigenvalue every N epochs (metric "
                 "hessian_eigenvalue), early stopping (es) or adaptive weight decay (ada) on it")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("robust_darts_es", lazy("nas_robust_darts.discretizer:EarlyStoppedDiscretizer"),
             options=EarlyStoppedOptions,
             doc="DARTS-ES: the base discretizer's cells; a search stopped by robust_darts.early_stop=es "
                 "returns the cell derived at the epoch the rule looked back to.")


@hookimpl
def nas_run_start(run: RunContext) -> None:
    """A search that asks for the eigenvalue gets a monitor for its length (it unregisters itself)."""
    settings = run.config.settings.get(SECTION)
    if run.phase != "search" or settings is None or settings.every == 0:
        return
    from nas_robust_darts.early_stop import RobustDartsMonitor

    monitor = RobustDartsMonitor(settings, run)
    run.plugin_manager.register(monitor, name=f"robust_darts:{id(monitor)}")
    monitor.start(run)


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("robust_darts_demo", "demo", "DARTS-ES on digits: the Hessian eigenvalue every epoch, early stopping "
                                          "scaled to 5 epochs"),
            ("robust_darts_paper", "paper", "DARTS-ES's CIFAR-10 DARTS-space search (the authors' train_search.py: "
                                            "second order, eigenvalue every 2 epochs, window 5, delta 4, factor 1.3)")):
        register(name, preset_file("nas_robust_darts", name), doc=doc, base=base)
