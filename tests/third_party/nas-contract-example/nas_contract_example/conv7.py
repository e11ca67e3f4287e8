"""A new candidate op for the darts_cnn family: factory(channels, stride, affine, search)."""

from __future__ import annotations

from torch import nn


def conv_7x1_1x7(channels: int, stride: int, affine: bool, search: bool) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(channels, channels, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(channels, channels, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(channels, affine=affine))
