"""PC-DARTS's partial-channel mixed edge (Xu et al., ICLR 2020, section 3.2): the candidate ops see the
first 1/K of the edge's channels, the other channels bypass them (max-pooled 2x2 on a stride-2 edge),
and a channel shuffle of K groups interleaves the two parts for the next edge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_core import MixedEdge
from nas_pcdarts.options import PartialChannelOptions


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Channel ``g * (C / groups) + i`` moves to ``i * groups + g`` (ShuffleNet's shuffle)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class PartialChannelEdge(MixedEdge):
    """Built by ``darts_cnn`` per edge (``space.edge: {name: partial_channels, k: 4}``); the ops are
    the space's own, built at ``channels / k``. Zero ops are not computed (they add nothing)."""

    def __init__(self, options: PartialChannelOptions, *, ops: tuple[str, ...], channels: int, stride: int,
                 make_op: Callable[[str, int], nn.Module], zero: frozenset[str], **context: Any):
        super().__init__()
        if channels % options.k:
            raise ValueError(f"space.edge.k={options.k} must divide the channels of every edge; an edge here has "
                             f"{channels}")
        self.k, self.stride, self.part = options.k, stride, channels // options.k
        self.scale_bypass, self.skip_zero = options.scale_bypass, options.skip_zero_weights
        self.columns = [col for col, name in enumerate(ops) if name not in zero]
        self.ops = nn.ModuleList(make_op(ops[col], self.part) for col in self.columns)

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None, relu_x: Tensor | None = None) -> Tensor:
        through, bypass = x[:, :self.part], x[:, self.part:]
        if chosen is not None:  # hard sampling: only the chosen op runs
            live = [i for i, col in enumerate(self.columns) if col == chosen]
        elif self.skip_zero:
            nonzero = (weights != 0).tolist()
            live = [i for i, col in enumerate(self.columns) if nonzero[col]]
        else:
            live = range(len(self.columns))
        mixed = None
        for i in live:
            term = weights[self.columns[i]] * self.ops[i](through)
            mixed = term if mixed is None else mixed + term
        if mixed is None:  # only zero ops (or zero weights): the ops' part of the edge is zero
            mixed = through[:, :, ::self.stride, ::self.stride] * 0.0
            if chosen is not None:
                mixed = weights[chosen] * mixed  # keeps the hard sample's gradient path
        if self.stride > 1:
            bypass = F.max_pool2d(bypass, 2, 2, ceil_mode=True)  # ceil: the ops' size on odd inputs too
        if self.scale_bypass:
            bypass = weights.sum() * bypass
        if self.k == 1:
            return mixed
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)
