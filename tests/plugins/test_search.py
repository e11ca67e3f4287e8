"""End-to-end searches through the real CLI, resume, and user errors."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, run_cli
from nas_core import cli, hookimpl
from nas_core.checkpoint import load_checkpoint


def test_end_to_end_search_on_digits_with_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = run_cli("run", "--space", "darts_cnn", "--optimizer", "darts_2nd", "--set", "search.epochs=2",
                     *TINY, "--out", str(run), env={"NAS_DISABLE_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout and f" --logdir_spec run:{run}" in result.stdout
    for name in ("config.yaml", "log.txt", "checkpoint.pt", "genotype.json",
                 "genotypes/epoch_001.json", "genotypes/epoch_002.json"):
        assert (run / name).is_file(), name
    genotype = json.loads((run / "genotype.json").read_text())
    assert set(genotype) == {"normal", "reduce"}
    for cell in genotype.values():
        assert len(cell["nodes"]) == 4 and all(len(node) == 2 for node in cell["nodes"])
        assert all(op != "none" for node in cell["nodes"] for op, _ in node)
    assert "epoch 2/2" in (run / "log.txt").read_text()
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] == 4
    assert state["config"]["space"]["cells"] == 3

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "tensors": 0}).Reload()
    tags = events.Tags()
    for tag in ("search/train_loss", "search/train_top1_error", "search/valid_loss", "search/valid_top1_error",
                "search/lr", "search/arch_loss", "search_step/train_loss"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("search/lr")] == [1, 2]
    assert [e.step for e in events.Scalars("search_step/train_loss")] == [0, 1, 2, 3]
    assert {"alpha_heatmap/normal", "alpha_heatmap/reduce"} <= set(tags["images"])
    assert len(events.Images("alpha_heatmap/normal")) == 3  # the start, then each epoch
    text_tags = {t.split("/text_summary")[0] for t in tags["tensors"]}
    assert {"genotype", "alpha_softmax/normal"} <= text_tags


class InterruptAfterFirstEpoch:
    @hookimpl
    def nas_epoch_end(self, epoch):
        if epoch == 0:
            raise KeyboardInterrupt


def _states(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return {**{f"w.{k}": v for k, v in state["supernet"].items()},
            **{f"a.{k}": v for k, v in state["relaxation"].items()},
            **{f"m.{k}": v["momentum_buffer"] for k, v in state["optimizer"]["w_opt"]["state"].items()}}


@pytest.mark.parametrize("optimizer", ["darts_2nd"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, optimizer):
    args = ["run", "--optimizer", optimizer, "--set", "search.epochs=2", *TINY, "--seed", "7"]
    assert cli.main([*args, "--out", str(tmp_path / "straight")]) == 0

    assert cli.main([*args, "--out", str(tmp_path / "resumed")], plugins=[InterruptAfterFirstEpoch()]) == 130
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 0
    assert cli.main(["run", "--resume", str(tmp_path / "resumed"), "--no-progress"]) == 0

    straight, resumed = _states(tmp_path / "straight"), _states(tmp_path / "resumed")
    assert straight.keys() == resumed.keys() and any(k.startswith("a.") for k in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert (tmp_path / "straight" / "genotype.json").read_text() == (tmp_path / "resumed" / "genotype.json").read_text()


def test_same_seed_same_search_different_seed_different_alphas(tmp_path):
    args = ["run", "--optimizer", "darts_1st", "--set", "search.epochs=1", *TINY]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert cli.main([*args, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = (_states(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["a.alphas.normal"], c["a.alphas.normal"])


def test_corrupt_checkpoint_is_a_clear_error_and_left_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["run", "--optimizer", "darts_1st", "--set", "search.epochs=2", *TINY, "--out", str(run)]) == 0
    path = run / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    truncated = path.read_bytes()
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: checkpoint ") and "corrupt" in err and "left untouched" in err
    assert err.count("\n") == 1
    assert path.read_bytes() == truncated


@pytest.mark.parametrize("args, message", [
    (["--space", "darts_cn"], "unknown search space 'darts_cn'; did you mean 'darts_cnn'?"),
    (["--optimizer", "darts_3rd"], "Valid optimizers: darts_1st, darts_2nd"),
    (["--dataset", "mnist"], "Valid datasets: cifar10, cifar100, digits, imagefolder"),
    (["--set", "search.epoch=2"], "unknown key 'search.epoch'"),
    (["--set", "search.epochs=two"], "search.epochs must be int, got str 'two'"),
    (["--dataset", "cifar10"], "needs --data-root"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, capsys, args, message):
    assert cli.main(["run", *args, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("nas: error: ") and err.count("\n") == 1


def test_bad_config_file_through_the_real_command(tmp_path):
    cfg = tmp_path / "search.yaml"
    cfg.write_text("search:\n  epochs: 2\noptimizer:\n  lr: 0.1\n")
    result = run_cli("run", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert f"config file {cfg}: unknown key 'optimizer.lr'" in result.stderr
    assert "valid keys of optimizer 'darts_2nd': arch_betas" in result.stderr
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_and_resume_misuse(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["run", "--optimizer", "darts_1st", "--set", "search.epochs=1", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["run", "--out", str(run)]) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    assert cli.main(["run", "--resume", str(run), "--set", "search.epochs=3"]) == 2
    assert "drop --set" in capsys.readouterr().err
    assert cli.main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_plugins_and_config_show_commands(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "darts  (nas-toolkit" in out and "optimizers: darts_1st, darts_2nd" in out
    assert "tasks  (nas-toolkit" in out and "tasks: classification, language_model" in out
    assert "trainers: nt_asgd, sgd" in out and "commands: random" in out and "commands: compare, select" in out
    assert "operations (darts_cnn): none, max_pool_3x3" in out and "mixed edges: weighted_sum" in out
    assert "tensorboard  (nas-toolkit" in out and "lifecycle hooks: nas_run_start" in out
    assert cli.main(["config", "show", "--preset", "paper", "--set", "search.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "cells: 8" in out and "name: cifar10" in out
