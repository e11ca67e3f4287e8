"""nas random on bad input (issue 16): one `nas: error:` line, exit 2, nothing written; a NaN
wall time stops the sampling."""

from __future__ import annotations

import json
import math

import pytest

from nas_core import Toolkit, cli
from nas_random.commands import _should_stop
from test_select import fake_toolkit, run_command
from test_select_hardening import _quiet, files_under, one_error, write_file  # noqa: F401 - _quiet: autouse fixture


# -- nas random: the budget --------------------------------------------------------------------

@pytest.fixture
def no_run_dir(monkeypatch):
    """Should a bad budget get through, fail at once instead of sampling forever."""
    def refuse(*args, **kwargs):
        raise AssertionError("a run directory was about to be created")

    monkeypatch.setattr(Toolkit, "new_run_dir", refuse)


BAD_HOURS = [("nan", "got nan"), ("inf", "got inf"), ("-1", "got -1.0"), ("0", "got 0.0")]


@pytest.mark.parametrize("hours, message", BAD_HOURS, ids=[h for h, _ in BAD_HOURS])
def test_random_refuses_a_budget_that_is_not_a_positive_number_of_hours(tmp_path, capsys, no_run_dir, hours,
                                                                         message):
    code = cli.main(["random", "--budget-hours", hours, "--out", str(tmp_path / "r")])
    one_error(capsys, code, f"--budget-hours must be a positive number of hours, {message}")
    assert files_under(tmp_path) == []


BAD_WALL_TIMES = [
    ('{"wall_time_s": NaN}', "wall_time_s is nan, not a finite number"),
    ('{"wall_time_s": Infinity}', "wall_time_s is inf, not a finite number"),
    ('{"wall_time_s": -5}', "wall_time_s is -5, not a finite number"),
    ('{"wall_time_s": "abc"}', "wall_time_s is 'abc', not a finite number"),
    ('{"wall_time_s": true}', "wall_time_s is True, not a finite number"),
    ('{"wall_time_s": 0}', "records a wall time of 0 s"),
    ('{"epochs": 3}', "no results.json with wall_time_s"),
    ("[1, 2]", "expected a JSON object, got list"),
    ("{", "cannot read"),
]


@pytest.mark.parametrize("results, message", BAD_WALL_TIMES, ids=[r for r, _ in BAD_WALL_TIMES])
def test_random_refuses_a_budget_from_a_run_without_a_usable_wall_time(tmp_path, capsys, no_run_dir, results,
                                                                       message):
    search = write_file(tmp_path / "search" / "results.json", results).parent
    before = files_under(tmp_path)
    code = cli.main(["random", "--budget-from", str(search), "--out", str(tmp_path / "r")])
    one_error(capsys, code, message)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("wall_time", ["NaN", '"abc"', "-1"])
def test_random_refuses_a_budget_from_a_selection_with_a_bad_wall_time(tmp_path, capsys, no_run_dir, wall_time):
    sel = tmp_path / "sel"
    write_file(sel / "select.json", '{"seeds": 1, "seed": 0}')
    write_file(sel / "seed_0" / "record.json", f'{{"status": "searched", "search": {{"wall_time_s": {wall_time}}}}}')
    before = files_under(tmp_path)
    code = cli.main(["random", "--budget-from", str(sel), "--out", str(tmp_path / "r")])
    one_error(capsys, code, "(search): wall_time_s is")
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("path", ["missing", "a_file"])
def test_random_budget_from_a_directory_that_does_not_exist(tmp_path, capsys, no_run_dir, path):
    (tmp_path / "a_file").write_text("mine")
    code = cli.main(["random", "--budget-from", str(tmp_path / path), "--out", str(tmp_path / "r")])
    one_error(capsys, code, f"--budget-from {tmp_path / path}: "
              + ("the directory does not exist" if path == "missing" else "not a directory"))
    assert files_under(tmp_path) == ["a_file"]


def test_random_stops_sampling_when_a_wall_time_is_nan():
    """A candidate record whose wall time is NaN stops the sampling instead of never stopping it."""
    records = [{"wall_time_s": 1.0}, {"wall_time_s": math.nan}]
    assert _should_stop({"budget_s": 100.0}, 2, records)
    assert not _should_stop({"budget_s": 100.0}, 1, records[:1])


@pytest.mark.parametrize("budget", [math.nan, math.inf, -1, "abc", None])
def test_random_resume_refuses_a_damaged_budget(tmp_path, capsys, budget):
    root = tmp_path / "r"
    assert run_command(fake_toolkit(valid=[0.4]), "random", "--budget-hours", "0.0001", "--out", str(root),
                       "--no-progress") == 0
    manifest = json.loads((root / "random.json").read_text())
    (root / "random.json").write_text(json.dumps({**manifest, "budget_s": budget}))
    before = files_under(root)
    code = cli.main(["random", "--resume", str(root), "--no-progress"])
    one_error(capsys, code, f"random.json is damaged: budget_s is {budget!r}")
    assert files_under(root) == before


def test_short_budget_trainings_never_read_the_test_set(monkeypatch):
    """Whatever the preset or --short-set say: only a final evaluation reads test."""
    from nas_core import cli
    from nas_random import commands
    from nas_select.protocol import short_stage_config

    seen = {}

    def random_search(args, toolkit):
        seen["config"] = short_stage_config(toolkit, args, "random_short")
        return 0

    monkeypatch.setattr(commands, "random_search", random_search)
    assert cli.main(["random", "--samples", "1", "--short-set", "train.test_model=last"]) == 0
    assert seen["config"].train.test_model == "none"
