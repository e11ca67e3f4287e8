"""Per-edge op sets (``kept``: {cell type: [[op names] per edge]}), as P-DARTS's switches hold them
(Chen et al., ICCV 2019; its train_search.py), and the rules that shrink them. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nas_core import brief


def kept_columns(kept: Any, key: str, ops: Sequence[str], edges: Mapping[str, int] | None = None
                 ) -> dict[str, list[list[int]]] | None:
    """``kept`` as column indices into ``ops``, per cell type and edge (None: nothing pruned). With
    ``edges`` ({cell type: edge count}) the table must cover exactly those. Raises ValueError naming
    ``key`` and the first entry that does not fit."""
    if kept is None:
        return None
    if not isinstance(kept, Mapping) or (edges is not None and set(kept) != set(edges)):
        raise ValueError(f"{key} must map each cell type {sorted(edges or ())} to a list of op lists, one per "
                         f"edge; got {brief(kept)}")
    out = {}
    for cell_type, rows in kept.items():
        count = None if edges is None else edges[cell_type]
        if not isinstance(rows, list | tuple) or (count is not None and len(rows) != count):
            size = "" if count is None else f" {count}"
            raise ValueError(f"{key}.{cell_type} must list the kept ops of each of its{size} edges; got {brief(rows)}")
        for i, names in enumerate(rows):
            if (not isinstance(names, list | tuple) or not names or len(set(names)) != len(names)
                    or any(not isinstance(n, str) or n not in ops for n in names)):
                raise ValueError(f"{key}.{cell_type}[{i}] must be distinct op names of the space "
                                 f"({', '.join(ops)}), at least one; got {brief(names)}")
        out[cell_type] = [sorted(ops.index(n) for n in names) for names in rows]
    return out


def strongest(row: Sequence[float], columns: Sequence[int], keep: int, zero: int | None = None) -> list[int]:
    """The ``keep`` columns of ``columns`` with the largest ``row`` values, in column order. P-DARTS's
    ``get_min_k`` drops the smallest one by one (ties: the lower column first); with ``zero`` (the
    zero op's column: its ``get_min_k_no_zero``, the last stage's rule) the zero op is dropped first."""
    ranked = sorted(columns, key=lambda c: (c != zero, row[c], c), reverse=True)
    return sorted(ranked[:keep])
