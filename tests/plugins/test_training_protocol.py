"""Training from scratch as the DARTS authors evaluated (their public cnn/train.py and rnn/train.py):
the tested weights, the RNN test batch, the cosine schedule's order, the last partial batch of the
CNN and the lr scale of the last RNN window of an epoch."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nas_core import RunContext, cli, hookimpl
from nas_core.checkpoint import load_checkpoint
from nas_core.config import resolve
from nas_core.train import resolve_test_model
from nas_tasks.classification import ClassificationTask
from nas_tasks.language_model import LanguageModelTask
from nas_tasks.options import ClassificationOptions, LanguageModelOptions, SgdOptions
from nas_tasks.sgd import SgdTrainer
from nas_tasks.text_datasets import TokenCorpus
from test_classification import ids_data, make_run
from core.stubs import InterruptAfter

# a constant lr (step schedule, gamma 1) and no drop-path: a run of N epochs is the first N
# epochs of a longer one, so a shorter run can stand in for "the weights after epoch N"
TRAIN = ["train", "--genotype", "darts_v2", "--seed", "3", "--set", "network.cells=3", "--set", "network.channels=8",
         "--set", "network.drop_path=0", "--set", "train.batch_size=32", "--set", "train.max_steps_per_epoch=3",
         "--set", "trainer.lr_schedule=step", "--set", "trainer.lr_gamma=1", "--no-progress"]


class Scramble:
    """Overwrites the network's weights with large noise as epoch ``epoch`` starts, so that its
    validation is the worst of the run; records each epoch's validation loss."""

    def __init__(self, epoch: int):
        self.epoch, self.valid_loss = epoch, []

    @hookimpl
    def nas_epoch_start(self, run):
        if run.epoch == self.epoch:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in run.components["network"].parameters():
                    p.copy_(3 * torch.randn(p.shape, generator=g))

    @hookimpl
    def nas_epoch_end(self, epoch, metrics):
        self.valid_loss.append(metrics["valid_loss"])


