"""Every bad input is one `nas: error:` line, exit 2, and nothing written (issue 9)."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import TINY
from nas_core import cli

RUN = ["run", *TINY, "--set", "search.epochs=1"]
TRAIN = ["train", "--genotype", "darts_v2", "--set", "network.cells=3", "--set", "network.channels=8",
         "--set", "train.max_steps_per_epoch=2", "--set", "train.epochs=1", "--no-progress"]


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("search") / "run"
    assert cli.main([*RUN, "--optimizer", "darts_1st", "--out", str(run)]) == 0
    return run


BAD = [
    # (args, the message's start after "nas: error: ")
    ([*RUN, "--set", "search.epochs=0"], "invalid search option: epochs must be at least 1, got 0"),
    ([*RUN, "--set", "search.epochs=-2"], "invalid search option: epochs must be at least 1, got -2"),
    ([*RUN, "--set", "search.batch_size=0"], "invalid search option: batch_size must be at least 1, got 0"),
    ([*RUN, "--set", "search.batch_size=-16"], "invalid search option: batch_size must be at least 1"),
    ([*RUN, "--set", "search.batch_size=5000"], "search.batch_size=5000 is larger than the"),
    ([*RUN, "--set", "optimizer.arch_lr=-0.001"], "invalid optimizer option: 'arch_lr' must be > 0"),
    ([*RUN, "--set", "optimizer.hvp=dense"], "invalid optimizer option: 'hvp' must be in"),
    ([*RUN, "--set", "task.workers=-1"], "invalid task option: 'workers' must be >= 0"),
    ([*RUN, "--set", "search.max_steps_per_epoch=0"], "invalid search option: max_steps_per_epoch must be"),
    ([*RUN, "--threads", "0"], "threads must be at least 1, got 0"),
    ([*TRAIN, "--set", "train.epochs=0"], "invalid train option: epochs must be at least 1, got 0"),
    ([*TRAIN, "--set", "train.batch_size=0"], "invalid train option: batch_size must be at least 1"),
    ([*TRAIN, "--set", "trainer.lr=-1"], "invalid trainer option: 'lr' must be > 0"),
    ([*TRAIN, "--set", "network.drop_path=1.5"], "invalid network option: 'drop_path' must be < 1"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a[-2:]) for a, _ in BAD])
def test_bad_options(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert cli.main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas: error: {message}"), err
    assert err.count("\n") == 1
    assert not out.exists()


def test_out_paths_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for out, message in ((a_file, "is a file, not a directory"),
                         (a_file / "run", f"{a_file} is a file, not a directory"),
                         ("/proc/nas-run", "cannot write in /proc")):
        assert cli.main([*RUN, "--out", str(out)]) == 2, out
        err = capsys.readouterr().err
        assert err.startswith("nas: error: ") and message in err and err.count("\n") == 1, err
    assert a_file.read_text() == "mine"

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    assert cli.main([*RUN, "--out", str(tmp_path / "full")]) == 2
    assert "no space left on the device" in capsys.readouterr().err
    assert not (tmp_path / "full").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_out_in_a_read_only_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert cli.main([*RUN, "--out", str(locked / "run")]) == 2
        assert "cannot write in" in capsys.readouterr().err
        assert files_under(locked) == []
    finally:
        locked.chmod(0o755)


def test_a_folder_of_the_users_is_never_overwritten(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yml").write_text("my notes")
    (mine / "log.txt").write_text("my log")
    assert cli.main([*RUN, "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is a folder with files that nas did not create" in err and "--force" in err
    assert files_under(mine) == ["config.yml", "log.txt"] and (mine / "log.txt").read_text() == "my log"
    assert cli.main([*RUN, "--out", str(mine), "--force"]) == 0
    assert (mine / "config.yml").read_text() == "my notes" and (mine / "checkpoint.pt").is_file()


def test_derive_and_show_refuse_bad_input_before_writing(search_run, tmp_path, capsys):
    before = files_under(search_run)
    assert cli.main(["derive", str(search_run), "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: --k 0: ") and "'k' must be >= 1" in err and err.count("\n") == 1
    assert cli.main(["derive", str(search_run), "--out", "/proc/derived.json"]) == 2
    assert "cannot write in /proc" in capsys.readouterr().err
    assert files_under(search_run) == before

    assert cli.main(["show", "darts_v2", "--out", "/proc/cells/v2"]) == 2
    assert "cannot write in /proc" in capsys.readouterr().err
    bad_op = tmp_path / "bad_op.txt"
    bad_op.write_text("Genotype(normal=[('sep_conv_9x9', 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
                      "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])")
    bad_edge = tmp_path / "bad_edge.txt"
    bad_edge.write_text("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 4)], normal_concat=[2], "
                        "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])")
    for path, message in ((bad_op, "unknown op 'sep_conv_9x9'"), (bad_edge, "input 4 out of range 0..1")):
        assert cli.main(["show", str(path), "--out", str(tmp_path / "cells" / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("nas: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "cells").exists()


def test_the_recurrent_genotype_is_listed_with_the_space_that_builds_it(capsys):
    assert cli.main(["list", "darts_rnn"]) == 0
    out = capsys.readouterr().out
    assert "search space   darts_rnn" in out and "no installed space builds it" not in out
    assert cli.main(["list", "nothing*"]) == 0
    assert "nothing registered matches 'nothing*'" in capsys.readouterr().out
