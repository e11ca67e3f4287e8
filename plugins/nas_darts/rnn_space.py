"""The DARTS recurrent search space and its language model (Liu et al., ICLR 2019, sections 2.1
and 3.1.2, appendix A).

One cell type, ``recurrent``: node 0 is computed from x_t and h_{t-1} (``c0, h0 = split([x, h]
W_0)``, ``s_0 = h + sigmoid(c0) * (tanh(h0) - h)``); each intermediate node j = 1..N takes one
predecessor s_i, i < j: ``c, h = split(s_i W_j)``, ``s_j = s_i + sigmoid(c) * (f(h) - s_i)`` with
f one of tanh, relu, sigmoid, identity (``none``: no edge). The cell's output h_t is the mean of
the N intermediate nodes. In the supernet every edge (i, j) mixes all ops with its weights (node
j's W_j is shared by its incoming edges, as in the public code), and node 0 and every node are
batch-normalised (one ``BatchNorm1d(affine=False)``, shared by the nodes as in the public code).

The language model around the cell (the public code's ``RNNModel``): embedding (word dropout
``dropoute``, locked dropout ``dropouti``), the cell over time with per-sequence masks on its
input (``dropoutx``) and on the nodes' inputs (``dropouth``), locked dropout ``dropout`` on the
output, and a decoder tied to the embedding (its own bias only). Weights start uniform in
``(-init_range, init_range)``, the bias at 0.

Called as ``model(tokens [T, B], hidden [B, H] or None)`` (the supernet with ``arch_weights=``),
it returns ``(logits [T, B, V], hidden [B, H], raw_output [T, B, H], dropped_output [T, B, H])``:
the contract of the ``language_model`` task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_core import (ArchSpec, Catalog, Cell, ConfigError, DataInfo, Genotype, GenotypeError, MixingWeights,
                      SearchSpace, Supernet, installed_catalog)
from nas_darts.options import DartsRnnOptions

CELL_TYPE = "recurrent"
NUM_INPUTS = 1

FAMILY = "darts_rnn"  # the registered activations this space builds: factory() -> Callable[[Tensor], Tensor]
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


def cell_edges(nodes: int) -> tuple[tuple[int, int], ...]:
    """(src, dst) per edge, node by node: the row order of the public code's alpha."""
    return tuple((src, dst) for dst in range(1, nodes + 1) for src in range(dst))


def mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """A dropout mask (kept entries 1 / (1 - p)), drawn from the global RNG as the public code."""
    return like.new_empty(shape).bernoulli_(1 - p) / (1 - p)


def embedded_dropout(embed: nn.Embedding, words: Tensor, p: float) -> Tensor:
    """Drop whole words of the vocabulary (the same words at every position)."""
    weight = embed.weight
    if p > 0:
        weight = weight * mask((weight.shape[0], 1), p, weight)
    return F.embedding(words, weight)


class _LanguageModel(nn.Module):
    """Embedding, a recurrent cell run over time, and the tied decoder."""

    # one matrix, two roles: the embedding is also the decoder's weight (darts_2nd's step_tied_weights)
    tied_parameters: tuple[str, ...] = ("encoder.weight",)

    def _build(self, opts: DartsRnnOptions, data: DataInfo, nodes: int) -> None:
        if data.input_shape != ():
            raise ConfigError(f"darts_rnn models read token ids (input shape ()), not inputs of shape "
                             f"{data.input_shape}: use the language_model task")
        self.opts, self.hid, self.vocab = opts, opts.hid, data.num_classes
        r = opts.init_range
        self.encoder = nn.Embedding(data.num_classes, opts.emb)
        self.decoder_bias = nn.Parameter(torch.zeros(data.num_classes))
        self.w0 = nn.Parameter(torch.empty(opts.emb + opts.hid, 2 * opts.hid).uniform_(-r, r))
        self.ws = nn.ParameterList(nn.Parameter(torch.empty(opts.hid, 2 * opts.hid).uniform_(-r, r))
                                   for _ in range(nodes))
        nn.init.uniform_(self.encoder.weight, -r, r)

    def init_state(self, x: Tensor, h: Tensor, x_mask: Tensor | None, h_mask: Tensor | None) -> Tensor:
        xh = torch.cat([x * x_mask, h * h_mask] if x_mask is not None else [x, h], dim=-1)
        c0, h0 = (xh @ self.w0).split(self.hid, dim=-1)
        return h + c0.sigmoid() * (h0.tanh() - h)

    def step(self, x: Tensor, h: Tensor, x_mask: Tensor | None, h_mask: Tensor | None, **kw: object) -> Tensor:
        raise NotImplementedError

    def run(self, tokens: Tensor, hidden: Tensor | None, **kw: object) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        o, (steps, batch) = self.opts, tokens.shape
        emb = embedded_dropout(self.encoder, tokens, o.dropoute if self.training else 0.0)
        if self.training and o.dropouti > 0:
            emb = emb * mask((1, batch, o.emb), o.dropouti, emb)
        h = emb.new_zeros(batch, self.hid) if hidden is None else hidden
        x_mask = h_mask = None
        if self.training:
            x_mask, h_mask = mask((batch, o.emb), o.dropoutx, emb), mask((batch, self.hid), o.dropouth, emb)
        outputs = []
        for t in range(steps):
            h = self.step(emb[t], h, x_mask, h_mask, **kw)
            outputs.append(h)
        raw = torch.stack(outputs)
        dropped = raw * mask((1, batch, self.hid), o.dropout, raw) if self.training and o.dropout > 0 else raw
        logits = F.linear(dropped, self.encoder.weight, self.decoder_bias)
        return logits, h, raw, dropped


