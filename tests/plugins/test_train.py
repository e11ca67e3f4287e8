"""Training a cell from scratch: the evaluation networks, their regularisers, and the commands."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import run_cli
from conftest import image_task
from nas_core import DataInfo, cli, hookimpl
from nas_core.checkpoint import load_checkpoint
from nas_core.train import measure
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace, drop_path, drop_path_probability
from nas_tasks.classification import Cutout

CPU = torch.device("cpu")


def has_bn768(head: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) and m.num_features == 768 for m in head.modules())


def test_darts_v2_cifar_network_has_the_papers_parameter_count(registries):
    v2 = registries.genotypes["darts_v2"][0]
    net = DartsCnnSpace(DartsCnnOptions(cells=20, channels=36, auxiliary=True)).build_network(v2, DataInfo((3, 32, 32), 10))
    sizes = measure(net, (torch.zeros(1, 3, 32, 32),))
    assert sizes["params"] == 3_349_342  # the paper's "3.3 M"; the DARTS code prints 3.349342 MB
    aux = sum(p.numel() for p in net.auxiliary_head.parameters())
    assert aux > 0 and sizes["params_total"] == 3_349_342 + aux  # the auxiliary head is counted apart
    assert has_bn768(net.auxiliary_head)  # the official CIFAR head has BatchNorm2d(768)...


def test_darts_v2_imagenet_network_has_the_papers_size(registries):
    v2 = registries.genotypes["darts_v2"][0]
    opts = DartsCnnOptions(cells=14, channels=48, auxiliary=True, stem="imagenet")
    net = DartsCnnSpace(opts).build_network(v2, DataInfo((3, 224, 224), 1000))
    sizes = measure(net, (torch.zeros(1, 3, 224, 224),))
    params, madds = sizes["params"], sizes["multiply_adds"]
    assert params == 4_718_752  # paper: 4.7 M; the DARTS code prints 4.718752 MB
    # paper: 574 M. Convolutions and the classifier alone come to 529.9 M; the paper does not say
    # what else it counted, so we pin our own count and require it within 10 % of the paper's.
    assert madds == 529_911_552
    assert 0.9 < madds / 574e6 < 1.0
    # ...the official ImageNet head omits it (commented out there, "for consistency with the
    # experiments in the paper"); the pinned counts above exclude the auxiliary head either way
    assert not has_bn768(net.auxiliary_head)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.auxiliary_head.modules()) == 1  # the 128 one stays
    net.train()
    logits, aux = net(torch.randn(2, 3, 224, 224))
    assert logits.shape == aux.shape == (2, 1000)


def test_auxiliary_head_only_in_training_mode_and_its_loss_weight(registries):
    v2 = registries.genotypes["darts_v2"][0]
    net = DartsCnnSpace(DartsCnnOptions(cells=6, channels=8, auxiliary=True)).build_network(v2, DataInfo((3, 32, 32), 10))
    net.train()
    out = net(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and out[1].shape == (2, 10)
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    logits, aux, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    ce = nn.CrossEntropyLoss()
    task = image_task(DataInfo((3, 32, 32), 10))  # aux_weight 0.4 by default
    out = task.forward(lambda x: (logits, aux), (torch.zeros(4, 3, 32, 32), y), None)
    assert torch.allclose(out.loss, ce(logits, y) + 0.4 * ce(aux, y))
    assert torch.equal(task.forward(lambda x: logits, (None, y), None).loss, ce(logits, y))


def test_drop_path_schedule_ramps_linearly_to_the_setting():
    assert drop_path_probability(0.2, 0, 600) == 0.0
    assert drop_path_probability(0.2, 300, 600) == pytest.approx(0.1)
    assert drop_path_probability(0.2, 599, 600) == pytest.approx(0.2 * 599 / 600)


def test_drop_path_drops_whole_examples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(20000, 2, 3, 3)
    y = drop_path(x, 0.2)
    per_example = y.flatten(1)
    dropped = (per_example == 0).all(1)
    assert abs(dropped.float().mean() - 0.2) < 0.01  # whole examples, at the given rate
    assert torch.allclose(per_example[~dropped], torch.full_like(per_example[~dropped], 1 / 0.8))
    assert abs(y.mean() - 1.0) < 0.01


def test_drop_path_spares_identity_ops_and_eval_mode():
    from nas_core.genotype import Cell
    from nas_core import installed_catalog
    from nas_darts.cnn_space import DiscreteCell

    def outputs(op: str, training: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        cell = DiscreteCell(Cell((((op, 0), (op, 1)),) * 4, (2, 3, 4, 5)), installed_catalog(), 8, 8, 8, False, False)
        cell.train(training)
        x0, x1 = torch.randn(16, 8, 6, 6), torch.randn(16, 8, 6, 6)
        out = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            out.append(cell(x0, x1, 0.5))
        return out

    a, b = outputs("sep_conv_3x3", training=True)
    assert not torch.equal(a, b)  # convs are dropped at random
    a, b = outputs("skip_connect", training=True)
    assert torch.equal(a, b)  # identity ops never are
    a, b = outputs("sep_conv_3x3", training=False)
    assert torch.equal(a, b)  # and nothing is in eval mode


def test_cutout_zeroes_a_square_clipped_at_the_border():
    torch.manual_seed(0)
    img = torch.ones(3, 32, 32)
    sizes = set()
    for _ in range(200):
        out = Cutout(16)(img)
        zero = (out == 0).all(0)
        rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
        assert zero.sum() == len(rows) * len(cols)  # one rectangle
        sizes.add(int(zero.sum()))
    assert 256 in sizes and min(sizes) < 256  # full squares inside, clipped ones at the border
    assert torch.equal(img, torch.ones(3, 32, 32))  # the input is not modified


TINY = ["--set", "network.cells=3", "--set", "network.channels=8", "--set", "train.batch_size=32",
        "--set", "train.max_steps_per_epoch=3", "--no-progress"]


def test_nas_train_end_to_end_on_digits(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--genotype", "darts_v2", "--set", "train.epochs=2", *TINY, "--out", str(run),
                     env={"NAS_DISABLE_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    assert "test top1 error" in result.stdout and "M params" in result.stdout
    results = json.loads((run / "results.json").read_text())
    assert {"test_top1_error", "test_top5_error", "params", "multiply_adds", "epochs"} <= set(results)
    assert "valid_top1_error" in results  # the last validation, what selection reads
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert "valid_top1_error" in lines[0] and "test_" not in lines[0]  # test is read once, at the end
    assert "test_top1_error" in lines[1]
    assert results["epochs"] == 2 and 0 <= results["test_top1_error"] <= 1
    for name in ("config.yaml", "genotype.json", "checkpoint.pt", "log.txt"):
        assert (run / name).is_file(), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb")).Reload()
    assert {"train/train_loss", "train/valid_top1_error", "train/test_top1_error", "train/drop_path_prob"} <= set(
        events.Tags()["scalars"])
    assert len(events.Scalars("train/test_top1_error")) == 1
    drop = [e.value for e in events.Scalars("train/drop_path_prob")]
    assert drop[0] == 0.0 and drop[1] > 0
    from nas_core.draw import dot_available
    if dot_available():  # the cells as images, drawn with Graphviz
        assert {"cell/normal", "cell/reduce"} <= set(events.Tags()["images"])


class InterruptAfterFirstEpoch:
    @hookimpl
    def nas_epoch_end(self, epoch):
        if epoch == 0:
            raise KeyboardInterrupt


def test_train_resume_is_bit_identical(tmp_path):
    args = ["train", "--genotype", "darts_v1", "--set", "train.epochs=2", "--set", "network.drop_path=0.3", *TINY]
    assert cli.main([*args, "--out", str(tmp_path / "straight")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "resumed")], plugins=[InterruptAfterFirstEpoch()]) == 130
    assert cli.main(["train", "--resume", str(tmp_path / "resumed"), "--no-progress"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["network"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["network"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight, resumed = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("straight", "resumed"))
    assert straight.pop("wall_time_s") > 0 and resumed.pop("wall_time_s") > 0  # the one value that may differ
    assert straight == resumed


def test_train_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--genotype", "darts_v9", "--out", str(tmp_path / "r")]) == 2
    assert "registered genotypes: darts_rnn, darts_v1, darts_v2" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 7)], normal_concat=[2], "
                   "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])")
    assert cli.main(["train", "--genotype", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "node 2: input 7 out of range" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    assert cli.main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "needs --genotype" in capsys.readouterr().err


def test_derive_and_show(tmp_path, capsys):
    run = tmp_path / "search"
    assert cli.main(["run", "--optimizer", "darts_1st", "--set", "search.epochs=1", "--set", "space.cells=3",
                     "--set", "space.channels=4", "--set", "search.batch_size=16",
                     "--set", "search.max_steps_per_epoch=2", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["derive", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Genotype(normal=[")
    derived = json.loads((run / "derived_topk.json").read_text())
    assert derived == json.loads((run / "genotype.json").read_text())  # same rule, same alphas
    assert cli.main(["derive", str(run / "checkpoint.pt"), "--k", "1", "--out", str(tmp_path / "k1.json")]) == 0
    k1 = json.loads((tmp_path / "k1.json").read_text())
    assert all(len(node) == 1 for node in k1["normal"]["nodes"])
    capsys.readouterr()
    assert cli.main(["derive", str(run), "--discretizer", "nope"]) == 2
    assert "Valid discretizers: " in (err := capsys.readouterr().err) and "topk" in err

    assert cli.main(["show", "darts_v2", "--out", str(tmp_path / "cells" / "v2")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)")
    dot = (tmp_path / "cells" / "v2_normal.dot").read_text()
    assert "digraph normal" in dot and 'label=dil_conv_3x3' in dot and "c_{k-2}" in dot
    assert (tmp_path / "cells" / "v2_reduce.dot").is_file()
    from nas_core.draw import dot_available
    if dot_available():
        png = (tmp_path / "cells" / "v2_normal.png").read_bytes()
        assert png.startswith(b"\x89PNG") and (tmp_path / "cells" / "v2_normal.svg").is_file()
    else:
        assert "apt-get install graphviz" in out
