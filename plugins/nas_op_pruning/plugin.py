"""Registers scheduled op pruning (the ``op_pruning`` config section and its hooks) through the same
hooks any third-party plugin uses. The schedule's hooks import torch on first use only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas_core import hookimpl
from nas_op_pruning.options import OpPruningSettings


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register("op_pruning", OpPruningSettings,
             doc="scheduled op pruning: after the given epoch counts, every edge keeps its strongest ops")


@hookimpl
def nas_check_run(run: Any) -> None:
    from nas_op_pruning import schedule
    schedule.nas_check_run(run)


@hookimpl(tryfirst=True)
def nas_epoch_start(run: Any) -> None:
    from nas_op_pruning import schedule
    schedule.nas_epoch_start(run)