class DartsRnnSupernet(Supernet, _LanguageModel):
    def __init__(self, opts: DartsRnnOptions, data: DataInfo, catalog: Catalog):
        super().__init__()
        self._build(opts, data, opts.nodes)
        self.nodes = opts.nodes
        ops = [catalog.operations.get(FAMILY, name) for name in opts.ops]
        self.live = [(col, op.factory()) for col, op in enumerate(ops) if not op.zero]
        self.bn = nn.BatchNorm1d(opts.hid, affine=False)

    def forward(self, tokens: Tensor, hidden: Tensor | None, *,
                arch_weights: MixingWeights) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        weights = arch_weights[CELL_TYPE]
        if arch_weights.chosen is not None:  # hard sampling: only the chosen op of each edge counts
            one_hot = torch.zeros_like(weights)
            one_hot[torch.arange(len(weights)), torch.tensor(arch_weights.chosen[CELL_TYPE])] = 1
            weights = weights * one_hot
        return self.run(tokens, hidden, weights=weights)

    def step(self, x: Tensor, h: Tensor, x_mask: Tensor | None, h_mask: Tensor | None, *,
             weights: Tensor) -> Tensor:
        states = [self.bn(self.init_state(x, h, x_mask, h_mask))]
        cols = [col for col, _ in self.live]
        live_w = weights[:, cols]  # [edges, live ops]
        total = live_w.sum(1)  # per edge: the weight of all non-zero ops
        row = 0
        for j in range(1, self.nodes + 1):
            s = torch.stack(states)  # [j, B, H]: the predecessors of node j
            ch = (s * h_mask if h_mask is not None else s) @ self.ws[j - 1]
            c, pre = ch.split(self.hid, dim=-1)
            c = c.sigmoid()
            w = live_w[row:row + j]  # [j, live ops]
            mixed = sum(w[:, k, None, None] * fn(pre) for k, (_, fn) in enumerate(self.live))
            t = total[row:row + j, None, None]
            # sum over edges and ops of w * (s + c * (f(h) - s))
            node = (t * s + c * (mixed - t * s)).sum(0)
            states.append(self.bn(node))
            row += j
        return torch.stack(states[1:]).mean(0)


class DartsRnnNetwork(_LanguageModel):
    """The discrete language model of a recurrent genotype (one op and predecessor per node)."""

    def __init__(self, opts: DartsRnnOptions, cell: Cell, data: DataInfo, catalog: Catalog):
        super().__init__()
        self._build(opts, data, len(cell.nodes))
        self.genes = [(catalog.operations.get(FAMILY, node[0][0]).factory(), node[0][1]) for node in cell.nodes]
        self.concat = list(cell.concat)

    def step(self, x: Tensor, h: Tensor, x_mask: Tensor | None, h_mask: Tensor | None) -> Tensor:
        states = [self.init_state(x, h, x_mask, h_mask)]
        for (fn, src), w in zip(self.genes, self.ws):
            prev = states[src]
            c, pre = ((prev * h_mask if h_mask is not None else prev) @ w).split(self.hid, dim=-1)
            states.append(prev + c.sigmoid() * (fn(pre) - prev))
        return torch.stack([states[i] for i in self.concat]).mean(0)

    def forward(self, tokens: Tensor, hidden: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.run(tokens, hidden)


class DartsRnnSpace(SearchSpace):
    """DARTS recurrent cells: 5 ops, one input node from x_t and h_{t-1}, 8 nodes, k = 1."""

    def __init__(self, options: DartsRnnOptions, *, catalog: Catalog | None = None):
        catalog = catalog or installed_catalog()  # built directly, outside a run: the installed plugins
        catalog.operations.check(FAMILY, options.ops)
        self.options, self.catalog = options, catalog

    def arch_spec(self) -> ArchSpec:
        zero = [op for op in self.options.ops if self.catalog.operations.get(FAMILY, op).zero]
        return ArchSpec(ops=self.options.ops, edges={CELL_TYPE: cell_edges(self.options.nodes)},
                        num_inputs=NUM_INPUTS, inputs_per_node=1, zero_op=zero[0] if zero else None)

    def validate(self, genotype: Genotype) -> None:
        """The default checks (cells, ops, indices), then: one input per node, never ``none``, and
        the output averages intermediate nodes. Any node count builds (the public code's too)."""
        if set(genotype.cells) != {CELL_TYPE}:
            raise GenotypeError(f"genotype has cells {sorted(genotype.cells)}; a darts_rnn genotype has one cell, "
                                f"{CELL_TYPE!r} (a CNN genotype needs --space darts_cnn)")
        cell = genotype.cells[CELL_TYPE]
        activations = self.catalog.operations.names(FAMILY)
        genotype.validate(tuple(op for op in activations if not self.catalog.operations.get(FAMILY, op).zero),
                          NUM_INPUTS)
        for j, node in enumerate(cell.nodes, 1):
            if len(node) != 1:
                raise GenotypeError(f"genotype: cell {CELL_TYPE!r}, node {j}: a recurrent node takes exactly one "
                                    f"(op, input) pair, got {len(node)}")
        if not cell.concat or 0 in cell.concat:
            raise GenotypeError(f"genotype: cell {CELL_TYPE!r}: the output averages intermediate nodes "
                                f"1..{len(cell.nodes)}, got concat {list(cell.concat)}")

    def build_supernet(self, data: DataInfo) -> DartsRnnSupernet:
        return DartsRnnSupernet(self.options, data, self.catalog)

    def build_network(self, genotype: Genotype, data: DataInfo) -> DartsRnnNetwork:
        self.validate(genotype)
        return DartsRnnNetwork(self.options, genotype.cells[CELL_TYPE], data, self.catalog)
