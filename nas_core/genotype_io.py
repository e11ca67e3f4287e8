"""Reading genotypes: files (JSON or DARTS text), run directories, registered names; and the
text form researchers paste from the DARTS code, read by a small safe parser.

    Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ...], normal_concat=range(2, 6),
             reduce=[...], reduce_concat=[2, 3, 4, 5])

The text is parsed with :mod:`ast` and only these shapes are accepted: one call of ``Genotype``
with keyword arguments, lists of ``(str, int)`` tuples, and concat as ``range(a, b)`` or a list
of ints. Nothing is evaluated; anything else is an error naming what and where. Both forms are
bounded (nas_core.genotype.MAX_NODES and the sizes here) before anything is built from them.

Cells of one input node whose output is their last node (NAS-Bench-201's, and every search on it)
have a text form of their own, the cell string of the NAS-Bench-201 API (Dong & Yang, ICLR 2020)::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from nas_core.errors import GenotypeError, brief, closest_hint
from nas_core.genotype import MAX_INDEX, Cell, Genotype, check_index, check_size

MAX_TEXT = 100_000  # characters of the text form (DARTS_V2 is 480)
MAX_FILE_BYTES = 1_000_000  # a genotype file (JSON of the largest cell allowed: about 20 kB)


@attrs.frozen
class ParsedText:
    """A parsed genotype and how each cell's concat was written (so it is written back alike)."""

    genotype: Genotype
    concat_as_range: dict[str, bool]


def _where(node: ast.AST) -> str:
    return f"line {node.lineno}, column {node.col_offset + 1}"


def _quote(text: str, node: ast.AST) -> str:
    """``node`` as written in ``text``, shortened (not ``ast.unparse``: it recurses into the node,
    and writes integers in decimal, which Python refuses beyond 4300 digits)."""
    return brief(ast.get_source_segment(text, node) or "")


