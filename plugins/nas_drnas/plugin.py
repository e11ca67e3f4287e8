"""Registers DrNAS's components (Chen et al., ICLR 2021) through the same hooks any third-party plugin
uses: the ``dirichlet`` relaxation, the ``drnas`` config section and the hooks of its progressive
staged search, and the presets. The partial-channel edge is PC-DARTS's (plugin nas_pcdarts), chosen
by config; the warm-up is the DARTS optimizers' ``freeze_alpha_epochs``. Registering loads no torch."""

from __future__ import annotations

from collections.abc import Callable


from nas_core import hookimpl, lazy, preset_file
from nas_drnas.options import DirichletOptions, DrnasSettings
from nas_drnas.progressive import nas_run_start, nas_stage_config  # noqa: F401 (hooks of this plugin)


@hookimpl
def nas_register_relaxations(register: Callable[..., None]) -> None:
    register("dirichlet", lazy("nas_drnas.dirichlet:DirichletRelaxation"), options=DirichletOptions,
             doc="DrNAS: mixing weights sampled from Dir(elu(alpha)+1) (pathwise gradients), an L2 or KL regulariser.")


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register("drnas", DrnasSettings, doc="DrNAS's progressive search: ops kept per edge after each stage, "
                                         "weights inherited")


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    for name, base, doc in (
            ("drnas_demo", "demo", "DrNAS on digits: Dirichlet mixing, 2 stages (partial channels K=6, then the "
                                   "top-4 ops per edge at K=4)"),
            ("drnas_paper", "paper", "DrNAS's CIFAR-10 progressive search settings (the authors' "
                                     "DARTS-space/train_search.py)")):
        register(name, preset_file("nas_drnas", name), doc=doc, base=base)
