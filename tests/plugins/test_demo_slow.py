"""The README's main job, in full: slow, run with `pytest -m slow`."""

from __future__ import annotations

import pytest

from conftest import run_cli
from nas_core.checkpoint import load_checkpoint


@pytest.mark.slow
def test_demo_search_learns_and_derives_a_genotype(tmp_path):
    result = run_cli("run", "--space", "darts_cnn", "--optimizer", "darts_2nd", "--out", str(tmp_path / "run"),
                     "--no-progress", env={"NAS_DISABLE_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ") and " step " not in line]
    last = epochs[-1]
    done, total = last.split()[1].split("/")
    assert done == total == "5", last  # the demo preset's 5 epochs, all run
    error = float(last.split("valid_top1_error=")[1].split()[0])
    assert error < 0.1, last  # digits is easy: a working search reaches ~97 % accuracy
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    alphas = state["relaxation"]["alphas.normal"]
    assert alphas.std() > 1e-2  # the architecture moved away from its 1e-3 init
