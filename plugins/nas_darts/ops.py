"""The DARTS candidate operations (Liu et al., ICLR 2019, section 3.1.1), for search (affine=False BN) and evaluation.

Conv ops are ReLU-Conv-BN. They are built as :class:`PreActivated` (ReLU, then ``body``) so the
search cell can compute the ReLU of a node once and share it among every conv op reading it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_darts.layers import BatchNorm2d, MaxPool2d, RoutedConv2d, keeps_output, relu_conv2d, relu_conv_fusable


class PreActivated(nn.Module):
    """``body(relu(x))``; callers that already hold ``relu(x)`` call ``body`` directly."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(F.relu(x))


def relu_in_conv(layers: Sequence[nn.Module], i: int) -> bool:
    """Whether the ReLU ``layers[i]`` runs inside the conv after it (``relu_conv2d``): between a BN
    that keeps its output and a conv ``relu_conv2d`` computes, in a pass that keeps tensors."""
    return (type(layers[i]) is nn.ReLU and 0 < i < len(layers) - 1 and keeps_output(layers[i - 1])
            and relu_conv_fusable(layers[i + 1]) and torch.is_grad_enabled())


class Chain(nn.Sequential):
    """``nn.Sequential`` (the same modules and state_dict keys) whose ReLU between a BN that keeps its
    output and a conv runs inside the conv (:func:`~nas_darts.layers.relu_conv2d`): the conv then keeps
    that output, which the BN keeps anyway, and not a ReLU of it: one activation fewer per sep conv."""

    def forward(self, x: Tensor) -> Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            if relu_in_conv(layers, i):
                conv = layers[i + 1]
                x = relu_conv2d(x, conv.weight, conv.stride, conv.padding, conv.groups)
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> PreActivated:
    return PreActivated(nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        BatchNorm2d(c_out, affine=affine),
    ))


def _dw_pw(c_in: int, c_out: int, kernel: int, stride: int, dilation: int, affine: bool) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    return [
        RoutedConv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        BatchNorm2d(c_out, affine=affine),
    ]


def dil_conv(c: int, kernel: int, stride: int, affine: bool) -> PreActivated:
    return PreActivated(nn.Sequential(*_dw_pw(c, c, kernel, stride, 2, affine)))


def sep_conv(c: int, kernel: int, stride: int, affine: bool) -> PreActivated:
    # the separable conv is applied twice, the second time with stride 1
    return PreActivated(Chain(*_dw_pw(c, c, kernel, stride, 1, affine), nn.ReLU(),
                                      *_dw_pw(c, c, kernel, 1, 1, affine)))


class Zero(nn.Module):
    """The 'none' op. Search cells skip it: it adds nothing to a node, and its weight still gets
    the right gradient through the softmax of the other weights."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the spatial size with two offset stride-2 1x1 convs (skip_connect at stride 2)."""

    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        # RoutedConv2d: torch's own strided 1x1 conv gets the weight gradient wrong on CPU over
        # channels-last input of under 8 channels (nas_darts.layers.conv2d)
        self.conv_1 = RoutedConv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = RoutedConv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def pool(kind: str, c: int, stride: int, with_bn: bool) -> nn.Module:
    layer: nn.Module = (MaxPool2d(3, stride=stride, padding=1) if kind == "max"
                        else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
    # search cells follow pooling by an affine-free BN so its scale matches the conv ops
    return nn.Sequential(layer, BatchNorm2d(c, affine=False)) if with_bn else layer


OpFactory = Callable[[int, int, bool, bool], nn.Module]  # (channels, stride, affine, search)

OP_FACTORIES: dict[str, OpFactory] = {
    "none": lambda c, s, affine, search: Zero(s),
    "max_pool_3x3": lambda c, s, affine, search: pool("max", c, s, with_bn=search),
    "avg_pool_3x3": lambda c, s, affine, search: pool("avg", c, s, with_bn=search),
    "skip_connect": lambda c, s, affine, search: nn.Identity() if s == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, s, affine, search: sep_conv(c, 3, s, affine),
    "sep_conv_5x5": lambda c, s, affine, search: sep_conv(c, 5, s, affine),
    "dil_conv_3x3": lambda c, s, affine, search: dil_conv(c, 3, s, affine),
    "dil_conv_5x5": lambda c, s, affine, search: dil_conv(c, 5, s, affine),
}



def make_op(name: str, channels: int, stride: int, *, affine: bool, search: bool) -> nn.Module:
    """A DARTS op by name, without going through the registry (tests, scripts)."""
    return OP_FACTORIES[name](channels, stride, affine, search)
