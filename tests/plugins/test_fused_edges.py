"""Fused mixed operations (nas_darts.fused): the edges leaving a state computed together give the per-op
path's outputs, gradients (weights and alpha, first and second order, exact Hessian-vector product
included) and BN running statistics, to rounding."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import image_task, saved_bytes
from nas_core import Catalog, Component, DataInfo, MixingWeights
from nas_core.registry import Operation
from nas_darts.architect import DartsOptions, darts_second_order
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace, SearchCell
from nas_darts import fused as fused_module
from nas_darts import layers
from nas_darts.edges import WeightedSumEdge
from nas_darts.ops import Chain
from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation

DATA = DataInfo((3, 8, 8), 10)
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture(params=["all", "shared"])
def fusion(request, monkeypatch) -> bool | None:
    """``space.fused_edges`` for the fused net: true (all fused), or the default where the chains run per
    edge (a large cell on CPU) and only the ops that read the state alone are shared."""
    if request.param == "all":
        return True
    monkeypatch.setattr(fused_module, "FUSE_ON_CPU_UP_TO", 0)
    return None


def pair(dtype=torch.float64, data: DataInfo = DATA, fusion: bool | None = True, **options):
    """The same supernet twice (same seed): per-op and fused (``space.fused_edges=fusion``)."""
    nets = []
    for fused in (False, fusion):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, fused_edges=fused, **options))
        nets.append(space.build_supernet(data).to(dtype))
    return space, *nets


def mixing(space, dtype, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    spec = space.arch_spec()
    return {t: torch.randn(spec.shape(t), generator=gen, dtype=dtype).requires_grad_() for t in ("normal", "reduce")}


def softmax(alphas: dict[str, torch.Tensor]) -> MixingWeights:
    return MixingWeights({t: a.softmax(-1) for t, a in alphas.items()})


def close(a: torch.Tensor, b: torch.Tensor, dtype) -> bool:
    """Equal to ``TOLERANCE`` relative to the tensor's scale (float32 sums of hundreds of terms round)."""
    return (a - b).abs().max().item() <= TOLERANCE[dtype] * max(1.0, a.abs().max().item())


