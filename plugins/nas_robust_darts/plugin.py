"""Registers RobustDARTS (Zela et al., ICLR 2020) through the same hooks any third-party plugin uses: the
``robust_darts`` config section (the architecture Hessian's dominant eigenvalue, measured during any
search that asks, and the DARTS-ES / DARTS-ADA rules on it), the ``robust_darts_es`` discretizer that
returns the early-stopped cell, the ``noise`` op of family ``darts_cnn``, and the presets: DARTS-ES,
the reduced spaces S1-S4 (nas_robust_darts.spaces), DARTS's space without skip_connect and a deeper
supernet. Factories are imported on first use: registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import RunContext, hookimpl, lazy, preset_file
from nas_robust_darts.options import EarlyStoppedOptions, RobustDartsSettings
from nas_robust_darts.spaces import NO_SKIP, S1_OPS, UNIFORM, merged, space_layer

SECTION = "robust_darts"
# The demos' search epochs, sized so that each search costs about the DARTS demo's 5 epochs: one epoch
# of 5-6 steps on one thread (a shared machine) took about 1/3 of the demo's time in S1 (two ops per
# edge), 1/4.5 in S2, 1/4 in S3 (`none` is not computed), 1/3.7 in S4. More epochs also give the
# collapse these spaces were built to show time to happen.
DEMO_EPOCHS = {"s1": 15, "s2": 20, "s3": 20, "s4": 20}
# twice the demo's cells took twice its time per epoch: 3 epochs cost about the demo's 5
DEEP_DEMO = {"space": {"cells": 8}, "search": {"epochs": 3}}


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register(SECTION, RobustDartsSettings,
             doc="RobustDARTS: the architecture Hessian's dominant eigenvalue every N epochs (metric "
                 "hessian_eigenvalue), early stopping (es) or adaptive weight decay (ada) on it")


@hookimpl
def nas_register_operations(register: Callable[..., None]) -> None:
    register("noise", lazy("nas_robust_darts.noise:noise_op"), family="darts_cnn", parameter_free=True,
             doc="RobustDARTS's noise op (Zela et al., ICLR 2020, space S4): fresh N(0, 1) samples shaped like "
                 "the input (::2 on reduction edges), no gradient to the input")


@hookimpl
def nas_register_discretizers(register: Callable[..., None]) -> None:
    register("robust_darts_es", lazy("nas_robust_darts.discretizer:EarlyStoppedDiscretizer"),
             options=EarlyStoppedOptions,
             doc="DARTS-ES: the base discretizer's cells; a search stopped by robust_darts.early_stop=es "
                 "returns the cell derived at the epoch the rule looked back to.")


@hookimpl
def nas_check_run(run: RunContext) -> None:
    settings = run.config.settings.get(SECTION)
    if run.phase == "search" and settings is not None and settings.every:
        from nas_robust_darts.early_stop import check

        check(settings, run)


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
    ops = {"s1": f"two ops per edge, their own per edge and cell type, among {', '.join(S1_OPS)}",
           **{space: "{" + ", ".join(names) + "} on every edge" for space, names in UNIFORM.items()}}
    for space in ("s1", "s2", "s3", "s4"):
        layer = space_layer(space)
        register(f"rdarts_{space}_demo", merged(layer, {"search": {"epochs": DEMO_EPOCHS[space]}}), base="demo",
                 doc=f"DARTS on digits in RobustDARTS's space {space.upper()}: {ops[space]}; "
                     f"{DEMO_EPOCHS[space]} epochs")
        # their args.py turns cutout off when drop_path_prob is 0, as it is here
        register(f"rdarts_{space}_paper", merged(layer, {"task": {"cutout": 0}}), base="paper",
                 doc=f"DARTS's CIFAR-10 search (second order, 8 cells, 50 epochs) in RobustDARTS's space "
                     f"{space.upper()} (their DARTS_search.sh at drop-path 0, wd 3e-4, so no cutout)")
    no_skip = {"space": {"ops": list(NO_SKIP)}}
    register("no_skip_demo", no_skip, base="demo",
             doc="DARTS on digits over the 7 ops without skip_connect (the collapse studies' control)")
    register("no_skip_paper", no_skip, base="paper",
             doc="DARTS's CIFAR-10 search over the 7 ops without skip_connect")
    register("deep_demo", DEEP_DEMO, base="demo",
             doc="DARTS on digits with a supernet twice as deep (8 cells), 3 epochs")
    register("deep_paper", {"space": {"cells": 14}}, base="paper",
             doc="DARTS's CIFAR-10 search with a 14-cell supernet (theirs: 8; P-DARTS: 5, 11, 17)")
