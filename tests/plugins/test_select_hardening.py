"""nas select and nas compare on bad input, diverged trainings and concurrent processes (issue 16):
one `nas: error:` line, exit 2, nothing written; NaN never wins; processes started together share
one selection."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from nas_core import NasError, cli
from nas_select.protocol import select_best
from test_select import TINY_SEARCH, TINY_TRAIN, FakeToolkit, fake_toolkit, run_command


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")
    monkeypatch.chdir(tmp_path)  # anything written into the current folder shows in files_under(tmp_path)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def one_error(capsys, code: int, message: str) -> str:
    """The command failed with exit 2 and one `nas: error:` line holding ``message``."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("nas: error: ") and err.count("\n") == 1 and message in err, err
    return err


def write_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- non-finite validation metrics never win ---------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, -math.inf, math.inf], ids=["nan", "-inf", "inf"])
def test_select_best_skips_non_finite_metrics(bad):
    records = [{"index": 0, "status": "done", "valid": {"valid_top1_error": bad}},
               {"index": 1, "status": "done", "valid": {"valid_top1_error": 0.5}},
               {"index": 2, "status": "done", "valid": {"valid_top1_error": 0.4}}]
    assert select_best(records)[0]["index"] == 2
    with pytest.raises(NasError, match="every finished candidate has a non-finite valid_top1_error"):
        select_best([{**r, "valid": {"valid_top1_error": bad}} for r in records])


@pytest.mark.parametrize("command", ["random", "select"])
@pytest.mark.parametrize("bad", [math.nan, -math.inf], ids=["nan", "-inf"])
def test_a_diverged_candidate_or_seed_counts_as_failed(tmp_path, capsys, command, bad):
    root = tmp_path / command
    toolkit = fake_toolkit(valid=[bad, 0.5, 0.3])
    args = ["--samples", "3"] if command == "random" else ["--seeds", "3"]
    assert run_command(toolkit, command, *args, "--out", str(root), "--no-progress") == 1  # one failed
    out = capsys.readouterr().out
    assert ("best by valid_top1_error: candidate 2" if command == "random" else
            "best by valid_top1_error: seed 2") in out
    table = "candidates" if command == "random" else "selection"
    rows = list(csv.DictReader((root / f"{table}.csv").open()))
    assert [r["status"] for r in rows] == ["failed", "done", "done"] and [r["best"] for r in rows][2] == "True"
    assert f"valid_top1_error is {bad} (the training diverged)" in rows[0]["error"]


def test_a_selection_whose_every_seed_diverged_says_so(tmp_path, capsys):
    root = tmp_path / "select"
    with pytest.raises(NasError, match="every seed of .* failed"):
        run_command(fake_toolkit(valid=[math.nan, math.nan]), "select", "--seeds", "2", "--out", str(root),
                    "--no-progress")
    out = capsys.readouterr().out
    assert all(f"seed {i} failed in its short: valid_top1_error is nan (the training diverged)" in out for i in (0, 1))


DAMAGED_RECORDS = {"no valid": {"status": "done", "genotype": {}},
                   "text valid": {"status": "done", "genotype": {}, "valid": {"valid_top1_error": "abc"}},
                   "no genotype": {"status": "done", "valid": {"valid_top1_error": 0.3}}}


@pytest.mark.parametrize("command", ["random", "select"])
@pytest.mark.parametrize("record", list(DAMAGED_RECORDS.values()), ids=list(DAMAGED_RECORDS))
def test_resume_refuses_a_damaged_record(tmp_path, capsys, command, record):
    root = tmp_path / command
    args = ["--samples", "1"] if command == "random" else ["--seeds", "1"]
    assert run_command(fake_toolkit(valid=[0.4]), command, *args, "--out", str(root), "--no-progress") == 0
    path = root / ("candidates/000" if command == "random" else "seed_0") / "record.json"
    path.write_text(json.dumps(record))
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    code = cli.main([command, "--resume", str(root), "--no-progress"])
    one_error(capsys, code, f"{path} is damaged: a finished record needs numeric valid metrics")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


# -- nas select: one selection shared by processes started together ---------------------------

SELECT = ["select", "--seeds", "2", "--no-progress"]