def forward_and_gradients(net, alphas, x):
    out = net(x, arch_weights=softmax(alphas))
    loss = out.square().mean()
    inputs = [*alphas.values(), *net.parameters()]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)  # pruned ops' weights get none
    return out, [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_equals_per_op_forward_gradients_and_running_statistics(dtype, channels_last, fusion):
    space, per_op, fused = pair(dtype, channels_last=channels_last, fusion=fusion)
    alphas = mixing(space, dtype)
    x = torch.randn(6, *DATA.input_shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    out_a, grads_a = forward_and_gradients(per_op, alphas, x)
    out_b, grads_b = forward_and_gradients(fused, alphas, x)
    assert close(out_a, out_b, dtype)
    assert len(grads_a) == len(grads_b) > 2
    for a, b in zip(grads_a, grads_b):  # alpha (both cell types), then every weight
        assert close(a, b, dtype)
    buffers_a, buffers_b = dict(per_op.named_buffers()), dict(fused.named_buffers())
    assert buffers_a.keys() == buffers_b.keys()
    for name, buffer in buffers_a.items():  # every BN's running statistics and count moved alike
        assert torch.equal(buffer, buffers_b[name]) or close(buffer.double(), buffers_b[name].double(), dtype), name
    assert any(name.endswith("running_var") and not torch.all(b == 1) for name, b in buffers_b.items())
    per_op.eval(), fused.eval()  # and the running statistics are read back per edge in eval mode
    with torch.no_grad():
        weights = softmax(alphas)
        assert close(per_op(x, arch_weights=weights), fused(x, arch_weights=weights), dtype)


class CountConvolutions(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func is F.conv2d
        return func(*args, **(kwargs or {}))


def test_fused_path_is_taken_and_runs_fewer_convolutions():
    """Not a timing: the number of convolution calls of one forward, counted, is what fusion changes."""
    space, per_op, fused = pair()
    weights = softmax(mixing(space, torch.float64))
    x = torch.randn(2, *DATA.input_shape, dtype=torch.float64)
    calls = []
    for net, grad in ((per_op, True), (fused, True), (fused, False)):
        with CountConvolutions() as counter, torch.set_grad_enabled(grad):
            net(x, arch_weights=weights)
        calls.append(counter.calls)
    # cells: normal, reduce, reduce; preprocessing 2, 2, 3 (FactorizedReduce after a reduction cell), the stem 1.
    # Per op, per edge: 2 sep convs of 4 convolutions, 2 dil convs of 2, and 2 for a stride-2 skip (8 edges
    # of a reduction cell)
    assert calls[0] == 1 + (14 * 12 + 2) + (14 * 12 + 8 * 2 + 2) + (14 * 12 + 8 * 2 + 3)
    # fused, per group (4: the cell's two inputs together, then each node read by a later one): the first
    # depthwise convs of the sep convs (3x3 and 5x5) as one, those of the dil convs as one, 1 pointwise, the
    # second depthwise of the sep convs as one, 1 pointwise; one convolution for all the stride-2 skips
    # of a reduction cell's inputs
    assert calls[1] == 1 + (4 * 5 + 2) + (4 * 5 + 1 + 2) + (4 * 5 + 1 + 3)
    # outside training passes (no backward follows) each kernel size runs on its own, so that a count of
    # multiply-adds sees the architecture's: 4 depthwise, 1 pointwise, 2 depthwise, 1 pointwise per group
    assert calls[2] == 1 + (4 * 8 + 2) + (4 * 8 + 1 + 2) + (4 * 8 + 1 + 3)


def test_both_paths_keep_no_relu_inside_a_sep_conv(monkeypatch, fusion):
    """The sep convs' inner ReLU runs inside the conv after it, per op (``Chain``) and fused alike: in an
    architecture pass each path keeps one activation per sep conv fewer than it would with the ReLU on
    its own, the same count for both."""
    space, per_op, fused = pair(fusion=fusion)
    weights = softmax(mixing(space, torch.float64))
    x = torch.randn(4, *DATA.input_shape, dtype=torch.float64)
    sep_outputs = []
    hooks = [m.register_forward_hook(lambda m, i, out: sep_outputs.append(out.numel() * 8))
             for m in per_op.modules() if type(m) is Chain]
    kept = {net: saved_bytes(lambda x: net(x, arch_weights=weights), x) for net in (per_op, fused)}
    for hook in hooks:
        hook.remove()
    assert len(sep_outputs) == 3 * 14 * 2  # cells x edges x sep convs
    monkeypatch.setattr(Chain, "forward", nn.Sequential.forward)
    monkeypatch.setattr(fused_module, "relu_in_conv", lambda layers, i: False)
    for net in (per_op, fused):
        assert saved_bytes(lambda x: net(x, arch_weights=weights), x) - kept[net] == sum(sep_outputs)


class CountCalls(torch.overrides.TorchFunctionMode):
    def __init__(self, *funcs):
        super().__init__()
        self.calls = dict.fromkeys(funcs, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.calls:
            self.calls[func] += 1
        return func(*args, **(kwargs or {}))


def test_the_default_on_a_large_cell_shares_the_poolings_and_runs_the_convolutions_per_edge(monkeypatch):
    """Where the chains run per edge (``fused_edges: null`` on a large CPU cell), the poolings are still
    computed once per state: counted calls, per op against the default, in one forward."""
    monkeypatch.setattr(fused_module, "FUSE_ON_CPU_UP_TO", 0)
    space, per_op, default = pair(fusion=None)
    weights = softmax(mixing(space, torch.float64))
    x = torch.randn(2, *DATA.input_shape, dtype=torch.float64)
    calls = []
    for net in (per_op, default):
        with CountCalls(F.conv2d, F.avg_pool2d, F.max_pool2d) as counter:
            out = net(x, arch_weights=weights)
        calls.append(counter.calls)
    assert close(out, per_op(x, arch_weights=weights), torch.float64)
    # 3 cells of 14 edges, 5 states with edges leaving them (a pooling of each kind per edge or state: the
    # cell's two inputs are not read together where the chains run per edge)
    assert calls[0][F.avg_pool2d] == 3 * 14 and calls[1][F.avg_pool2d] == 3 * 5
    assert calls[0][F.max_pool2d] == 3 * 14 and calls[1][F.max_pool2d] == 3 * 5
    # the conv chains per edge, as per op; the stride-2 skips of a reduction cell's 2 input states as one
    # 2x2 convolution each, not two 1x1s per edge (8 edges)
    assert calls[1][F.conv2d] == calls[0][F.conv2d] - 2 * (8 * 2 - 2)


def optimizer(net, space, dtype, **options):
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=0.5), spec=space.arch_spec()).to(dtype)
    torch.manual_seed(3)
    for alpha in relax.alphas.values():
        alpha.data.normal_(0, 0.5)
    return darts_second_order(DartsOptions(**options), supernet=net, relaxation=relax, task=image_task(DATA), epochs=1)


@pytest.mark.parametrize("hvp", ["finite_difference", "exact"])
def test_second_order_architecture_gradient_is_the_same_fused(hvp, fusion):
    space, per_op, fused = pair(fusion=fusion)
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(8, *DATA.input_shape, generator=gen, dtype=torch.float64),
                torch.randint(0, 10, (8,), generator=gen)) for _ in range(3)]
    grads = []
    for net in (per_op, fused):
        opt = optimizer(net, space, torch.float64, hvp=hvp)
        opt.weight_step(batches[2])  # a momentum buffer for the virtual step to use
        _, g = opt.arch_gradient(batches[0], batches[1])
        grads.append(g)
    for a, b in zip(*grads):
        assert close(a, b, torch.float64) and a.abs().sum() > 0


