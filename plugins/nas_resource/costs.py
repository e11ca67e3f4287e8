"""What one candidate op costs, measured once per op, stride and input shape: its parameters, its
multiply-adds (torch's FLOP counter, a multiply-add counted once) or its latency on the run's device
(the median of timed forward passes at batch 1, in eval mode)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas_resource.options import METRICS


def params(op: nn.Module, shape: tuple[int, ...], device: torch.device, repeats: int) -> float:
    return float(sum(p.numel() for p in op.parameters()))


def madds(op: nn.Module, shape: tuple[int, ...], device: torch.device, repeats: int) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        op(torch.zeros(shape))
    return counter.get_total_flops() / 2


def latency(op: nn.Module, shape: tuple[int, ...], device: torch.device, repeats: int) -> float:
    op = op.to(device)
    x = torch.randn(shape, device=device)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            op(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:  # the first passes pay for allocation and kernel selection
                times.append(time.perf_counter() - start)
    return statistics.median(times)


MEASURES = {"params": params, "madds": madds, "latency": latency}


def measure_with_cache(metric: str, device: torch.device, repeats: int
                       ) -> Callable[[str, int, tuple[int, ...], Callable[[], nn.Module]], float]:
    """The ``measure`` a space's ``op_costs`` calls: ``metric`` in its unit, each op, stride and shape once."""
    cache: dict[tuple[str, int, tuple[int, ...]], float] = {}
    scale = METRICS[metric][1]

    def measure(name: str, stride: int, shape: tuple[int, ...], build: Callable[[], nn.Module]) -> float:
        key = (name, stride, tuple(shape))
        if key not in cache:
            cache[key] = scale * MEASURES[metric](build().eval(), tuple(shape), device, repeats)
        return cache[key]

    return measure
