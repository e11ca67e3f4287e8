"""The run directory: its layout, its default name and its log file."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from nas_core.config import Config

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
GENOTYPE_FILE = "genotype.json"
LOG_FILE = "log.txt"
RESULTS_FILE = "results.json"


def default_run_dir(root: Path, config: Config, kind: str = "search") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    method = config.optimizer.name if kind == "search" else kind
    base = root / f"{config.space.name}-{method}-{config.dataset.name}-seed{config.seed}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Log the ``nas`` logger to the run's log file (appending across resumes)."""
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("nas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
