"""DARTS- (plugin nas_darts_minus): beta at a given epoch (linear from beta_start to 0 over the search, or
constant), the edge's output is DARTS's weighted sum plus beta times the auxiliary skip exactly, the
skip is FactorizedReduce on stride-2 edges, the edge works without `skip_connect` among the ops, the
derived genotype ignores the auxiliary path; its presets, bad input and a tiny search end to end. The
side-by-side check against the authors' code is benchmarks/fidelity/darts_minus.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import TINY, refused
from nas_core import Catalog, Component, DataInfo, Toolkit, cli
from nas_core.config import resolve
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.ops import FactorizedReduce
from nas_darts.options import DartsCnnOptions, SoftmaxOptions, TopKOptions
from nas_darts.softmax import SoftmaxRelaxation
from nas_darts.topk import TopKDiscretizer
from nas_darts_minus.edge import beta_at
from nas_darts_minus.options import DartsMinusEdgeOptions

OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_5x5")
NO_SKIP = ("max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3")


@pytest.fixture(scope="module")
def catalog(registries) -> Catalog:
    return Catalog(registries.operations, registries.mixed_edges)


def edge(catalog: Catalog, kind: str, channels: int = 8, stride: int = 1, ops: tuple[str, ...] = OPS, **options):
    def make_op(name, c):
        return catalog.operations.get("darts_cnn", name).factory(c, stride, False, True)

    opts = DartsMinusEdgeOptions(**options) if kind == "darts_minus" else None
    return catalog.mixed_edge(Component(kind, opts), ops=ops, channels=channels, stride=stride, make_op=make_op,
                              zero=frozenset({"none"}) & set(ops))


@pytest.mark.parametrize("epoch, epochs, start, decay, expected", [
    (0, 50, 1.0, "linear", 1.0),  # the first epoch: beta_start
    (25, 50, 1.0, "linear", 0.5),
    (49, 50, 1.0, "linear", 0.02),  # the last: beta_start / epochs (the authors' DecayScheduler)
    (3, 10, 2.0, "linear", 1.4),
    (7, 50, 1.0, "none", 1.0),  # their default, decay=None: constant
    (7, 50, 0.5, "none", 0.5),
])
def test_beta_at_a_given_epoch(epoch, epochs, start, decay, expected):
    assert beta_at(epoch, epochs, start, decay) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("phase, epoch, decay, expected", [
    ("search", 0, "linear", 2.0), ("search", 3, "linear", 1.4), ("search", 9, "none", 2.0),
    ("pt_select", 2, "linear", 0.0),  # a final phase after the search: where the schedule ended
    ("pt_select", 2, "none", 2.0),
])
def test_start_epoch_sets_the_edges_beta(catalog, phase, epoch, decay, expected):
    e = edge(catalog, "darts_minus", beta_start=2.0, decay=decay)
    assert float(e.beta) == 2.0  # before any epoch
    e.start_epoch(SimpleNamespace(phase=phase, epoch=epoch, epochs=10, components={}))
    assert float(e.beta) == pytest.approx(expected)
    assert "beta" in e.state_dict()  # checkpointed with the supernet


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("ops", [OPS, NO_SKIP], ids=["with_skip", "without_skip"])
def test_the_output_is_the_weighted_sum_plus_beta_times_the_auxiliary_skip(catalog, stride, ops):
    torch.manual_seed(0)
    minus = edge(catalog, "darts_minus", stride=stride, ops=ops)
    plain = edge(catalog, "weighted_sum", stride=stride, ops=ops)
    missing, unexpected = plain.load_state_dict(minus.state_dict(), strict=False)
    assert not missing and all(k == "beta" or k.startswith("aux.") for k in unexpected)
    minus.start_epoch(SimpleNamespace(phase="search", epoch=3, epochs=10, components={}))
    x = torch.randn(2, 8, 8, 8)
    w = torch.softmax(torch.randn(len(ops)), dim=0)
    out = minus(x, w)
    assert torch.equal(out, plain(x, w) + 0.7 * minus.aux(x))
    assert out.shape == (2, 8, 8 // stride, 8 // stride)
    # and with beta 0 (decayed away) it is DARTS's edge
    minus.start_epoch(SimpleNamespace(phase="search", epoch=10, epochs=10, components={}))
    assert torch.equal(minus(x, w), plain(x, w))


@pytest.mark.parametrize("aux", ["skip", "conv1"])
def test_the_auxiliary_path_is_factorized_reduce_on_stride_2_edges(catalog, aux):
    x = torch.randn(2, 8, 8, 8)
    reduce_edge = edge(catalog, "darts_minus", stride=2, aux=aux, ops=NO_SKIP)
    assert isinstance(reduce_edge.aux, FactorizedReduce) and not reduce_edge.aux.bn.affine
    normal_edge = edge(catalog, "darts_minus", stride=1, aux=aux, ops=NO_SKIP)
    if aux == "skip":
        assert isinstance(normal_edge.aux, nn.Identity)
    else:  # a 1x1 convolution that starts as the identity, and trains
        assert isinstance(normal_edge.aux, nn.Conv2d) and normal_edge.aux.weight.requires_grad
    torch.testing.assert_close(normal_edge.aux(x), x)


def test_every_edge_of_a_supernet_has_its_auxiliary_path_with_or_without_skip_connect():
    info = DataInfo((1, 8, 8), 10)
    for ops in (OPS, NO_SKIP):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, ops=ops, edge=Component(
            "darts_minus", DartsMinusEdgeOptions())))
        net = space.build_supernet(info)
        relax = SoftmaxRelaxation(SoftmaxOptions(), spec=space.arch_spec())
        assert relax.alphas["normal"].shape[1] == len(ops)  # no column for the auxiliary path
        for cell in net.cells:
            for row, (src, _) in enumerate(space.arch_spec().edges["normal"]):
                stride2 = cell.reduction and src < 2
                assert isinstance(cell.edges[row].aux, FactorizedReduce if stride2 else nn.Identity)
        loss = net(torch.randn(4, 1, 8, 8), arch_weights=relax.weights()).square().mean()
        grads = torch.autograd.grad(loss, [*net.parameters(), *relax.parameters()], allow_unused=True)
        assert all(g is not None for g in grads[-2:])  # both cell types' alphas get a gradient


def test_the_presets(registries):
    demo = resolve(registries, [], preset="darts_minus_demo")
    assert demo.space.options.edge == Component("darts_minus", DartsMinusEdgeOptions(beta_start=1.0, decay="linear"))
    assert demo.optimizer.name == "darts_1st" and demo.dataset.name == "digits" and demo.search.epochs == 10
    paper = resolve(registries, [], preset="darts_minus_paper")
    o = paper.optimizer.options
    assert paper.space.options.edge == Component("darts_minus", DartsMinusEdgeOptions(1.0, "linear", "skip"))
    assert paper.space.options.ops[0] == "none" and len(paper.space.options.ops) == 8  # their s5
    assert paper.optimizer.name == "darts_1st"
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay) == (3e-4, (0.5, 0.999), 1e-3)
    assert (paper.search.epochs, paper.search.batch_size, paper.space.options.cells, paper.space.options.channels) == (
        50, 64, 8, 16)
    assert paper.task.options.cutout == 0 and paper.dataset.name == "cifar10"


BAD = [
    (["--set", "space.edge.decay=cosine"], "invalid space.edge option: 'decay' must be in ('linear', 'none')"),
    (["--set", "space.edge.beta_start=-1"], "invalid space.edge option: 'beta_start' must be >= 0: -1"),
    (["--set", "space.edge.aux=conv3"], "invalid space.edge option: 'aux' must be in ('skip', 'conv1')"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "darts_minus_demo", *TINY, *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err


@pytest.mark.parametrize("ops", [None, pytest.param(NO_SKIP, marks=pytest.mark.slow)], ids=["darts_ops", "without_skip"])
def test_a_tiny_search_end_to_end(tmp_path, ops):
    out = tmp_path / "run"
    extra = [] if ops is None else ["--set", f"space.ops=[{','.join(ops)}]"]
    assert cli.main(["run", "--preset", "darts_minus_demo", *TINY, "--set", "search.epochs=2", *extra,
                     "--out", str(out)]) == 0
    record = Toolkit.load().load_search(out)
    assert record.complete and record.epochs_done == 2
    betas = {float(e.beta) for cell in record.supernet.cells for e in cell.edges}
    assert betas == {0.5}  # the last epoch's (epoch 1 of 2): the schedule reached every edge
    # the derived cell is DARTS's topk over alpha alone: the auxiliary path never enters it
    assert record.genotype == TopKDiscretizer(TopKOptions()).derive(record.relaxation.strengths(), record.spec)
    if ops is not None:
        used = {op for cell in record.genotype.cells.values() for node in cell.nodes for op, _ in node}
        assert used <= set(ops) and "skip_connect" not in used

