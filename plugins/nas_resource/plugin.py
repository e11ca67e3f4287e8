"""Registers the resource-aware penalty (the ``resource`` config section and its hooks) through the
same hooks any third-party plugin uses. The penalty's module, and torch, load on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas_core import hookimpl, preset_file
from nas_resource.options import ResourceSettings


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register("resource", ResourceSettings,
             doc="a resource-aware search: the expected cost of the derived cells (params, madds or latency) "
                 "penalised in the architecture loss against a target")


def _penalty() -> Any:
    from nas_resource import penalty
    return penalty


@hookimpl
def nas_check_run(run: Any) -> None:
    _penalty().nas_check_run(run)


@hookimpl
def nas_run_start(run: Any) -> None:
    _penalty().nas_run_start(run)


@hookimpl
def nas_epoch_end(run: Any, epoch: int, genotype: Any) -> None:
    _penalty().nas_epoch_end(run, epoch, genotype)


@hookimpl
def nas_search_results(run: Any, genotype: Any, results: dict) -> None:
    _penalty().nas_search_results(run, genotype, results)


@hookimpl
def nas_register_presets(register: Callable[..., None]) -> None:
    register("budget_demo", preset_file("nas_resource", "budget_demo"), base="demo",
             doc="a search within a budget on digits: first-order DARTS, the derived cells' parameters "
                 "penalised above 0.01 M")
