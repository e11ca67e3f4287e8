"""The language_model task and its text datasets: windows, carried state, perplexity; tiny end-to-end
searches and training on pydoc_topics (with a bit-identical resume); one-line errors for bad text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nas_core import ConfigError, DataError, cli, hookimpl
from nas_core.checkpoint import load_checkpoint
from nas_tasks.language_model import LanguageModelTask, batchify
from nas_tasks.options import LanguageModelOptions, PydocTopicsOptions, TextFolderOptions
from nas_tasks.text_datasets import EOS, UNK, TokenCorpus, ptb, pydoc_topics, wikitext2

PTB_TRAIN = [" the cat sat on the mat ", " the dog sat on the <unk> ", "", " a cat and a dog N "]
TINY_SEARCH = ["--preset", "rnn_demo", "--set", "space.emb=8", "--set", "space.hid=8", "--set", "space.nodes=3",
               "--set", "search.batch_size=16", "--set", "search.max_steps_per_epoch=2", "--no-progress"]
TINY_TRAIN = ["--preset", "rnn_demo", "--set", "network.emb=8", "--set", "network.hid=8", "--set",
              "train.batch_size=16", "--set", "train.max_steps_per_epoch=2", "--no-progress"]


def write_corpus(root: Path, valid: list[str] | None = None, test: list[str] | None = None) -> Path:
    """train.txt, valid.txt and test.txt as PTB ships them (a leading space, one sentence a line)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train", PTB_TRAIN * 20), ("valid", valid or PTB_TRAIN[:2] * 5),
                        ("test", test or PTB_TRAIN[3:] * 5)):
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


class FakeRun:
    def __init__(self, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1):
        self.seed, self.epoch, self.device, self._gens = seed, epoch, torch.device("cpu"), {}
        self.rank, self.world_size = rank, world_size

    def generator(self, stream: str) -> torch.Generator:
        from nas_core import stream_seed

        return self._gens.setdefault(stream, torch.Generator().manual_seed(stream_seed(self.seed, self.epoch, stream)))


def toy_task(n: int = 2000, **kw) -> LanguageModelTask:
    ids = torch.arange(n) % 50
    corpus = TokenCorpus("toy", tuple(map(str, range(50))), ids, ids[: n // 4], ids[: n // 5])
    return LanguageModelTask(LanguageModelOptions(**kw), data=corpus)


def test_ptb_files_are_read_as_the_public_code_does(tmp_path):
    corpus = ptb(TextFolderOptions(), root=write_corpus(tmp_path))
    assert corpus.vocab[:6] == ("the", "cat", "sat", "on", "mat", EOS) and UNK in corpus.vocab
    # every line, the empty one included, ends with <eos>
    assert len(corpus.train) == 20 * (6 + 1 + 6 + 1 + 1 + 6 + 1)
    assert corpus.info.num_classes == len(corpus.vocab) and corpus.info.input_shape == ()
    sub = write_corpus(tmp_path / "wikitext-2")
    assert wikitext2(TextFolderOptions(folder="wikitext-2"), root=tmp_path).vocab == ptb(TextFolderOptions(),
                                                                                         root=sub).vocab


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "test.txt").unlink(), "missing {root}/test.txt"),
    (lambda root: (root / "valid.txt").write_text("\n \n"), "{root}/valid.txt is empty"),
    (lambda root: (root / "test.txt").write_text(" the cat\n the zebra sat\n"),
     "{root}/test.txt line 2: word 'zebra' is not in the vocabulary of train.txt"),
])
def test_bad_text_files_are_one_line_data_errors(tmp_path, change, message):
    root = write_corpus(tmp_path / "ptb")
    change(root)
    with pytest.raises(DataError, match=message.format(root=root).replace("(", r"\(")):
        ptb(TextFolderOptions(), root=root)
    with pytest.raises(DataError, match="needs --data-root"):
        ptb(TextFolderOptions(), root=None)


def test_pydoc_topics_split_and_vocabulary():
    corpus = pydoc_topics(PydocTopicsOptions())
    n = len(corpus.train) + len(corpus.valid) + len(corpus.test)
    assert 60_000 < n < 90_000 and 0.75 < len(corpus.train) / n < 0.85
    assert corpus.vocab[0] == UNK and EOS in corpus.vocab
    assert 2_000 < len(corpus.vocab) < 8_000
    assert len(pydoc_topics(PydocTopicsOptions(min_count=1)).vocab) > len(corpus.vocab)


