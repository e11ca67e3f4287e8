from __future__ import annotations

import os
import subprocess
import sys

import torch
from torch import nn

from nas_core import Cell, DataInfo, Genotype, MixingWeights
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace, reduction_layers
from nas_darts.edges import WeightedSumEdge
from nas_darts.ops import FactorizedReduce, PreActivated, make_op
from nas_darts.options import CNN_OPS

CIFAR = DataInfo((3, 32, 32), 10)


def test_arch_spec_has_14_edges_of_8_ops_per_cell_type():
    spec = DartsCnnSpace(DartsCnnOptions()).arch_spec()
    assert set(spec.edges) == {"normal", "reduce"}
    assert spec.shape("normal") == spec.shape("reduce") == (14, 8)
    assert spec.ops == CNN_OPS and len(set(CNN_OPS)) == 8
    # node j (2..5) receives one edge from every earlier node
    assert spec.edges["normal"][:5] == ((0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert spec.num_inputs == 2 and spec.inputs_per_node == 2 and spec.zero_op == "none"


def test_paper_supernet_parameter_count_and_shapes():
    net = DartsCnnSpace(DartsCnnOptions(cells=8, channels=16)).build_supernet(CIFAR)
    # the count the DARTS reference code prints for its CIFAR-10 search model
    assert sum(p.numel() for p in net.parameters()) == 1_930_618
    assert [c.reduction for c in net.cells] == [i in (2, 5) for i in range(8)]
    weights = MixingWeights({k: torch.softmax(torch.randn(14, 8), -1) for k in ("normal", "reduce")})
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))) for c in net.cells]
    out = net(torch.randn(2, 3, 32, 32), arch_weights=weights)
    for h in hooks:
        h.remove()
    assert out.shape == (2, 10)
    # channels double and resolution halves at each reduction cell; cells concatenate 4 nodes
    assert sizes == [(64, 32, 32)] * 2 + [(128, 16, 16)] * 3 + [(256, 8, 8)] * 3


def test_search_bn_has_no_affine_parameters_and_pools_are_followed_by_bn():
    net = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4)).build_supernet(CIFAR)
    cell_bns = [m for c in net.cells for m in c.modules() if isinstance(m, nn.BatchNorm2d)]
    assert cell_bns and all(not bn.affine for bn in cell_bns)
    pool = make_op("max_pool_3x3", 4, 1, affine=False, search=True)
    assert isinstance(pool[1], nn.BatchNorm2d) and not pool[1].affine
    assert isinstance(make_op("max_pool_3x3", 4, 1, affine=True, search=False), nn.MaxPool2d)


def test_ops_keep_or_halve_the_spatial_size():
    x = torch.randn(2, 6, 8, 8)
    for name in CNN_OPS:
        for stride in (1, 2):
            y = make_op(name, 6, stride, affine=False, search=True)(x)
            assert y.shape == (2, 6, 8 // stride, 8 // stride), (name, stride)
    assert isinstance(make_op("skip_connect", 6, 2, affine=False, search=True), FactorizedReduce)
    assert isinstance(make_op("skip_connect", 6, 1, affine=False, search=True), nn.Identity)
    sep = make_op("sep_conv_3x3", 6, 1, affine=True, search=False)
    assert isinstance(sep, PreActivated) and sum(isinstance(m, nn.Conv2d) for m in sep.modules()) == 4
    dil = make_op("dil_conv_5x5", 6, 1, affine=True, search=False)
    assert [m.dilation for m in dil.modules() if isinstance(m, nn.Conv2d)] == [(2, 2), (1, 1)]


def test_mixed_edge_equals_the_textbook_weighted_sum_over_all_ops():
    """Skipping the zero op and sharing the ReLU must not change the result or alpha's gradient."""
    torch.manual_seed(0)
    for stride in (1, 2):
        edge = WeightedSumEdge(None, ops=CNN_OPS, channels=4, stride=stride, zero=frozenset({"none"}),
                               make_op=lambda name, c: make_op(name, c, stride, affine=False, search=True))
        x = torch.randn(3, 4, 8, 8)
        alpha = torch.randn(8, requires_grad=True)
        w = torch.softmax(alpha, 0)
        ours = edge(x, w, relu_x=torch.relu(x))
        assert torch.allclose(ours, edge(x, w), atol=1e-6)  # the shared ReLU is only a saving
        ops = dict(zip([CNN_OPS[c] for c in edge.columns], edge.ops))
        textbook = sum(w[i] * (ops[name](x) if name in ops else make_op(name, 4, stride, affine=False, search=True)(x))
                       for i, name in enumerate(CNN_OPS))
        assert torch.allclose(ours, textbook, atol=1e-6)
        g1, = torch.autograd.grad(ours.square().sum(), alpha, retain_graph=True)
        g2, = torch.autograd.grad(textbook.square().sum(), alpha)
        assert torch.allclose(g1, g2, rtol=1e-5, atol=1e-6)
        assert g1[0].abs() > 0  # the zero op's alpha still learns through the softmax


def test_reduction_layers_at_one_and_two_thirds():
    assert reduction_layers(8) == {2, 5}
    assert reduction_layers(20) == {6, 13}
    assert reduction_layers(5) == {1, 3}


def test_discrete_network_from_a_genotype():
    node = (("sep_conv_3x3", 0), ("skip_connect", 1))
    cell = Cell((node, (("max_pool_3x3", 0), ("dil_conv_3x3", 2)),
                 (("sep_conv_5x5", 3), ("avg_pool_3x3", 1)), (("skip_connect", 4), ("none", 0))), (2, 3, 4, 5))
    net = DartsCnnSpace(DartsCnnOptions(cells=3, channels=8)).build_network(
        Genotype({"normal": cell, "reduce": cell}), CIFAR)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    bns = [m for m in net.cells.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.affine for bn in bns)


def test_hard_sampled_weights_compute_only_the_chosen_op():
    """The path a GDAS-style relaxation takes: one op per edge, straight-through gradient."""
    torch.manual_seed(0)
    net = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4)).build_supernet(DataInfo((1, 8, 8), 10))
    alpha = torch.randn(2, 14, 8, requires_grad=True)
    soft = torch.softmax(alpha, -1)
    picks = torch.randint(0, 8, (2, 14))
    picks[0, 0] = 0  # one edge picks the zero op
    hard = torch.nn.functional.one_hot(picks, 8).to(soft.dtype)
    straight = hard - soft.detach() + soft  # values one-hot, gradient of the softmax
    kinds = ("normal", "reduce")
    full = MixingWeights({k: straight[i] for i, k in enumerate(kinds)})
    sparse = MixingWeights(full.weights, chosen={k: tuple(picks[i].tolist()) for i, k in enumerate(kinds)})
    x = torch.randn(4, 1, 8, 8)
    out_full, out_sparse = net(x, arch_weights=full), net(x, arch_weights=sparse)
    assert torch.allclose(out_full, out_sparse, atol=1e-5)
    g, = torch.autograd.grad(out_sparse.square().sum(), alpha)
    assert g.abs().sum() > 0


