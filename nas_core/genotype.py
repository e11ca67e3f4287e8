"""The discrete architecture as a plain value, and its canonical JSON form.

A genotype maps each cell type (``normal``, ``reduce``, ``recurrent``, ...) to a cell: for each
intermediate node, the ``(op, input_node)`` pairs feeding it, and the nodes concatenated (or
averaged) into the cell's output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from nas_core.errors import GenotypeError, brief

# Bounds of a genotype, far above any published cell (DARTS: 2 cell types, 4 or 8 nodes, 8 pairs
# per cell) and low enough that reading, checking and drawing one (Graphviz lays out every node
# and labelled edge) stays instant: a 0.5 MB genotype of 10,000 nodes drove Graphviz to 23 GB.
MAX_CELLS = 16  # cell types of one genotype
MAX_NODES = 64  # intermediate nodes of one cell
MAX_PAIRS = 512  # (op, input) pairs of one cell, all its nodes together
MAX_INDEX = 10_000  # any node index beyond this is a typo or hostile, never a node


def check_size(name: str, num_nodes: int, num_pairs: int, num_concat: int, source: str = "genotype") -> None:
    """A GenotypeError if a cell is larger than the bounds above."""
    for count, limit, what in ((num_nodes, MAX_NODES, "intermediate nodes"),
                               (num_pairs, MAX_PAIRS, "(op, input) pairs"),
                               (num_concat, 2 * MAX_NODES, "concatenated nodes")):
        if count > limit:
            raise GenotypeError(f"{source}: cell {brief(name)} has {count} {what}; a cell may have at most {limit}")


def check_index(value: int, what: str) -> int:
    """``value`` if it can be a node index (negative ones are reported later, against the space)."""
    if abs(value) > MAX_INDEX:
        raise GenotypeError(f"{what}: {brief(value)} is not a node index (at most {MAX_INDEX})")
    return value


@attrs.frozen
class Cell:
    nodes: tuple[tuple[tuple[str, int], ...], ...]
    concat: tuple[int, ...]


@attrs.frozen
class Genotype:
    cells: Mapping[str, Cell]

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {"nodes": [[[op, src] for op, src in node] for node in cell.nodes],
                   "concat": list(cell.concat)}
            for name, cell in self.cells.items()
        }

    def to_json(self) -> str:
        """Canonical JSON: one line per node, so diffs and terminals stay readable."""
        lines = ["{"]
        for i, (name, cell) in enumerate(self.to_dict().items()):
            nodes = ",\n".join(f"      {json.dumps(node)}" for node in cell["nodes"])
            comma = "," if i + 1 < len(self.cells) else ""
            lines.append(f'  {json.dumps(name)}: {{\n    "nodes": [\n{nodes}\n    ],\n'
                         f'    "concat": {json.dumps(cell["concat"])}\n  }}{comma}')
        lines.append("}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "genotype") -> Genotype:
        if not isinstance(data, Mapping) or not data:
            raise GenotypeError(f"{source}: expected an object mapping cell types to cells")
        if len(data) > MAX_CELLS:
            raise GenotypeError(f"{source}: {len(data)} cell types; a genotype may have at most {MAX_CELLS}")
        cells = {}
        for name, cell in data.items():
            where = f"{source}: cell {brief(name)}"
            if not isinstance(cell, Mapping) or set(cell) != {"nodes", "concat"}:
                raise GenotypeError(f"{where}: expected exactly the keys 'nodes' and 'concat'")
            raw_nodes, concat = cell["nodes"], cell["concat"]
            if not isinstance(raw_nodes, list | tuple):
                raise GenotypeError(f"{where}: 'nodes' must be a list of nodes, each a list of [op, input] pairs, "
                                    f"got {brief(raw_nodes)}")
            if not isinstance(concat, list | tuple) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                                for c in concat):
                raise GenotypeError(f"{where}: 'concat' must be a list of node indices, got {brief(concat)}")
            # sized before anything is built: the counts are a list's length, bounded by the file's size
            check_size(name, len(raw_nodes), sum(len(n) if isinstance(n, list | tuple) else 0 for n in raw_nodes),
                       len(concat), source)
            nodes = []
            for j, node in enumerate(raw_nodes):
                if not isinstance(node, list | tuple) or not node:
                    raise GenotypeError(f"{where}, node {j}: expected a non-empty list of [op, input] pairs")
                pairs = []
                for pair in node:
                    if (not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str)
                            or not isinstance(pair[1], int) or isinstance(pair[1], bool)):
                        raise GenotypeError(f"{where}, node {j}: expected [op_name, input_index], got {brief(pair)}")
                    pairs.append((pair[0], check_index(pair[1], f"{where}, node {j}: input index")))
                nodes.append(tuple(pairs))
            cells[name] = Cell(tuple(nodes), tuple(check_index(c, f"{where}: concat") for c in concat))
        return cls(cells)

    @classmethod
    def from_json(cls, text: str, *, source: str = "genotype") -> Genotype:
        def number(digits: str) -> int:  # huge numbers are refused before Python converts them
            if len(digits.lstrip("-")) > len(str(MAX_INDEX)):
                raise GenotypeError(f"{source}: the number {brief(digits)} is not a node index (at most {MAX_INDEX})")
            return int(digits)

        try:
            data = json.loads(text, parse_int=number)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"{source}: not valid JSON ({e})") from None
        except RecursionError:  # JSON nested thousands of levels deep; a genotype is five
            raise GenotypeError(f"{source}: not a genotype: nested far deeper than the five levels of one") from None
        return cls.from_dict(data, source=source)

    def validate(self, ops: tuple[str, ...], num_inputs: int, *, source: str = "genotype") -> None:
        """Check the size of each cell (see MAX_NODES), op names and node indices against a space;
        raise GenotypeError naming the spot."""
        if len(self.cells) > MAX_CELLS:
            raise GenotypeError(f"{source}: {len(self.cells)} cell types; a genotype may have at most {MAX_CELLS}")
        for name, cell in self.cells.items():
            check_size(name, len(cell.nodes), sum(map(len, cell.nodes)), len(cell.concat), source)
            for j, node in enumerate(cell.nodes):
                node_index = num_inputs + j
                for op, src in node:
                    if op not in ops:
                        raise GenotypeError(f"{source}: cell {brief(name)}, node {node_index}: unknown op {brief(op)}; "
                                            f"valid ops: {', '.join(ops)}")
                    if not 0 <= src < node_index:
                        raise GenotypeError(f"{source}: cell {brief(name)}, node {node_index}: input {brief(src)} out "
                                            f"of range 0..{node_index - 1}")
            last = num_inputs + len(cell.nodes)
            for c in cell.concat:
                if not 0 <= c < last:
                    raise GenotypeError(f"{source}: cell {brief(name)}: concat node {brief(c)} out of range "
                                        f"0..{last - 1}")
