"""nas_darts.layers against torch's own layers: the same outputs, gradients (first and second order),
running statistics; and the memory they claim to save, counted in what autograd keeps."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from conftest import saved_bytes
from torch.utils._python_dispatch import TorchDispatchMode

from nas_darts import layers
from nas_darts.layers import (BatchNorm2d, MaxPool2d, RoutedConv2d, _from_phases, _to_phases, conv2d, crop,
                              dilated_route, normalize, relu_conv2d, sharing_subsamples, splits_weight_gradient,
                              spread)
from nas_darts.ops import Chain, FactorizedReduce, make_op


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def test_spread_places_each_tap_dilation_apart():
    w = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    assert spread(w, (2, 3)).squeeze().tolist() == [[1, 0, 0, 2], [0, 0, 0, 0], [3, 0, 0, 4]]


def expected_route(memory_format: str, stride: int, size: int, kernel: int, same: bool) -> str:
    if memory_format != "channels_last":
        return "torch"
    if same and stride == 2:
        return "subsample"
    if same and stride == 1 and (size > 8 or kernel == 5) and size % 2 == 0:
        return "phases"
    return "spread" if stride == 2 or (size <= 8 and kernel == 3) else "torch"


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [2, 4, 7, 8, 10, 12])
@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
@pytest.mark.parametrize("same", [True, False])
def test_dilated_conv_equals_torchs(kernel, stride, size, memory_format, same):
    torch.manual_seed(0)
    padding = kernel - 1 if same else 1  # "same": dilation 2 x (kernel - 1) / 2
    ours = RoutedConv2d(6, 6, kernel, stride=stride, padding=padding, dilation=2, groups=6, bias=False).double()
    theirs = nn.Conv2d(6, 6, kernel, stride=stride, padding=padding, dilation=2, groups=6, bias=False).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6, size, size, dtype=torch.float64)
    x = channels_last(x) if memory_format == "channels_last" else x
    if size + 2 * padding - 2 * (kernel - 1) < 1:
        pytest.skip("no output at this size")
    route = dilated_route(x, ours.weight, ours.stride, ours.padding, ours.dilation, 6, training=True)
    assert route == expected_route(memory_format, stride, size, kernel, same)
    g = torch.randn_like(theirs(x), memory_format=torch.contiguous_format)
    results = []
    for conv in (ours, theirs):
        xi = x.detach().requires_grad_()
        y = conv(xi)
        gx, gw = torch.autograd.grad(y, (xi, conv.weight), g, create_graph=True)
        # second order: the gradient of <gx, v> + <gw, u> (an exact Hessian-vector product goes through it)
        v, u = torch.ones_like(gx), torch.full_like(gw, 0.5)
        ggx, ggw = torch.autograd.grad((gx * v).sum() + (gw * u).sum(), (xi, conv.weight), allow_unused=True,
                                       materialize_grads=True)
        results.append((y, gx, gw, ggx, ggw))
    for a, b in zip(*results):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-12
    if memory_format == "channels_last":  # the layers after it run several times slower on another format
        assert results[0][0].is_contiguous(memory_format=torch.channels_last)


def test_the_phases_conv_passes_gradcheck_and_keeps_only_its_input():
    torch.manual_seed(0)
    conv = RoutedConv2d(3, 3, 5, padding=4, dilation=2, groups=3, bias=False).double()
    reference = nn.Conv2d(3, 3, 5, padding=4, dilation=2, groups=3, bias=False).double()
    x = channels_last(torch.randn(2, 3, 10, 12, dtype=torch.float64)).requires_grad_()
    assert dilated_route(x, conv.weight, conv.stride, conv.padding, conv.dilation, 3, training=True) == "phases"
    assert torch.autograd.gradcheck(conv, (x,)) and torch.autograd.gradgradcheck(conv, (x,))
    # the rearranged copy of x is made again in backward, not kept
    assert saved_bytes(conv, x) == saved_bytes(reference, x) == x.numel() * x.element_size()


def test_the_depthwise_convs_of_the_conv_ops_use_it_in_search_and_evaluation():
    for search in (True, False):
        op = make_op("dil_conv_5x5", 4, 2, affine=not search, search=search)
        assert type(op.body[0]) is RoutedConv2d and op.body[0].dilation == (2, 2)
        sep = make_op("sep_conv_3x3", 4, 1, affine=not search, search=search)
        assert [type(m) for m in sep.body if isinstance(m, nn.Conv2d) and m.groups > 1] == [RoutedConv2d] * 2


@pytest.mark.parametrize("size,kernel,dilation,stride,cropped", [
    (2, 5, 1, 1, (3, 1, 1)),  # a 5x5 over a 2x2 map: its 3x3 center
    (2, 3, 2, 1, (1, 0, 1)),  # a dilated 3x3 there: its center tap, an undilated 1x1
    (2, 5, 2, 2, (1, 0, 1)),
    (4, 5, 2, 1, (3, 2, 2)),  # a dilated 5x5 over 4x4: its 3x3 of dilation 2
    (4, 5, 2, 2, (3, 2, 2)),
    (2, 5, 1, 2, None),  # the dead taps at one end only: kept (an asymmetric padding would be needed)
    (8, 5, 1, 1, None),  # every tap reads the map
    (7, 5, 2, 1, None),  # "valid"-like padding 1: tap 0 reads padding only, but dropping it needs padding -1
])
def test_crop_drops_only_taps_that_read_padding(size, kernel, dilation, stride, cropped):
    """In training passes on CPU, ``conv2d`` crops the kernel to the taps that can read the map: the
    same outputs and gradients, first and second order, as torch's uncropped conv."""
    torch.manual_seed(0)
    padding = 1 if size == 7 else dilation * (kernel - 1) // 2
    x = channels_last(torch.randn(3, 6, size, size, dtype=torch.float64))
    weight = torch.randn(6, 1, kernel, kernel, dtype=torch.float64)
    args = ((stride, stride), (padding, padding), (dilation, dilation))
    w, p, d = crop(weight, x, *args)
    assert (None if w.shape == weight.shape else (w.shape[-1], p[0], d[0])) == cropped
    results = []
    for fn in (lambda x, w: conv2d(x, w, *args, 6, True), lambda x, w: F.conv2d(x, w, None, *args, 6)):
        xi, wi = x.detach().requires_grad_(), weight.detach().requires_grad_()
        y = fn(xi, wi)
        g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)
        gx, gw = torch.autograd.grad(y, (xi, wi), g, create_graph=True)
        ggx, ggw = torch.autograd.grad((gx.square().sum() + gw.square().sum()), (xi, wi), allow_unused=True,
                                       materialize_grads=True)
        results.append((y, gx, gw, ggx, ggw))
    for a, b in zip(*results):
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-12
    small = channels_last(torch.randn(1, 2, size, size, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, w: conv2d(x, w, *args, 2, True),
                                        (small, torch.randn(2, 1, kernel, kernel, dtype=torch.float64,
                                                            requires_grad=True)))


class WeightGradientWidths(TorchDispatchMode):
    """The kernel widths of the weight gradients that convolution backwards compute."""

    def __init__(self):
        super().__init__()
        self.widths = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default and args[-1][1]:
            self.widths.append(args[2].shape[-1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kernel, stride, padding, dilation, widths", [
    ((5, 5), 1, 2, 1, [3, 2]), ((5, 5), 2, 2, 1, [3, 2]), ((5, 5), 1, 4, 2, [3, 2]),
    ((5, 5), 3, 1, 2, [3, 3, 3]),  # the "spread" route: a 9x9 kernel
    ((3, 5), 1, (1, 2), 1, [3, 2]), ((7, 7), 1, 3, 1, [3, 3, 1]), ((4, 4), 1, 1, 1, [3, 1])])
def test_a_wide_depthwise_kernels_weight_gradient_by_column_blocks_is_torchs(monkeypatch, kernel, stride, padding,
                                                                          dilation, widths):
    monkeypatch.setattr(layers, "SPLIT_FROM_WIDTH", 1)
    monkeypatch.setattr(layers, "SPLIT_FROM_ELEMENTS", 0)
    conv = RoutedConv2d(3, 3, kernel, stride=stride, padding=padding, dilation=dilation, groups=3, bias=False).double()
    x = channels_last(torch.randn(2, 3, 9, 10, dtype=torch.float64)).requires_grad_()
    y = F.conv2d(x, conv.weight, None, stride, padding, dilation, 3)
    g = torch.randn_like(y)
    with WeightGradientWidths() as seen:
        ours = torch.autograd.grad(conv(x), (x, conv.weight), g)
    assert seen.widths == widths  # the blocks, and no whole-kernel weight gradient besides
    torchs = torch.autograd.grad(y, (x, conv.weight), g)
    for a, b in zip(ours, torchs):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max()
    # and its second derivatives (the exact Hessian-vector product differentiates this backward)
    assert torch.autograd.gradgradcheck(lambda x, w: conv2d(x, w, _pair(stride), _pair(padding), _pair(dilation), 3,
                                                            True), (x, conv.weight))


def test_the_weight_gradient_is_split_where_it_was_measured_to_pay():
    x = channels_last(torch.empty(64, 16, 32, 32))  # the paper config's first cells
    kernel = torch.empty(16, 1, 5, 5)
    assert splits_weight_gradient(x, kernel, 16, 32)
    assert splits_weight_gradient(x, kernel, 16, 8)
    assert not splits_weight_gradient(x, kernel, 16, 4)  # output maps of under 8 columns
    assert not splits_weight_gradient(x.contiguous(), kernel, 16, 32)  # only channels-last was measured
    assert not splits_weight_gradient(x, torch.empty(16, 1, 5, 3), 16, 32)  # 3 columns: fast already
    assert not splits_weight_gradient(x, torch.empty(32, 1, 5, 5), 16, 32)  # a channel multiplier
    assert not splits_weight_gradient(x, torch.empty(16, 16, 5, 5), 1, 32)  # a dense conv
    assert not splits_weight_gradient(channels_last(torch.empty(8, 16, 16, 16)), kernel, 16, 16)  # a small batch
    assert not splits_weight_gradient(x.to("meta"), kernel, 16, 32)  # CPU only


def test_the_routes_are_taken_where_the_rule_says(monkeypatch):
    calls = []
    original = F.conv2d

    def spy(input, weight, bias, stride, padding, dilation, groups):
        calls.append((tuple(input.shape[-2:]), tuple(weight.shape[-2:]), _pair(stride), _pair(dilation)))
        return original(input, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(F, "conv2d", spy)
    x = channels_last(torch.randn(2, 4, 8, 8))
    subsampled = RoutedConv2d(4, 4, 3, stride=2, padding=2, dilation=2, groups=4, bias=False)
    subsampled(x)
    subsampled(x.contiguous())
    with torch.no_grad():
        subsampled(x)
    subsampled.eval()
    subsampled(x)
    RoutedConv2d(4, 4, 3, stride=2, padding=1, dilation=2, groups=4, bias=False)(x)
    RoutedConv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False)(x)
    RoutedConv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False)(channels_last(torch.randn(2, 4, 16, 16)))
    # channels-last in training: the undilated 3x3 over every other pixel; contiguous, no grad, eval mode
    # (counts of multiply-adds): torch's dilated 3x3; other padding: spread to 5x5; stride 1 on 8x8:
    # spread; on 16x16: the undilated 3x3 over four 8x8 sub-images
    assert calls == [((4, 4), (3, 3), (1, 1), (1, 1)), ((8, 8), (3, 3), (2, 2), (2, 2)),
                     ((8, 8), (3, 3), (2, 2), (2, 2)), ((8, 8), (3, 3), (2, 2), (2, 2)),
                     ((8, 8), (5, 5), (2, 2), (1, 1)), ((8, 8), (5, 5), (1, 1), (1, 1)),
                     ((8, 8), (3, 3), (1, 1), (1, 1))]


