"""A staged search that prunes ops (P-DARTS, Chen et al., ICCV 2019): after each stage the
``pruning.drop`` weakest ops leave ``space.ops``, and the next stage starts from the alphas of
the ops it keeps."""

from __future__ import annotations

from typing import Any

from nas_core import RunContext, hookimpl


@hookimpl
def nas_stage_config(stage: int, finished: Any, layer: dict) -> None:
    drop = finished.config.settings["pruning"].drop
    if not drop:
        return
    strengths = finished.relaxation.strengths()
    ops = finished.spec.ops
    score = {op: float(sum(s[:, i].sum() for s in strengths.values())) for i, op in enumerate(ops)}
    weakest = sorted((op for op in ops if op != finished.spec.zero_op), key=score.__getitem__)[:drop]
    layer.setdefault("space", {})["ops"] = [op for op in ops if op not in weakest]


@hookimpl
def nas_run_start(run: RunContext) -> None:
    previous = run.previous_stage
    if previous is None or not run.config.settings["pruning"].drop:
        return
    import torch

    kept = [previous.spec.ops.index(op) for op in run.spec.ops]
    old = dict(previous.relaxation.named_parameters())
    with torch.no_grad():
        for name, param in run.components["relaxation"].named_parameters():
            param.copy_(old[name][..., kept])  # [edges, ops] per cell type: the kept ops' columns