@pytest.mark.parametrize("folder", ["new", "empty", "foreign files, --force"])
def test_a_second_process_joins_the_selection_after_a_yaml_round_trip(tmp_path, capsys, folder):
    """The saved configs have lists where the resolved config has tuples (ops, betas)."""
    root = tmp_path / "sel"
    force = []
    if folder != "new":
        root.mkdir()
    if folder.startswith("foreign"):
        (root / "notes.txt").write_text("mine")
        force = ["--force"]
    toolkit = fake_toolkit(valid=[0.4, 0.2])
    assert run_command(toolkit, *SELECT, "--out", str(root), "--only-seed", "0", *force) == 0
    assert run_command(toolkit, *SELECT, "--out", str(root), "--only-seed", "1") == 0
    assert "joining the selection in" in capsys.readouterr().out
    assert run_command(toolkit, "select", "--resume", str(root), "--no-progress") == 0
    assert "best by valid_top1_error: seed 1" in capsys.readouterr().out
    assert not force or (root / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["sel"]  # no staging folder left beside it


class OvertakenToolkit(FakeToolkit):
    """While this process prepares its selection directory, another process (an instant fake)
    creates it: before this one checks --out ("before") or after ("after")."""

    other_first: str = "before"

    def new_run_dir(self, out, config, kind, *, force=False):
        if self.other_first == "before":
            self.other_creates(out)
        path = super().new_run_dir(out, config, kind, force=force)
        if self.other_first == "after":
            self.other_creates(out)
        return path

    @staticmethod
    def other_creates(out):
        assert run_command(fake_toolkit(valid=[0.3]), *SELECT, "--out", out, "--only-seed", "0") == 0


@pytest.mark.parametrize("other_first", ["before", "after"])
def test_a_process_overtaken_while_creating_the_selection_joins_it(tmp_path, capsys, other_first):
    root = tmp_path / "sel"
    real = fake_toolkit(valid=[0.2])
    toolkit = OvertakenToolkit(real.plugin_manager, real.registries).setup(valid=[0.2])
    toolkit.other_first = other_first
    assert run_command(toolkit, *SELECT, "--out", str(root), "--only-seed", "1") == 0
    assert "joining the selection in" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == [".nas-run", "configs", "seed_0", "seed_1", "select.json", "selection.csv",
                                                      "selection.json", "tb"]
    assert [p.name for p in tmp_path.iterdir()] == ["sel"]  # no staging folder left beside it


def test_a_process_with_other_settings_does_not_join(tmp_path, capsys):
    root = tmp_path / "sel"
    assert run_command(fake_toolkit(valid=[0.4]), *SELECT, "--out", str(root), "--only-seed", "0") == 0
    before = files_under(root)
    code = cli.main([*SELECT, "--out", str(root), "--only-seed", "1", "--set", "search.epochs=7"])
    one_error(capsys, code, "already holds a selection with other settings (search: search.epochs")
    assert files_under(root) == before


@pytest.mark.parametrize("resume", [False, True], ids=["new", "resume"])
@pytest.mark.parametrize("only_seed", ["2", "-1"])
def test_only_seed_out_of_range_writes_nothing(tmp_path, capsys, resume, only_seed):
    root = tmp_path / "sel"
    if resume:
        assert run_command(fake_toolkit(valid=[0.4]), *SELECT, "--out", str(root), "--only-seed", "0") == 0
    before = files_under(tmp_path)
    args = ["select", "--resume", str(root)] if resume else [*SELECT, "--out", str(root)]
    code = cli.main([*args, "--only-seed", only_seed])
    one_error(capsys, code, f"--only-seed {only_seed}: this selection has seed indices 0..1")
    assert files_under(tmp_path) == before


HOST = socket.gethostname()
STALE_LOCKS = {"empty": "", "torn": '{"pid": 1', "pid abc": json.dumps({"pid": "abc", "host": HOST}),
               "a list": "[]", "no host": json.dumps({"pid": 1}), "not text": b"\xff\xfe",
               "pid too large": json.dumps({"pid": 2**70, "host": HOST}),
               "dead process": json.dumps({"pid": 2**22 + 12345, "host": HOST})}


@pytest.mark.parametrize("content", list(STALE_LOCKS.values()), ids=list(STALE_LOCKS))
def test_a_damaged_or_stale_running_json_is_taken_over(tmp_path, capsys, content):
    root = tmp_path / "sel"
    assert run_command(fake_toolkit(valid=[0.4]), *SELECT, "--out", str(root), "--only-seed", "0") == 0
    lock = root / "seed_1" / "running.json"
    lock.parent.mkdir()
    lock.write_bytes(content if isinstance(content, bytes) else content.encode())
    toolkit = fake_toolkit(valid=[0.2])
    assert run_command(toolkit, "select", "--resume", str(root), "--no-progress") == 0
    assert toolkit.searched == [1] and not lock.exists()
    assert "best by valid_top1_error: seed 1" in capsys.readouterr().out


@pytest.mark.slow  # two processes at once; the lock that shares the steps is tested in the default suite too
def test_two_select_processes_started_together_share_one_selection(tmp_path):
    """The README's one-process-per-GPU selection, as two real processes on the CPU."""
    root = tmp_path / "sel"
    env = {**os.environ, "NAS_DISABLE_PLUGINS": "tensorboard", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "nas_core.cli", *SELECT, *TINY_SEARCH, *TINY_TRAIN, "--threads",
                               "1", "--out", str(root), "--only-seed", str(i)], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i}: {err}"
        assert f"seed {i}: done" in out
    assert sum("joining the selection in" in out for out, _ in outputs) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["sel"]
    assert cli.main(["select", "--resume", str(root), "--no-progress"]) == 0
    assert (root / "genotype.json").is_file()


