"""DARTS's mixed edge (Liu et al., ICLR 2019, eq. 2): every candidate op, weighted by its mixing weight."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from nas_core import MixedEdge, RunContext
from nas_darts import fused
from nas_darts.ops import PreActivated


class WeightedSumEdge(MixedEdge):
    """The zero ops are not computed: they add nothing, and their weights still get the right
    gradient through the normalisation of the others. Conv ops read the cell's shared ``relu_x``.
    Ops the relaxation pruned (``Relaxation.kept``, read as each epoch starts) are not computed either.

    ``forward_group`` fuses the ops of edges that read the same input (``nas_darts.fused``); a subclass
    that changes ``forward`` defines its own ``forward_group`` too, or its edges run one by one."""

    def __init__(self, options: None, *, ops: tuple[str, ...], channels: int, stride: int,
                 make_op: Callable[[str, int], nn.Module], zero: frozenset[str], cell_type: str | None = None,
                 row: int | None = None, fused_edges: bool | None = None, **context: Any):
        super().__init__()
        self.stride = stride
        self.fused_edges = fused_edges  # whether forward_group fuses the conv chains (None: fused.fuse_chains)
        self.position = (cell_type, row)
        live = [(col, name) for col, name in enumerate(ops) if name not in zero]
        self.columns = [col for col, _ in live]
        self.ops = nn.ModuleList(make_op(name, channels) for _, name in live)
        self.preactivated = [isinstance(op, PreActivated) for op in self.ops]
        self.computed = list(range(len(self.ops)))  # indices into self.ops: the ops not pruned

    def start_epoch(self, run: RunContext) -> None:
        cell_type, row = self.position
        relaxation = run.components.get("relaxation")
        mask = relaxation.kept().get(cell_type) if relaxation is not None and row is not None else None
        if mask is not None:
            kept = mask[row].tolist()
            self.computed = [i for i, col in enumerate(self.columns) if kept[col]]

    def _op(self, i: int, x: Tensor, relu_x: Tensor | None) -> Tensor:
        if self.preactivated[i] and relu_x is not None:
            return self.ops[i].body(relu_x)
        return self.ops[i](x)

    @classmethod
    def forward_group(cls, edges: Sequence[MixedEdge], x: Tensor, weights: Tensor, **inputs: Any) -> list[Tensor]:
        if cls.forward is not WeightedSumEdge.forward and "forward_group" not in vars(cls):
            return super().forward_group(edges, x, weights, **inputs)
        return WeightedSumEdge.weighted_sums(edges, x, weights, inputs.get("relu_x"))

    @staticmethod
    def weighted_sums(edges: Sequence[WeightedSumEdge], x: Tensor, weights: Tensor,
                      relu_x: Tensor | None) -> list[Tensor]:
        """This class's forward of each edge (without a subclass's additions), fused across the edges
        that compute the same columns."""
        outs: list[Tensor | None] = [None] * len(edges)
        groups: dict[tuple[int, ...], list[int]] = {}
        for e, edge in enumerate(edges):
            groups.setdefault(tuple(edge.columns[i] for i in edge.computed), []).append(e)
        for columns, members in groups.items():
            if not columns:  # nothing computed: as forward, no output
                continue
            group = [edges[e] for e in members]

            def run_op(e: int, k: int, group: list[WeightedSumEdge] = group) -> Tensor:
                return group[e]._op(group[e].computed[k], x, relu_x)

            rows = weights if len(members) == len(edges) else weights[members]
            sums = fused.weighted_sums([[edge.ops[i] for i in edge.computed] for edge in group], columns, x, rows,
                                       relu_x, run_op, fused.fuse_chains(group[0].fused_edges, x))
            for e, out in zip(members, sums):
                outs[e] = out
        return outs

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None, relu_x: Tensor | None = None) -> Tensor:
        if chosen is not None:  # hard sampling: only the chosen op runs
            if chosen not in self.columns:  # a zero op
                return weights[chosen] * x[:, :, ::self.stride, ::self.stride].mul(0.0)
            return weights[chosen] * self._op(self.columns.index(chosen), x, relu_x)
        out = None
        for i in self.computed:
            term = weights[self.columns[i]] * self._op(i, x, relu_x)
            out = term if out is None else out + term
        return out
