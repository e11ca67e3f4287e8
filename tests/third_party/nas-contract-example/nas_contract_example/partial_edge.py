"""PC-DARTS's partial-channel edge (Xu et al., ICLR 2020): the ops see 1/k of the channels, the rest
bypass them, and a channel shuffle mixes the two parts for the next edge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_core import MixedEdge
from nas_contract_example.options import PartialChannelOptions


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class PartialChannelEdge(MixedEdge):
    def __init__(self, options: PartialChannelOptions, *, ops: tuple[str, ...], channels: int, stride: int,
                 make_op: Callable[[str, int], nn.Module], zero: frozenset[str], **context: Any):
        super().__init__()
        if channels % options.k:
            raise ValueError(f"partial_channels: k={options.k} does not divide the {channels} channels")
        self.k, self.stride, self.part = options.k, stride, channels // options.k
        self.columns = [col for col, name in enumerate(ops) if name not in zero]
        self.ops = nn.ModuleList(make_op(ops[col], self.part) for col in self.columns)

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None, relu_x: Tensor | None = None) -> Tensor:
        through, bypass = x[:, :self.part], x[:, self.part:]
        columns = self.columns if chosen is None else [c for c in self.columns if c == chosen]
        mixed = sum((weights[c] * self.ops[self.columns.index(c)](through) for c in columns),
                    torch.zeros_like(through[:, :, ::self.stride, ::self.stride]))
        if self.stride > 1:
            bypass = F.max_pool2d(bypass, 2, 2)
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)
