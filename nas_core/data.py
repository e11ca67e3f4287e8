"""Loading the chosen dataset and building the task that reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas_core.components import build
from nas_core.config import Config
from nas_core.errors import DataError
from nas_core.interfaces import Task
from nas_core.plugins import Registries


def load_data(registries: Registries, config: Config) -> Any:
    """What the chosen dataset's factory returns for ``--data-root``."""
    entry = registries.datasets.get(config.dataset.name)
    root = Path(config.data_root).expanduser() if config.data_root else None
    if root is not None and not root.is_dir():
        raise DataError(f"--data-root {root} is not a directory")
    return entry.factory(config.dataset.options, root=root)


def build_task(registries: Registries, config: Config) -> Task:
    """The chosen task over the chosen dataset."""
    return build(registries.tasks, config.task, Task, data=load_data(registries, config))
