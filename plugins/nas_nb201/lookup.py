"""``nas nb201-lookup --benchmark FILE GENOTYPE``: the accuracies NAS-Bench-201 recorded for a cell.

Imports no torch: the benchmark file is read by nas_nb201.benchmark's plain-data unpickler."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas_core import Cell, Genotype, GenotypeError, NasError, Toolkit, brief, format_cell_string, load_genotype
from nas_nb201.options import NB201_OPS

NODES = 3  # the benchmark's cells: nodes 1..3 after the input


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("genotype", metavar="GENOTYPE",
                        help="a cell string ('|nor_conv_3x3~0|+|...|'), a genotype file, a search run directory "
                             "or a registered genotype name")
    parser.add_argument("--benchmark", required=True, metavar="FILE",
                        help="the benchmark file, e.g. NAS-Bench-201-v1_1-096897.pth")
    parser.add_argument("--epochs", choices=("200", "12"), default="200",
                        help="the training protocol recorded: 200 epochs (default) or the 12-epoch one")


def benchmark_string(genotype: Genotype) -> str:
    """The cell string the benchmark indexes ``genotype`` under: every edge once, in input order, an
    edge the genotype leaves out being ``none`` (as the API's ``str2fullstructure``)."""
    cells = list(genotype.cells.values())
    if len(cells) != 1 or format_cell_string(genotype) is None or len(cells[0].nodes) != NODES:
        raise GenotypeError(f"not a NAS-Bench-201 cell: the benchmark's cells are one cell of {NODES} nodes after "
                            f"its input, e.g. |nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|"
                            f"skip_connect~2|")
    nodes = []
    for i, node in enumerate(cells[0].nodes, start=1):
        ops = {}
        for op, src in node:
            if op not in NB201_OPS:
                raise GenotypeError(f"node {i}: op {brief(op)} is not a NAS-Bench-201 op ({', '.join(NB201_OPS)})")
            if src in ops:
                raise GenotypeError(f"node {i} reads node {src} twice; a NAS-Bench-201 edge holds one op")
            ops[src] = op
        nodes.append(tuple((ops.get(src, "none"), src) for src in range(i)))
    return format_cell_string(Genotype({"cell": Cell(tuple(nodes), (NODES,))}))


def run(args: argparse.Namespace, toolkit: Toolkit) -> int:
    from nas_nb201.benchmark import Benchmark, load_plain

    arch = benchmark_string(load_genotype(args.genotype, toolkit.registries.genotypes))
    path = Path(args.benchmark)
    if not path.is_file():
        raise NasError(f"--benchmark {path}: no such file (the NAS-Bench-201 file, e.g. NAS-Bench-201-v1_1-096897.pth)")
    benchmark = Benchmark(load_plain(path), str(path))
    index, rows = benchmark.results(arch, args.epochs)
    print(f"{arch}\ncell {index} of {len(benchmark.index)} in {path.name}; trained {args.epochs} epochs; "
          f"accuracies in %, means over the trials")
    for row in rows:
        accuracies = "  ".join(f"{name} {value:.2f}" for name, value in row["accuracy"].items())
        print(f"{row['dataset']:15s} {len(row['seeds'])} trial{'s' if len(row['seeds']) != 1 else ' '}  "
              f"params {row['params']:.3f} M  FLOPs {row['flops']:.2f} M  {accuracies}")
    return 0
