"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020, section 2.1).

A cell is a complete DAG on nodes 0..n (n = 3): node 0 is the cell's input, node i the sum of one op
applied to every node j < i, and the cell outputs node n; 6 edges, 5 candidate ops, 5^6 = 15,625
cells. The network: a 3x3 conv stem with BN, three stages of N cells (C, 2C, 4C channels; N = 5,
C = 16), a residual block of stride 2 between stages, BN-ReLU, global average pooling, a linear
classifier (the authors' TinyNetwork, xautodl/models/cell_infers/tiny_network.py).

Genotypes have one cell type, ``cell``, with concat ``(n,)``; its text form is the benchmark's cell
string (``nas show`` prints it). The supernet's edges are registered mixed edges with the context
``ops``, ``channels``, ``stride`` (1: the cells keep the resolution), ``make_op(name, channels)``
(an op of the ``nb201`` family built for search) and ``zero``, called as
``forward(x, weights, chosen=None)``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from nas_core import (ArchSpec, Catalog, Cell, ConfigError, DataInfo, Genotype, GenotypeError, MixingWeights,
                      RunContext, SearchSpace, Supernet, brief, hookimpl, installed_catalog)
from nas_nb201.options import FAMILY, Nb201Options
from nas_nb201.ops import ResNetBasicBlock

CELL = "cell"  # the one cell type
NUM_INPUTS = 1


def cell_edges(nodes: int) -> tuple[tuple[int, int], ...]:
    """(src, dst) for every edge, node by node: the row order of alpha in the authors' code (their
    edge keys "i<-j" sorted)."""
    return tuple((src, dst) for dst in range(1, nodes + 1) for src in range(dst))


class _Stack(nn.Module):
    """Stem, stages and head shared by the supernet and the discrete network; ``make_cell(channels)``
    builds one cell of a stage."""

    def _build(self, opts: Nb201Options, data: DataInfo, make_cell: Callable[[int], nn.Module]) -> None:
        if len(data.input_shape) != 3:
            raise ConfigError(f"nb201 networks read images (input shape (channels, height, width)), not inputs of "
                              f"shape {data.input_shape}: use an image dataset with the classification task")
        if min(data.input_shape[1:]) < 4:
            raise ConfigError(f"nb201 networks halve the image twice between their stages; {data.input_shape[1]}x"
                              f"{data.input_shape[2]} images are too small (at least 4x4)")
        c = opts.channels
        self.stem = nn.Sequential(nn.Conv2d(data.input_shape[0], c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.cells = nn.ModuleList()
        c_prev = c
        for stage in range(3):
            c_stage = c * 2 ** stage
            if stage:
                self.cells.append(ResNetBasicBlock(c_prev, c_stage, 2))
            self.cells.extend(make_cell(c_stage) for _ in range(opts.cells))
            c_prev = c_stage
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, data.num_classes)

    def _head(self, x: Tensor) -> Tensor:
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


class SearchCell(nn.Module):
    """Every edge a mixed edge; node i sums the edges into it (the authors' NAS201SearchCell)."""

    def __init__(self, opts: Nb201Options, catalog: Catalog, channels: int):
        super().__init__()
        zero = frozenset(op for op in opts.ops if catalog.operations.get(FAMILY, op).zero)

        def make_op(name: str, c: int) -> nn.Module:
            return catalog.operations.get(FAMILY, name).factory(c, c, 1, opts.affine, opts.track_running_stats)

        self.sources = [src for src, _ in cell_edges(opts.nodes)]
        self.nodes = opts.nodes
        self.edges = nn.ModuleList(catalog.mixed_edge(opts.edge, ops=opts.ops, channels=channels, stride=1,
                                                      make_op=make_op, zero=zero)
                                   for _ in self.sources)

    def forward(self, x: Tensor, weights: Tensor, chosen: tuple[int, ...] | None) -> Tensor:
        states, row = [x], 0
        for dst in range(1, self.nodes + 1):
            node = None
            for src in range(dst):
                term = self.edges[row](states[src], weights[row], None if chosen is None else chosen[row])
                node = term if node is None else node + term
                row += 1
            states.append(node)
        return states[-1]


class Nb201Supernet(Supernet, _Stack):
    def __init__(self, opts: Nb201Options, data: DataInfo, catalog: Catalog):
        super().__init__()
        self._build(opts, data, lambda c: SearchCell(opts, catalog, c))

    @hookimpl
    def nas_epoch_start(self, run: RunContext) -> None:
        for cell in self.cells:
            for edge in getattr(cell, "edges", ()):
                edge.start_epoch(run)

    def forward(self, x: Tensor, *, arch_weights: MixingWeights) -> Tensor:
        weights = arch_weights[CELL]
        chosen = arch_weights.chosen[CELL] if arch_weights.chosen is not None else None
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights, chosen) if isinstance(cell, SearchCell) else cell(x)
        return self._head(x)


class InferCell(nn.Module):
    """One op per (op, input) pair of the genotype; node i sums them (the authors' InferCell)."""

    def __init__(self, cell: Cell, catalog: Catalog, channels: int):
        super().__init__()
        self.inputs = [[src for _, src in node] for node in cell.nodes]
        self.layers = nn.ModuleList(catalog.operations.get(FAMILY, op).factory(channels, channels, 1, True, True)
                                    for node in cell.nodes for op, _ in node)

    def forward(self, x: Tensor) -> Tensor:
        states, layer = [x], 0
        for inputs in self.inputs:
            node = None
            for src in inputs:
                term = self.layers[layer](states[src])
                node = term if node is None else node + term
                layer += 1
            states.append(node)
        return states[-1]


class Nb201Network(_Stack):
    """The discrete network of a genotype (the authors' TinyNetwork); returns the logits."""

    def __init__(self, opts: Nb201Options, genotype: Genotype, data: DataInfo, catalog: Catalog):
        super().__init__()
        self._build(opts, data, lambda c: InferCell(genotype.cells[CELL], catalog, c))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self._head(x)


class Nb201Space(SearchSpace):
    """NAS-Bench-201 cells: 4 nodes, every edge kept, 5 ops; 3 stages of 5 cells, residual reductions."""

    def __init__(self, options: Nb201Options, *, catalog: Catalog | None = None):
        catalog = catalog or installed_catalog()  # built directly, outside a run: the installed plugins
        catalog.operations.check(FAMILY, options.ops)
        self.options, self.catalog = options, catalog

    def arch_spec(self) -> ArchSpec:
        ops = [self.catalog.operations.get(FAMILY, op) for op in self.options.ops]
        # every edge is kept: a node keeps all its inputs, at most `nodes` of them (topk with this k keeps them all)
        return ArchSpec(ops=self.options.ops, edges={CELL: cell_edges(self.options.nodes)}, num_inputs=NUM_INPUTS,
                        inputs_per_node=self.options.nodes, zero_op=next((op.name for op in ops if op.zero), None),
                        parameter_free=tuple(op.name for op in ops if op.parameter_free))

    def validate(self, genotype: Genotype) -> None:
        """One cell ``cell`` whose output is its last node; any registered op of the family and any
        node count build (a node may read any earlier node, once or more)."""
        if set(genotype.cells) != {CELL}:
            raise GenotypeError(f"genotype has cells {brief(sorted(genotype.cells))}; this space's cells are "
                                f"['{CELL}']")
        genotype.validate(self.catalog.operations.names(FAMILY), NUM_INPUTS)
        cell = genotype.cells[CELL]
        if cell.concat != (len(cell.nodes),):
            raise GenotypeError(f"cell {CELL!r}: concat {list(cell.concat)}; an nb201 cell outputs its last node: "
                                f"[{len(cell.nodes)}]")

    def build_supernet(self, data: DataInfo) -> Nb201Supernet:
        return Nb201Supernet(self.options, data, self.catalog)

    def build_network(self, genotype: Genotype, data: DataInfo) -> Nb201Network:
        self.validate(genotype)
        return Nb201Network(self.options, genotype, data, self.catalog)
