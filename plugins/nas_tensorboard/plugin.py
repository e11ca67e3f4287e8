"""Writes each run's scalars, alpha heatmaps and genotypes to ``RUN_DIR/tb`` (see monitor.py).
Disable with ``NAS_DISABLE_PLUGINS=tensorboard``. The monitor (and torch) is imported only when
a run starts, so that `nas list` and `nas --help` stay fast."""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from nas_core import RunContext, hookimpl

log = logging.getLogger("nas")


@attrs.frozen
class TensorBoardOptions:
    """The ``tensorboard`` config section: how the monitor draws (nothing here changes a run's results)."""

    # the colour scale of the alpha heatmaps: "fixed" is 0..1 in every epoch, so that TensorBoard's
    # step slider shows change; "epoch" spans each matrix's own min..max, so that the small
    # differences of an early search show
    heatmap_scale: str = attrs.field(default="fixed", validator=attrs.validators.in_(("fixed", "epoch")))


@hookimpl
def nas_register_settings(register: Callable[..., None]) -> None:
    register("tensorboard", TensorBoardOptions, doc="the TensorBoard monitor: the alpha heatmaps' colour scale")


@hookimpl
def nas_register_commands(register: Callable[..., None]) -> None:
    from nas_tensorboard import report  # its arguments only: the report's torch and matplotlib load when it runs

    register("report", report.run, configure=report.configure, help=report.HELP)


@hookimpl
def nas_run_start(run: RunContext) -> None:
    if not run.is_writer:  # one event file per run, from rank 0 of a distributed job
        return
    from nas_tensorboard.monitor import TensorBoardMonitor, tensorboard_command

    run.plugin_manager.register(TensorBoardMonitor(run), name=f"tensorboard-monitor:{id(run)}")
    log.info("TensorBoard:  %s", tensorboard_command(run.dir))
