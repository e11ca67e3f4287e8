"""Data-parallel runs with torchrun on CPU (gloo, 2 processes): the same numbers as one process
on the same global batch, one run directory, a dead rank ends the job, and resume completes it
with the numbers of an uninterrupted run.

The toy space has no batch normalisation, so its numbers do not depend on how a batch is split
over processes; the DARTS optimizers run on it through the task, unchanged. The resume test
runs the DARTS CNN space, whose batch normalisation keeps running statistics per process."""

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
CNN = ["--preset", "demo", "--set", "space.cells=3", "--set", "space.channels=4", "--set", "search.batch_size=16",
       "--set", "search.max_steps_per_epoch=2", "--set", "search.epochs=2", "--optimizer", "darts_1st",
       "--threads", "1", "--no-progress"]


def torchrun(nproc: int, options: dict, *args: str, timeout: float = 240,
             dist_timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "NAS_DIST_TIMEOUT": str(dist_timeout), "OMP_NUM_THREADS": "1",
           "NAS_DISABLE_PLUGINS": "tensorboard"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(CHILD), json.dumps(options), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def one_process(*args: str) -> int:
    return cli.main(list(args), plugins=[ToyPlugin(), ("darts", darts)], autoload=False)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("optimizer", ["darts_1st", pytest.param("darts_2nd", marks=pytest.mark.slow)])
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
    state = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2


@pytest.mark.slow  # two torchrun jobs and a resume; a resume's exactness on one process is in the default suite
def test_a_dead_rank_ends_the_job_and_resume_gives_the_numbers_of_an_uninterrupted_run(tmp_path):
    installed = {"installed": True}
    result = torchrun(2, installed, "run", *CNN, "--out", str(tmp_path / "whole"))
    assert result.returncode == 0, result.stderr[-3000:]

    start = time.monotonic()
    result = torchrun(2, {**installed, "kill_at_epoch": 1}, "run", *CNN, "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and time.monotonic() - start < 120
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # intact: the last finished epoch
    assert state["epoch"] == 0
    result = torchrun(2, installed, "run", "--resume", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]

    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "run"))
    valid = {k: v for k, v in one.items() if k.startswith("valid_")}
    assert valid and valid == {k: v for k, v in two.items() if k.startswith("valid_")}
    assert one["epochs"] == two["epochs"] == 2
    whole, resumed = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("whole", "run"))
    for role in ("supernet", "relaxation"):
        for key, value in whole[role].items():
            assert torch.equal(value, resumed[role][key]), f"{role}.{key}"
    # each rank's batch statistics are its own, and evaluation (on each rank's share) uses them
    rank0, rank1 = (r["buffers"]["supernet"] for r in resumed["ranks"])
    assert any(k.endswith("running_mean") and not torch.equal(v, rank1[k]) for k, v in rank0.items())
    for r in range(2):
        for key, value in whole["ranks"][r]["buffers"]["supernet"].items():
            assert torch.equal(value, resumed["ranks"][r]["buffers"]["supernet"][key]), f"rank {r} {key}"


@pytest.mark.slow  # waits out a timeout
def test_a_hung_rank_ends_the_job_within_the_timeout_with_a_clear_message(tmp_path):
    start = time.monotonic()
    result = torchrun(2, {"hang_at_epoch": 1}, "run", *TOY, "--threads", "1", "--out", str(tmp_path / "run"),
                      dist_timeout=10)
    assert result.returncode != 0 and time.monotonic() - start < 90
    assert "nas: error: another process of this torchrun job died or stopped answering (NAS_DIST_TIMEOUT=10 s" \
        in result.stderr
    assert (f"continue with: torchrun --standalone --nproc_per_node=2 -m nas_core.cli run --resume "
            f"{tmp_path / 'run'}") in result.stderr
    assert sum(line.startswith("nas: ") for line in result.stderr.splitlines()) == 1  # rank 0's alone
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