# -- nas compare -------------------------------------------------------------------------------

def train_dir(path: Path, **results) -> Path:
    """A finished training run as nas compare reads it (a training's results.json records its
    epochs, wall time and device besides its metrics)."""
    write_file(path / "results.json", json.dumps({"test_top1_error": 0.1, "params": 1000, "epochs": 1,
                                                  "wall_time_s": 1.0, "device": "cpu", **results}))
    (path / "config.yaml").write_text(yaml.safe_dump({"dataset": {"name": "digits"}, "space": {"name": "darts_cnn"}}))
    return path


def select_dir(path: Path, record: dict | None = None) -> Path:
    write_file(path / "select.json", json.dumps({"seeds": 1, "seed": 0, "optimizer": "darts_2nd", "metric": "auto"}))
    record = record or {"status": "done", "valid": {"valid_top1_error": 0.2}, "genotype": {},
                        "search": {"wall_time_s": 2.0, "device": "cpu"}, "short": {"wall_time_s": 1.0}}
    write_file(path / "seed_0" / "record.json", json.dumps(record))
    train_dir(path / "final" / "run_0")
    return path


def random_dir(path: Path, wall_time: object = 1.0) -> Path:
    write_file(path / "random.json", json.dumps({"seed": 0, "samples": 1, "metric": "auto"}))
    write_file(path / "candidates" / "000" / "record.json", json.dumps({"status": "failed", "wall_time_s": wall_time}))
    train_dir(path / "final" / "run_0")
    return path


def test_compare_writes_beside_the_runs_and_replaces_only_its_own_tables(tmp_path, capsys):
    select_dir(tmp_path / "runs" / "sel")
    random_dir(tmp_path / "runs" / "rand")
    compare = ["compare", "runs/sel", "random=runs/rand"]
    assert cli.main(compare) == 0
    assert "written: runs/comparison.md, runs/comparison.csv" in capsys.readouterr().out
    assert (tmp_path / "runs" / "comparison.md").is_file() and not (tmp_path / "comparison.md").exists()
    rows = list(csv.DictReader((tmp_path / "runs" / "comparison.csv").open()))
    assert [r["method"] for r in rows] == ["darts_2nd", "random"]
    assert cli.main(compare) == 0  # its own tables: replaced
    assert cli.main([*compare, "--out", "table"]) == 0 and (tmp_path / "table.md").is_file()


