"""P-DARTS's progressive search (Chen et al., ICCV 2019, section 3.2; its train_search.py) as a staged
search (``search.stages``: 5, 11, 17 cells): after stage s every edge keeps its ``pdarts.keep[s-1]``
ops of highest mixing weight (their ``get_min_k``; 8 -> 5 -> 3 ops), and the next stage is a fresh
supernet (weights and alphas initialised anew, as theirs) over those ops. The op sets are written into
the next stage's config twice, for the two components that use them: ``relaxation.kept`` (softmax over
the kept ops) and, with the ``pdarts`` edge, ``space.edge.kept`` (only the kept ops are built).

The hook acts only on staged searches whose relaxation is ``masked_softmax``. Torch loads on first use."""

from __future__ import annotations

from typing import Any

from nas_core import hookimpl
from nas_pdarts.kept import strongest

RELAXATION, EDGE = "masked_softmax", "pdarts"


@hookimpl
def nas_stage_config(stage: int, finished: Any, layer: dict) -> None:
    if finished.config.relaxation.name != RELAXATION:
        return
    keep = finished.config.settings["pdarts"].keep
    relaxation, spec = finished.relaxation, finished.spec
    if stage > len(keep) and all(relaxation.mask(t) is None for t in spec.edges):
        return  # nothing pruned, now or before
    strengths = relaxation.strengths()
    kept = {}
    for cell_type in spec.edges:
        table = spec.table(strengths, cell_type)
        mask = relaxation.mask(cell_type)
        rows = []
        for row, values in enumerate(table):
            columns = [c for c in range(len(spec.ops)) if mask is None or bool(mask[row, c])]
            if stage <= len(keep):
                columns = strongest(values, columns, keep[stage - 1])
            rows.append([spec.ops[c] for c in columns])
        kept[cell_type] = rows
    layer.setdefault("relaxation", {})["kept"] = kept
    space = finished.config.space
    if getattr(space.options, "edge", None) is not None and space.options.edge.name == EDGE:
        layer.setdefault("space", {}).setdefault("edge", {})["kept"] = kept
