"""Uniform sampling of discrete cells from any space's :class:`~nas_core.ArchSpec`.

Per intermediate node: ``spec.inputs_per_node`` distinct predecessors (every one, where a node has
fewer sources, as NAS-Bench-201's cells keep every edge), drawn uniformly among the sources that have
an edge into that node, each with an op drawn uniformly from the ops other than
``spec.zero_op``; ``concat`` is the sorted destination nodes (what ``topk`` produces). Every such
cell is equally likely (predecessors are stored in ascending order, so a cell has one form).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from nas_core import ArchSpec, Cell, Genotype, GenotypeError, stream_seed

SAMPLE_STREAM = "nas_random.sample"


def node_sources(spec: ArchSpec, cell_type: str) -> dict[int, list[int]]:
    """Destination node -> the distinct sources with an edge into it, in row order."""
    out: dict[int, list[int]] = {}
    for src, dst in spec.edges[cell_type]:
        sources = out.setdefault(dst, [])
        if src not in sources:
            sources.append(src)
    return dict(sorted(out.items()))


def live_ops(spec: ArchSpec) -> list[str]:
    ops = [op for op in spec.ops if op != spec.zero_op]
    if not ops:
        raise GenotypeError(f"the space has no op other than its zero op {spec.zero_op!r}: nothing to sample")
    return ops


def sample_genotype(spec: ArchSpec, generator: torch.Generator) -> Genotype:
    """One uniformly drawn discrete genotype (draws from ``generator`` only)."""
    ops, k = live_ops(spec), spec.inputs_per_node
    cells = {}
    for cell_type in spec.edges:
        nodes = []
        sources = node_sources(spec, cell_type)
        for dst, srcs in sources.items():
            picked = sorted(srcs[int(i)] for i in torch.randperm(len(srcs), generator=generator)[:k])
            choice = torch.randint(len(ops), (len(picked),), generator=generator).tolist()
            nodes.append(tuple((ops[c], src) for c, src in zip(choice, picked)))
        cells[cell_type] = Cell(tuple(nodes), tuple(sources))
    return Genotype(cells)


def candidate_generator(seed: int, index: int, stream: str = SAMPLE_STREAM) -> torch.Generator:
    """The generator of candidate ``index``: a function of (seed, index) only, so that candidate i
    is the same cell whether or not the ones before it were drawn in this process (resume)."""
    return torch.Generator().manual_seed(stream_seed(seed, stream, index))


def sample_candidate(spec: ArchSpec, seed: int, index: int, stream: str = SAMPLE_STREAM) -> Genotype:
    return sample_genotype(spec, candidate_generator(seed, index, stream))


def genotype_columns(genotype: Genotype, spec: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Per cell type, the op column of each edge row for ``genotype`` in the supernet: the cell's op
    on its edges, the zero op on every other edge (``MixingWeights.chosen`` form)."""
    if spec.zero_op is None or spec.zero_op not in spec.ops:
        raise GenotypeError("a discrete cell can only be run through a supernet whose space has a zero op")
    zero = spec.ops.index(spec.zero_op)
    out = {}
    for cell_type, edges in spec.edges.items():
        row_of = {edge: row for row, edge in enumerate(edges)}
        cols = [zero] * len(edges)
        cell = genotype.cells[cell_type]
        for j, node in enumerate(cell.nodes):
            dst = spec.num_inputs + j
            for op, src in node:
                if (src, dst) not in row_of:
                    raise GenotypeError(f"cell {cell_type!r}: the space has no edge {src} -> {dst}")
                cols[row_of[(src, dst)]] = spec.ops.index(op)
        out[cell_type] = tuple(cols)
    return out


def one_hot(columns: Mapping[str, tuple[int, ...]], spec: ArchSpec, device: torch.device | None = None
            ) -> dict[str, torch.Tensor]:
    return {t: torch.nn.functional.one_hot(torch.tensor(cols, dtype=torch.long), len(spec.ops)).float().to(device)
            for t, cols in columns.items()}
