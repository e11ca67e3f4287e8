"""DARTS-'s mixed edge (Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse Without
Indicators", ICLR 2021, section 3.2, eq. 5): DARTS's weighted sum of the candidate ops plus an
auxiliary skip connection outside the softmax, scaled by beta_t,

    o(x) = sum_k softmax(alpha)_k op_k(x) + beta_t * aux(x),

with beta_t decaying linearly from beta_start to 0 over the search. The auxiliary skip carries the
residual path that otherwise gives the skip op its unfair advantage, so the skip op's alpha no
longer has to. The skip is the space's ``skip_connect`` at the edge's stride (the identity, or
FactorizedReduce on a stride-2 edge), built whether or not ``skip_connect`` is a candidate op.
Alpha keeps its columns; the discretizer reads alpha alone, so the auxiliary path never enters a
derived cell."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nas_core import MixedEdge, RunContext
from nas_darts.edges import WeightedSumEdge
from nas_darts_minus.options import DartsMinusEdgeOptions


def beta_at(epoch: int, epochs: int, beta_start: float, decay: str) -> float:
    """beta of search epoch ``epoch`` (from 0) of ``epochs``: the authors' DecayScheduler with
    T_start 0 and T_max the search's length, beta_start * (epochs - epoch) / epochs, so the first
    epoch has beta_start and the last beta_start / epochs (0 is reached as the search ends)."""
    if decay == "none":
        return beta_start
    return beta_start * (epochs - epoch) / epochs


def identity_conv(channels: int) -> nn.Conv2d:
    """A 1x1 convolution that starts as the identity (the authors' ``conv1`` auxiliary operation)."""
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    return conv


class DartsMinusEdge(WeightedSumEdge):
    """Built by ``darts_cnn`` per edge (``space.edge: {name: darts_minus}``). ``beta`` is a buffer, so a
    checkpoint (and a search read back with ``load_search``) holds the value of its last epoch."""

    def __init__(self, options: DartsMinusEdgeOptions, *, ops: tuple[str, ...], channels: int, stride: int,
                 make_op: Callable[[str, int], nn.Module], zero: frozenset[str], **context: Any):
        super().__init__(None, ops=ops, channels=channels, stride=stride, make_op=make_op, zero=zero, **context)
        self.beta_start, self.decay = options.beta_start, options.decay
        # registered after the ops, as the authors' MixedOp does (so state dicts pair in order)
        self.aux = identity_conv(channels) if options.aux == "conv1" and stride == 1 else make_op("skip_connect",
                                                                                                   channels)
        self.register_buffer("beta", torch.tensor(float(options.beta_start)))

    def start_epoch(self, run: RunContext) -> None:
        super().start_epoch(run)
        if run.phase == "search":
            self.beta.fill_(beta_at(run.epoch, run.epochs, self.beta_start, self.decay))
        else:  # a final phase fine-tuning the supernet (DARTS-PT): beta where the search's schedule ends
            self.beta.fill_(beta_at(1, 1, self.beta_start, self.decay))

    def forward(self, x: Tensor, weights: Tensor, chosen: int | None = None, relu_x: Tensor | None = None) -> Tensor:
        return super().forward(x, weights, chosen, relu_x) + self.beta * self.aux(x)

    @classmethod
    def forward_group(cls, edges: Sequence[MixedEdge], x: Tensor, weights: Tensor, **inputs: Any) -> list[Tensor]:
        sums = WeightedSumEdge.weighted_sums(edges, x, weights, inputs.get("relu_x"))
        return [out + edge.beta * edge.aux(x) for out, edge in zip(sums, edges)]
