"""Checkpoint loading: every unreadable file is a one-line CheckpointError of our own, which names a
short reason, says the file was left untouched, and never repeats PyTorch's advice to load with
weights_only=False; a malicious pickle runs nothing."""

from __future__ import annotations

import builtins
import re
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import Payload, os_system_payload
from nas_core.checkpoint import FORMAT, _torch_reason, load_checkpoint, save_checkpoint
from nas_core.errors import CheckpointError


def _os_system(marker: Path) -> Payload:
    return os_system_payload(marker)


def _exec(marker: Path) -> Payload:
    return Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def assert_refused(path: Path) -> str:
    """load_checkpoint refuses ``path`` with our one-line message, and leaves the file as it was."""
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"checkpoint {path} ") and "left untouched" in message, message
    assert "weights_only" not in message and "safe_globals" not in message, message
    assert "\x1b" not in message, message  # PyTorch's message carries terminal escape codes
    reason = re.search(r"\((.*)\); it was left untouched$", message)
    if reason:
        assert 0 < len(reason.group(1)) <= 200, message
    assert path.read_bytes() == before
    return message


def test_a_valid_checkpoint_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 3, "weights": torch.arange(4.0)})
    state = load_checkpoint(path)
    assert state["format"] == FORMAT and state["epoch"] == 3 and torch.equal(state["weights"], torch.arange(4.0))


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 3, "weights": torch.randn(64, 64)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "(truncated or damaged zip archive)" in assert_refused(path)
    path.write_bytes(path.read_bytes()[:100])
    assert "(truncated or damaged zip archive)" in assert_refused(path)


@pytest.mark.parametrize("payload, name", [(_os_system, "system"), (_exec, "exec")], ids=["os.system", "exec"])
def test_malicious_global_runs_nothing(payload, name, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "epoch": 1, "evil": payload(marker)}, path)
    message = assert_refused(path)
    assert not marker.exists(), "the payload ran"
    assert re.search(rf"unsupported global '[\w.]*{name}'", message), message


