"""RobustDARTS's ``noise`` op (Zela et al., ICLR 2020, space S4; the authors' src/operations.py
``NoiseOp(stride, 0, 1)``): a parameter-free candidate that outputs fresh N(0, 1) noise."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NoiseOp(nn.Module):
    """Fresh N(0, 1) samples shaped like the input (its ``::stride`` subsample on a reduction edge), in
    training and in evaluation, as theirs. The output does not depend on the input, so no gradient
    reaches it; the edge's mixing weight still gets one (through noise * weight).

    The samples come from torch's default generator of the input's device (``torch.randn``, the same
    stream as their ``Tensor.normal_``): the engine seeds it with the run's seed when a search or a
    training starts and a checkpoint saves and restores its state, so a run repeats its noise with the
    same seed, and on resume. (A run's own ``run.generator(stream)`` is not reachable from an op; edges
    recomputed in backward (``space.recompute_edges``) draw the same noise again, as torch's checkpoint
    restores the generator's state.) Drawn in the contiguous layout whatever the input's, so
    ``channels_last`` does not change the values."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        shape = x[:, :, ::self.stride, ::self.stride].shape
        return torch.randn(shape, dtype=x.dtype, device=x.device)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def noise_op(channels: int, stride: int, affine: bool, search: bool) -> NoiseOp:
    """The ``darts_cnn`` family's factory signature (channels, stride, affine, search)."""
    return NoiseOp(stride)
