"""Starting a wider supernet from a narrower one's weights (DrNAS's progressive search, Chen et al.,
ICLR 2021, section 3.3: the partial-channel ops grow from C/6 to C/4 channels).

DrNAS's net2wider copies randomly chosen channels into the new ones, the same choice along an op's
chain of layers. Here the new channel j of a dimension that grew from n copies channel j mod n: one
rule for every tensor, so consecutive layers agree on which channel each new one copies without
knowing the ops' structure. (Neither preserves the function: the widened op also reads new input
channels.) A dimension that shrank keeps its first channels."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


def widened(old: Tensor, shape: torch.Size) -> Tensor:
    """``old`` resized to ``shape`` dimension by dimension, new channels copied cyclically."""
    if old.dim() != len(shape):
        raise ValueError(f"a tensor of shape {tuple(old.shape)} cannot become {tuple(shape)}")
    out = old
    for dim, size in enumerate(shape):
        if out.shape[dim] != size:
            out = out.index_select(dim, torch.arange(size, device=out.device) % out.shape[dim])
    return out


def widen_into(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy ``state`` (another module's ``state_dict``, same names) into ``module``'s parameters and
    buffers, widening each tensor whose shape differs. Raises ValueError if the names differ."""
    own = module.state_dict(keep_vars=True)
    if set(own) != set(state):
        extra = sorted(set(own) ^ set(state))
        raise ValueError(f"{len(extra)} tensors are in one supernet only, e.g. {extra[0]}")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(widened(state[name].to(tensor.device), tensor.shape))
