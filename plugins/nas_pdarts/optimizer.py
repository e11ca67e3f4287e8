"""P-DARTS's optimizer (Chen et al., ICCV 2019; its train_search.py): DARTS first order, with the
architecture gradient's L2 norm clipped (``torch.nn.utils.clip_grad_norm_`` over both alphas, at the
weights' bound, 5) before Adam's step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nas_core import Outcome, Relaxation, Supernet
from nas_darts.architect import DartsOptimizer
from nas_pdarts.edge import PdartsEdge
from nas_pdarts.options import PdartsOptimizerOptions


def clipped(grads: Sequence[Tensor], max_norm: float) -> list[Tensor]:
    """``grads`` scaled as ``clip_grad_norm_`` scales them: by min(1, max_norm / (norm + 1e-6))."""
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        return [g * coef for g in grads]


def check_kept(supernet: Supernet, relaxation: Relaxation, ops: Sequence[str]) -> None:
    """A ValueError unless every ``pdarts`` edge builds exactly the ops its relaxation row keeps: an op
    the edge did not build must get weight 0, and a kept op must be there to get its weight."""
    mask_of = getattr(relaxation, "mask", None)
    for module in supernet.modules():
        if not isinstance(module, PdartsEdge):
            continue
        cell_type, row = module.position
        mask = mask_of(cell_type) if mask_of is not None and cell_type is not None else None
        searched = set(ops) if mask is None else {op for op, on in zip(ops, mask[row].tolist()) if on}
        if searched != set(module.kept_ops):
            raise ValueError(f"edge {row} of the {cell_type} cell builds {sorted(module.kept_ops)} but the relaxation "
                             f"mixes {sorted(searched)}: space.edge.kept and relaxation.kept (masked_softmax) must "
                             f"agree")


class PdartsOptimizer(DartsOptimizer):
    """``darts_1st`` plus ``arch_grad_clip``."""

    def __init__(self, options: PdartsOptimizerOptions, *, supernet: Supernet, relaxation: Relaxation,
                 **context: Any):
        ops = next((m.space_ops for m in supernet.modules() if isinstance(m, PdartsEdge)), None)
        if ops is not None:
            check_kept(supernet, relaxation, ops)
        super().__init__(options, supernet=supernet, relaxation=relaxation, second_order=False, **context)

    def arch_gradient(self, *args: Any, **kwargs: Any) -> tuple[Outcome, list[Tensor]]:
        out, grads = super().arch_gradient(*args, **kwargs)
        if self.opts.arch_grad_clip > 0:
            grads = clipped(grads, self.opts.arch_grad_clip)
        return out, grads