@pytest.mark.parametrize("hvp", ["finite_difference", "exact"])
def test_weight_gradients_by_column_blocks_change_no_gradient(monkeypatch, fusion, hvp):
    """The 5x5 kernels' weight gradients in blocks of 3 columns (layers.conv_backward), forced on at this
    size, against oneDNN's whole kernels: the weights' and alpha's gradients, first and second order."""
    space, _, net = pair(fusion=fusion, channels_last=True)
    alphas = mixing(space, torch.float64)
    x = torch.randn(6, *DATA.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(8, *DATA.input_shape, generator=gen, dtype=torch.float64),
                torch.randint(0, 10, (8,), generator=gen)) for _ in range(2)]
    splits = []

    def spy(*args):
        splits.append(split(*args))
        return splits[-1]

    results = []
    for on in (False, True):
        split = layers.splits_weight_gradient
        monkeypatch.setattr(layers, "FAST_KERNEL_WIDTH", 3 if on else 5)
        monkeypatch.setattr(layers, "SPLIT_FROM_WIDTH", 1)
        monkeypatch.setattr(layers, "SPLIT_FROM_ELEMENTS", 0)
        monkeypatch.setattr(layers, "splits_weight_gradient", spy)
        torch.manual_seed(0)
        _, grads = forward_and_gradients(net, alphas, x)
        opt = optimizer(copy.deepcopy(net), space, torch.float64, hvp=hvp)
        results.append([*grads, *opt.arch_gradient(*batches)[1]])
        monkeypatch.setattr(layers, "splits_weight_gradient", split)
        assert any(splits) == on
    for a, b in zip(*results):
        assert close(a, b, torch.float64)


def test_recomputed_fused_edges_give_the_same_gradients():
    space, _, fused = pair()
    torch.manual_seed(0)
    recomputed = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, fused_edges=True, recompute_edges=True)
                               ).build_supernet(DATA).double()
    alphas = mixing(space, torch.float64)
    x = torch.randn(4, *DATA.input_shape, dtype=torch.float64)
    out_a, grads_a = forward_and_gradients(fused, alphas, x)
    out_b, grads_b = forward_and_gradients(recomputed, alphas, x)
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_hard_sampling_takes_the_per_op_path_unchanged(fusion):
    space, per_op, fused = pair(fusion=fusion)
    weights = softmax(mixing(space, torch.float64))
    chosen = {"normal": tuple(i % 8 for i in range(14)), "reduce": tuple((i + 3) % 8 for i in range(14))}
    hard = MixingWeights(dict(weights.items()), chosen=chosen)
    x = torch.randn(2, *DATA.input_shape, dtype=torch.float64)
    assert torch.equal(per_op(x, arch_weights=hard), fused(x, arch_weights=hard))


def test_edges_that_compute_different_ops_are_fused_in_groups(fusion):
    """Pruned columns differ per edge: edges computing the same ones are fused together."""
    space, per_op, fused = pair(fusion=fusion)
    alphas = mixing(space, torch.float64)
    for net in (per_op, fused):
        for cell in net.cells:
            for row, edge in enumerate(cell.edges):
                edge.computed = [i for i in range(len(edge.ops)) if (i + row) % 3]  # three kinds of edge
    x = torch.randn(3, *DATA.input_shape, dtype=torch.float64)
    for a, b in zip(forward_and_gradients(per_op, alphas, x)[1],
                    forward_and_gradients(fused, alphas, x)[1]):
        assert close(a, b, torch.float64)