def test_windows_plan_pairing_and_evaluation():
    task = toy_task(bptt=10, eval_batch_size=3)
    run = FakeRun()
    train = task.loader("weights", batch_size=4, run=run)
    arch = task.loader("arch", batch_size=4, run=run)
    rows = len(batchify(task.corpus.train, 4))
    assert len(train) == len(arch) and train.spans[0][0] == 0
    starts = [s for s, _ in train.spans]
    assert starts == [sum(n for _, n in train.spans[:i]) for i in range(len(starts))]  # consecutive
    assert {n for _, n in train.spans[:-1]} <= {10, 5}  # search: bptt, or bptt / 2 (the public search rule)
    assert starts[-1] + train.spans[-1][1] <= rows - 1
    wrap = len(batchify(task.corpus.valid, 4)) - 1
    assert [s for s, _ in arch.spans] == [s % wrap for s in starts]  # paired: same offsets, modulo
    # drawing the plan twice (in any order) gives the same windows and leaves the generator alone
    assert task.loader("arch", batch_size=4, run=run).spans == arch.spans
    window = next(iter(train))
    assert window.inputs.shape == (10, 4) and torch.equal(window.inputs[1:], window.targets[:-1])
    lengths = [n for _, n in task.loader("train", batch_size=4, run=FakeRun(seed=1)).spans[:-1]]
    assert min(lengths) >= 5 and max(lengths) <= 30 and len(set(lengths)) > 3  # training: N(bptt, 5) rule
    evaluation = task.loader("valid", batch_size=999, run=run, evaluation=True)
    data = batchify(task.corpus.valid, 3)
    assert sum(n for _, n in evaluation.spans) == len(data) - 1  # every target once, 3 columns
    assert {n for _, n in evaluation.spans[:-1]} == {10}


def test_forward_loss_regularisers_state_and_perplexity():
    task = toy_task(tar_beta=0.5, ar_alpha=0.25)
    raw = torch.arange(24.0).view(3, 2, 4) / 10
    logits = torch.zeros(3, 2, 50)

    def model(tokens, hidden):
        assert hidden is None or torch.equal(hidden, torch.ones(2, 4))
        return logits, torch.ones(2, 4, requires_grad=True) * 1, raw, raw * 2

    out = task.forward(model, (torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long)), None)
    nll = math.log(50)
    expected = nll + 0.25 * (raw * 2).pow(2).mean() + 0.5 * (raw[1:] - raw[:-1]).pow(2).mean()
    assert float(out.loss) == pytest.approx(float(expected)) and float(out.stats["loss"]) == pytest.approx(nll)
    assert out.count == 6 and not out.state.requires_grad
    assert task.report({"loss": nll}) == {"loss": nll, "ppl": pytest.approx(50)}


def test_bptt_longer_than_the_data_is_a_config_error():
    task = toy_task(n=400, bptt=35)
    task.check_batch_size("search", 8, "search.batch_size")  # 50 rows: fits
    with pytest.raises(ConfigError, match=r"task.bptt=35 is longer than the train text of 'toy': 400 tokens in "
                                          r"16 columns \(search.batch_size\) give 24 time steps"):
        task.check_batch_size("search", 16, "search.batch_size")
    with pytest.raises(ConfigError, match="train.batch_size=300 is too large for the 400 tokens"):
        task.check_batch_size("train", 300, "train.batch_size")


# -- end to end, through the real command ---------------------------------------------------------

class InterruptAfterFirstEpoch:
    @hookimpl
    def nas_epoch_end(self, epoch):
        if epoch == 0:
            raise KeyboardInterrupt


class RecordStates:
    """The hidden states the task hands the model, to show they are carried and reset."""

    def __init__(self):
        self.resets = []

    @hookimpl
    def nas_run_start(self, run):
        task = run.components["task"]
        forward = task.forward

        def spy(model, batch, state):
            self.resets.append((run.epoch, state is None))
            return forward(model, batch, state)

        task.forward = spy


