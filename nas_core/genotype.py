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

from nas_core.errors import GenotypeError


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
        cells = {}
        for name, cell in data.items():
            where = f"{source}: cell {name!r}"
            if not isinstance(cell, Mapping) or set(cell) != {"nodes", "concat"}:
                raise GenotypeError(f"{where}: expected exactly the keys 'nodes' and 'concat'")
            nodes = []
            for j, node in enumerate(cell["nodes"]):
                if not isinstance(node, list | tuple) or not node:
                    raise GenotypeError(f"{where}, node {j}: expected a non-empty list of [op, input] pairs")
                pairs = []
                for pair in node:
                    if (not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str)
                            or not isinstance(pair[1], int) or isinstance(pair[1], bool)):
                        raise GenotypeError(f"{where}, node {j}: expected [op_name, input_index], got {pair!r}")
                    pairs.append((pair[0], pair[1]))
                nodes.append(tuple(pairs))
            concat = cell["concat"]
            if not isinstance(concat, list | tuple) or not all(isinstance(c, int) for c in concat):
                raise GenotypeError(f"{where}: 'concat' must be a list of node indices")
            cells[name] = Cell(tuple(nodes), tuple(concat))
        return cls(cells)

    @classmethod
    def from_json(cls, text: str, *, source: str = "genotype") -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"{source}: not valid JSON ({e})") from None
        return cls.from_dict(data, source=source)

    def validate(self, ops: tuple[str, ...], num_inputs: int, *, source: str = "genotype") -> None:
        """Check op names and node indices against a space; raise GenotypeError naming the spot."""
        for name, cell in self.cells.items():
            for j, node in enumerate(cell.nodes):
                node_index = num_inputs + j
                for op, src in node:
                    if op not in ops:
                        raise GenotypeError(
                            f"{source}: cell {name!r}, node {node_index}: unknown op {op!r}; valid ops: {', '.join(ops)}")
                    if not 0 <= src < node_index:
                        raise GenotypeError(
                            f"{source}: cell {name!r}, node {node_index}: input {src} out of range 0..{node_index - 1}")
            last = num_inputs + len(cell.nodes)
            for c in cell.concat:
                if not 0 <= c < last:
                    raise GenotypeError(f"{source}: cell {name!r}: concat node {c} out of range 0..{last - 1}")