def test_the_cells_two_inputs_are_read_together_where_their_edges_compute_the_same_ops(monkeypatch, fusion):
    """``forward_groups``: the edges leaving a cell's two inputs are one fused group (one ``weighted_sums``
    call over both inputs) where the chains run fused and the edges compute the same ops; otherwise
    each input's edges are a group, as ``forward_group`` computes them. Either way the per-op results."""
    space, per_op, fused = pair(fusion=fusion)
    alphas = mixing(space, torch.float64)
    x = torch.randn(3, *DATA.input_shape, dtype=torch.float64)
    calls = []
    inner = fused_module.weighted_sums

    def spy(ops, columns, x, weights, relu_x, run_op, chains_fused=True, sources=1):
        calls.append(sources)
        return inner(ops, columns, x, weights, relu_x, run_op, chains_fused, sources)

    monkeypatch.setattr(fused_module, "weighted_sums", spy)
    expected = forward_and_gradients(per_op, alphas, x)
    for pruned in (False, True):
        if pruned:  # one edge leaving the second input computes one op fewer: its input is a group of its own
            for net in (per_op, fused):
                net.cells[1].edges[1].computed = net.cells[1].edges[1].computed[1:]
            expected = forward_and_gradients(per_op, alphas, x)
        calls.clear()
        got = forward_and_gradients(fused, alphas, x)
        for a, b in zip([expected[0], *expected[1]], [got[0], *got[1]]):
            assert close(a, b, torch.float64)
        # 3 cells: the inputs together then 3 nodes, or (chains per edge, or the pruned cell) 5 states;
        # in the pruned cell the second input's edges compute two sets of ops: two groups
        together = [2, 1, 1, 1] if fusion else [1] * 5
        assert calls == together * 3 if not pruned else together + [1] * 6 + together


