"""The run context: what every component and lifecycle hook learns about the run in progress."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import pluggy
    import torch

    from nas_core.config import Config
    from nas_core.genotype import Genotype
    from nas_core.interfaces import ArchSpec


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from any values, stable across processes and Python versions."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def reduce_mean(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Average ``tensors`` over the processes of a ``torch.distributed`` job (identity on one process).

    The tensors are flattened into one buffer so that a step costs one collective, not one per
    parameter."""
    import torch
    import torch.distributed as dist

    if not tensors or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


@attrs.define(eq=False)
class RunContext:
    """Passed to every lifecycle hook and to every step; the engine keeps ``epoch`` and ``step`` current."""

    dir: Path  # the run directory (created before the first hook fires)
    config: Config
    phase: str  # "search", "train", "transfer", or a plugin's own
    device: torch.device
    plugin_manager: pluggy.PluginManager
    epochs: int  # total epochs of this phase
    spec: ArchSpec | None = None
    genotype: Genotype | None = None  # during search: the latest derived one; in training: the trained one
    components: dict[str, Any] = attrs.Factory(dict)  # task, space, supernet or network, relaxation, ...
    start_epoch: int = 0  # the first epoch this process runs (> 0 when resumed)
    epoch: int = 0  # the current epoch, counted from 0 (epoch 0 is the first)
    step: int = 0  # the global step, from 0 across epochs
    rank: int = 0
    world_size: int = 1
    # values for this epoch's metrics (cleared as it starts), from components (up to their end_epoch) and
    # nas_should_stop rules (what they measured); per-step values go in StepResult.metrics instead
    epoch_metrics: dict[str, float] = attrs.Factory(dict)
    metrics: dict[str, float] = attrs.Factory(dict)  # the last finished epoch's metrics
    wall_time_s: float = 0.0  # seconds the run has taken up to its last finished epoch, resumes included
    epochs_done: int = 0  # epochs finished (and checkpointed), resumes included
    stopped: str | None = None  # why a nas_should_stop rule ended the run early (None: it ran its epochs)
    extra: dict[str, Any] = attrs.Factory(dict)  # per-run values plugins share
    stage: int | None = None  # the stage of a staged search (search.stages), from 1; None otherwise
    stages: int | None = None  # how many stages that search has
    # a staged search's previous stage read back (a SearchRecord), while a later stage starts afresh
    previous_stage: Any = None
    _generators: dict[str, torch.Generator] = attrs.Factory(dict)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def device_name(self) -> str:
        """The device in words, for results: ``cpu`` or the GPU's name."""
        import torch

        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    @property
    def is_writer(self) -> bool:
        """Only this process writes the run directory (rank 0 of a distributed job)."""
        return self.rank == 0

    def generator(self, stream: str) -> torch.Generator:
        """A CPU generator for ``stream`` in this epoch, seeded by (seed, epoch, stream): the same
        object all epoch long, so successive draws differ and a resumed run repeats them. It is
        the same on every rank of a torchrun job, so all ranks draw the same data order (each then
        takes its shard of every batch) and the same relaxation sample."""
        import torch

        if stream not in self._generators:
            self._generators[stream] = torch.Generator().manual_seed(
                stream_seed(self.config.seed, self.epoch, stream))
        return self._generators[stream]

    def start_epoch_state(self, epoch: int) -> None:
        """Called by the engine as epoch ``epoch`` begins."""
        self.epoch = epoch
        self._generators.clear()
        self.epoch_metrics.clear()

    def reduce(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The gradient-reduction service: the mean over processes (identity on one process)."""
        return reduce_mean(tensors) if self.world_size > 1 else list(tensors)