def _states(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    out = {**{f"w.{k}": v for k, v in state["supernet"].items()},
           **{f"a.{k}": v for k, v in state["relaxation"].items()}}
    for i, s in state["optimizer"]["a_opt"]["state"].items():
        out.update({f"adam.{i}.{k}": v for k, v in s.items()})
    return out


def test_tiny_search_on_pydoc_topics_resumes_bit_identically(tmp_path, capsys):
    args = ["run", *TINY_SEARCH, "--optimizer", "darts_2nd", "--set", "search.epochs=2", "--seed", "7"]
    recorder = RecordStates()
    assert cli.main([*args, "--out", str(tmp_path / "straight")], plugins=[recorder]) == 0
    out = capsys.readouterr().out
    assert "arch_ppl=" in out and "valid_ppl=" in out and "train_ppl=" in out
    genotype = json.loads((tmp_path / "straight" / "genotype.json").read_text())
    assert list(genotype) == ["recurrent"] and len(genotype["recurrent"]["nodes"]) == 3
    assert all(len(node) == 1 and node[0][0] != "none" for node in genotype["recurrent"]["nodes"])
    # darts_2nd: 5 passes a step (virtual step, L_val at w', w+, w-, weight step); those of an
    # epoch's first step start from None, those of the second carry the states; then evaluation
    for epoch in (0, 1):
        resets = [reset for e, reset in recorder.resets if e == epoch]
        assert resets[:10] == [True] * 5 + [False] * 5 and resets[10] and not any(resets[11:])

    assert cli.main([*args, "--out", str(tmp_path / "resumed")], plugins=[InterruptAfterFirstEpoch()]) == 130
    assert cli.main(["run", "--resume", str(tmp_path / "resumed"), "--no-progress"]) == 0
    straight, resumed = _states(tmp_path / "straight"), _states(tmp_path / "resumed")
    assert straight.keys() == resumed.keys() and any(k.startswith("adam.") for k in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert (tmp_path / "straight" / "genotype.json").read_text() == (tmp_path / "resumed" / "genotype.json").read_text()


def test_tiny_training_of_the_published_cell_on_pydoc_topics(tmp_path, capsys):
    run = tmp_path / "train"
    assert cli.main(["train", "--genotype", "darts_rnn", *TINY_TRAIN, "--set", "train.epochs=2",
                     "--out", str(run)]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    assert results["test_ppl"] == pytest.approx(math.exp(results["test_loss"]))
    assert results["space"] == "darts_rnn" and results["dataset"] == "pydoc_topics" and results["params"] > 0
    assert "test ppl" in out
    state = load_checkpoint(run / "checkpoint.pt")
    assert set(state["trainer"]) == {"optimizer", "history", "switched_at"}
    assert len(state["trainer"]["history"]) == 2


@pytest.mark.parametrize("args, message", [
    (["run", *TINY_SEARCH, "--set", "task.bptt=100000"], "task.bptt=100000 is longer than the train text"),
    (["train", "--genotype", "darts_v2", *TINY_TRAIN], "genotype has cells ['normal', 'reduce']; a darts_rnn"),
    (["run", *TINY_SEARCH, "--dataset", "ptb"], "dataset 'ptb' needs --data-root"),
    (["run", *TINY_SEARCH, "--set", "space.hid=9"], "emb (8) must equal hid (9)"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert cli.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "valid.txt").unlink(), "missing {root}/valid.txt"),
    (lambda root: (root / "train.txt").write_text(""), "{root}/train.txt is empty"),
    (lambda root: (root / "valid.txt").write_text(" the gnu\n"), "valid.txt line 1: word 'gnu' is not in"),
])
def test_bad_text_files_through_the_command(tmp_path, capsys, change, message):
    root = write_corpus(tmp_path / "ptb")
    change(root)
    assert cli.main(["run", *TINY_SEARCH, "--dataset", "ptb", "--data-root", str(root), "--out",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: dataset 'ptb': ") and message.format(root=root) in err
    assert err.count("\n") == 1


def test_transfer_to_wikitext2(tmp_path, capsys):
    root = write_corpus(tmp_path / "wikitext-2")
    run = tmp_path / "transfer"
    assert cli.main(["transfer", "--target", "wikitext2", "--genotype", "darts_rnn", "--data-root", str(root),
                     "--set", "network.emb=8", "--set", "network.hid=8", "--set", "train.batch_size=4",
                     "--set", "train.max_steps_per_epoch=2", "--set", "train.epochs=1", "--no-progress",
                     "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "wikitext2" and results["space"] == "darts_rnn" and "test_ppl" in results
    saved = (run / "config.yaml").read_text()
    assert "name: nt_asgd" in saved and "dropoute: 0.1" in saved


def test_train_a_registered_recurrent_cell_without_a_preset_uses_the_rnn_settings(tmp_path, capsys):
    """`nas train --genotype darts_rnn` needs no --preset: the genotype's space picks its preset."""
    run = tmp_path / "train"
    small = [a for a in TINY_TRAIN if a != "--preset" and not a.startswith("rnn_")]
    assert cli.main(["train", "--genotype", "darts_rnn", *small, "--set", "train.epochs=1", "--out", str(run)]) == 0
    config = (run / "config.yaml").read_text()
    assert "name: darts_rnn" in config and "name: language_model" in config and "name: nt_asgd" in config


def test_each_rank_reads_its_columns_of_the_same_windows():
    task = toy_task(bptt=10, eval_batch_size=3)
    for stream, evaluation in (("weights", False), ("arch", False), ("valid", True)):
        whole = task.loader(stream, batch_size=4, run=FakeRun(), evaluation=evaluation)
        shares = [task.loader(stream, batch_size=4, run=FakeRun(rank=r, world_size=2), evaluation=evaluation)
                  for r in (0, 1)]
        assert all(share.spans == whole.spans for share in shares)  # the same windows on every rank
        for full, *parts in zip(whole, *shares):
            assert torch.equal(torch.cat([p.inputs for p in parts], 1), full.inputs)
            assert torch.equal(torch.cat([p.targets for p in parts], 1), full.targets)
    with pytest.raises(ConfigError, match="does not split evenly over 3 processes"):
        task.loader("weights", batch_size=4, run=FakeRun(rank=0, world_size=3))
