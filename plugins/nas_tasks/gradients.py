"""The gradient step shared by the trainers: autograd, then the run's reduction service."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nas_core import RunContext


def store_gradients(loss: Tensor, params: Sequence[torch.nn.Parameter], run: RunContext) -> None:
    """``p.grad`` = d loss / d p, averaged over the processes of a torchrun job (``run.reduce``).
    Parameters the loss does not reach keep no gradient, as with ``loss.backward()``."""
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    used = [(p, g) for p, g in zip(params, grads) if g is not None]
    for (p, _), g in zip(used, run.reduce([g for _, g in used])):
        p.grad = g
