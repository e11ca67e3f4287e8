"""DrNAS's progressive search (Chen et al., ICLR 2021, section 3.3; its DARTS-space/train_search.py) as a
staged search (``search.stages``): after each stage every edge keeps its ``drnas.prune_to`` strongest
ops, and the next stage (wider partial channels) starts from this stage's alphas and supernet.

DrNAS prunes per edge (its ``prune``: the top ops of each alpha row). A space has one op list for
all its edges, so the pruning is a per-edge mask of the relaxation (``relaxation.kept``, written
into the next stage's config): the pruned ops' weights are 0 and each row is renormalised over the
kept ones, exactly DrNAS's masking; ``space.edge.skip_zero_weights`` leaves them uncomputed.

The hooks act only on staged searches whose relaxation is ``dirichlet``. Torch loads on first use."""

from __future__ import annotations

from typing import Any

from nas_core import ConfigError, RunContext, hookimpl

RELAXATION = "dirichlet"


def is_drnas(config: Any) -> bool:
    return config.relaxation.name == RELAXATION


@hookimpl
def nas_stage_config(stage: int, finished: Any, layer: dict) -> None:
    """The next stage's ``relaxation.kept``: per edge, the ``prune_to[stage - 1]`` ops of largest alpha
    among those the finished stage searched (the previous mask when no pruning is set for it)."""
    if not is_drnas(finished.config):
        return
    import torch

    prune_to = finished.config.settings["drnas"].prune_to
    relaxation, ops = finished.relaxation, finished.spec.ops
    if stage > len(prune_to) and not any(relaxation.mask(t) is not None for t in finished.spec.edges):
        return  # nothing pruned, now or before
    kept = {}
    for cell_type in finished.spec.edges:
        alpha = relaxation.alphas[cell_type].detach().cpu()
        mask = relaxation.mask(cell_type)
        mask = torch.ones_like(alpha, dtype=torch.bool) if mask is None else mask.cpu()
        if stage <= len(prune_to):
            keep = min(prune_to[stage - 1], len(ops))
            scores = alpha.masked_fill(~mask, float("-inf"))
            top = scores.topk(keep, dim=-1).indices
            mask = mask & torch.zeros_like(mask).scatter(1, top, True)  # never revives an op pruned before
        kept[cell_type] = [[op for op, on in zip(ops, row) if on] for row in mask.tolist()]
    layer.setdefault("relaxation", {})["kept"] = kept


@hookimpl
def nas_run_start(run: RunContext) -> None:
    """A later stage of a DrNAS search starts from the previous stage's alphas (the pruned ops' set to
    0, as DrNAS's ``prune`` does) and, with ``drnas.inherit_weights``, its supernet weights."""
    previous = run.previous_stage
    if previous is None or not is_drnas(run.config) or not is_drnas(previous.config):
        return
    import torch

    from nas_drnas.widen import widen_into

    if dict(previous.spec.edges) != dict(run.spec.edges) or not set(run.spec.ops) <= set(previous.spec.ops):
        raise ConfigError(f"stage {run.stage} of this DrNAS search has other edges or ops than stage {run.stage - 1}: "
                          f"it cannot start from that stage's alphas")
    columns = [previous.spec.ops.index(op) for op in run.spec.ops]
    relaxation = run.components["relaxation"]
    old = previous.relaxation.alphas
    with torch.no_grad():
        for cell_type, alpha in relaxation.alphas.items():
            inherited = old[cell_type][:, columns].to(alpha.device)
            mask = relaxation.mask(cell_type)
            alpha.copy_(inherited if mask is None else inherited * mask)
    if run.config.settings["drnas"].inherit_weights:
        try:
            widen_into(run.components["supernet"], previous.supernet.state_dict())
        except ValueError as e:
            raise ConfigError(f"drnas.inherit_weights: stage {run.stage} cannot start from stage {run.stage - 1}'s "
                              f"supernet ({e}); set drnas.inherit_weights=false") from None
