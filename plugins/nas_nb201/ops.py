"""The NAS-Bench-201 operations and its residual reduction block (Dong & Yang, ICLR 2020, section 2.1),
built as the authors build them (AutoDL-Projects, xautodl/models/cell_operations.py).

Every op is ``factory(c_in, c_out, stride, affine, track_running_stats)``, the signature of the
``nb201`` family. Two details of the authors' code that change the numbers: a conv followed by
an affine-free BN has a bias (``bias=not affine``), and average pooling leaves the padding out of
the mean. Submodules carry the authors' names (``op``, ``conv_a``, ``downsample``, ...), so a
state dict of their networks loads into ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool,
                 track_running_stats: bool):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=not affine),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: zeros of the output's shape (the input times 0, so NaNs propagate as in the
    authors' code)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.c_in == self.c_out:
            return x[:, :, ::self.stride, ::self.stride].mul(0.0)
        return x.new_zeros(x.shape[0], self.c_out, *x[:, :, ::self.stride, ::self.stride].shape[2:])


class FactorizedReduce(nn.Module):
    """``skip_connect`` where the shape changes: two offset stride-2 1x1 convs (or one 1x1 conv at
    stride 1), then BN."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool, track_running_stats: bool):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"skip_connect: stride must be 1 or 2, got {stride}")
        self.stride = stride
        if stride == 2:
            self.relu = nn.ReLU(inplace=False)
            self.convs = nn.ModuleList(nn.Conv2d(c_in, c, 1, stride=2, bias=not affine)
                                       for c in (c_out // 2, c_out - c_out // 2))
        else:
            self.conv = nn.Conv2d(c_in, c_out, 1, bias=not affine)
        self.bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return self.bn(self.conv(x))
        x = self.relu(x)
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]  # the second conv sees the grid offset by one
        return self.bn(torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1))


class Pooling(nn.Module):
    """3x3 average pooling (padding left out of the mean), after a 1x1 ReLU-Conv-BN where the channel
    count changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool, track_running_stats: bool):
        super().__init__()
        self.preprocess = None if c_in == c_out else ReLUConvBN(c_in, c_out, 1, 1, 0, affine, track_running_stats)
        self.op = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x if self.preprocess is None else self.preprocess(x))


def skip_connect(c_in: int, c_out: int, stride: int, affine: bool, track_running_stats: bool) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return FactorizedReduce(c_in, c_out, stride, affine, track_running_stats)


OpFactory = Callable[[int, int, int, bool, bool], nn.Module]  # (c_in, c_out, stride, affine, track_running_stats)

OP_FACTORIES: dict[str, OpFactory] = {
    "none": lambda c_in, c_out, s, affine, track: Zero(c_in, c_out, s),
    "skip_connect": skip_connect,
    "nor_conv_1x1": lambda c_in, c_out, s, affine, track: ReLUConvBN(c_in, c_out, 1, s, 0, affine, track),
    "nor_conv_3x3": lambda c_in, c_out, s, affine, track: ReLUConvBN(c_in, c_out, 3, s, 1, affine, track),
    "avg_pool_3x3": Pooling,
}


class ResNetBasicBlock(nn.Module):
    """The reduction block between stages: ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN, plus a shortcut
    of 2x2 average pooling and a 1x1 conv (He et al., 2016; the authors' ResNetBasicblock)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1, True, True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, True, True)
        if stride == 2:
            self.downsample: nn.Module | None = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                                               nn.Conv2d(c_in, c_out, 1, bias=False))
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0, True, True)
        else:
            self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))