@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "view"])
@pytest.mark.parametrize("dilation", [(2, 2), (3, 2)])
def test_the_phases_are_the_interleaved_sub_images_of_any_layout(layout, dilation):
    d_h, d_w = dilation
    x = torch.randn(3, 5, 13, 11)
    x = {"channels_last": channels_last(x[..., :12, :10]), "contiguous": x[..., :12, :10].contiguous(),
         "view": channels_last(x)[..., 1:, 1:][..., :12, :10]}[layout]
    phases = _to_phases(x, dilation)
    # batch entry n * d_h * d_w + i * d_w + j is the sub-image x[n, :, i::d_h, j::d_w]
    expected = torch.stack([x[:, :, i::d_h, j::d_w] for i in range(d_h) for j in range(d_w)], 1).flatten(0, 1)
    assert torch.equal(phases, expected) and phases.is_contiguous(memory_format=torch.channels_last)
    back = _from_phases(phases, dilation)
    assert torch.equal(back, x) and back.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(_from_phases(phases.contiguous(), dilation), x)


def _graph_nodes(t: torch.Tensor, name: str) -> int:
    seen, todo, count = set(), [t.grad_fn], 0
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__ == name
        todo += [next_node for next_node, _ in node.next_functions]
    return count


def test_convs_sharing_subsamples_read_one_copy_and_compute_the_same():
    """The stride-2 dilated convs and the strided 1x1 conv of a state's edges: within the block one
    subsampled copy of x (one slice of it in the graph, so one zero-filled gradient in backward)."""
    torch.manual_seed(0)
    convs = [RoutedConv2d(4, 4, k, stride=2, padding=2 * (k // 2), dilation=2, groups=4, bias=False).double()
             for k in (3, 5, 3)] + [RoutedConv2d(4, 6, 1, stride=2, bias=False).double()]
    x = channels_last(torch.randn(2, 4, 8, 8, dtype=torch.float64)).requires_grad_()
    results = []
    for shared in (False, True):
        with sharing_subsamples() if shared else contextlib.nullcontext():
            out = torch.cat([conv(x) for conv in convs], 1)
        slices = _graph_nodes(out, "SliceBackward0")
        results.append((out, torch.autograd.grad(out.square().sum(), x)[0], slices))
    (out, grad, slices), (out_shared, grad_shared, slices_shared) = results
    assert torch.equal(out, out_shared) and (grad - grad_shared).abs().max() < 1e-12
    assert slices == 4 * slices_shared > 0
    with sharing_subsamples():
        pass
    out_after = torch.cat([conv(x) for conv in convs], 1)  # the block's copies are not reused after it
    assert _graph_nodes(out_after, "SliceBackward0") == slices


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_the_stride_2_skip_keeps_the_layout_of_its_input(memory_format):
    """Its second 1x1 conv reads a view, x[:, :, 1:, 1:]: the layers after it run several times slower
    on another layout than the network's."""
    op = FactorizedReduce(8, 8, affine=False)
    x = torch.randn(2, 8, 8, 8).contiguous(memory_format=memory_format)
    assert op(x).is_contiguous(memory_format=memory_format)
    with sharing_subsamples():
        assert op(x).is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("c_in, size, batch", [(2, 8, 2), (4, 8, 2), (5, 16, 8), (7, 32, 2)])
def test_factorized_reduce_gets_the_weight_gradient_right_channels_last(c_in, size, batch):
    """FactorizedReduce's strided 1x1 convs over channels-last float32 input of under 8 channels:
    torch 2.14.1's own conv got these weight gradients wrong on AVX2 CPUs (oneDNN issue #6035; some
    sizes hang or corrupt the heap instead, so none of those here). Against float64, contiguous."""
    torch.manual_seed(0)
    op = FactorizedReduce(c_in, 8, affine=False)
    x = torch.randn(batch, c_in, size, size)
    reference = copy.deepcopy(op).double()
    y = torch.randn(batch, 8, size // 2, size // 2)
    (op(channels_last(x)) * channels_last(y)).sum().backward()
    (reference(x.double()) * y.double()).sum().backward()
    for ours, theirs in ((op.conv_1, reference.conv_1), (op.conv_2, reference.conv_2)):
        assert torch.allclose(ours.weight.grad.double(), theirs.weight.grad, rtol=1e-4, atol=1e-4)


def test_strided_1x1_convs_run_at_stride_1_over_the_pixels_they_read(monkeypatch):
    """The route of a strided 1x1 conv: torch's conv at stride 1 over x[..., ::s, ::s], the same
    numbers as torch's strided one (float64, where torch's own is right)."""
    conv = RoutedConv2d(3, 5, 1, stride=2, bias=False).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    calls = []
    real = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda inp, w, b, stride, *rest: calls.append((inp.shape, stride))
                        or real(inp, w, b, stride, *rest))
    out = conv(x)
    monkeypatch.undo()
    assert calls == [((2, 3, 5, 5), 1)]
    assert torch.equal(out, F.conv2d(x, conv.weight, stride=2))


@pytest.mark.parametrize("running", [True, False])
@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
def test_normalize_equals_torchs_batch_norm(running, memory_format):
    torch.manual_seed(0)
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64) * 3 + 1
    x = channels_last(x) if memory_format == "channels_last" else x
    g = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    results = []
    for fn in (normalize, lambda x, m, v, momentum, eps: F.batch_norm(x, m, v, None, None, True, momentum, eps)):
        stats = (torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)) if running else (None, None)
        for _ in range(2):  # running statistics over two batches
            xi = x.detach().requires_grad_()
            y = fn(xi, *stats, 0.1, 1e-5)
            gx, = torch.autograd.grad(y, xi, g, create_graph=True)
            ggx, = torch.autograd.grad((gx * gx).sum(), xi)
        results.append((y, gx, ggx, *(stats if running else ())))
    for a, b in zip(*results):
        assert (a - b).abs().max().item() < 1e-12


