from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nas_core.plugins import Registries, collect_registries, make_plugin_manager

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
#: The project's own plugins: the suite loads no other installed one unless a test says so.
OWN_PLUGINS = ("darts,darts_minus,darts_pt,drnas,fairdarts,gdas,lambda_darts,nb201,oles,op_pruning,pcdarts,pdarts,random,"
               "resource,robust_darts,sdarts,select,snas,tasks,tensorboard,transfer")
os.environ["NAS_ONLY_PLUGINS"] = OWN_PLUGINS  # inherited by every `nas` subprocess too
# TensorBoard's per-epoch figures are most of a tiny run's time: off unless a test asks for it
# (the `tensorboard_on` fixture, or NAS_DISABLE_PLUGINS="" in a subprocess's env)
os.environ["NAS_DISABLE_PLUGINS"] = "tensorboard"


@pytest.fixture
def tensorboard_on(monkeypatch):
    """The TensorBoard monitor loaded, for the tests of what it writes."""
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "")


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


def refused(capsys, argv: list, out) -> None:
    """``nas ARGV --out OUT`` is refused as bad input: exit 2, one ``nas: error:`` line (returned for the
    caller's message check), nothing written at ``out``."""
    from nas_core import cli

    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and err.count("\n") == 1, err
    assert not out.exists()
    return err


def image_task(info, n: int = 8):
    """A classification task over ``n`` blank examples of shape ``info``: for unit tests that
    need the task's loss and metrics but feed their own batches."""
    import torch
    from torch.utils.data import TensorDataset

    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages

    data = TensorDataset(torch.zeros(n, *info.input_shape), torch.zeros(n, dtype=torch.long))
    return ClassificationTask(ClassificationOptions(), data=LabelledImages(data, data, info))


class StepRun:
    """What an optimizer step asks of its run: a seeded generator per stream, the gradient-reduction
    service (the identity, as on one process), the epoch and the run's components."""

    def __init__(self, seed: int = 0, epoch: int = 0, components: dict | None = None):
        self.seed, self.generators, self.epoch, self.components = seed, {}, epoch, components or {}

    def generator(self, stream: str):
        import torch

        return self.generators.setdefault(stream, torch.Generator().manual_seed(self.seed))

    def reduce(self, tensors):
        return list(tensors)


class Payload:
    """Pickles as a call of ``function(argument)``: what a malicious checkpoint or tampered
    dataset file would carry."""

    def __init__(self, function, argument: str):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def os_system_payload(marker) -> Payload:
    """A payload that creates ``marker`` if anything unpickles it (pickled as posix.system)."""
    return Payload(os.system, f"touch '{marker}'")


def saved_bytes(fn, *inputs: torch.Tensor) -> int:
    """Bytes of the distinct storages of activations (over 1 KiB: not per-channel statistics) autograd
    keeps for backward while ``fn(*inputs)`` is alive."""
    import torch

    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().nbytes() > 1024:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(storages.values())
