"""Data-parallel runs with torchrun on CPU (gloo, 2 processes): the same numbers as one process
on the same global batch, one run directory, a dead rank ends the job, and resume completes it.

The toy space has no batch normalisation, so its numbers do not depend on how a batch is split
over processes; the DARTS optimizers run on it through the task, unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas_core import cli
from nas_core.checkpoint import load_checkpoint
from stubs import ToyPlugin

import nas_darts.plugin as darts

CHILD = Path(__file__).resolve().parent / "dist_child.py"
TOY = ["--preset", "toy", "--set", "search.epochs=2", "--set", "search.max_steps_per_epoch=3", "--no-progress"]


def torchrun(nproc: int, options: dict, *args: str, timeout: float = 240,
             dist_timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "NAS_DIST_TIMEOUT": str(dist_timeout), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(CHILD), json.dumps(options), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def one_process(*args: str) -> int:
    return cli.main(list(args), plugins=[ToyPlugin(), ("darts", darts)], autoload=False)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("optimizer", ["darts_1st", "darts_2nd"])
def test_two_processes_match_one_on_the_same_global_batch(tmp_path, optimizer):
    torch.set_num_threads(1)  # as each torchrun worker runs
    args = ["run", *TOY, "--optimizer", optimizer, "--threads", "1"]
    assert one_process(*args, "--out", str(tmp_path / "one")) == 0
    single = load_checkpoint(tmp_path / "one" / "checkpoint.pt")

    result = torchrun(2, {"dump": str(tmp_path)}, *args, "--out", str(tmp_path / "two"))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0.keys() == rank1.keys() and any(k.startswith("relaxation.") for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key  # every rank holds the same weights and alphas
    for key, value in rank0.items():
        role, name = key.split(".", 1)
        assert rel(value, single[role][name]) < 1e-5, key
    # one run directory, written by rank 0 only; the log shows one line per epoch
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
    assert (tmp_path / "two" / "log.txt").read_text().count("epoch 2/2 ") == 1
    assert len(load_checkpoint(tmp_path / "two" / "checkpoint.pt")["rng_ranks"]) == 2


def test_a_dead_rank_ends_the_job_and_resume_completes_it(tmp_path):
    args = ["run", *TOY, "--optimizer", "darts_1st", "--threads", "1", "--out", str(tmp_path / "run")]
    start = time.monotonic()
    result = torchrun(2, {"kill_at_epoch": 1}, *args)
    assert result.returncode != 0 and time.monotonic() - start < 120
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # intact: the last finished epoch
    assert state["epoch"] == 0

    result = torchrun(2, {}, "run", "--resume", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert json.loads((tmp_path / "run" / "results.json").read_text())["epochs"] == 2


def test_a_hung_rank_ends_the_job_within_the_timeout_with_a_clear_message(tmp_path):
    start = time.monotonic()
    result = torchrun(2, {"hang_at_epoch": 1}, "run", *TOY, "--threads", "1", "--out", str(tmp_path / "run"),
                      dist_timeout=10)
    assert result.returncode != 0 and time.monotonic() - start < 90
    assert "nas: error: another process of this torchrun job died or stopped answering (NAS_DIST_TIMEOUT=10 s" \
        in result.stderr
    assert f"continue with nas run --resume {tmp_path / 'run'}" in result.stderr
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 0


def test_two_process_training_matches_one(tmp_path):
    torch.set_num_threads(1)
    assert one_process("run", *TOY, "--optimizer", "darts_1st", "--out", str(tmp_path / "search")) == 0
    args = ["train", "--genotype", str(tmp_path / "search"), "--preset", "toy", "--set", "train.epochs=2",
            "--set", "train.max_steps_per_epoch=3", "--threads", "1", "--no-progress"]
    assert one_process(*args, "--out", str(tmp_path / "one")) == 0
    single = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["network"]
    result = torchrun(2, {"dump": str(tmp_path)}, *args, "--out", str(tmp_path / "two"))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]) and rel(value, single[key.split(".", 1)[1]]) < 1e-5, key
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert abs(one["test_loss"] - two["test_loss"]) < 1e-5 * abs(one["test_loss"])  # metrics over all ranks
