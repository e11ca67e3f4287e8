"""Scheduled op pruning: at given epochs, every edge of the search keeps only its strongest ops.

The kept ops are the relaxation's (``Relaxation.prune``): their masks are buffers of the relaxation,
so checkpoints, ``--resume`` and a finished run read back hold the pruned set, and the pruned ops'
mixing weights and strengths are exactly 0. Supernet edges read the masks as each epoch starts and
stop computing those ops (``darts_cnn``'s weighted-sum edges), so the search gets cheaper as it goes.
The plugin's epoch-start hook therefore runs before the supernet's (``tryfirst``, plugin.py).
"""

from __future__ import annotations

import logging

import torch

from nas_core import ArchSpec, ConfigError, RunContext
from nas_op_pruning.options import OpPruningSettings

log = logging.getLogger("nas")
SECTION = "op_pruning"


def check(settings: OpPruningSettings, run: RunContext) -> None:
    """Refuse a schedule this search cannot carry out, naming the key."""
    relaxation = run.components["relaxation"]
    if not relaxation.supports_pruning:
        raise ConfigError(f"{SECTION}.after: relaxation {run.config.relaxation.name!r} cannot prune ops; use one "
                          f"that can (softmax, masked_softmax, snas) or leave {SECTION}.after empty")
    spec: ArchSpec = run.spec
    candidates = sum(op != spec.zero_op for op in spec.ops)
    if settings.keep[0] >= candidates:
        raise ConfigError(f"{SECTION}.keep: the first pruning keeps {settings.keep[0]} ops per edge but the space "
                          f"has only {candidates} besides the zero op; keep fewer")
    if settings.after[-1] >= run.epochs:
        raise ConfigError(f"{SECTION}.after: a pruning after {settings.after[-1]} epochs never happens in a search "
                          f"of {run.epochs}; prune earlier or search longer")


def kept_masks(strengths: dict[str, torch.Tensor], previous: dict[str, torch.Tensor], spec: ArchSpec, keep: int,
               drop_zero: bool) -> dict[str, torch.Tensor]:
    """Per cell type, bool [edges, ops]: each edge's ``keep`` strongest ops among those still kept
    (ties: the lower column), plus the zero op unless ``drop_zero``."""
    zero = spec.ops.index(spec.zero_op) if spec.zero_op in spec.ops else None
    out = {}
    for cell_type, values in strengths.items():
        mask = previous.get(cell_type)
        alive = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.clone()
        scores = values.masked_fill(~alive, float("-inf"))
        if zero is not None:
            scores[:, zero] = float("-inf")
        # a stable sort by descending strength keeps the lower column among equals
        order = torch.sort(-scores, dim=-1, stable=True).indices[:, :keep]
        new = torch.zeros_like(alive)
        new.scatter_(1, order, True)
        if zero is not None and not drop_zero:
            new[:, zero] = alive[:, zero]
        out[cell_type] = new & alive
    return out


def nas_check_run(run: RunContext) -> None:
    settings = run.config.settings[SECTION]
    if run.phase == "search" and settings.after:
        check(settings, run)


def nas_epoch_start(run: RunContext) -> None:
    settings: OpPruningSettings = run.config.settings[SECTION]
    if run.phase != "search" or not settings.after:
        return
    relaxation, spec = run.components["relaxation"], run.spec
    if run.epoch in settings.after:
        i = settings.after.index(run.epoch)
        relaxation.prune(kept_masks(relaxation.strengths(), relaxation.kept(), spec, settings.keep[i],
                                    settings.drop_zero and i == 0))
        log.info("op pruning after %d epochs: every edge keeps its %d strongest ops", run.epoch, settings.keep[i])
    # what the supernet computes this epoch, plotted beside the losses (TensorBoard: search/ops_per_edge)
    live = [i for i, op in enumerate(spec.ops) if op != spec.zero_op]
    kept = relaxation.kept()
    counts = [float(kept[t][:, live].sum(-1).float().mean()) if t in kept else float(len(live)) for t in spec.edges]
    run.epoch_metrics["ops_per_edge"] = sum(counts) / len(counts)
