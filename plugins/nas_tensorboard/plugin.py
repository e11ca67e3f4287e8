"""Writes each run's scalars, alpha heatmaps and genotypes to ``RUN_DIR/tb`` (see monitor.py).
Disable with ``NAS_DISABLE_PLUGINS=tensorboard``. The monitor (and torch) is imported only when
a run starts, so that `nas list` and `nas --help` stay fast."""

from __future__ import annotations

import logging

from nas_core import RunContext, hookimpl

log = logging.getLogger("nas")


@hookimpl
def nas_run_start(run: RunContext) -> None:
    if not run.is_writer:  # one event file per run, from rank 0 of a distributed job
        return
    from nas_tensorboard.monitor import TENSORBOARD_DIR, TensorBoardMonitor, tensorboard_command

    run.plugin_manager.register(TensorBoardMonitor(run), name=f"tensorboard-monitor:{id(run)}")
    log.info("TensorBoard:  %s", tensorboard_command(run.dir / TENSORBOARD_DIR))
