"""Reading genotypes: files (JSON or DARTS text), run directories, registered names; and the
text form researchers paste from the DARTS code, read by a small safe parser.

    Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ...], normal_concat=range(2, 6),
             reduce=[...], reduce_concat=[2, 3, 4, 5])

The text is parsed with :mod:`ast` and only these shapes are accepted: one call of ``Genotype``
with keyword arguments, lists of ``(str, int)`` tuples, and concat as ``range(a, b)`` or a list
of ints. Nothing is evaluated; anything else is an error naming what and where.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import attrs

from nas_core.errors import GenotypeError, closest_hint
from nas_core.genotype import Cell, Genotype


@attrs.frozen
class ParsedText:
    """A parsed genotype and how each cell's concat was written (so it is written back alike)."""

    genotype: Genotype
    concat_as_range: dict[str, bool]


def _where(node: ast.AST) -> str:
    return f"line {node.lineno}, column {node.col_offset + 1}"


def _int(node: ast.AST, what: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    raise GenotypeError(f"{what} at {_where(node)}: expected an integer, got {ast.unparse(node)[:40]!r}")


def _pairs(node: ast.AST, cell: str) -> list[tuple[str, int]]:
    if not isinstance(node, ast.List | ast.Tuple):
        raise GenotypeError(f"cell {cell!r} at {_where(node)}: expected a list of (op, input) pairs")
    pairs = []
    for item in node.elts:
        if not (isinstance(item, ast.Tuple) and len(item.elts) == 2 and isinstance(item.elts[0], ast.Constant)
                and isinstance(item.elts[0].value, str)):
            raise GenotypeError(f"cell {cell!r} at {_where(item)}: expected ('op_name', input_index), "
                                f"got {ast.unparse(item)[:60]!r}")
        pairs.append((item.elts[0].value, _int(item.elts[1], f"cell {cell!r} input index")))
    return pairs


def _concat(node: ast.AST, cell: str) -> tuple[tuple[int, ...], bool]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        if node.keywords or len(node.args) != 2:
            raise GenotypeError(f"{cell}_concat at {_where(node)}: expected range(start, stop)")
        start, stop = (_int(a, f"{cell}_concat") for a in node.args)
        return tuple(range(start, stop)), True
    if isinstance(node, ast.List | ast.Tuple):
        return tuple(_int(e, f"{cell}_concat") for e in node.elts), False
    raise GenotypeError(f"{cell}_concat at {_where(node)}: expected range(a, b) or a list of node indices, "
                        f"got {ast.unparse(node)[:60]!r}")


def parse_darts_text(text: str) -> ParsedText:
    """Parse ``Genotype(...)`` text; raises GenotypeError saying what is wrong and where."""
    if len(text) > 100_000:
        raise GenotypeError("genotype text is longer than 100000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise GenotypeError(f"genotype text is not of the form Genotype(...): {e.msg} at line {e.lineno}, "
                            f"column {e.offset}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise GenotypeError(f"genotype text at {_where(call)}: expected Genotype(...), got {ast.unparse(call)[:60]!r}")
    if call.args:
        raise GenotypeError(f"genotype text at {_where(call.args[0])}: use keyword arguments (normal=..., ...)")
    values = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise GenotypeError(f"genotype text at {_where(kw.value)}: ** arguments are not allowed")
        if kw.arg in values:
            raise GenotypeError(f"genotype text: {kw.arg!r} given twice")
        values[kw.arg] = kw.value
    cells = [k for k in values if not k.endswith("_concat") and k != "concat"]
    if "concat" in values:  # the DARTS recurrent form: Genotype(recurrent=[...], concat=range(1, 9))
        if len(cells) != 1 or f"{cells[0]}_concat" in values:
            raise GenotypeError("genotype text: a bare 'concat' needs exactly one cell without its own <cell>_concat")
        values[f"{cells[0]}_concat"] = values.pop("concat")
    stray = [k for k in values if k.endswith("_concat") and k[: -len("_concat")] not in values]
    if stray:
        raise GenotypeError(f"genotype text: {stray[0]!r} has no cell {stray[0][:-len('_concat')]!r}")
    if not cells:
        raise GenotypeError("genotype text has no cells")
    parsed, styles = {}, {}
    for name in cells:
        if f"{name}_concat" not in values:
            raise GenotypeError(f"genotype text: cell {name!r} has no {name}_concat")
        pairs = _pairs(values[name], name)
        concat, as_range = _concat(values[f"{name}_concat"], name)
        parsed[name] = _group(name, pairs, concat)
        styles[name] = as_range
    return ParsedText(Genotype(parsed), styles)


def _group(name: str, pairs: list[tuple[str, int]], concat: tuple[int, ...]) -> Cell:
    """Split DARTS' flat pair list into nodes: the intermediate nodes are min(concat)..max(concat)
    (DARTS concatenates them all), each fed by the same number of pairs."""
    if not concat:
        raise GenotypeError(f"cell {name!r}: {name}_concat is empty")
    first, nodes = min(concat), max(concat) - min(concat) + 1
    if first < 1:
        raise GenotypeError(f"cell {name!r}: {name}_concat starts at {first}; node 0 is an input node")
    if not pairs or len(pairs) % nodes:
        raise GenotypeError(f"cell {name!r}: {len(pairs)} (op, input) pairs do not split evenly over the "
                            f"{nodes} nodes {first}..{first + nodes - 1} named by {name}_concat")
    k = len(pairs) // nodes
    return Cell(tuple(tuple(pairs[i * k:(i + 1) * k]) for i in range(nodes)), concat)


def format_darts_text(genotype: Genotype, concat_as_range: dict[str, bool] | None = None) -> str:
    """The DARTS text form; concat as ``range(a, b)`` where contiguous unless told otherwise. A
    genotype of one cell is written as the DARTS code writes its recurrent cells: ``concat=``."""
    parts = []
    bare = len(genotype.cells) == 1
    for name, cell in genotype.cells.items():
        flat = ", ".join(f"({op!r}, {src})" for node in cell.nodes for op, src in node)
        contiguous = cell.concat == tuple(range(cell.concat[0], cell.concat[-1] + 1)) if cell.concat else False
        as_range = contiguous if concat_as_range is None else concat_as_range.get(name, contiguous) and contiguous
        concat = f"range({cell.concat[0]}, {cell.concat[-1] + 1})" if as_range else repr(list(cell.concat))
        parts.append(f"{name}=[{flat}], {'' if bare else name + '_'}concat={concat}")
    return f"Genotype({', '.join(parts)})"


def read_genotype_file(path: Path) -> Genotype:
    """Our JSON, or the DARTS text form (a file starting with ``Genotype(``)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise GenotypeError(f"cannot read genotype file {path}: {e}") from None
    if text.lstrip().startswith("Genotype("):
        try:
            return parse_darts_text(text).genotype
        except GenotypeError as e:
            raise GenotypeError(f"{path}: {e}") from None
    return Genotype.from_json(text, source=str(path))


def load_genotype(source: str, registered: Mapping[str, tuple[Genotype, str, str]]) -> Genotype:
    """A genotype from a file, a run directory (its genotype.json) or a registered name."""
    path = Path(source)
    if path.is_dir():
        if not (path / "genotype.json").is_file():
            raise GenotypeError(f"{path} has no genotype.json (is it a finished search run directory?)")
        return read_genotype_file(path / "genotype.json")
    if path.is_file():
        return read_genotype_file(path)
    if source in registered:
        return registered[source][0]
    names = ", ".join(sorted(registered)) or "(none)"
    raise GenotypeError(f"genotype {source!r} is neither a file, a run directory nor a registered name"
                        f"{closest_hint(source, registered)}; registered genotypes: {names}")
