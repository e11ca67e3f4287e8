"""Runs read back (nas_core.records) and the lock of multi-step commands (nas_core.steps)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY
from nas_core import (CheckpointError, Genotype, NasError, RunLock, SearchRecord, Toolkit, TrainingRecord, cli,
                      load_search, load_training)
from nas_core.checkpoint import load_checkpoint, save_checkpoint

TRAIN = ["--set", "network.cells=3", "--set", "network.channels=4", "--set", "train.max_steps_per_epoch=2",
         "--set", "train.epochs=1", "--set", "train.batch_size=16", "--no-progress"]


@pytest.fixture(scope="module")
def toolkit() -> Toolkit:
    return Toolkit.load()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished two-epoch search and a finished training of the cell it found."""
    root = tmp_path_factory.mktemp("records")
    search, train = root / "search", root / "train"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAS_DISABLE_PLUGINS", "tensorboard")
        assert cli.main(["run", *TINY, "--set", "search.epochs=2", "--device", "cpu", "--threads", "1",
                         "--out", str(search)]) == 0
        assert cli.main(["train", "--genotype", str(search), *TRAIN, "--device", "cpu", "--threads", "1",
                         "--out", str(train)]) == 0
    return {"search": search, "train": train}


# -- a search ----------------------------------------------------------------------------------

def test_a_search_is_read_back_with_its_checkpoints_tensors_genotypes_and_metrics(toolkit, runs):
    search = runs["search"]
    before = torch.get_rng_state()
    record = toolkit.load_search(search)
    assert torch.equal(torch.get_rng_state(), before)  # building the modules drew nothing from the caller's stream
    state = load_checkpoint(search / "checkpoint.pt")
    assert isinstance(record, SearchRecord) and record.dir == search and record.stage is None
    alphas = record.relaxation.state_dict()
    assert set(alphas) == set(state["relaxation"]) and all(torch.equal(alphas[k], v)
                                                           for k, v in state["relaxation"].items())
    weights = record.supernet.state_dict()
    assert set(weights) == set(state["supernet"]) and all(torch.equal(weights[k], v)
                                                          for k, v in state["supernet"].items())
    assert not record.supernet.training and not record.relaxation.training
    strengths = record.relaxation.strengths()
    assert {t: tuple(s.shape) for t, s in strengths.items()} == {t: record.spec.shape(t) for t in record.spec.edges}
    assert set(record.relaxation.weights()) == set(record.spec.edges)
    files = {e: Genotype.from_json((search / "genotypes" / f"epoch_{e:03d}.json").read_text()) for e in (1, 2)}
    assert dict(record.genotypes) == files
    results = json.loads((search / "results.json").read_text())
    assert record.genotype == Genotype.from_dict(results["genotype"]) == files[2]
    assert dict(record.metrics) == state["metrics"]
    assert record.metrics["valid_top1_error"] == results["valid_top1_error"]
    assert (record.epochs_done, record.complete, record.stopped) == (2, True, None)
    assert (record.wall_time_s, record.device) == (results["wall_time_s"], "cpu")
    assert record.config.search.epochs == 2 and record.config.space.name == "darts_cnn"
    assert record.space.arch_spec() == record.spec
    same = load_search(toolkit.registries, str(search))  # the registries are enough
    assert same.genotype == record.genotype and torch.equal(same.relaxation.strengths()["normal"], strengths["normal"])


def test_a_staged_search_loads_its_last_stage_with_a_checkpoint_or_the_one_asked_for(toolkit, runs, tmp_path):
    search = runs["search"]
    staged = tmp_path / "staged"
    for stage in (1, 2, 3):
        shutil.copytree(search, staged / f"stage_{stage}")
    (staged / "stage_3" / "checkpoint.pt").unlink()  # stage 3 has not finished an epoch
    relax = staged / "stage_1" / "checkpoint.pt"
    state = load_checkpoint(relax)
    state["relaxation"] = {k: v + 1.0 for k, v in state["relaxation"].items()}  # stage 1's alphas differ
    save_checkpoint(relax, {k: v for k, v in state.items() if k != "format"})
    last = toolkit.load_search(staged)
    assert (last.stage, last.dir) == (2, staged / "stage_2")
    first = toolkit.load_search(staged, stage=1)
    assert first.stage == 1 and all(torch.equal(first.relaxation.state_dict()[k], v)
                                    for k, v in state["relaxation"].items())
    assert not torch.equal(first.relaxation.strengths()["normal"], last.relaxation.strengths()["normal"])


# -- a training --------------------------------------------------------------------------------

def test_a_training_is_read_back_with_typed_fields(toolkit, runs):
    search, train = runs["search"], runs["train"]
    record = toolkit.load_training(train)
    results = json.loads((train / "results.json").read_text())
    assert isinstance(record, TrainingRecord) and record.dir == train and record.complete
    assert record.genotype == Genotype.from_json((search / "genotype.json").read_text())
    assert dict(record.valid) == {k: v for k, v in results.items() if k.startswith("valid_")} and record.valid
    assert dict(record.test) == {k: v for k, v in results.items() if k.startswith("test_")}
    assert "test_top1_error" in record.test and all(type(v) is float for v in {**record.valid, **record.test}.values())
    assert (record.params, record.params_total, record.multiply_adds) == (
        results["params"], results["params_total"], results["multiply_adds"])
    assert type(record.params) is int and record.params > 0
    assert (record.tested, record.tested_epoch) == (results["tested"], results["tested_epoch"])
    assert (record.epochs, record.wall_time_s, record.device) == (1, results["wall_time_s"], "cpu")
    assert record.config.train.epochs == 1 and record.config.network.cells == 3


