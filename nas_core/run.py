"""The run directory and what lifecycle hooks learn about a run."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import pluggy
from tqdm import tqdm

from nas_core.config import Config
from nas_core.interfaces import ArchSpec

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
GENOTYPE_FILE = "genotype.json"
LOG_FILE = "log.txt"


@attrs.define
class RunInfo:
    """Passed to every lifecycle hook."""

    dir: Path
    config: Config
    spec: ArchSpec
    plugin_manager: pluggy.PluginManager
    phase: str = "search"
    start_epoch: int = 0  # the next epoch to run (> 0 when resumed)
    genotype: Any = None  # the genotype being trained (phase "train"); None during search
    extra: dict[str, Any] = attrs.Factory(dict)  # per-run values plugins share (e.g. paths)


def default_run_dir(root: Path, config: Config, kind: str = "search") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    method = config.optimizer.name if kind == "search" else kind
    base = root / f"{config.space.name}-{method}-{config.dataset.name}-seed{config.seed}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_epoch(batches: Iterable[Any], step: Callable[[Any], dict[str, float]], *, run: RunInfo, first_step: int,
              total: int, desc: str, progress: bool | None) -> tuple[dict[str, float], int]:
    """Call ``step`` on each batch under a progress bar, firing ``nas_step_end`` after each;
    returns the epoch means of the step metrics and the next global step index."""
    sums: dict[str, float] = defaultdict(float)
    index = first_step
    with tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
              disable=not progress if progress is not None else None) as bar:
        for batch in batches:
            metrics = step(batch)
            for k, v in metrics.items():
                sums[k] += v
            run.plugin_manager.hook.nas_step_end(run=run, step=index, metrics=metrics)
            index += 1
            bar.set_postfix(loss=f"{metrics.get('train_loss', math.nan):.3f}")
            bar.update()
    return {k: v / max(index - first_step, 1) for k, v in sums.items()}, index


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Log the ``nas`` logger to the run's log file (appending across resumes)."""
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("nas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
