"""PC-DARTS (plugin nas_pcdarts): a partial-channel edge computes its ops on C/K channels and passes the
rest through (by FLOP count and by output); edge normalisation mixes softmax(alpha) * softmax(beta
over a node's incoming edges), and topk ranks by that product; the warm-up freezes beta too; its
presets; its bad input; a tiny search end to end. The side-by-side check against the authors' code is
benchmarks/fidelity/pcdarts.py."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import TINY, StepRun, image_task, refused
from nas_core import ArchSpec, Catalog, Component, ConfigError, DataInfo, Toolkit, cli
from nas_core.config import resolve
from nas_darts.architect import DartsOptimizer
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions, DartsOptions, TopKOptions
from nas_darts.topk import TopKDiscretizer
from nas_pcdarts.edge_normalized import EdgeNormalizedRelaxation
from nas_pcdarts.options import EdgeNormalizedOptions, PartialChannelOptions
from nas_pcdarts.partial_channels import channel_shuffle

OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_5x5")


@pytest.fixture(scope="module")
def catalog(registries) -> Catalog:
    return Catalog(registries.operations, registries.mixed_edges)


def edge(catalog: Catalog, kind: str, channels: int, stride: int = 1, **options):
    def make_op(name, c):
        return catalog.operations.get("darts_cnn", name).factory(c, stride, False, True)

    opts = PartialChannelOptions(**options) if kind == "partial_channels" else None
    return catalog.mixed_edge(Component(kind, opts), ops=OPS, channels=channels, stride=stride, make_op=make_op,
                              zero=frozenset({"none"}))


def flops(module, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        module(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_a_partial_channel_edge_computes_its_ops_on_c_over_k_channels(catalog, k, stride):
    torch.manual_seed(0)
    c = 16
    partial = edge(catalog, "partial_channels", c, stride, k=k)
    whole = edge(catalog, "weighted_sum", c // k, stride)
    whole.load_state_dict(partial.state_dict())  # the same ops, the same weights, at C/K channels
    x = torch.randn(2, c, 8, 8)
    w = torch.softmax(torch.randn(len(OPS)), dim=0)
    # by FLOP count: exactly the ops at C/K channels (the bypass's pooling counts none)
    assert flops(partial, x, w) == flops(whole, x[:, :c // k], w) > 0
    assert flops(edge(catalog, "weighted_sum", c, stride), x, w) > (k - 1) * flops(partial, x, w)
    # by output: the ops' part is the weighted sum on the first C/K channels, the rest passes through
    # (max-pooled at stride 2), and the channel shuffle interleaves the two
    out = partial(x, w)
    bypass = x[:, c // k:] if stride == 1 else torch.nn.functional.max_pool2d(x[:, c // k:], 2, 2)
    expected = channel_shuffle(torch.cat([whole(x[:, :c // k], w), bypass], dim=1), k)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    if stride == 1:  # untouched: output channel 1 is input channel C/K (the first bypassed one)
        assert torch.equal(out[:, 1], x[:, c // k] * w.sum())


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert channel_shuffle(x, 1).flatten().tolist() == list(range(8))


def test_the_bypass_is_scaled_by_the_edge_weight_unless_told_not_to(catalog):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 4)
    w = 0.3 * torch.softmax(torch.randn(len(OPS)), dim=0)  # an edge of beta 0.3
    scaled, plain = edge(catalog, "partial_channels", 8, k=4), edge(catalog, "partial_channels", 8, k=4,
                                                                    scale_bypass=False)
    plain.load_state_dict(scaled.state_dict())
    torch.testing.assert_close(scaled(x, w)[:, 1], 0.3 * x[:, 2])  # PC-DARTS: beta times the whole edge
    torch.testing.assert_close(plain(x, w)[:, 1], x[:, 2])


def test_only_the_chosen_op_runs_under_hard_sampling(catalog):
    e = edge(catalog, "partial_channels", 8, k=2)
    x = torch.randn(2, 8, 4, 4)
    w = torch.zeros(len(OPS))
    w[3] = 1.0
    assert flops(e, x, w, 3) == flops(e.ops[OPS.index("sep_conv_3x3") - 1], x[:, :4]) > 0
    torch.testing.assert_close(e(x, w, 3), e(x, w))


def test_k_must_divide_every_edges_channels(catalog):
    with pytest.raises(ConfigError, match="mixed edge 'partial_channels': space.edge.k=3 must divide the channels"):
        edge(catalog, "partial_channels", 16, k=3)


def spec(edges=((0, 2), (1, 2), (0, 3), (1, 3), (2, 3))) -> ArchSpec:
    return ArchSpec(ops=OPS, edges={"normal": edges}, num_inputs=2, inputs_per_node=2, zero_op="none")


def test_edge_normalisation_multiplies_softmax_alpha_by_softmax_beta_over_each_nodes_edges():
    torch.manual_seed(0)
    relax = EdgeNormalizedRelaxation(EdgeNormalizedOptions(init_std=1.0), spec=spec())
    alpha, beta = relax.alphas["normal"], relax.betas["normal"]
    w = relax.weights()["normal"]
    node2, node3 = torch.softmax(beta[:2], 0), torch.softmax(beta[2:], 0)  # rows 0-1 enter node 2, 2-4 node 3
    torch.testing.assert_close(w, torch.softmax(alpha, -1) * torch.cat([node2, node3])[:, None])
    torch.testing.assert_close(w[:2].sum(), torch.tensor(1.0))  # each node's edges share one unit
    torch.testing.assert_close(w[2:].sum(), torch.tensor(1.0))
    beta_grad, = torch.autograd.grad(w[0, 3] - w[1, 3], beta)
    assert beta_grad[:2].abs().min() > 0 and beta_grad[2:].abs().max() == 0  # beta moves within its node only
    # rows of a node need not be contiguous: the grouping follows the edges' destinations
    shuffled = EdgeNormalizedRelaxation(EdgeNormalizedOptions(), spec=spec(((0, 2), (0, 3), (1, 2), (1, 3), (2, 3))))
    w2 = shuffled.weights()["normal"]
    torch.testing.assert_close(w2[[0, 2]].sum(), torch.tensor(1.0))
    assert shuffled.sample(torch.Generator()) is None
    assert torch.equal(shuffled.strengths()["normal"], w2.detach())


def test_topk_ranks_edges_and_ops_by_the_product_of_alpha_and_beta():
    relax = EdgeNormalizedRelaxation(EdgeNormalizedOptions(), spec=spec())
    with torch.no_grad():
        relax.alphas["normal"].zero_()
        relax.alphas["normal"][2, 3] = 3.0  # node 3: edge 0->3 has the most confident op...
        relax.alphas["normal"][3, 4] = 2.0
        relax.alphas["normal"][4, 1] = 1.0
        relax.betas["normal"].copy_(torch.tensor([0.0, 0.0, -4.0, 1.0, 1.0]))  # ...but the smallest beta
    genotype = TopKDiscretizer(TopKOptions()).derive(relax.strengths(), spec())
    node3 = genotype.cells["normal"].nodes[1]
    assert node3 == (("dil_conv_5x5", 1), ("max_pool_3x3", 2))  # by alpha alone: 0->3 would come first
    plain = TopKDiscretizer(TopKOptions()).derive({"normal": torch.softmax(relax.alphas["normal"].detach(), -1)},
                                                  spec())
    assert plain.cells["normal"].nodes[1][0] == ("sep_conv_3x3", 0)


def test_the_warm_up_freezes_beta_with_alpha():
    info = DataInfo((1, 8, 8), 10)
    torch.manual_seed(0)
    space = DartsCnnSpace(DartsCnnOptions(cells=1, channels=4, nodes=2,
                                          edge=Component("partial_channels", PartialChannelOptions(k=2))))
    net = space.build_supernet(info)
    relax = EdgeNormalizedRelaxation(EdgeNormalizedOptions(), spec=space.arch_spec())
    opt = DartsOptimizer(DartsOptions(freeze_alpha_epochs=1), supernet=net, relaxation=relax, task=image_task(info),
                         epochs=2, second_order=False)
    batch = (torch.randn(4, 1, 8, 8), torch.randint(10, (4,)))
    before = {k: v.clone() for k, v in relax.state_dict().items()}
    opt.step(batch, batch, {}, StepRun(epoch=0))
    assert all(torch.equal(before[k], v) for k, v in relax.state_dict().items())
    opt.step(batch, batch, {}, StepRun(epoch=1))
    assert not torch.equal(before["betas.normal"], relax.betas["normal"])
    assert not torch.equal(before["alphas.normal"], relax.alphas["normal"])


def test_the_presets(registries):
    demo = resolve(registries, [], preset="pcdarts_demo")
    assert demo.space.options.edge == Component("partial_channels", PartialChannelOptions(k=4))
    assert demo.relaxation.name == "edge_normalized" and demo.optimizer.name == "darts_1st"
    assert demo.dataset.name == "digits" and demo.optimizer.options.freeze_alpha_epochs == 2
    paper = resolve(registries, [], preset="pcdarts_paper")
    o = paper.optimizer.options
    assert (paper.optimizer.name, paper.space.options.edge.options.k, paper.relaxation.name) == (
        "darts_1st", 4, "edge_normalized")
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.1, 0.0, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay, o.freeze_alpha_epochs) == (6e-4, (0.5, 0.999), 1e-3, 15)
    assert (paper.search.epochs, paper.search.batch_size, paper.space.options.cells, paper.space.options.channels) == (
        50, 256, 8, 16)
    assert paper.task.options.cutout == 0 and paper.dataset.name == "cifar10"
    assert (paper.network.cells, paper.network.channels, paper.network.drop_path, paper.train.epochs) == (
        20, 36, 0.3, 600)  # DARTS's evaluation, the authors' drop-path


BAD = [
    (["--set", "space.edge.k=3"],
     "mixed edge 'partial_channels': space.edge.k=3 must divide the channels of every edge; an edge here has 4"),
    (["--set", "space.edge.k=0"], "invalid space.edge option: 'k' must be >= 1: 0"),
    (["--set", "relaxation.init_std=-1"], "invalid relaxation option: 'init_std' must be >= 0: -1"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "pcdarts_demo", *TINY, *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err


def test_a_tiny_search_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "pcdarts_demo", *TINY, "--set", "search.epochs=2",
                     "--set", "optimizer.freeze_alpha_epochs=1", "--out", str(out)]) == 0
    record = Toolkit.load().load_search(out)
    assert record.complete and record.epochs_done == 2 and record.genotype is not None
    assert isinstance(record.relaxation, EdgeNormalizedRelaxation)
    first = record.supernet.cells[0].edges[0]
    assert first.part == 1 and first.ops[3].body[0].in_channels == 1  # C=4, K=4: the ops see one channel
    assert "arch_loss" in record.metrics  # epoch 2 trained alpha and beta, after the warm-up


def test_the_edge_keeps_recompute_and_channels_last():
    """darts_cnn's own options work with the edge: recomputing edges in backward gives the same loss
    and gradients, in either memory format."""
    results = []
    for recompute, channels_last in ((False, False), (True, False), (True, True)):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=8, recompute_edges=recompute,
                                              channels_last=channels_last,
                                              edge=Component("partial_channels", PartialChannelOptions(k=2))))
        net = space.build_supernet(DataInfo((1, 8, 8), 10))
        relax = EdgeNormalizedRelaxation(EdgeNormalizedOptions(), spec=space.arch_spec())
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        loss = net(x, arch_weights=relax.weights()).square().mean()
        results.append((loss.detach(), torch.autograd.grad(loss, [*net.parameters(), *relax.parameters()])))
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        assert all(torch.allclose(g, h, atol=1e-5) for g, h in zip(grads, results[0][1]))