def test_an_unfinished_training_is_read_from_its_checkpoint(toolkit, runs, tmp_path):
    train = runs["train"]
    run = tmp_path / "train"
    shutil.copytree(train, run)
    (run / "results.json").unlink()
    state = load_checkpoint(run / "checkpoint.pt")
    valid = state["extra"]["valid"]
    state["extra"]["results"] = None  # as a checkpoint before the last epoch's test holds it
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    record = load_training(toolkit, run)
    assert not record.complete and dict(record.valid) == valid and record.test == {}
    assert (record.params, record.epochs, record.wall_time_s) == (None, 1, state["wall_time_s"])


# -- what is not such a run: one clear error ---------------------------------------------------

def _corrupt(run):
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")


def _results(text):
    return lambda run: (run / "results.json").write_text(text)


def _stage_without_checkpoint(run):
    """``run`` as the first stage of a staged search that has not finished an epoch."""
    stage = run.with_name("stage_1")
    run.rename(stage)
    run.mkdir()
    stage.rename(run / "stage_1")
    (run / "stage_1" / "checkpoint.pt").unlink()


BAD_SEARCHES = {
    "missing": (None, lambda run: None, "does not exist"),
    "empty folder": ("empty", lambda run: run.mkdir(), "is not a search run directory (no config.yaml)"),
    "no epoch finished": ("search", lambda run: (run / "checkpoint.pt").unlink(),
                          "has no checkpoint.pt yet (no epoch has finished): nothing to load"),
    "corrupt checkpoint": ("search", _corrupt, "is corrupt or not a nas checkpoint"),
    "a training": ("train", lambda run: None, "is a train run, not a search: read it with load_training"),
    "damaged results": ("search", _results('{"wall_time_s": "abc"}'), "wall_time_s is 'abc', not a finite number"),
    "staged, nothing finished": ("search", lambda run: _stage_without_checkpoint(run),
                                 "is a staged search whose stages (stage_1) have no checkpoint.pt yet"),
}


@pytest.mark.parametrize("source, damage, message", list(BAD_SEARCHES.values()), ids=list(BAD_SEARCHES))
def test_load_search_refuses_what_is_not_a_finished_search_in_one_line(toolkit, runs, tmp_path, source, damage,
                                                                       message):
    run = tmp_path / "run"
    if source in runs:
        shutil.copytree(runs[source], run)
    damage(run)
    with pytest.raises(NasError) as error:
        toolkit.load_search(run)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, CheckpointError) == (source == "search" and damage is _corrupt)


BAD_TRAININGS = {
    "a search": ("search", lambda run: None, "is a search run, not a training: read it with load_search"),
    "no config": ("train", lambda run: (run / "config.yaml").unlink(), "is not a training run directory"),
    "nothing finished": ("train", lambda run: ((run / "results.json").unlink(), (run / "checkpoint.pt").unlink()),
                         "has neither results.json nor checkpoint.pt (no epoch has finished)"),
    "results a list": ("train", _results("[1]"), "results.json is damaged: expected a JSON object, got list"),
    "a text metric": ("train", _results('{"test_top1_error": "abc"}'), "test_top1_error is 'abc', not a number"),
    "no wall time": ("train", _results('{"epochs": 1, "device": "cpu"}'), "results.json is damaged: it records no "
                                                                           "wall_time_s"),
    "config a list": ("train", lambda run: (run / "config.yaml").write_text("- 1\n"),
                      "config.yaml is not a saved nas config: a list, not a mapping"),
}


@pytest.mark.parametrize("source, damage, message", list(BAD_TRAININGS.values()), ids=list(BAD_TRAININGS))
def test_load_training_refuses_what_is_not_a_training_in_one_line(toolkit, runs, tmp_path, source, damage, message):
    run = tmp_path / "run"
    shutil.copytree(runs[source], run)
    damage(run)
    with pytest.raises(NasError) as error:
        toolkit.load_training(run)
    assert message in str(error.value) and "\n" not in str(error.value)


# -- the lock of a step ------------------------------------------------------------------------

HOST = socket.gethostname()


def test_a_live_holder_keeps_its_lock(tmp_path):
    lock = RunLock(tmp_path / "seed_0")
    assert lock.acquire() is None
    assert json.loads(lock.path.read_text()) == {"pid": os.getpid(), "host": HOST}
    assert RunLock(tmp_path / "seed_0").acquire() == f"process {os.getpid()} on {HOST}"
    lock.release()
    assert not lock.path.exists() and RunLock(tmp_path / "seed_0").acquire() is None
    elsewhere = RunLock(tmp_path / "seed_1")  # a process on another host cannot be checked from here
    elsewhere.path.parent.mkdir()
    elsewhere.path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert elsewhere.acquire() == "process 1 on elsewhere"
    assert [p.name for p in elsewhere.path.parent.iterdir()] == ["running.json"]  # no temporary file left


HOLDER = """
import sys
from nas_core import RunLock
lock = RunLock(sys.argv[1])
print(lock.acquire(), flush=True)
sys.stdin.read()  # hold it until the parent closes our stdin, then die without releasing it
"""


def test_the_lock_works_across_processes_and_is_taken_over_once_its_holder_died(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "step")], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "None"  # the child acquired it
        assert RunLock(tmp_path / "step").acquire() == f"process {child.pid} on {HOST}"
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert (tmp_path / "step" / "running.json").is_file()  # left behind by a process that is gone
    lock = RunLock(tmp_path / "step")
    assert lock.acquire() is None and json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
