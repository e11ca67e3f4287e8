"""Layers that compute what torch's do, faster or in less memory where DARTS's search cell spends
them (docs/performance.md). Parameters, buffers and state_dict keys are those of the torch layers
they subclass.

- :class:`RoutedConv2d`: a conv that, on CPU, runs by an exact route around oneDNN kernels that are
  slow or wrong (:func:`conv2d`): a dilated depthwise conv as an undilated one over the pixels it
  reads (subsampled, or split into interleaved sub-images) or with a kernel that holds the same taps
  with zeros between them, where that is measured faster; a strided 1x1 conv at stride 1 over the
  pixels it reads.
- :func:`normalize`, :class:`BatchNorm2d`: affine-free batch norm in training mode that keeps its
  output for backward instead of its input. The mixed edge's weighted sum keeps that output anyway
  (for the gradient of alpha), so one tensor per op fewer is held in an architecture step.
- :func:`conv_backward`: the weight gradient of a depthwise kernel wider than 3 columns by blocks of 3
  columns on CPU, where oneDNN's own is several times slower (the backward of the convs above).
- :func:`crop`: in training passes on CPU, a kernel larger than the map it runs over (a 5x5 on the
  2x2 maps of the demo's last cells) without the taps at its borders that read only padding.
- :func:`relu_conv2d`: ``conv2d(relu(y))`` that keeps ``y`` for backward, not ``relu(y)``, and computes
  the ReLU again there: after an output-keeping BN, whose output is kept anyway, one tensor fewer.
- :class:`MaxPool2d`: keeps no int64 indices (twice the memory of its float32 output); backward
  finds them again from the input, which the average pooling of the same edge keeps anyway.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pair = tuple[int, int]


def spread(weight: Tensor, dilation: Pair) -> Tensor:
    """A dilated kernel as the undilated one that reads the same pixels: its taps ``dilation`` apart,
    zeros between them (differentiable: the gradient of each tap is that of its place)."""
    (k_h, k_w), (d_h, d_w) = weight.shape[-2:], dilation
    out = weight.new_zeros(*weight.shape[:-2], d_h * (k_h - 1) + 1, d_w * (k_w - 1) + 1)
    out[..., ::d_h, ::d_w] = weight
    return out


def _half(weight: Tensor) -> Pair:
    """The "same" padding of the undilated kernel."""
    return (weight.shape[-2] - 1) // 2, (weight.shape[-1] - 1) // 2


def _same_padding(weight: Tensor, padding: Pair, dilation: Pair) -> bool:
    return all(k % 2 == 1 and p == d * (k - 1) // 2 for k, p, d in zip(weight.shape[-2:], padding, dilation))


def _cpu_training_pass(x: Tensor, training: bool) -> bool:
    """Whether a conv over ``x`` runs in a training pass on CPU (training mode, grad enabled: a backward
    follows), where the exact routes below pay. Elsewhere torch's own conv runs, so that a count of
    the architecture's multiply-adds (eval mode or no_grad) sees the whole, dilated kernel."""
    return training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dim() == 4


