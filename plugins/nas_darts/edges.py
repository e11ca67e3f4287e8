"""DARTS's mixed edge (Liu et al., ICLR 2019, eq. 2): every candidate op, weighted by its mixing weight."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
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
        if not cls._fuses():
            return super().forward_group(edges, x, weights, **inputs)
        return WeightedSumEdge.weighted_sums(edges, x, weights, inputs.get("relu_x"))

    @classmethod
    def forward_groups(cls, groups: Sequence[tuple[Sequence[MixedEdge], Tensor, Tensor, dict[str, Any]]]
                       ) -> list[list[Tensor]]:
        """The groups as one where their conv chains run fused (``fused.fuse_chains``), the inputs alike
        (shape, layout, dtype, device; as many edges each) and every edge computes the same ops: the
        inputs, concatenated on channels, are read by each fused op once. Fewer calls, the same
        arithmetic (docs/performance.md)."""
        if not cls._fuses_groups(groups):
            return super().forward_groups(groups)
        edges = [edge for group_edges, *_ in groups for edge in group_edges]
        weights = torch.cat([w for _, _, w, _ in groups])
        relus = [inputs.get("relu_x") for *_, inputs in groups]
        outs = WeightedSumEdge.weighted_sums(edges, tuple(x for _, x, _, _ in groups), weights,
                                             None if any(r is None for r in relus) else tuple(relus))
        per_input = len(groups[0][0])
        return [outs[i * per_input:(i + 1) * per_input] for i in range(len(groups))]

    @classmethod
    def _fuses_groups(cls, groups: Sequence[tuple[Sequence[MixedEdge], Tensor, Tensor, dict[str, Any]]]) -> bool:
        if (len(groups) == 1 or not cls._fuses()
                or cls.forward_group.__func__ is not WeightedSumEdge.forward_group.__func__):
            return False
        first_edges, x = groups[0][0], groups[0][1]
        alike = all(len(edges) == len(first_edges) and (y.shape, y.stride(), y.dtype, y.device)
                    == (x.shape, x.stride(), x.dtype, x.device) for edges, y, _, _ in groups)
        columns = {tuple(edge.columns[i] for i in edge.computed) for edges, *_ in groups for edge in edges}
        return alike and len(columns) == 1 and fused.fuse_chains(first_edges[0].fused_edges, x)

    @classmethod
    def _fuses(cls) -> bool:
        """Whether this class's forward is this class's, or comes with its own forward_group."""
        return cls.forward is WeightedSumEdge.forward or "forward_group" in vars(cls)

    @staticmethod
    def weighted_sums(edges: Sequence[WeightedSumEdge], x: Tensor | tuple[Tensor, ...], weights: Tensor,
                      relu_x: Tensor | tuple[Tensor, ...] | None) -> list[Tensor]:
        """This class's forward of each edge (without a subclass's additions), fused across the edges
        that compute the same columns. ``x`` (and ``relu_x``) may be a tuple of inputs of one shape,
        each read by as many of ``edges``, in turn: the first ``len(edges) // len(x)`` read ``x[0]``."""
        xs = x if isinstance(x, tuple) else (x,)
        relus = relu_x if isinstance(relu_x, tuple) else (relu_x,) * len(xs)
        sources = len(xs)
        if sources > 1:  # one tensor that the fused ops read at once
            x, relu_x = torch.cat(xs, 1), None if relu_x is None else torch.cat(relus, 1)
        outs: list[Tensor | None] = [None] * len(edges)
        groups: dict[tuple[int, ...], list[int]] = {}
        for e, edge in enumerate(edges):
            groups.setdefault(tuple(edge.columns[i] for i in edge.computed), []).append(e)
        if sources > 1 and len(groups) > 1:
            raise ValueError("edges reading several inputs are fused only when they compute the same ops")
        for columns, members in groups.items():
            if not columns:  # nothing computed: as forward, no output
                continue
            group = [edges[e] for e in members]

            def run_op(e: int, k: int, group: list[WeightedSumEdge] = group) -> Tensor:
                source = e * sources // len(group)
                return group[e]._op(group[e].computed[k], xs[source], relus[source])

            rows = weights if len(members) == len(edges) else weights[members]
            sums = fused.weighted_sums([[edge.ops[i] for i in edge.computed] for edge in group], columns, x, rows,
                                       relu_x, run_op, fused.fuse_chains(group[0].fused_edges, xs[0]), sources)
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
