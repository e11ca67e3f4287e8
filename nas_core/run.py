"""The run directory: its layout, its marker, its default name and its log file."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from nas_core.config import Config
from nas_core.files import write_text_atomic

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
GENOTYPE_FILE = "genotype.json"
LOG_FILE = "log.txt"
RESULTS_FILE = "results.json"
BEST_FILE = "best.pt"  # the best-validation weights of a training (train.test_model=best_valid)
#: Written first into every folder nas creates for a run, and by nothing else: a folder that
#: merely holds a ``config.yaml`` may be the user's own, so only this file makes it ours.
MARKER_FILE = ".nas-run"


def mark_run_dir(run_dir: Path, kind: str) -> None:
    """Create ``run_dir`` (if needed) and mark it as nas's; a folder already marked keeps its marker."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / MARKER_FILE).exists():
        write_text_atomic(run_dir / MARKER_FILE, json.dumps({"kind": kind, "created": time.time()}) + "\n")


def run_kind(run_dir: Path) -> str | None:
    """The kind a marked run directory was created for (``search``, ``train``, ...), else None."""
    try:
        marker = json.loads((run_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return str(marker.get("kind")) if isinstance(marker, dict) else None


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
