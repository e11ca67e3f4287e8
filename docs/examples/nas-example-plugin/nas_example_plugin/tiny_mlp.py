"""The ``tiny_mlp`` search space: one fully connected cell, small enough to read in one sitting.

Network: flatten -> stem ``Linear(inputs, width)`` -> cell -> ``Linear(width, classes)``.
Cell: node 0 is the stem output; intermediate node ``j`` sums one op per edge from every
earlier node; the cell's output is the mean of its intermediate nodes. Every node has
``width`` features, so every op maps ``width -> width`` and any edge may carry any op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

# Everything a plugin uses from the toolkit comes from the package itself: `nas_core`'s
# submodules are internal and may move.
from nas_core import ArchSpec, Cell, DataInfo, Genotype, GenotypeError, MixingWeights, SearchSpace, Supernet
from nas_example_plugin.options import TinyMlpOptions

CELL = "cell"  # the only cell type; the key of arch_weights, strengths and genotypes
NUM_INPUTS = 1  # node 0, the stem output
OPS: tuple[str, ...] = ("none", "identity", "linear_relu", "linear_tanh")  # column order of alpha


class Zero(nn.Module):
    """The ``none`` op of a discrete cell: an edge that contributes nothing."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 0.0  # keeps shape, dtype and device, unlike a fresh torch.zeros


OP_FACTORIES: dict[str, Callable[[int], nn.Module]] = {  # op name -> constructor taking the width
    "none": lambda width: Zero(),
    "identity": lambda width: nn.Identity(),
    "linear_relu": lambda width: nn.Sequential(nn.Linear(width, width), nn.ReLU()),
    "linear_tanh": lambda width: nn.Sequential(nn.Linear(width, width), nn.Tanh()),
}


def cell_edges(nodes: int) -> tuple[tuple[int, int], ...]:
    """``(src, dst)`` of every edge, node by node: the row order of the weight matrix."""
    return tuple((src, NUM_INPUTS + j) for j in range(nodes) for src in range(NUM_INPUTS + j))


class MixedEdge(nn.Module):
    """Every candidate op of one edge, summed with that edge's row of mixing weights."""

    def __init__(self, width: int):
        super().__init__()
        # The zero op is left out: it adds nothing to the sum, and its weight still gets its
        # gradient through the normalisation (e.g. softmax) of the other weights.
        live = [(col, name) for col, name in enumerate(OPS) if name != "none"]
        self.columns = [col for col, _ in live]
        self.ops = nn.ModuleList(OP_FACTORIES[name](width) for _, name in live)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(weights[col] * op(x) for col, op in zip(self.columns, self.ops))


class TinyMlpSupernet(Supernet):
    """The continuous network: every edge of the cell mixes all candidate ops."""

    def __init__(self, options: TinyMlpOptions, data: DataInfo):
        super().__init__()
        self.nodes = options.nodes
        self.stem = nn.Linear(math.prod(data.input_shape), options.width)
        self.edges = nn.ModuleList(MixedEdge(options.width) for _ in cell_edges(options.nodes))
        self.classifier = nn.Linear(options.width, data.num_classes)

    def forward(self, x: Tensor, *, arch_weights: MixingWeights) -> Tensor:
        # The task calls model(x); the optimizer binds the mixing weights as a keyword.
        weights = arch_weights[CELL]  # [edges, ops], rows in cell_edges order
        states = [self.stem(x.flatten(1))]
        row = 0
        for _ in range(self.nodes):
            # the edges into a node come from every earlier node, in cell_edges order
            node = 0
            for src in range(len(states)):
                node = node + self.edges[row](states[src], weights[row])
                row += 1
            states.append(node)
        return self.classifier(torch.stack(states[NUM_INPUTS:]).mean(0))


class TinyMlpCell(nn.Module):
    """A discrete cell: each node sums its chosen ``(op, input)`` pairs."""

    def __init__(self, cell: Cell, width: int):
        super().__init__()
        self.inputs = [[src for _, src in node] for node in cell.nodes]
        self.ops = nn.ModuleList(nn.ModuleList(OP_FACTORIES[op](width) for op, _ in node) for node in cell.nodes)
        self.concat = list(cell.concat)

    def forward(self, x: Tensor) -> Tensor:
        states = [x]
        for inputs, ops in zip(self.inputs, self.ops):
            states.append(sum(op(states[src]) for src, op in zip(inputs, ops)))
        return torch.stack([states[i] for i in self.concat]).mean(0)


class TinyMlpNetwork(nn.Module):
    """The discrete network of a genotype, freshly initialised."""

    def __init__(self, width: int, cell: Cell, data: DataInfo):
        super().__init__()
        self.stem = nn.Linear(math.prod(data.input_shape), width)
        self.cell = TinyMlpCell(cell, width)
        self.classifier = nn.Linear(width, data.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.cell(self.stem(x.flatten(1))))


class TinyMlpSpace(SearchSpace):
    """A one-cell MLP on flattened inputs; edges choose none, identity, linear_relu or linear_tanh."""

    def __init__(self, options: TinyMlpOptions, **context: Any):
        # context: what the core passes to every space (the catalog of registered operations and
        # mixed edges); this space has its own fixed ops and needs none of it
        self.options = options

    def arch_spec(self) -> ArchSpec:
        return ArchSpec(ops=OPS, edges={CELL: cell_edges(self.options.nodes)},
                        num_inputs=NUM_INPUTS, inputs_per_node=1, zero_op="none")

    def build_supernet(self, data: DataInfo) -> TinyMlpSupernet:
        return TinyMlpSupernet(self.options, data)

    def build_network(self, genotype: Genotype, data: DataInfo) -> TinyMlpNetwork:
        # The genotype decides the cell's shape: options.nodes only sizes the supernet, so a
        # cell searched with other settings (or written by hand) still builds.
        if CELL not in genotype.cells:
            raise GenotypeError(f"a tiny_mlp genotype needs the cell {CELL!r}; it has {sorted(genotype.cells)}")
        genotype.validate(OPS, NUM_INPUTS)
        cell = genotype.cells[CELL]
        if not cell.concat:
            raise GenotypeError(f"genotype: cell {CELL!r}: 'concat' is empty; the cell output averages those nodes")
        return TinyMlpNetwork(self.options.width, cell, data)
