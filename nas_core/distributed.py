"""Data-parallel runs launched by torchrun: the process group and the few collectives the engine
needs. Nothing here runs on a single process (``WORLD_SIZE`` unset or 1).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; the group is
NCCL on GPUs and gloo on CPU. A rank that dies makes torchrun end the others; a rank that hangs
makes the others' next collective fail after ``NAS_DIST_TIMEOUT`` seconds (default 300).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from nas_core.errors import ConfigError


def world_size() -> int:
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device: Any) -> tuple[int, int]:
    """Join the torchrun job (once per process); returns (rank, world size). (0, 1) without torchrun."""
    if world_size() == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=timeout_s())
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
    return dist.get_rank(), dist.get_world_size()


def timeout_s() -> float:
    try:
        return float(os.environ.get("NAS_DIST_TIMEOUT", "300"))
    except ValueError:
        raise ConfigError(f"NAS_DIST_TIMEOUT={os.environ['NAS_DIST_TIMEOUT']!r} is not a number of seconds") from None


def is_collective_failure(error: BaseException) -> bool:
    """A collective that timed out or lost its peers (as gloo and NCCL report it)."""
    import torch.distributed as dist

    text = str(error)
    return isinstance(error, getattr(dist, "DistError", ())) or any(
        word in text for word in ("gloo", "NCCL", "Timed out", "Connection reset", "Connection closed"))


def active() -> bool:
    import torch.distributed as dist

    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0 (and on a single process): the one that prints and writes."""
    if not active():
        return True
    import torch.distributed as dist

    return dist.get_rank() == 0


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_floats(values: list[float]) -> list[float]:
    """Element-wise sums over ranks (evaluation counts and totals)."""
    if not active():
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shard(items: list[Any], rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s contiguous share of ``items`` (sizes differ by at most one)."""
    n = len(items)
    return items[rank * n // world:(rank + 1) * n // world]
