"""DARTS's mixed edge (Liu et al., ICLR 2019, eq. 2): every candidate op, weighted by its mixing weight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from nas_core import MixedEdge
from nas_darts.ops import PreActivated


class WeightedSumEdge(MixedEdge):
    """The zero ops are not computed: they add nothing, and their weights still get the right
    gradient through the normalisation of the others. Conv ops read the cell's shared ``relu_x``."""

    def __init__(self, options: None, *, ops: tuple[str, ...], channels: int, stride: int,
                 make_op: Callable[[str, int], nn.Module], zero: frozenset[str], **context: Any):
        super().__init__()
        self.stride = stride
        live = [(col, name) for col, name in enumerate(ops) if name not in zero]
        self.columns = [col for col, _ in live]
        self.ops = nn.ModuleList(make_op(name, channels) for _, name in live)
        self.preactivated = [isinstance(op, PreActivated) for op in self.ops]

    def _op(self, i: int, x: Tensor, relu_x: Tensor | None) -> Tensor:
        if self.preactivated[i] and relu_x is not None:
            return self.ops[i].body(relu_x)
        return self.ops[i](x)

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None, relu_x: Tensor | None = None) -> Tensor:
        if chosen is not None:  # hard sampling: only the chosen op runs
            if chosen not in self.columns:  # a zero op
                return weights[chosen] * x[:, :, ::self.stride, ::self.stride].mul(0.0)
            return weights[chosen] * self._op(self.columns.index(chosen), x, relu_x)
        out = None
        for i, col in enumerate(self.columns):
            term = weights[col] * self._op(i, x, relu_x)
            out = term if out is None else out + term
        return out
