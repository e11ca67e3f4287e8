"""Draw the cells of a genotype with Graphviz: a DOT file always, PNG and SVG when the ``dot``
program is installed (Debian/Ubuntu: ``apt-get install graphviz``; macOS: ``brew install graphviz``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import graphviz

from nas_core.files import write_bytes_atomic, write_text_atomic
from nas_core.genotype import Cell, Genotype, check_size


def _labels(num_inputs: int, cell: Cell) -> tuple[list[str], str]:
    """The input nodes' labels and the output's: a CNN cell reads the cells before it; a cell of
    one input that averages several nodes is recurrent (DARTS), one that outputs its last node
    reads the cell before it (NAS-Bench-201)."""
    if num_inputs == 2:
        return ["c_{k-2}", "c_{k-1}"], "c_{k}"
    if num_inputs == 1:
        return (["c_{k-1}"], "c_{k}") if len(cell.concat) == 1 else (["x_{t}, h_{t-1}"], "h_{t}")
    return [f"in_{i}" for i in range(num_inputs)], "out"


def cell_graph(name: str, cell: Cell, num_inputs: int | None = None) -> graphviz.Digraph:
    """The cell as a DAG: input nodes, one node per intermediate node, edges labelled by op.
    ``num_inputs``: the space's input nodes; None infers them from concat (every intermediate
    node concatenated, as in DARTS cells)."""
    # commands validate genotypes before drawing them; this guards callers that do not, since
    # Graphviz takes gigabytes to lay out a cell of thousands of nodes
    check_size(name, len(cell.nodes), sum(map(len, cell.nodes)), len(cell.concat))
    if num_inputs is None:
        num_inputs = min(cell.concat) if cell.concat else 1
    in_labels, out_label = _labels(num_inputs, cell)
    g = graphviz.Digraph(name, format="png", graph_attr={"rankdir": "LR", "label": name, "labelloc": "t"},
                         node_attr={"style": "filled", "shape": "rect", "align": "center", "fontname": "helvetica"},
                         edge_attr={"fontname": "helvetica", "fontsize": "11"})
    for i, label in enumerate(in_labels):
        g.node(str(i), label, fillcolor="darkseagreen2")
    for j, node in enumerate(cell.nodes):
        g.node(str(num_inputs + j), str(num_inputs + j), fillcolor="lightblue")
        for op, src in node:
            if op != "none":
                g.edge(str(src), str(num_inputs + j), label=op, fillcolor="gray")
    g.node("out", out_label, fillcolor="palegoldenrod")
    for c in cell.concat:
        g.edge(str(c), "out", fillcolor="gray")
    return g


def dot_available() -> bool:
    return shutil.which("dot") is not None


def drawing_paths(genotype: Genotype, prefix: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """The files :func:`draw` writes: ``PREFIX_<cell>.dot`` for every cell, and the ``formats``
    when ``dot`` exists (so a command can check them all before it writes any)."""
    prefix = Path(prefix)
    suffixes = ("dot", *formats) if dot_available() else ("dot",)
    return [prefix.with_name(f"{prefix.name}_{name}.{suffix}") for name in genotype.cells for suffix in suffixes]


def draw(genotype: Genotype, prefix: Path, formats: tuple[str, ...] = ("png", "svg"),
         num_inputs: int | None = None) -> list[Path]:
    """Write the files of :func:`drawing_paths`; ``num_inputs`` as for :func:`cell_graph`."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cell in genotype.cells.items():
        g = cell_graph(name, cell, num_inputs)
        dot_path = prefix.with_name(f"{prefix.name}_{name}.dot")
        write_text_atomic(dot_path, g.source)
        written.append(dot_path)
        if dot_available():
            for fmt in formats:
                path = dot_path.with_suffix(f".{fmt}")
                write_bytes_atomic(path, g.pipe(format=fmt))
                written.append(path)
    return written