def results(run: Path) -> dict:
    out = json.loads((run / "results.json").read_text())
    assert out.pop("wall_time_s") > 0  # the one value that differs between runs
    return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["network"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_test_reads_the_best_validation_weights_also_after_a_resume(tmp_path):
    scramble = Scramble(epoch=2)
    run = tmp_path / "best"
    assert cli.main([*TRAIN, "--set", "train.epochs=3", "--out", str(run)], plugins=[scramble]) == 0
    best = min(range(3), key=lambda e: scramble.valid_loss[e])  # the first of equals, as the public code
    assert best < 2 and scramble.valid_loss[2] > scramble.valid_loss[best]
    got = results(run)
    assert got["tested"] == "best_valid" and got["tested_epoch"] == best + 1
    assert got["tested_valid_loss"] == scramble.valid_loss[best] and got["valid_loss"] == scramble.valid_loss[2]

    # the same run stopped after the best epoch, testing its last weights: the same weights, the same test
    short = tmp_path / "short"
    assert cli.main([*TRAIN, "--set", f"train.epochs={best + 1}", "--set", "train.test_model=last",
                     "--out", str(short)]) == 0
    alone = results(short)
    assert alone["tested"] == "last" and not (short / "best.pt").exists()
    tests = {k: v for k, v in alone.items() if k.startswith("test_")}
    assert tests and all(got[k] == v for k, v in tests.items())
    assert same(weights(run / "best.pt"), weights(short / "checkpoint.pt"))
    assert not same(weights(run / "best.pt"), weights(run / "checkpoint.pt"))  # the checkpoint keeps the last

    # interrupted after the best epoch and resumed: best.pt and the best metric carry the test
    resumed = tmp_path / "resumed"
    assert cli.main([*TRAIN, "--set", "train.epochs=3", "--out", str(resumed)],
                    plugins=[Scramble(epoch=2), InterruptAfter(1)]) == 130
    assert cli.main(["train", "--resume", str(resumed), "--no-progress"], plugins=[Scramble(epoch=2)]) == 0
    assert results(resumed) == got
    assert same(weights(resumed / "best.pt"), weights(run / "best.pt"))
    assert same(weights(resumed / "checkpoint.pt"), weights(run / "checkpoint.pt"))


class FakeTask:
    def __init__(self, streams: tuple[str, ...]):
        self._streams = streams

    def streams(self, phase: str) -> tuple[str, ...]:
        return self._streams


@pytest.mark.parametrize("setting, streams, expected", [
    ("auto", ("train", "valid", "test"), "best_valid"),
    ("auto", ("train", "test"), "last"),
    ("last", ("train", "valid", "test"), "last"),
    ("best_valid", ("train", "valid", "test"), "best_valid"),
])
def test_test_model_setting_resolves_per_task(setting, streams, expected):
    assert resolve_test_model(setting, FakeTask(streams)) == expected


@pytest.mark.parametrize("preset, expected", [("paper", "last"), ("rnn_paper", "best_valid"),
                                              ("rnn_demo", "best_valid"), ("demo", "auto")])
def test_presets_test_what_the_authors_tested(registries, preset, expected):
    assert resolve(registries, [], preset=preset).settings["train"].test_model == expected


BAD = [
    # the paper preset holds no validation data out
    (["--preset", "paper", "--dataset", "digits", "--set", "train.test_model=best_valid"],
     "train.test_model=best_valid needs validation data, and this task holds none out (classification: set "
     "task.valid_split above 0); or set train.test_model=last"),
    (["--set", "train.test_model=best"], "invalid train option: 'test_model' must be in ('auto', 'best_valid', "
                                         "'last', 'none') (got 'best')"),
]


@pytest.mark.parametrize("args, message", BAD, ids=["best_valid without valid", "unknown value"])
def test_bad_test_model_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert cli.main([*TRAIN[:3], *args, "--set", "train.epochs=1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"nas: error: {message}\n"
    assert not out.exists()


# -- the RNN test batch and the last window's lr scale ------------------------------------------

class Run:
    def __init__(self, seed: int = 0):
        self.seed, self.epoch, self.device, self.rank, self.world_size = seed, 0, torch.device("cpu"), 0, 1
        self._gens: dict[str, torch.Generator] = {}

    def generator(self, stream: str) -> torch.Generator:
        return self._gens.setdefault(stream, torch.Generator().manual_seed(self.seed))


def text_task(options: LanguageModelOptions, n: int = 2003) -> LanguageModelTask:
    ids = torch.arange(n) % 50
    return LanguageModelTask(options, data=TokenCorpus("toy", tuple(map(str, range(50))), ids, ids[:500], ids[:400]))


@pytest.mark.parametrize("preset", ["rnn_paper", "rnn_demo"])
def test_the_rnn_presets_test_one_column_and_validate_ten(registries, preset):
    options = resolve(registries, [], preset=preset).task.options
    assert options.test_batch_size == 1 and options.eval_batch_size == 10  # the public rnn/train.py's
    task = text_task(options)
    test = list(task.loader("test", batch_size=64, run=Run(), evaluation=True))
    assert {w.inputs.shape[1] for w in test} == {1}
    assert sum(w.targets.numel() for w in test) == 400 - 1  # one column: every token but the first predicted
    assert {w.inputs.shape[1] for w in task.loader("valid", batch_size=64, run=Run(), evaluation=True)} == {10}


def test_the_last_window_keeps_the_lr_scale_of_its_drawn_length():
    # 2003 tokens in 4 columns: 500 rows, 499 time steps; fixed windows of 10: the last has 9
    task = text_task(LanguageModelOptions(bptt=10, variable_bptt=False))
    for stream in ("train", "weights"):  # training, and the search's weight step (which reads the same scale)
        windows = list(task.loader(stream, batch_size=4, run=Run()))
        assert [len(w.inputs) for w in windows[-2:]] == [10, 9]
        assert {w.lr_scale for w in windows} == {1.0}  # 10 / 10 drawn, as the public code scales the lr


def test_a_cut_variable_window_keeps_its_drawn_scale():
    task = text_task(LanguageModelOptions(bptt=10, variable_bptt=True, max_seq_len_delta=20))
    for seed in range(20):
        windows = list(task.loader("train", batch_size=4, run=Run(seed)))
        *body, last = windows
        assert all(w.lr_scale == len(w.inputs) / 10 for w in body)
        assert 5 <= last.lr_scale * 10 <= 30 and last.lr_scale * 10 >= len(last.inputs)  # drawn by the public rule
        if last.lr_scale * 10 > len(last.inputs):
            return
    pytest.fail("no seed cut the last window short")


# -- the cosine schedule --------------------------------------------------------------------------

def test_cosine_lr_of_each_epoch_is_the_public_codes_sequence():
    """The public cnn/train.py calls scheduler.step() before each epoch under PyTorch 0.3.1, whose
    scheduler constructor leaves last_epoch at -1: epoch e of T trains at
    lr_min + (lr - lr_min) (1 + cos(pi e / T)) / 2, e = 0 .. T-1 (the last epoch just above lr_min)."""
    lr, lr_min, epochs = 0.1, 0.01, 5
    net = nn.Linear(2, 1)
    trainer = SgdTrainer(SgdOptions(lr=lr, lr_min=lr_min), network=net, task=None, epochs=epochs)
    official = [lr_min + (lr - lr_min) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    used = []
    for e in range(epochs):
        used.append(trainer.optimizer.param_groups[0]["lr"])  # what this epoch's steps use
        trainer.optimizer.step()  # (no gradient: a step that changes nothing)
        assert trainer.end_epoch(None, {})["lr"] == used[-1]  # and what the epoch reports
    assert used == pytest.approx(official, rel=1e-12, abs=0)
    assert used[-1] > lr_min


# -- every training image once per epoch ----------------------------------------------------------

def ids_seen(task: ClassificationTask, run: RunContext, batch_size: int) -> list[int]:
    return sorted(int(v) for x, _ in task.loader("train", batch_size=batch_size, run=run) for v in x)


@pytest.fixture(scope="module")
def demo(registries):
    return resolve(registries, [], preset="demo")


@pytest.mark.parametrize("n, batch_size", [(50, 8), (48, 8), (10, 4)])
def test_every_training_image_is_seen_once_per_epoch(demo, n, batch_size):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(n))
    assert ids_seen(task, make_run(demo), batch_size) == list(range(n))
    assert ids_seen(task, make_run(demo, epoch=1), batch_size) == list(range(n))


def test_a_last_batch_of_one_image_is_dropped_and_said_once(demo, caplog):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(17))
    with caplog.at_level(logging.INFO, logger="nas"):
        for epoch in range(2):
            assert len(ids_seen(task, make_run(demo, epoch=epoch), 8)) == 16  # a BatchNorm cannot train on one
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert said == ["the last training batch would hold 1 of the 17 examples (batch 8): dropped every epoch, "
                    "as a BatchNorm cannot train on one example"]


def test_each_process_keeps_its_share_of_the_last_batch(demo):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(20))
    shares = []
    for rank in range(2):
        run = make_run(demo)
        run.rank, run.world_size = rank, 2
        shares.append([len(x) for x, _ in task.loader("train", batch_size=8, run=run)])
    assert shares == [[4, 4, 2], [4, 4, 2]]  # 20 = 8 + 8 + 4: every image seen, two per process at the end
