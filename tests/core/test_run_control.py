"""Runs under a scheduler: SIGTERM, progress lines without a terminal, the thread count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from nas_core import cli, engine
from nas_core.checkpoint import load_checkpoint
from stubs import InterruptAfter, ToyPlugin
from test_engine import tensors

HERE = Path(__file__).resolve().parent

# the toy search in a child process that stalls in the middle of its second epoch
CHILD = f"""
import sys, time
sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]
from nas_core import cli, hookimpl
from stubs import ToyPlugin

class StallInEpoch2:
    @hookimpl
    def nas_step_end(self, run):
        if run.epoch == 1 and not getattr(self, "told", False):  # one step into the second epoch
            self.told = True
            print("STALLING", flush=True)
            time.sleep(120)

sys.exit(cli.main(sys.argv[1:], plugins=[ToyPlugin(), StallInEpoch2()], autoload=False))
"""


def test_sigterm_keeps_the_last_checkpoint_and_resume_is_bit_identical(tmp_path):
    args = ["run", "--seed", "3", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "straight")], plugins=[ToyPlugin()], autoload=False) == 0

    run = tmp_path / "terminated"
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args, "--out", str(run)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    for line in child.stdout:
        if "STALLING" in line or time.monotonic() > deadline:
            break
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert err.strip().splitlines()[-1] == "nas: terminated (SIGTERM)"
    assert f"terminated (SIGTERM); continue with: nas run --resume {run}" in out
    assert "terminated (SIGTERM); continue with" in (run / "log.txt").read_text()
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 0  # epoch 2's steps were abandoned

    assert cli.main(["run", "--resume", str(run), "--no-progress"], plugins=[ToyPlugin()], autoload=False) == 0
    parts = ("supernet", "relaxation", "optimizer")
    a, b = tensors(tmp_path / "straight", *parts), tensors(run, *parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_progress_lines_when_output_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine, "PROGRESS_EVERY_S", 0.0)
    assert cli.main(["run", "--no-progress", "--set", "search.epochs=1", "--out", str(tmp_path / "r")],
                    plugins=[ToyPlugin()], autoload=False) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " step " in line]
    assert lines and lines[0].startswith("epoch 1/1 step 1/") and " loss=" in lines[0] and " eta 0:00:" in lines[0]
    assert "step 1/" in (tmp_path / "r" / "log.txt").read_text()


def test_thread_count_is_recorded_and_restored_on_resume(tmp_path):
    before = torch.get_num_threads()
    try:
        assert cli.main(["run", "--no-progress", "--out", str(tmp_path / "default")],
                        plugins=[ToyPlugin()], autoload=False) == 0
        saved = yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())
        assert saved["threads"] == before

        run = tmp_path / "one"
        assert cli.main(["run", "--no-progress", "--threads", "1", "--out", str(run)],
                        plugins=[ToyPlugin(), InterruptAfter(0)], autoload=False) == 130
        assert yaml.safe_load((run / "config.yaml").read_text())["threads"] == 1
        torch.set_num_threads(2)
        assert cli.main(["run", "--resume", str(run), "--no-progress"], plugins=[ToyPlugin()], autoload=False) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