def _int(text: str, node: ast.AST, what: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return check_index(node.value, f"{what} at {_where(node)}")
    raise GenotypeError(f"{what} at {_where(node)}: expected an integer, got {_quote(text, node)}")


def _pairs(text: str, node: ast.AST, cell: str) -> list[tuple[str, int]]:
    if not isinstance(node, ast.List | ast.Tuple):
        raise GenotypeError(f"cell {brief(cell)} at {_where(node)}: expected a list of (op, input) pairs")
    pairs = []
    for item in node.elts:
        if not (isinstance(item, ast.Tuple) and len(item.elts) == 2 and isinstance(item.elts[0], ast.Constant)
                and isinstance(item.elts[0].value, str)):
            raise GenotypeError(f"cell {brief(cell)} at {_where(item)}: expected ('op_name', input_index), "
                                f"got {_quote(text, item)}")
        pairs.append((item.elts[0].value, _int(text, item.elts[1], f"cell {brief(cell)} input index")))
    return pairs


def _concat(text: str, node: ast.AST, cell: str) -> tuple[tuple[int, ...], bool]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        if node.keywords or len(node.args) != 2:
            raise GenotypeError(f"{cell}_concat at {_where(node)}: expected range(start, stop)")
        start, stop = (_int(text, a, f"{cell}_concat") for a in node.args)  # small: node indices
        return tuple(range(start, stop)), True
    if isinstance(node, ast.List | ast.Tuple):
        return tuple(_int(text, e, f"{cell}_concat") for e in node.elts), False
    raise GenotypeError(f"{cell}_concat at {_where(node)}: expected range(a, b) or a list of node indices, "
                        f"got {_quote(text, node)}")


def parse_darts_text(text: str) -> ParsedText:
    """Parse ``Genotype(...)`` text; raises GenotypeError saying what is wrong and where."""
    if len(text) > MAX_TEXT:
        raise GenotypeError(f"genotype text is longer than {MAX_TEXT} characters")
    text = text.strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise GenotypeError(f"genotype text is not of the form Genotype(...): {e.msg} at line {e.lineno}, "
                            f"column {e.offset}") from None
    except (MemoryError, RecursionError):  # the parser's stack: thousands of nested brackets or signs
        raise GenotypeError("genotype text is not of the form Genotype(...): nested far too deeply") from None
    except ValueError as e:  # a null byte
        raise GenotypeError(f"genotype text is not of the form Genotype(...): {e}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise GenotypeError(f"genotype text at {_where(call)}: expected Genotype(...), got {_quote(text, call)}")
    if call.args:
        raise GenotypeError(f"genotype text at {_where(call.args[0])}: use keyword arguments (normal=..., ...)")
    values = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise GenotypeError(f"genotype text at {_where(kw.value)}: ** arguments are not allowed")
        if kw.arg in values:
            raise GenotypeError(f"genotype text: {brief(kw.arg)} given twice")
        values[kw.arg] = kw.value
    cells = [k for k in values if not k.endswith("_concat") and k != "concat"]
    if "concat" in values:  # the DARTS recurrent form: Genotype(recurrent=[...], concat=range(1, 9))
        if len(cells) != 1 or f"{cells[0]}_concat" in values:
            raise GenotypeError("genotype text: a bare 'concat' needs exactly one cell without its own <cell>_concat")
        values[f"{cells[0]}_concat"] = values.pop("concat")
    stray = [k for k in values if k.endswith("_concat") and k[: -len("_concat")] not in values]
    if stray:
        raise GenotypeError(f"genotype text: {brief(stray[0])} has no cell {brief(stray[0][:-len('_concat')])}")
    if not cells:
        raise GenotypeError("genotype text has no cells")
    parsed, styles = {}, {}
    for name in cells:
        if f"{name}_concat" not in values:
            raise GenotypeError(f"genotype text: cell {brief(name)} has no {name}_concat")
        pairs = _pairs(text, values[name], name)
        concat, as_range = _concat(text, values[f"{name}_concat"], name)
        parsed[name] = _group(name, pairs, concat)
        styles[name] = as_range
    return ParsedText(Genotype(parsed), styles)


def _group(name: str, pairs: list[tuple[str, int]], concat: tuple[int, ...]) -> Cell:
    """Split DARTS' flat pair list into nodes: the intermediate nodes are min(concat)..max(concat)
    (DARTS concatenates them all), each fed by the same number of pairs."""
    if not concat:
        raise GenotypeError(f"cell {brief(name)}: {name}_concat is empty")
    first, nodes = min(concat), max(concat) - min(concat) + 1
    check_size(name, nodes, len(pairs), len(concat), "genotype text")
    if first < 1:
        raise GenotypeError(f"cell {brief(name)}: {name}_concat starts at {first}; node 0 is an input node")
    if not pairs or len(pairs) % nodes:
        raise GenotypeError(f"cell {brief(name)}: {len(pairs)} (op, input) pairs do not split evenly over the "
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


CELL_STRING_CELL = "cell"  # the cell type a cell string describes
_TERM = re.compile(r"([\w.-]+)~([0-9]+)", re.ASCII)  # op names: letters, digits, _ . -


def parse_cell_string(text: str, cell: str = CELL_STRING_CELL) -> Genotype:
    """The cell string of the NAS-Bench-201 API (``Structure.tostr``; Dong & Yang, ICLR 2020):
    nodes 1..n separated by ``+``, each written ``|op~input|op~input|`` as the sum of those terms.
    Node 0 is the cell's input and the cell outputs node n: a genotype of one cell ``cell`` with
    concat ``(n,)``. Raises GenotypeError naming the node and the term that is wrong."""
    if len(text) > MAX_TEXT:
        raise GenotypeError(f"cell string is longer than {MAX_TEXT} characters")
    parts = text.strip().split("+")
    check_size(cell, len(parts), text.count("~"), 1, "cell string")  # bounded before anything is built
    nodes = []
    for j, part in enumerate(parts, start=1):
        if len(part) < 3 or part[0] != "|" or part[-1] != "|":
            raise GenotypeError(f"cell string, node {j}: expected |op~input|...|, got {brief(part)}")
        pairs = []
        for term in part[1:-1].split("|"):
            match = _TERM.fullmatch(term)
            if match is None:
                raise GenotypeError(f"cell string, node {j}: expected op~input (an op name, ~, a node index), "
                                    f"got {brief(term)}")
            digits = match[2]
            if len(digits) > len(str(MAX_INDEX)):  # refused before Python converts a huge number
                raise GenotypeError(f"cell string, node {j}: {brief(digits)} is not a node index")
            pairs.append((match[1], check_index(int(digits), f"cell string, node {j}: input index")))
        nodes.append(tuple(pairs))
    return Genotype({cell: Cell(tuple(nodes), (len(nodes),))})


def format_cell_string(genotype: Genotype) -> str | None:
    """The cell string of a genotype of one cell with one input node whose output is its last node;
    None for any other genotype (``format_darts_text`` writes those)."""
    if len(genotype.cells) != 1:
        return None
    (cell,) = genotype.cells.values()
    if cell.concat != (len(cell.nodes),) or any(not 0 <= src <= j or not _TERM.fullmatch(f"{op}~{src}")
                                                for j, node in enumerate(cell.nodes) for op, src in node):
        return None  # not that shape, or op names the string cannot hold
    return "+".join("|" + "|".join(f"{op}~{src}" for op, src in node) + "|" for node in cell.nodes)


def format_genotype_text(genotype: Genotype) -> str:
    """The text form commands print: the cell string where it applies, else the DARTS text form."""
    return format_cell_string(genotype) or format_darts_text(genotype)


def _parse_text(text: str) -> Genotype | None:
    """The genotype ``text`` writes in one of the text forms (by its first character), else None."""
    start = text.lstrip()
    if start.startswith("Genotype("):
        return parse_darts_text(text).genotype
    return parse_cell_string(text) if start.startswith("|") else None


def read_genotype_file(path: Path) -> Genotype:
    """Our JSON, the DARTS text form (a file starting with ``Genotype(``) or a cell string (``|``)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # no more than that is read, whatever the file's size
        text = data.decode("utf-8")
    except OSError as e:
        raise GenotypeError(f"cannot read genotype file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise GenotypeError(f"cannot read genotype file {path}: not UTF-8 text ({e.reason} at byte "
                            f"{e.start})") from None
    if len(data) > MAX_FILE_BYTES:
        raise GenotypeError(f"genotype file {path} is larger than {MAX_FILE_BYTES} bytes; a genotype is a few kB")
    try:
        genotype = _parse_text(text)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None
    return genotype or Genotype.from_json(text, source=str(path))


def load_genotype(source: str, registered: Mapping[str, tuple[Genotype, str, str]]) -> Genotype:
    """A genotype from a file, a run directory (its genotype.json), a registered name, or inline
    text: the DARTS form (``Genotype(...)``, as ``nas show`` prints it), a cell string
    (``|op~0|+...``) or our JSON (``{...}``)."""
    inline = source.lstrip()
    try:
        genotype = _parse_text(inline)
    except GenotypeError as e:
        raise GenotypeError(f"inline genotype text: {e}") from None
    if genotype is not None:
        return genotype
    if inline.startswith("{"):
        return Genotype.from_json(inline, source="inline genotype JSON")
    path = Path(source)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError:  # a name too long to be a path
        is_dir = is_file = False
    if is_dir:
        if not (path / "genotype.json").is_file():
            raise GenotypeError(f"{path} has no genotype.json (is it a finished search run directory?)")
        return read_genotype_file(path / "genotype.json")
    if is_file:
        return read_genotype_file(path)
    if source in registered:
        return registered[source][0]
    names = ", ".join(sorted(registered)) or "(none)"
    raise GenotypeError(f"genotype {brief(source)} is neither a file, a run directory nor a registered name"
                        f"{closest_hint(source, registered)}; registered genotypes: {names}")
