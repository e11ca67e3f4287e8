from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas_core.plugins import Registries, collect_registries, make_plugin_manager

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def registries() -> Registries:
    return collect_registries(make_plugin_manager())


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """The real `nas` command in a subprocess (the CLI as a user meets it)."""
    full_env = {**os.environ, "NAS_DISABLE_PLUGINS": "tensorboard", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nas_core.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


# small search settings shared by end-to-end tests
TINY = ["--set", "space.cells=3", "--set", "space.channels=4", "--set", "search.batch_size=16",
        "--set", "search.max_steps_per_epoch=2", "--no-progress"]