def test_normalize_passes_gradcheck_first_and_second_order():
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda x: normalize(x, None, None, 0.0, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_normalize_keeps_its_output_not_its_input():
    """An edge's ``w * bn(x)`` with alpha's weight ``w`` requiring grad: torch's BN keeps ``x`` and the
    product keeps ``y``; ours keeps ``y`` alone, for both."""
    x = torch.randn(8, 4, 16, 16, requires_grad=True)
    w = torch.tensor(0.3, requires_grad=True)
    theirs = saved_bytes(lambda x: w * F.batch_norm(x, None, None, training=True), x)
    ours = saved_bytes(lambda x: w * normalize(x, None, None, 0.0, 1e-5), x)
    assert ours == x.numel() * 4 and theirs == 2 * ours


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [True, False])
def test_the_batch_norm_module_equals_torchs_and_keeps_its_output(momentum, track):
    """``BatchNorm2d`` (every affine-free BN of the search ops): torch's outputs, gradients of both
    orders, running statistics and batch count, in training and then eval mode; in an arch pass's
    ``w * bn(x)`` autograd keeps one activation, not two."""
    torch.manual_seed(0)
    theirs = nn.BatchNorm2d(5, affine=False, momentum=momentum, track_running_stats=track).double()
    ours = BatchNorm2d(5, affine=False, momentum=momentum, track_running_stats=track).double()
    g = torch.randn(4, 5, 6, 6, dtype=torch.float64)
    for step in range(3):
        x = channels_last(torch.randn(4, 5, 6, 6, dtype=torch.float64) * (step + 1) + step)
        results = []
        for bn in (theirs, ours):
            xi = x.detach().requires_grad_()
            y = bn(xi)
            gx, = torch.autograd.grad(y, xi, g, create_graph=True)
            ggx, = torch.autograd.grad((gx * gx).sum(), xi)
            results.append((y, gx, ggx, *bn.state_dict().values()))
        for a, b in zip(*results):
            assert (a.double() - b.double()).abs().max().item() < 1e-12
    assert theirs.state_dict().keys() == ours.state_dict().keys()
    x = torch.randn(4, 5, 6, 6, dtype=torch.float64)
    assert torch.equal(theirs.eval()(x), ours.eval()(x))
    ours.train()
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(8, 5, 16, 16, dtype=torch.float64, requires_grad=True)
    assert saved_bytes(lambda x: w * ours(x), x) == x.numel() * 8
    assert saved_bytes(lambda x: w * theirs.train()(x), x) == 2 * x.numel() * 8