@pytest.mark.parametrize("suffix", [".md", ".csv"])
def test_compare_refuses_to_replace_a_file_it_did_not_write_unless_forced(tmp_path, capsys, suffix):
    train_dir(tmp_path / "run")
    mine = tmp_path / f"notes{suffix}"
    mine.write_text("my own notes\n")
    code = cli.main(["compare", "run", "--out", "notes"])
    one_error(capsys, code, f"notes{suffix} exists and nas compare did not write it; name the table's files with "
                            f"another --out PREFIX, or pass --force")
    assert mine.read_text() == "my own notes\n" and sorted(files_under(tmp_path)) == sorted(
        ["run", "run/results.json", "run/config.yaml", f"notes{suffix}"])
    assert cli.main(["compare", "run", "--out", "notes", "--force"]) == 0
    assert mine.read_text() != "my own notes\n"


def test_compare_needs_out_for_runs_in_different_folders(tmp_path, capsys):
    train_dir(tmp_path / "a" / "run")
    train_dir(tmp_path / "b" / "run")
    code = cli.main(["compare", "one=a/run", "two=b/run"])
    one_error(capsys, code, "the compared runs are in different folders")
    assert not list(tmp_path.rglob("comparison*"))


def _results(text: str):
    return lambda root: (train_dir(root) / "results.json").write_text(text)


def _config(text: str):
    return lambda root: (train_dir(root) / "config.yaml").write_text(text)


def _record(**record):
    return lambda root: select_dir(root, record)


BAD_COMPARE = {
    "results.json a list": (_results("[0.1, 0.2]"), "results.json is damaged: expected a JSON object, got list"),
    "results.json a text metric": (lambda root: train_dir(root, test_top1_error="abc"),
                                   "test_top1_error is 'abc', not a number"),
    "config.yaml empty": (_config(""), "config.yaml is not a saved nas config: it is empty"),
    "config.yaml a python tag": (_config("!!python/object/apply:os.system ['touch tagged']"),
                                 "could not determine a constructor for the tag"),
    "config.yaml a list": (_config("- 1\n"), "is not a saved nas config: a list, not a mapping"),
    "config.yaml dataset a string": (_config("dataset: digits\n"), "dataset is not a section"),
    "record without valid": (_record(status="done", genotype={}), "a finished record needs numeric valid metrics"),
    "record with a text valid": (_record(status="done", genotype={}, valid={"valid_top1_error": "abc"}),
                                 "a finished record needs numeric valid metrics"),
    "record with valid a number": (_record(status="done", genotype={}, valid=0.3),
                                   "a finished record needs numeric valid metrics"),
    "record with a text wall time": (_record(status="failed", search={"wall_time_s": "abc"}),
                                     "wall_time_s is 'abc', not a finite number"),
    "record a list": (lambda root: (select_dir(root) / "seed_0" / "record.json").write_text("[]"),
                      "record.json is damaged: expected a JSON object, got list"),
    "select.json seeds a text": (lambda root: (select_dir(root) / "select.json").write_text('{"seeds": "abc"}'),
                                 "select.json is damaged: seed is None, seeds is 'abc'"),
    "random record wall time": (lambda root: random_dir(root, wall_time="abc"),
                                "wall_time_s is 'abc', not a finite number"),
    "a search run": (_results(json.dumps({"genotype": {}, "valid_top1_error": 0.3, "optimizer": "darts_2nd"})),
                     "is a search run: it has no test metric to compare; train the cell it found with nas train"),
}


@pytest.mark.parametrize("make, message", list(BAD_COMPARE.values()), ids=list(BAD_COMPARE))
def test_compare_bad_inputs_are_one_line_errors(tmp_path, capsys, make, message):
    make(tmp_path / "run")
    code = cli.main(["compare", "run"])
    one_error(capsys, code, message)
    assert not list(tmp_path.rglob("comparison*")) and not (tmp_path / "tagged").exists()


def test_compare_refuses_an_output_that_is_a_folder_even_when_forced(tmp_path, capsys):
    train_dir(tmp_path / "run")
    (tmp_path / "table.csv").mkdir()
    code = cli.main(["compare", "run", "--out", "table", "--force"])
    one_error(capsys, code, "table.csv is a directory; name the table's files with another --out PREFIX")
    assert not (tmp_path / "table.md").exists()
