"""The engine driven by the toy components alone (no installed plugin): search, training,
carried state, resume, early stop, component hooks, plugin commands and settings, errors."""

from __future__ import annotations

import json

import pytest
import torch

from nas_core import cli, hookimpl
from nas_core.checkpoint import load_checkpoint
from stubs import InterruptAfter, StopAfter, ToyPlugin


def nas(*args: str, plugins=()) -> int:
    return cli.main([*args], plugins=[ToyPlugin(), *plugins] if not any(isinstance(p, ToyPlugin) for p in plugins)
                    else list(plugins), autoload=False)


def tensors(run_dir, *parts):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    out = {}
    for part in parts:
        for key, value in _flatten(state[part], part):
            out[key] = value
    return out


def _flatten(value, prefix):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}.{i}")


def test_search_through_the_engine_writes_a_run(tmp_path, capsys):
    toy = ToyPlugin()
    assert nas("run", "--out", str(tmp_path / "run"), "--no-progress", plugins=[toy]) == 0
    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "valid_rmse=" in out and "arch_loss=" in out
    for name in ("config.yaml", "log.txt", "checkpoint.pt", "genotype.json", "genotypes/epoch_003.json"):
        assert (tmp_path / "run" / name).is_file(), name
    genotype = json.loads((tmp_path / "run" / "genotype.json").read_text())
    assert set(genotype) == {"cell"} and len(genotype["cell"]["nodes"]) == 2


def test_a_training_with_test_model_none_never_reads_the_test_set(tmp_path, capsys):
    """Candidates and short-budget runs of a selection: validation only (train.test_model=none)."""
    toy = ToyPlugin()
    assert nas("run", "--out", str(tmp_path / "search"), "--no-progress", plugins=[toy]) == 0
    toy.tasks.clear()
    assert nas("train", "--genotype", str(tmp_path / "search"), "--out", str(tmp_path / "train"), "--no-progress",
               "--set", "train.test_model=none", plugins=[toy]) == 0
    assert {stream for stream, _ in toy.tasks[0].seen} == {"train", "valid"}
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert not any(k.startswith("test_") for k in results) and "valid_loss" in results
    assert capsys.readouterr().out.splitlines()[-1].startswith("valid ")


def test_carried_state_flows_batch_to_batch_and_resets_each_epoch(tmp_path):
    toy = ToyPlugin()
    assert nas("run", "--out", str(tmp_path / "run"), "--no-progress", "--set", "search.epochs=2",
               "--set", "search.eval_every=0", plugins=[toy]) == 0
    seen = toy.tasks[0].seen
    for stream in ("weights", "arch"):
        counts = [n for s, n in seen if s == stream]
        steps = len(counts) // 2
        assert steps > 2 and counts == list(range(steps)) * 2  # 0, 1, 2, ... then reset at the next epoch