def test_the_search_ops_use_the_output_keeping_batch_norm():
    for name in ("max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "dil_conv_5x5"):
        op = make_op(name, 4, 1, affine=False, search=True)
        assert any(type(m) is BatchNorm2d for m in op.modules()), name
    assert type(make_op("skip_connect", 4, 2, affine=False, search=True).bn) is BatchNorm2d


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
def test_max_pool_equals_torchs_and_keeps_no_indices(stride, memory_format):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    x = channels_last(x) if memory_format == "channels_last" else x
    results = []
    for pool in (MaxPool2d(3, stride, 1), nn.MaxPool2d(3, stride, 1)):
        xi = x.detach().requires_grad_()
        y = pool(xi)
        g = torch.arange(y.numel(), dtype=torch.float64).view_as(y).requires_grad_()
        gx, = torch.autograd.grad(y, xi, g, create_graph=True)
        gg, = torch.autograd.grad((gx * torch.linspace(-1, 1, gx.numel(), dtype=torch.float64).view_as(gx)).sum(), g)
        results.append((y, gx, gg))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    theirs = saved_bytes(nn.MaxPool2d(3, stride, 1), x.requires_grad_())
    assert saved_bytes(MaxPool2d(3, stride, 1), x) == x.numel() * 8 < theirs  # the input alone


@pytest.mark.parametrize("kernel,stride,groups", [(3, 1, 6), (5, 2, 6), (1, 1, 1), (3, 2, 2)])
@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
def test_relu_conv_equals_torchs_relu_then_conv_bit_for_bit(kernel, stride, groups, memory_format):
    """The same calls as autograd's for ``conv(relu(y))``, so the same bits, first order; second order
    (the exact Hessian-vector product differentiates the backward) to rounding, and gradgradcheck."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, kernel, stride, kernel // 2, groups=groups, bias=False).double()
    y = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    y = channels_last(y) if memory_format == "channels_last" else y
    results = []
    for fn in (lambda y: relu_conv2d(y, conv.weight, conv.stride, conv.padding, groups), lambda y: conv(F.relu(y))):
        yi = y.detach().requires_grad_()
        out = fn(yi)
        g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(out, (yi, conv.weight), g, create_graph=True)
        second = torch.autograd.grad(sum((t * t).sum() for t in grads), (yi, conv.weight))
        results.append(((out, *grads), second))
    assert all(torch.equal(a, b) for a, b in zip(results[0][0], results[1][0]))
    assert all((a - b).abs().max().item() < 1e-12 for a, b in zip(results[0][1], results[1][1]))
    small = torch.randn(1, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda y, w: relu_conv2d(y, w, conv.stride, conv.padding, groups)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (small, conv.weight.detach().requires_grad_()))


def test_relu_conv_crops_a_kernel_larger_than_the_map_exactly():
    torch.manual_seed(0)
    y = channels_last(torch.randn(3, 4, 2, 2, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(4, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    ours = relu_conv2d(y, weight, (1, 1), (2, 2), 4)
    theirs = F.conv2d(F.relu(y), weight, None, 1, 2, 1, 4)
    g = torch.randn_like(theirs)
    for a, b in zip((ours, *torch.autograd.grad(ours, (y, weight), g)),
                    (theirs, *torch.autograd.grad(theirs, (y, weight), g))):
        assert (a - b).abs().max().item() < 1e-12
    assert torch.autograd.gradgradcheck(lambda y, w: relu_conv2d(y, w, (1, 1), (2, 2), 4), (y, weight))


def test_the_sep_conv_keeps_one_activation_fewer_and_computes_the_same():
    """The sep conv's inner ReLU runs inside the second depthwise conv (``Chain``): the same outputs and
    gradients bit for bit as ``nn.Sequential`` over the same modules, the same state_dict, and one
    activation fewer kept in an architecture pass's ``w * op(x)``."""
    torch.manual_seed(0)
    op = make_op("sep_conv_3x3", 8, 1, affine=False, search=True).double()
    assert type(op.body) is Chain
    plain = copy.deepcopy(op)
    plain.body = nn.Sequential(*plain.body)
    assert op.state_dict().keys() == plain.state_dict().keys()
    x = channels_last(torch.randn(4, 8, 16, 16, dtype=torch.float64))
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    results = []
    for module in (op, plain):
        xi = x.detach().requires_grad_()
        out = w * module(xi)
        results.append((out, *torch.autograd.grad(out.square().sum(), (xi, w, *module.parameters()))))
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert op.state_dict().keys() == plain.state_dict().keys()
    for a, b in zip(op.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    activation = x.numel() * 8
    xr = x.requires_grad_()
    assert saved_bytes(lambda x: w * plain(x), xr) - saved_bytes(lambda x: w * op(x), xr) == activation
    op.eval()  # eval mode: the BN keeps no output, and the chain runs as nn.Sequential
    assert torch.equal(op(x), plain.eval()(x))