def dilated_route(x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int,
                  training: bool) -> str:
    """How :func:`conv2d` computes a dilated depthwise conv over ``x``: ``"subsample"``, ``"phases"``,
    ``"spread"`` or ``"torch"``, its own dilated kernel. Measured on CPU (``benchmarks/dilated_conv.py``,
    docs/performance.md): oneDNN's dilated depthwise conv over channels-last input, forward and
    backward, takes 2-8x the time of an undilated one reading the same pixels. Each route is exact
    (the same products; a spread kernel's zero taps add zero):

    - ``"subsample"`` (stride = dilation, "same" padding): the conv reads only every ``dilation``-th
      row and column, so it is the undilated kernel over that subsampled input;
    - ``"phases"`` (stride 1, "same" padding, maps that the dilation divides; for 3x3 kernels only
      maps over 8x8): the ``dilation[0] * dilation[1]`` interleaved sub-images are each convolved by
      the undilated kernel, as one batch, and interleaved back (one copy of the input each way);
    - ``"spread"`` (other strides over 1; 3x3 kernels on maps of up to 8x8, where the phases are too
      small to gain): the undilated kernel that holds the taps with zeros between them
      (:func:`spread`).

    Only in training passes (``training``, grad enabled), where a backward follows: the forward alone
    gains little, and a count of the architecture's multiply-adds (eval mode or no_grad) should see
    the dilated kernel."""
    if not (max(dilation) > 1 and _cpu_training_pass(x, training) and groups == x.shape[1] > 1
            and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
        return "torch"
    same = _same_padding(weight, padding, dilation)
    if same and tuple(stride) == tuple(dilation):
        return "subsample"
    small = x.shape[-1] * x.shape[-2] <= 64
    large_kernel = max(weight.shape[-2:]) > 3
    if (same and max(stride) == 1 and (large_kernel or not small)
            and x.shape[-2] % dilation[0] == 0 and x.shape[-1] % dilation[1] == 0):
        return "phases"
    return "spread" if max(stride) > 1 or (small and not large_kernel) else "torch"


def _to_phases(x: Tensor, dilation: Pair) -> Tensor:
    """(N, C, H, W) -> (N * d_h * d_w, C, H / d_h, W / d_w): the sub-images ``x[..., i::d_h, j::d_w]``,
    channels-last, by one copy. The sub-images are a strided view of ``x`` in any layout (as one call,
    not a chain of permutes and reshapes: a search step makes hundreds of these)."""
    n, c, h, w = x.shape
    d_h, d_w = dilation
    s_n, s_c, s_h, s_w = x.stride()
    # element (n, i, j, a, b, c) is x[n, c, a * d_h + i, b * d_w + j]
    view = x.as_strided((n, d_h, d_w, h // d_h, w // d_w, c), (s_n, s_h, s_w, d_h * s_h, d_w * s_w, s_c))
    return view.reshape(n * d_h * d_w, h // d_h, w // d_w, c).permute(0, 3, 1, 2)


def _from_phases(y: Tensor, dilation: Pair) -> Tensor:
    """The inverse of :func:`_to_phases`, channels-last."""
    d_h, d_w = dilation
    b, c, h, w = y.shape
    s_b, s_c, s_h, s_w = y.stride()
    # element (n, a, i, b, j, c) is y[(n * d_h + i) * d_w + j, c, a, b]
    view = y.as_strided((b // (d_h * d_w), h, d_h, w, d_w, c), (d_h * d_w * s_b, s_h, d_w * s_b, s_w, s_b, s_c))
    return view.reshape(-1, h * d_h, w * d_w, c).permute(0, 3, 1, 2)


#: The widest depthwise kernel whose weight gradient oneDNN computes fast on CPU (torch 2.14.1, AVX2,
#: channels-last input). A wider one's takes 2-3x as long as the weight gradients of its blocks of 3
#: columns where maps are wide and batches large: at the paper config a 5x5's took 4.2 ms, a 5x3's
#: 0.35 ms. Over maps narrower than 8 columns, in small tensors, and for kernels with a channel
#: multiplier (several output channels per input channel), oneDNN's own is as fast or faster
#: (benchmarks/depthwise_backward.py).
FAST_KERNEL_WIDTH = 3
SPLIT_FROM_WIDTH, SPLIT_FROM_ELEMENTS = 8, 1 << 17


def splits_weight_gradient(x: Tensor, weight: Tensor, groups: int, out_width: int) -> bool:
    """Whether :func:`conv_backward` computes this conv's weight gradient in column blocks: a depthwise
    kernel wider than :data:`FAST_KERNEL_WIDTH` over channels-last input on CPU, with output maps of
    at least :data:`SPLIT_FROM_WIDTH` columns and at least :data:`SPLIT_FROM_ELEMENTS` input elements."""
    return (x.device.type == "cpu" and x.dim() == 4 and groups > 1 and groups == x.shape[1] == weight.shape[0]
            and weight.shape[1] == 1 and weight.shape[-1] > FAST_KERNEL_WIDTH and x.stride(1) < x.stride(3)
            and out_width >= SPLIT_FROM_WIDTH and x.numel() >= SPLIT_FROM_ELEMENTS)


def conv_backward(grad: Tensor, x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair,
                  groups: int, mask: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of a bias-free conv's input and weight (those ``mask`` asks for), as
    ``aten.convolution_backward`` gives them; the weight's by :func:`weight_gradient_by_blocks` where
    :func:`splits_weight_gradient`. Differentiable, for a double backward."""
    split = mask[1] and splits_weight_gradient(x, weight, groups, grad.shape[-1])
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], groups,
        [mask[0], mask[1] and not split, False])
    if split:
        grad_weight = weight_gradient_by_blocks(grad, x, weight, stride, padding, dilation, groups)
    return grad_x, grad_weight


def weight_gradient_by_blocks(grad: Tensor, x: Tensor, weight: Tensor, stride: Pair, padding: Pair,
                              dilation: Pair, groups: int) -> Tensor:
    """A bias-free conv's weight gradient by blocks of at most :data:`FAST_KERNEL_WIDTH` columns, each the
    weight gradient of that block's conv over the columns of ``x`` it reads. Exact: the same products,
    summed in another order."""
    (p_h, p_w), (s_w, d_w), out_w = padding, (stride[1], dilation[1]), grad.shape[-1]
    padded = F.pad(x, (p_w, p_w))  # then each block reads its columns unpadded
    blocks = []
    for first in range(0, weight.shape[-1], FAST_KERNEL_WIDTH):
        block = weight[..., first:first + FAST_KERNEL_WIDTH]
        # the columns that block's taps read, from its first tap at the first output to its last at the last
        read = padded[..., first * d_w:first * d_w + (out_w - 1) * s_w + (block.shape[-1] - 1) * d_w + 1]
        blocks.append(torch.ops.aten.convolution_backward(
            grad, read, block, None, list(stride), [p_h, 0], list(dilation), False, [0, 0], groups,
            [False, True, False])[1])
    return torch.cat(blocks, -1)


class _Conv(torch.autograd.Function):
    """A bias-free conv whose backward is :func:`conv_backward`'s."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> Tensor:
        ctx.args = stride, padding, dilation, groups
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        grad_x, grad_weight = conv_backward(grad, x, weight, *ctx.args, ctx.needs_input_grad[:2])
        return grad_x, grad_weight, None, None, None, None


def _conv(x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int,
          training: bool) -> Tensor:
    """``F.conv2d`` without bias; through :class:`_Conv` in a CPU training pass whose weight gradient
    :func:`conv_backward` splits."""
    if _cpu_training_pass(x, training):
        out_width = _output_size(x.shape[-1], weight.shape[-1], stride[1], padding[1], dilation[1])
        if splits_weight_gradient(x, weight, groups, out_width):
            return _Conv.apply(x, weight, tuple(stride), tuple(padding), tuple(dilation), groups)
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


# The autograd functions here and in fused.py define forward(ctx, ...), not setup_context: with
# setup_context, every call binds its arguments through inspect.signature (about 25 us, and a demo
# search step makes over 2,000 such calls).
class _PhaseConv(torch.autograd.Function):
    """A stride-1 dilated conv with "same" padding as the undilated kernel over the interleaved
    sub-images of ``x`` (:func:`_to_phases`), batched, interleaved back. Keeps ``x`` for backward,
    not its rearranged copy: the ops of a search edge keep ``x`` anyway."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, dilation: Pair, groups: int) -> Tensor:
        ctx.dilation, ctx.groups = dilation, groups
        ctx.save_for_backward(x, weight)
        return _from_phases(F.conv2d(_to_phases(x, dilation), weight, None, 1, _half(weight), 1, groups), dilation)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        mask = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # differentiable: a double backward (the exact Hessian-vector product) goes through it
        grad_sub, grad_weight = conv_backward(_to_phases(grad, ctx.dilation), _to_phases(x, ctx.dilation), weight,
                                              (1, 1), _half(weight), (1, 1), ctx.groups, mask)
        grad_x = _from_phases(grad_sub, ctx.dilation) if grad_sub is not None else None
        return grad_x, grad_weight, None, None


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """A conv's output length along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _live_taps(size: int, out: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """How many taps at each end of one axis of a kernel read only padding, for every output position
    (the same number at both ends, or 0)."""
    # tap i reads x[o * stride + i * dilation - padding] for o < out: from its first output to its last
    first = next((i for i in range(kernel) if i * dilation - padding + (out - 1) * stride >= 0), kernel)
    last = next((i for i in reversed(range(kernel)) if i * dilation - padding <= size - 1), -1)
    ends = first if first == kernel - 1 - last and first <= last else 0
    return min(ends, padding // dilation)  # the cropped kernel's padding, padding - ends * dilation, is >= 0


def crop(weight: Tensor, x: Tensor, stride: Pair, padding: Pair, dilation: Pair) -> tuple[Tensor, Pair, Pair]:
    """The kernel without the taps at its borders that read only padding over ``x`` (a 5x5 over a 2x2
    map: its 3x3 center; a 3x3 of dilation 2 there: its center tap), with the padding and dilation
    that give the same output. Exact: a dropped tap multiplies only zeros, and its gradient, zero, is
    what the slice's backward gives it. On CPU oneDNN's depthwise convolutions with a kernel larger than
    the map are several times slower than with the cropped one (docs/performance.md)."""
    (h, w), (k_h, k_w) = x.shape[-2:], weight.shape[-2:]
    if k_h == k_w == 1:
        return weight, padding, dilation
    o_h = _output_size(h, k_h, stride[0], padding[0], dilation[0])
    o_w = _output_size(w, k_w, stride[1], padding[1], dilation[1])
    if o_h < 1 or o_w < 1:
        return weight, padding, dilation
    c_h = _live_taps(h, o_h, k_h, stride[0], padding[0], dilation[0])
    c_w = _live_taps(w, o_w, k_w, stride[1], padding[1], dilation[1])
    if not (c_h or c_w):
        return weight, padding, dilation
    weight = weight[..., c_h:k_h - c_h, c_w:k_w - c_w]
    padding = (padding[0] - c_h * dilation[0], padding[1] - c_w * dilation[1])
    # one tap left on an axis: its dilation no longer matters (an undilated kernel takes faster kernels)
    dilation = (1 if weight.shape[-2] == 1 else dilation[0], 1 if weight.shape[-1] == 1 else dilation[1])
    return weight, padding, dilation


_SHARED_SUBSAMPLES: ContextVar[dict | None] = ContextVar("shared_subsamples", default=None)


@contextlib.contextmanager
def sharing_subsamples() -> Iterator[None]:
    """Within this block the convs that read the same tensor at the same step (the stride-2 edges
    leaving a state: their dilated convs and strided 1x1 convs, :func:`conv2d`) share one subsampled
    copy of it. Backward then makes one full-size gradient of it, not one per conv, each zero but
    at every step-th pixel: that zero filling had been 4 % of a darts_2nd step at the paper config."""
    token = _SHARED_SUBSAMPLES.set({})
    try:
        yield
    finally:
        _SHARED_SUBSAMPLES.reset(token)


def _subsampled(x: Tensor, step: Pair) -> Tensor:
    """``x[:, :, ::step[0], ::step[1]]`` as a dense tensor in ``x``'s layout; shared within
    :func:`sharing_subsamples`."""
    memo, key = _SHARED_SUBSAMPLES.get(), (id(x), step)
    if memo is not None and key in memo:
        return memo[key][1]
    # x may be a view (FactorizedReduce's x[:, :, 1:, 1:]): its layout is where its channels lie
    channels_last = x.shape[1] > 1 and x.stride(1) < x.stride(3)
    sub = x[:, :, ::step[0], ::step[1]].contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if memo is not None:
        memo[key] = (x, sub)  # x held too: its id is not reused while the memo lives
    return sub


def conv2d(x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int,
           training: bool) -> Tensor:
    """``F.conv2d`` without bias; a dilated depthwise conv by the fastest exact route measured
    (:func:`dilated_route`; ``training``: the calling module's mode); on CPU, a strided 1x1 conv
    without padding as the stride-1 conv over the pixels it reads. torch 2.14.1's oneDNN computes the
    weight gradient of a strided 1x1 conv over channels-last input of under 8 channels (AVX2; one
    SIMD block) wrongly, or hangs, or corrupts the heap (oneDNN issue #6035, its "rtus" workspace);
    at stride 1 it takes another kernel, which is right. In training passes on CPU, a kernel larger
    than the map loses its taps that read only padding first (:func:`crop`)."""
    if _cpu_training_pass(x, training):
        weight, padding, dilation = crop(weight, x, tuple(stride), tuple(padding), tuple(dilation))
    if (x.device.type == "cpu" and weight.shape[-2:] == (1, 1) and max(stride) > 1
            and tuple(padding) == (0, 0) and x.dim() == 4):
        return F.conv2d(_subsampled(x, tuple(stride)), weight, None, 1, 0, 1, groups)
    route = dilated_route(x, weight, stride, padding, dilation, groups, training)
    if route == "subsample":
        return _conv(_subsampled(x, tuple(dilation)), weight, (1, 1), _half(weight), (1, 1), groups, training)
    if route == "phases":
        return _PhaseConv.apply(x, weight, tuple(dilation), groups)
    if route == "spread":
        return _conv(x, spread(weight, dilation), stride, padding, (1, 1), groups, training)
    return _conv(x, weight, stride, padding, dilation, groups, training)


class RoutedConv2d(nn.Conv2d):
    """A bias-free conv that runs through :func:`conv2d`; parameters and state_dict as ``nn.Conv2d``'s."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if bias is not None or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        return conv2d(input, weight, self.stride, self.padding, self.dilation, self.groups, self.training)


@functools.lru_cache(maxsize=64)
def _unit_statistics(channels: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean 0 and inverse std 1 per channel, read-only constants (made once: a step makes thousands of
    backward calls)."""
    return torch.zeros(channels, dtype=dtype, device=device), torch.ones(channels, dtype=dtype, device=device)


class _OutputSavingBatchNorm(torch.autograd.Function):
    """Training-mode affine-free batch norm, ``(y, invstd)``, backward from ``y``: the gradient is
    ``invstd * (g - mean(g) - y * mean(g * y))``, torch's own backward given ``y`` as the normalized
    input (mean 0, inverse std 1) and the true ``invstd`` as its "weight". ``invstd`` is an output so
    that a double backward (the exact Hessian-vector product) sees its dependence on ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, momentum: float,
                eps: float) -> tuple[Tensor, Tensor]:
        y, _, invstd = torch.native_batch_norm(x, None, None, running_mean, running_var, True, momentum, eps)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(y, invstd)
        return y, invstd

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_invstd: Tensor | None) -> tuple:
        y, invstd = ctx.saved_tensors
        shape = (1, -1, *[1] * (y.dim() - 2))
        out = None
        if grad is not None and not torch.is_grad_enabled():
            zero, one = _unit_statistics(invstd.shape[0], invstd.dtype, invstd.device)
            out = torch.ops.aten.native_batch_norm_backward(grad, y, invstd, None, None, zero, one, True, 0.0,
                                                            [True, False, False])[0]
        elif grad is not None:
            # a double backward follows: torch's formula would differentiate y's batch statistics
            # too, which are constants here, so the same gradient is written out
            dims = [d for d in range(y.dim()) if d != 1]
            out = (grad - grad.mean(dims, keepdim=True) - y * (grad * y).mean(dims, keepdim=True)) * invstd.view(shape)
        if grad_invstd is not None:  # d invstd / dx = -invstd^2 y / m, m values per channel
            term = y * (grad_invstd * invstd.square() / -(y.numel() // y.shape[1])).view(shape)
            out = term if out is None else out + term
        return out, None, None, None, None


def normalize(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, momentum: float,
              eps: float) -> Tensor:
    """``F.batch_norm(x, running_mean, running_var, None, None, True, momentum, eps)``, keeping its
    output for backward instead of its input."""
    return _OutputSavingBatchNorm.apply(x, running_mean, running_var, momentum, eps)[0]


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that, affine-free and in training mode, runs :func:`normalize`: the same
    output and running statistics, its output kept for backward instead of its input."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.affine or x.dim() != 4:
            return super().forward(x)
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # a cumulative moving average, as torch's
                momentum = 1.0 / float(self.num_batches_tracked)
            return normalize(x, self.running_mean, self.running_var, momentum, self.eps)
        return normalize(x, None, None, 0.0, self.eps)


class _ReLUConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> Tensor:
        ctx.args = stride, padding, dilation, groups
        ctx.save_for_backward(y, weight)
        return F.conv2d(F.relu(y), weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        y, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        mask = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # the calls autograd makes for relu and conv2d, given the same tensors: the same bits (but for
        # the weight gradient of a wide depthwise kernel, conv_backward's); and differentiable, relu(y)
        # included, for a double backward (the exact Hessian-vector product)
        grad_r, grad_weight = conv_backward(grad, F.relu(y), weight, stride, padding, dilation, groups, mask)
        grad_y = torch.ops.aten.threshold_backward(grad_r, y, 0) if grad_r is not None else None
        return grad_y, grad_weight, None, None, None, None


def relu_conv2d(y: Tensor, weight: Tensor, stride: Pair, padding: Pair, groups: int) -> Tensor:
    """``F.conv2d(relu(y), weight)``, bias-free and undilated, keeping ``y`` for backward instead of
    ``relu(y)``: it pays where ``y`` is kept anyway (an output-keeping BN's output)."""
    stride, padding, dilation = tuple(stride), tuple(padding), (1, 1)
    if _cpu_training_pass(y, training=True):  # it runs in training passes only (ops.relu_in_conv)
        weight, padding, dilation = crop(weight, y, stride, padding, dilation)
    return _ReLUConv.apply(y, weight, stride, padding, dilation, groups)


def relu_conv_fusable(conv: nn.Module) -> bool:
    """Whether :func:`relu_conv2d` computes ``conv`` as it would itself (``conv2d``'s routes aside)."""
    return (type(conv) in (nn.Conv2d, RoutedConv2d) and conv.bias is None and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and conv.dilation == (1, 1)
            and (conv.kernel_size != (1, 1) or conv.stride == (1, 1)))


def keeps_output(bn: nn.Module) -> bool:
    """Whether ``bn`` (now, in its mode) keeps its output for backward (:class:`BatchNorm2d`)."""
    return isinstance(bn, BatchNorm2d) and bn.training and not bn.affine


class _IndexFreeMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: tuple, stride: tuple, padding: tuple) -> Tensor:
        ctx.save_for_backward(x)
        ctx.args = kernel, stride, padding
        return F.max_pool2d(x, kernel, stride, padding)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        x, = ctx.saved_tensors
        kernel, stride, padding = ctx.args
        with torch.no_grad():
            _, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding)
        # differentiable in grad: a double backward goes through it
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, kernel, stride, padding, [1, 1], False,
                                                               indices), None, None, None


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps no indices for backward: it finds them again from its input."""

    def forward(self, x: Tensor) -> Tensor:
        if self.return_indices or self.ceil_mode or self.dilation not in (1, (1, 1)) or x.dim() != 4:
            return super().forward(x)
        pair = nn.modules.utils._pair
        return _IndexFreeMaxPool.apply(x, pair(self.kernel_size), pair(self.stride or self.kernel_size),
                                       pair(self.padding))
