"""Layers that compute what torch's do, faster or in less memory where DARTS's search cell spends
them (docs/performance.md). Parameters, buffers and state_dict keys are those of the torch layers
they subclass.

- :class:`DilatedConv2d`: a dilated depthwise conv, on CPU, runs as an undilated conv whose kernel
  holds the same taps with zeros between them where that is measured faster.
- :func:`normalize`: affine-free batch norm in training mode that keeps its output for backward
  instead of its input. The mixed edge's weighted sum keeps that output anyway (for the gradient of
  alpha), so one tensor per op fewer is held in an architecture step. The fused path uses it; per
  op, its Python autograd function cost more time than it saved memory (docs/performance.md).
- :class:`MaxPool2d`: keeps no int64 indices (twice the memory of its float32 output); backward
  finds them again from the input, which the average pooling of the same edge keeps anyway.
"""

from __future__ import annotations

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


def spreads(x: Tensor, stride: Pair, groups: int, training: bool) -> bool:
    """Whether a dilated depthwise conv over ``x`` runs faster with its kernel spread. Measured on CPU
    (docs/performance.md): oneDNN's dilated depthwise conv over channels-last input takes 3-8x the
    time of the spread one, forward and backward, at stride 2 and on maps of up to 8x8; on larger
    maps at stride 1 the spread 5x5 kernel (9x9) is slower. Exact: a zero tap adds zero. Only in
    training passes (``training``, grad enabled), where a backward follows: the forward alone gains
    little, and a count of the architecture's multiply-adds (eval mode or no_grad) should see the
    dilated kernel."""
    return (training and torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dim() == 4 and groups == x.shape[1] > 1
            and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
            and (max(stride) > 1 or x.shape[-1] * x.shape[-2] <= 64))


def conv2d(x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int,
           training: bool) -> Tensor:
    """``F.conv2d`` without bias, dilated depthwise convs by the faster of two exact ways
    (:func:`spreads`; ``training``: the calling module's mode)."""
    if max(dilation) > 1 and spreads(x, stride, groups, training):
        return F.conv2d(x, spread(weight, dilation), None, stride, padding, 1, groups)
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


class DilatedConv2d(nn.Conv2d):
    """A bias-free dilated conv that runs through :func:`conv2d`; parameters as ``nn.Conv2d``'s."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if bias is not None or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        return conv2d(input, weight, self.stride, self.padding, self.dilation, self.groups, self.training)


class _OutputSavingBatchNorm(torch.autograd.Function):
    """Training-mode affine-free batch norm, ``(y, invstd)``, backward from ``y``: the gradient is
    ``invstd * (g - mean(g) - y * mean(g * y))``, torch's own backward given ``y`` as the normalized
    input (mean 0, inverse std 1) and the true ``invstd`` as its "weight". ``invstd`` is an output so
    that a double backward (the exact Hessian-vector product) sees its dependence on ``x``."""

    @staticmethod
    def forward(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, momentum: float,
                eps: float) -> tuple[Tensor, Tensor]:
        y, _, invstd = torch.native_batch_norm(x, None, None, running_mean, running_var, True, momentum, eps)
        return y, invstd

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*output)

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_invstd: Tensor | None) -> tuple:
        y, invstd = ctx.saved_tensors
        shape = (1, -1, *[1] * (y.dim() - 2))
        out = None
        if grad is not None and not torch.is_grad_enabled():
            out = torch.ops.aten.native_batch_norm_backward(
                grad, y, invstd, None, None, torch.zeros_like(invstd), torch.ones_like(invstd), True, 0.0,
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


class _IndexFreeMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, kernel: tuple, stride: tuple, padding: tuple) -> Tensor:
        return F.max_pool2d(x, kernel, stride, padding)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.args = inputs[1:]

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