def test_recompute_and_memory_format_change_no_numbers():
    """Cell recomputation and channels-last give the loss and gradients of the plain network,
    also for weights swapped in by functional_call (as the DARTS architect does)."""
    from torch.func import functional_call

    results = []
    for channels_last, recompute in ((False, False), (True, False), (False, True), (True, True)):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, channels_last=channels_last,
                                              recompute_edges=recompute))
        net = space.build_supernet(DataInfo((3, 8, 8), 10)).double()
        alpha = torch.randn(2, 14, 8, dtype=torch.float64, requires_grad=True)
        mix = MixingWeights({"normal": torch.softmax(alpha[0], -1), "reduce": torch.softmax(alpha[1], -1)})
        names = [n for n, _ in net.named_parameters()]
        shifted = [(p.detach() + 0.01).requires_grad_() for p in net.parameters()]  # like w'
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
        loss = functional_call(net, dict(zip(names, shifted)), (x,), {"arch_weights": mix}).square().mean()
        grads = torch.autograd.grad(loss, [alpha, *shifted])
        results.append((loss.detach(), torch.cat([g.reshape(-1) for g in grads])))
    for loss, grads in results[1:]:
        assert torch.allclose(loss, results[0][0], rtol=1e-12)
        assert torch.allclose(grads, results[0][1], rtol=1e-9, atol=1e-12)


def test_a_narrow_imagenet_network_trains_channels_last_on_cpu():
    """The ImageNet network at channels 4, channels-last by default on CPU, gets the gradients of the
    contiguous one. torch 2.14.1's oneDNN computed the weight gradient of its first reduction's
    strided 1x1 convs (FactorizedReduce, 4 input channels) wrongly or crashed (SIGSEGV);
    nas_darts.layers.conv2d routes around it. In a subprocess, so a crash fails this test rather
    than the suite."""
    code = ("import torch\nfrom nas_core import DataInfo\nfrom nas_core.toolkit import Toolkit\n"
            "from nas_darts.cnn_space import DartsCnnSpace\nfrom nas_darts.options import DartsCnnOptions\n"
            "g = Toolkit.load().registries.genotypes['darts_v2'][0]\ngrads = []\n"
            "for channels_last in (None, False):\n"
            "    torch.manual_seed(0)\n"
            "    net = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, stem='imagenet', auxiliary=False,\n"
            "                        channels_last=channels_last)).build_network(g, DataInfo((3, 224, 224), 10))\n"
            "    out = net(torch.randn(2, 3, 224, 224))\n"
            "    (out[0] if isinstance(out, tuple) else out).sum().backward()\n"
            "    grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))\n"
            "print(float((grads[0] - grads[1]).abs().max() / grads[1].abs().max()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-500:]
    assert float(proc.stdout.strip()) < 1e-5


def test_search_drop_path_drops_each_edge_output_in_training_mode_only(monkeypatch):
    """space.search_drop_path (SNAS's search): every mixed edge's output goes through drop-path while
    training, at the constant rate; evaluation is untouched."""
    import nas_darts.cnn_space as cnn

    space = DartsCnnSpace(DartsCnnOptions(cells=2, channels=4, nodes=2, search_drop_path=0.3))
    net = space.build_supernet(DataInfo((3, 8, 8), 10))
    spec = space.arch_spec()
    mix = MixingWeights({t: torch.softmax(torch.randn(spec.shape(t)), -1) for t in spec.edges})
    rates = []
    monkeypatch.setattr(cnn, "drop_path", lambda x, p: rates.append(p) or x * 0)
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    reference = net(x, arch_weights=mix)
    assert rates == []
    net.train()
    dropped = net(x, arch_weights=mix)  # every edge dropped: each cell's nodes are all zero
    assert rates == [0.3] * (2 * 5) and not torch.allclose(dropped, reference)