def test_training_selects_on_valid_and_tests_once(tmp_path, capsys):
    toy = ToyPlugin()
    assert nas("run", "--out", str(tmp_path / "search"), "--no-progress", plugins=[toy]) == 0
    capsys.readouterr()
    assert nas("train", "--genotype", str(tmp_path / "search"), "--out", str(tmp_path / "train"),
               "--no-progress", plugins=[toy]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3 and all("valid_loss=" in line for line in lines)
    assert ["test_" in line for line in lines] == [False, False, True]
    assert all(f"epochs_started={i + 1}" in line for i, line in enumerate(lines))  # the network's own hook
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert set(results) >= {"test_loss", "test_rmse", "params", "multiply_adds"} and results["epochs"] == 3
    assert "valid_loss" in results and "valid_rmse" in results  # the last validation, for selection
    state_counts = [n for s, n in toy.tasks[-1].seen if s == "test"]
    assert state_counts == list(range(len(state_counts)))  # evaluation carries state too


@pytest.mark.parametrize("command", ["run", "train"])
def test_interrupted_and_resumed_runs_are_bit_identical(tmp_path, command):
    toy = ToyPlugin()
    extra = []
    if command == "train":
        assert nas("run", "--out", str(tmp_path / "search"), "--no-progress", plugins=[toy]) == 0
        extra = ["--genotype", str(tmp_path / "search")]
    args = [command, *extra, "--seed", "5", "--no-progress"]
    assert nas(*args, "--out", str(tmp_path / "straight"), plugins=[toy]) == 0
    assert nas(*args, "--out", str(tmp_path / "resumed"), plugins=[toy, InterruptAfter(0)]) == 130
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 0
    assert nas(command, "--resume", str(tmp_path / "resumed"), "--no-progress", plugins=[toy]) == 0
    parts = ("supernet", "relaxation", "optimizer") if command == "run" else ("network", "trainer")
    a, b = tensors(tmp_path / "straight", *parts), tensors(tmp_path / "resumed", *parts)
    assert a.keys() == b.keys() and len(a) > 3
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_hook_stops_a_run_early_and_resume_knows_it_is_complete(tmp_path, capsys):
    toy = ToyPlugin()
    run = tmp_path / "run"
    assert nas("run", "--out", str(run), "--no-progress", "--set", "search.epochs=5", plugins=[toy, StopAfter(1)]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/5" in out and "epoch 3/5" not in out and "stopped early after epoch 2: enough after epoch 2" in out
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 1 and state["stopped"] == "enough after epoch 2"
    assert json.loads((run / "results.json").read_text())["stopped"] == "enough after epoch 2"
    assert nas("run", "--resume", str(run), "--no-progress", plugins=[toy]) == 0
    out = capsys.readouterr().out
    assert "already complete" in out and "epoch 3/5" not in out
    assert json.loads((run / "results.json").read_text())["stopped"] == "enough after epoch 2"


def test_components_hear_progress_through_the_run_context(tmp_path):
    class Recorder:
        def __init__(self):
            self.events = []

        @hookimpl
        def nas_epoch_start(self, run):
            self.events.append(("start", run.phase, run.epoch, run.epochs, run.step))

        @hookimpl
        def nas_epoch_end(self, run, epoch, metrics):
            self.events.append(("end", run.phase, epoch, run.epochs, run.step))

    recorder = Recorder()
    assert nas("run", "--out", str(tmp_path / "run"), "--no-progress", "--set", "search.epochs=2",
               plugins=[ToyPlugin(), recorder]) == 0
    steps = recorder.events[1][4]
    assert steps > 0
    assert recorder.events == [("start", "search", 0, 2, 0), ("end", "search", 0, 2, steps),
                               ("start", "search", 1, 2, steps), ("end", "search", 1, 2, 2 * steps)]


def test_plugin_command_and_settings_section(capsys):
    assert nas("toy-hello", "--name", "nas") == 0
    assert capsys.readouterr().out == "hello, nas\n"
    assert nas("toy-hello", "--set", "greeting.greeting=bonjour") == 0
    assert capsys.readouterr().out == "bonjour, world\n"
    assert nas("config", "show", "--set", "greeting.greeting=hi") == 0
    assert "greeting:\n  greeting: hi" in capsys.readouterr().out
    assert nas("list", "toy*") == 0
    out = capsys.readouterr().out
    assert "command        toy-hello" in out and "preset         toy" in out and "(default)" in out


def test_without_plugins_each_command_says_what_is_missing(tmp_path, capsys):
    assert cli.main(["run", "--out", str(tmp_path / "run")], autoload=False) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: nas run needs a task") and "install a plugin" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
    assert cli.main(["list"], autoload=False) == 0
    assert cli.main(["train", "--genotype", "x"], autoload=False) == 2
    assert "neither a file" in capsys.readouterr().err


def test_bad_factory_input_is_one_line_and_bugs_point_to_traceback(tmp_path, capsys):
    assert nas("run", "--set", "optimizer.lr=-1", "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: invalid optimizer option: 'lr' must be > 0") and err.count("\n") == 1

    class Buggy(ToyPlugin):
        def _task(self, options, *, data):
            raise ValueError("the series is too short for 3 windows")

    assert nas("run", "--out", str(tmp_path / "r"), plugins=[Buggy()]) == 2
    assert capsys.readouterr().err == "nas: error: task 'sequence': the series is too short for 3 windows\n"

    class Crashing(ToyPlugin):
        def _task(self, options, *, data):
            return {}["missing"]

    assert nas("run", "--out", str(tmp_path / "r"), plugins=[Crashing()]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nas: error: unexpected KeyError in ") and "test_engine.py:" in err and "--traceback" in err
    assert err.count("\n") == 1
    with pytest.raises(KeyError):
        nas("--traceback", "run", "--out", str(tmp_path / "r"), plugins=[Crashing()])
    assert not (tmp_path / "r").exists()


def test_results_record_wall_time_device_and_epochs_across_a_resume(tmp_path):
    toy = ToyPlugin()
    run = tmp_path / "run"
    assert nas("run", "--out", str(run), "--no-progress", plugins=[toy, InterruptAfter(0)]) == 130
    first = load_checkpoint(run / "checkpoint.pt")["wall_time_s"]
    assert first > 0 and not (run / "results.json").exists()
    assert nas("run", "--resume", str(run), "--no-progress", plugins=[toy]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 3 and results["device"] == "cpu" and results["wall_time_s"] > first
    assert set(results["genotype"]) == {"cell"} and "valid_loss" in results and results["optimizer"] == "toy_first_order"
    assert nas("run", "--resume", str(run), "--no-progress", plugins=[toy]) == 0  # finished: same record
    assert json.loads((run / "results.json").read_text()) == results

    assert nas("train", "--genotype", str(run), "--out", str(tmp_path / "train"), "--no-progress", plugins=[toy]) == 0
    trained = json.loads((tmp_path / "train" / "results.json").read_text())
    assert trained["epochs"] == 3 and trained["device"] == "cpu" and trained["wall_time_s"] > 0