@pytest.mark.parametrize("cell,channels", [(0, 4), (1, 8)])  # pair()'s normal cell of C=4, reduction of 8
def test_edges_reading_two_inputs_give_each_edges_forward(cell, channels, fusion):
    """``WeightedSumEdge.weighted_sums`` of the edges of both inputs of a cell, the inputs as a tuple: the
    outputs and alpha gradients of each edge's own forward (chains fused, or per edge)."""
    _, _, net = pair(fusion=fusion)
    cell = net.cells[cell]
    edges = [cell.edges[row] for state in (0, 1) for row in cell.leaving[state]]
    gen = torch.Generator().manual_seed(4)
    xs = tuple(torch.randn(3, channels, 8, 8, dtype=torch.float64, generator=gen) for _ in range(2))
    weights = torch.rand(len(edges), 8, dtype=torch.float64, generator=gen).requires_grad_()
    got = WeightedSumEdge.weighted_sums(edges, xs, weights, None)
    expected = [edge(xs[e // 4], w) for e, (edge, w) in enumerate(zip(edges, weights))]
    for a, b in zip(expected, got):
        assert close(a, b, torch.float64)
    grad_a = torch.autograd.grad(sum(t.square().sum() for t in expected), weights)[0]
    grad_b = torch.autograd.grad(sum(t.square().sum() for t in got), weights)[0]
    assert close(grad_a, grad_b, torch.float64)


class Doubling(nn.Module):
    """An op the fusion does not know: it runs per edge inside a fused group."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, stride=stride, bias=True)

    def forward(self, x):
        return 2 * self.conv(x)


@pytest.fixture
def catalog(registries) -> Catalog:
    return Catalog(registries.operations, registries.mixed_edges)


def test_an_op_the_fusion_does_not_know_runs_per_edge_in_a_fused_group(catalog, fusion):
    if "doubling" not in catalog.operations.names("darts_cnn"):  # the registries are the session's
        catalog.operations.add(Operation("doubling", "darts_cnn", lambda c, s, affine, search: Doubling(c, s), "test"))
    ops = ("none", "max_pool_3x3", "skip_connect", "doubling", "sep_conv_3x3", "dil_conv_5x5")
    nets = []
    for fused in (False, fusion):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, fused_edges=fused, ops=ops), catalog=catalog)
        nets.append(space.build_supernet(DATA).double())
    alphas = mixing(space, torch.float64)
    x = torch.randn(3, *DATA.input_shape, dtype=torch.float64)
    for a, b in zip(forward_and_gradients(nets[0], alphas, x)[1],
                    forward_and_gradients(nets[1], alphas, x)[1]):
        assert close(a, b, torch.float64)


def test_a_subclass_that_changes_forward_alone_is_not_fused_past_its_forward():
    class Halved(WeightedSumEdge):
        def forward(self, x, weights, chosen=None, relu_x=None):
            return super().forward(x, weights, chosen, relu_x) / 2

    edges = [Halved(None, ops=("none", "skip_connect", "avg_pool_3x3"), channels=4, stride=1, zero=frozenset({"none"}),
                    make_op=lambda name, c: nn.Identity() if name == "skip_connect" else nn.AvgPool2d(3, 1, 1))
             for _ in range(2)]
    x, weights = torch.randn(2, 4, 6, 6), torch.rand(2, 3)
    outs = Halved.forward_group(edges, x, weights, relu_x=F.relu(x))
    for edge, w, out in zip(edges, weights, outs):
        assert torch.equal(out, edge(x, w))
    # nor are the groups of two inputs read together (MixedEdge.forward_groups)
    y = torch.randn(2, 4, 6, 6)
    groups = Halved.forward_groups([(edges, x, weights, {"relu_x": F.relu(x)}), (edges, y, weights, {})])
    for x_group, outs in zip((x, y), groups):
        for edge, w, out in zip(edges, weights, outs):
            assert torch.equal(out, edge(x_group, w))


@pytest.mark.parametrize("edge", [{"name": "darts_minus"}, {"name": "partial_channels", "k": 2},
                                  {"name": "pdarts", "skip_dropout": 0.0}])
def test_other_edge_kinds_give_the_same_result_with_fusion_on(edge, catalog, fusion):
    entry = catalog.mixed_edges.get(edge["name"])
    component = Component(edge["name"], entry.options(**{k: v for k, v in edge.items() if k != "name"}))
    nets = []
    for fused in (False, fusion):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=8, fused_edges=fused, edge=component),
                              catalog=catalog)
        nets.append(space.build_supernet(DATA).double())
    alphas = mixing(space, torch.float64)
    x = torch.randn(3, *DATA.input_shape, dtype=torch.float64)
    out_a, grads_a = forward_and_gradients(nets[0], alphas, x)
    out_b, grads_b = forward_and_gradients(nets[1], alphas, x)
    assert close(out_a, out_b, torch.float64)
    for a, b in zip(grads_a, grads_b):
        assert close(a, b, torch.float64)


def test_cells_keep_their_state_dict_keys():
    """Checkpoints of either path load into the other: fusion adds no saved state."""
    _, per_op, fused = pair()
    assert per_op.state_dict().keys() == fused.state_dict().keys()
    fused.load_state_dict(per_op.state_dict())
    assert isinstance(fused.cells[0], SearchCell)


def test_the_default_fuses_the_chains_of_small_cells_on_cpu_only():
    from nas_darts.fused import FUSE_ON_CPU_UP_TO, fuse_chains

    small, large = torch.empty(FUSE_ON_CPU_UP_TO), torch.empty(FUSE_ON_CPU_UP_TO + 1)
    assert fuse_chains(None, small) and not fuse_chains(None, large)
    assert not fuse_chains(None, torch.empty(8, device="meta"))  # not measured on an accelerator yet
    assert fuse_chains(True, large) and not fuse_chains(False, small)


def test_a_bn_switched_to_eval_on_its_own_is_fused_apart(fusion):
    """How an op fuses is worked out once per module, but a BN's mode is read at every call: one BN
    of one edge switched to eval mode alone (a frozen-statistics trick) runs from its running
    statistics, as per op, while its column's others still normalize by the batch."""
    space, per_op, fused = pair(fusion=fusion)
    alphas = mixing(space, torch.float64)
    x = torch.randn(6, *DATA.input_shape, dtype=torch.float64)
    for net in (per_op, fused):
        forward_and_gradients(net, alphas, x)  # the keys are made in training mode first
        cell = next(m for m in net.modules() if isinstance(m, SearchCell))
        edge = cell.edges[0]
        sep = next(op for op in edge.ops if type(op).__name__ == "PreActivated")
        bn = next(m for m in sep.modules() if isinstance(m, nn.BatchNorm2d))
        bn.running_mean.fill_(0.5)
        bn.eval()
    out_a, grads_a = forward_and_gradients(per_op, alphas, x)
    out_b, grads_b = forward_and_gradients(fused, alphas, x)
    assert close(out_a, out_b, torch.float64)
    for a, b in zip(grads_a, grads_b):
        assert close(a, b, torch.float64)