def test_the_payload_is_live(tmp_path):
    """The file of test_malicious_global_runs_nothing does run code when loaded without our guard."""
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "evil": _os_system(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("content", [[1, 2, 3], torch.zeros(3), {"epoch": 1}, {"format": "other-1"}],
                         ids=["list", "tensor", "dict-without-format", "other-format"])
def test_not_a_nas_checkpoint(content, tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(content, path)
    assert f"not a {FORMAT} file" in assert_refused(path)


def test_a_foreign_zip(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "not a checkpoint")
    assert "(a zip archive that holds no PyTorch checkpoint)" in assert_refused(path)


@pytest.mark.parametrize("data, reason", [(b"", "empty file"), (b"this is not a checkpoint\n" * 20, "not a zip archive"),
                                          (b"\x80\x02}q\x00", "not a zip archive")], ids=["empty", "text", "cut-pickle"])
def test_other_unreadable_files(data, reason, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data)
    assert f"is corrupt or not a nas checkpoint ({reason}); it was left untouched" in assert_refused(path)


# PyTorch's wrapping of an unpickler error, as torch.load raises it (torch/serialization.py)
TORCH_STYLE = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` "
               "argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set "
               "to `False` will likely succeed, but it can result in arbitrary code execution. Do it only if you "
               "got the file from a trusted source.\nPlease file an issue with the following so that we can make "
               "`weights_only=True` compatible with your use case: WeightsUnpickler error: \n\nUnsupported "
               "operand 116\n\nCheck the documentation of torch.load to learn more about types accepted by "
               "default with weights_only https://pytorch.org/docs/stable/generated/torch.load.html.")


@pytest.mark.parametrize("error, expected", [
    (RuntimeError(TORCH_STYLE), "Unsupported operand 116"),
    (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This is "
                  "an internal miniz error. If you are seeing this error, there is a high likelihood that your "
                  "checkpoint file is corrupted."),
     "PytorchStreamReader failed reading zip archive: failed finding central directory"),
    (RuntimeError("[enforce fail at inline_container.cc:180] . file in archive is not in a subdirectory: a.txt"),
     "file in archive is not in a subdirectory: a.txt"),
    (EOFError("Ran out of input"), "EOFError: Ran out of input"),
    (RuntimeError("First sentence; a clause. Use weights_only=False to load it."), "First sentence; a clause"),
    (RuntimeError("Use weights_only=False to load it.\nThe reason."), "The reason"),
    (RuntimeError(""), "RuntimeError"),
])
def test_reason_extraction(error, expected):
    assert _torch_reason(error) == expected


def test_overlong_reason_ends_at_a_clause_boundary():
    words = ", ".join(f"clause number {i} of a very long message" for i in range(20))
    reason = _torch_reason(RuntimeError(words + ". Second sentence."))
    assert len(reason) <= 200 and reason.endswith("of a very long message"), reason
    reason = _torch_reason(RuntimeError("x" * 500))
    assert 0 < len(reason) <= 200


# -- resuming (issues 16 and 24) -------------------------------------------------------------------

def test_each_process_resumes_its_own_buffers_and_random_streams(tmp_path):
    from nas_core.checkpoint import rank_state, resume_from, saved_world_size

    def net():
        return torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))

    ranks, model = [], net()
    for rank in range(2):  # each process sees its own share of the batch: its own running statistics
        torch.manual_seed(rank)
        model(torch.randn(8, 3) + rank)
        ranks.append(rank_state({"model": model}))
    state = {"epoch": 0, "step": 1, "model": model.state_dict(), "rng": ranks[0]["rng"], "world_size": 2,
             "ranks": ranks}
    assert saved_world_size(state) == 2 and saved_world_size({"rng_ranks": [1, 2, 3]}) == 3
    assert saved_world_size({}) == 1
    for rank in range(2):
        fresh = net()
        torch.manual_seed(99)
        resume_from(tmp_path / "checkpoint.pt", state, {"model": fresh}, rank=rank)
        assert torch.equal(fresh[1].running_mean, ranks[rank]["buffers"]["model"]["1.running_mean"])
        assert torch.equal(fresh[0].weight, model[0].weight)  # the weights are the same on every process
        assert torch.equal(torch.get_rng_state(), ranks[rank]["rng"]["torch"])


def toy(*args: str) -> int:
    from nas_core import cli
    from stubs import ToyPlugin

    return cli.main(list(args), plugins=[ToyPlugin()], autoload=False)


TOY = ["--preset", "toy", "--set", "search.epochs=1", "--set", "search.max_steps_per_epoch=2",
       "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--no-progress"]


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """A finished search and a finished training of the toy components."""
    root = tmp_path_factory.mktemp("toy")
    assert toy("run", *TOY, "--out", str(root / "search")) == 0
    assert toy("train", "--genotype", str(root / "search"), *TOY, "--out", str(root / "train")) == 0
    return root


@pytest.mark.parametrize("command, kind, right", [("train", "search", "run"), ("run", "train", "train")])
def test_resuming_a_run_with_the_other_command_names_the_right_one(toy_runs, capsys, command, kind, right):
    run_dir = toy_runs / kind
    assert toy(command, "--resume", str(run_dir), "--no-progress") == 2
    what = "search" if kind == "search" else "training"
    assert capsys.readouterr().err == (f"nas: error: {run_dir} is a {what} run, which nas {command} cannot "
                                       f"continue; continue it with: nas {right} --resume {run_dir}\n")


def test_resume_removes_what_a_killed_checkpoint_write_left(toy_runs, capsys):
    run_dir = toy_runs / "search"
    stale = [run_dir / ".checkpoint.pt.k1ll3d_9.tmp", run_dir / ".results.json.abcdefgh.tmp"]
    theirs = [run_dir / ".notes.abcdefgh.tmp", run_dir / "checkpoint.pt.abcdefgh.tmp", run_dir / "x.tmp"]
    for path in stale + theirs:
        path.write_bytes(b"partial")
    assert toy("run", "--resume", str(run_dir), "--no-progress") == 0  # already complete: reports its result
    assert "already complete" in capsys.readouterr().out
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"partial" for path in theirs)  # not of our naming: left alone
