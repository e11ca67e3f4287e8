"""A torchrun job that cannot run stops as one (issues 16 and 24): rank 0 alone prints one
`nas: error:` line, every process exits with status 2 (none is left waiting, none killed by
torchrun), nothing is written; a resume keeps the number of processes and says how."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nas_core import distributed
from nas_core.checkpoint import load_checkpoint, save_checkpoint
from test_distributed import TOY, one_process, torchrun

RUN = ["run", *TOY, "--threads", "1"]


def files_under(path):
    return sorted((str(p.relative_to(path)), p.read_bytes()) for p in path.rglob("*") if p.is_file()) \
        if path.exists() else []


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """A finished search of one process."""
    run = tmp_path_factory.mktemp("one") / "run"
    assert one_process(*RUN, "--set", "search.epochs=1", "--out", str(run)) == 0
    return run


BAD = [
    # (test id, dist_child options, arguments, the line rank 0 prints)
    ("bad option", {}, [*RUN, "--set", "search.epochs=0", "--out", "{out}"],
     "nas: error: invalid search option: epochs must be at least 1, got 0"),
    ("--out is a file", {}, [*RUN, "--out", "{file}"], "nas: error: --out {file} is a file, not a directory"),
    ("batch does not split", {}, [*RUN, "--set", "search.batch_size=3", "--out", "{out}"],
     "nas: error: search.batch_size=3 does not split evenly over the 2 processes of this torchrun job; "
     "choose a multiple of 2"),
    ("unknown flag", {}, ["run", "--bogus", "--out", "{out}"], "nas: error: unrecognized arguments: --bogus"),
    ("one rank alone", {"fail_before_start_on": 1}, [*RUN, "--out", "{out}"],
     "nas: error: a problem only rank 1 has (on rank 1)"),
    ("resume of a 1-process run", {}, ["run", "--resume", "{run}", "--no-progress"],
     "nas: error: {run} was run by 1 process and this job has 2: a resume keeps the number, as the results "
     "depend on it; continue with: nas run --resume {run}"),
]


#: in the default suite; the others (each a torchrun job of its own) run with -m slow
FAST = ("bad option", "one rank alone")


@pytest.mark.parametrize("options, args, line", [pytest.param(*b[1:], marks=() if b[0] in FAST else pytest.mark.slow)
                                                 for b in BAD], ids=[b[0] for b in BAD])
def test_a_job_that_cannot_run_stops_as_one(tmp_path, one_process_run, options, args, line):
    places = {"out": tmp_path / "out", "file": tmp_path / "a_file", "run": one_process_run}
    places["file"].write_text("mine")
    before = files_under(one_process_run)
    result = torchrun(2, options, *(a.format(**places) for a in args), timeout=120)
    said = [text for text in result.stderr.splitlines() if text.startswith("nas: ")]
    assert said == [line.format(**places)], result.stderr[-3000:]
    assert sum(text.startswith("usage: ") for text in result.stderr.splitlines()) == ("unrecognized" in line)
    # every process ended with status 2 itself (torchrun's report lists them; its own status is 1)
    assert re.findall(r"^  exitcode  : (-?\d+)", result.stderr, re.M) == ["2", "2"], result.stderr[-3000:]
    assert result.stderr.count(said[0]) >= 2  # torchrun's report shows the line too, not a link to its docs
    assert not places["out"].exists() and places["file"].read_text() == "mine"
    assert files_under(one_process_run) == before


def test_one_process_refuses_the_checkpoint_of_two(tmp_path, one_process_run, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in one_process_run.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    state = load_checkpoint(run / "checkpoint.pt")
    state.update(world_size=2, ranks=[{"rng": state["rng"], "buffers": {}}] * 2)
    del state["format"]
    save_checkpoint(run / "checkpoint.pt", state)
    before = files_under(run)
    assert one_process("run", "--resume", str(run), "--no-progress") == 2
    err = capsys.readouterr().err
    assert err == (f"nas: error: {run} was run by 2 processes and this job has 1: a resume keeps the number, as the "
                   f"results depend on it; continue with: torchrun --standalone --nproc_per_node=2 -m nas_core.cli "
                   f"run --resume {run}\n")
    assert files_under(run) == before


@pytest.mark.parametrize("env, phase, world, command", [
    ({}, "search", None, "nas run --resume 'my runs/a'"),
    ({}, "transfer", None, "nas train --resume 'my runs/a'"),
    ({}, "search", 4, "torchrun --standalone --nproc_per_node=4 -m nas_core.cli run --resume 'my runs/a'"),
    ({"WORLD_SIZE": "2"}, "train", None,
     "torchrun --standalone --nproc_per_node=2 -m nas_core.cli train --resume 'my runs/a'"),
    ({"WORLD_SIZE": "2"}, "search", 1, "nas run --resume 'my runs/a'"),
    ({"WORLD_SIZE": "16", "GROUP_WORLD_SIZE": "2"}, "search", None,
     "torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT --rdzv_id=ID "
     "-m nas_core.cli run --resume 'my runs/a' (on every machine)"),
])
def test_the_command_that_continues_a_run(monkeypatch, env, phase, world, command):
    for key in ("WORLD_SIZE", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.resume_command(phase, Path("my runs/a"), world) == command


def test_a_stopped_job_says_how_to_continue_it_with_torchrun(tmp_path):
    run = tmp_path / "run"
    result = torchrun(2, {"terminate_at_epoch": 1}, *RUN, "--out", str(run), timeout=120)
    assert result.returncode != 0
    hint = f"continue with: torchrun --standalone --nproc_per_node=2 -m nas_core.cli run --resume {run}"
    assert result.stdout.count(f"terminated (SIGTERM); {hint}") == 1, result.stdout + result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("nas: ")] == ["nas: terminated (SIGTERM)"]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 0
