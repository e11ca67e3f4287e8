"""Writes scalars, alpha heatmaps and genotypes of each run to ``RUN_DIR/tb`` with torch's
``SummaryWriter``. Disable with ``NAS_DISABLE_PLUGINS=tensorboard``."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping

import torch
from torch import Tensor

from nas_core import ArchSpec, Genotype, RunContext, cell_graph, hookimpl

TENSORBOARD_DIR = "tb"  # inside the run directory
log = logging.getLogger("nas")

# viridis at 5 stops; enough for a readable heatmap without matplotlib
_STOPS = torch.tensor([[0.267, 0.005, 0.329], [0.229, 0.322, 0.546], [0.128, 0.567, 0.551],
                       [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]])


def heatmap(values: Tensor, cell_px: int = 12) -> Tensor:
    """[rows, cols] in [0, 1] -> a CHW float image, each value a cell_px square."""
    v = values.detach().float().cpu().clamp(0, 1) * (len(_STOPS) - 1)
    lo = v.floor().long().clamp(max=len(_STOPS) - 2)
    frac = (v - lo).unsqueeze(-1)
    rgb = _STOPS[lo] * (1 - frac) + _STOPS[lo + 1] * frac  # [rows, cols, 3]
    rgb = rgb.repeat_interleave(cell_px, 0).repeat_interleave(cell_px, 1)
    return rgb.permute(2, 0, 1).contiguous()


def strengths_table(cell_type: str, values: Tensor, spec: ArchSpec) -> str:
    head = "| edge | " + " | ".join(spec.ops) + " |\n|" + "---|" * (len(spec.ops) + 1) + "\n"
    rows = [f"| {src}->{dst} | " + " | ".join(f"{x:.3f}" for x in row) + " |"
            for (src, dst), row in zip(spec.edges[cell_type], values.tolist())]
    return f"**{cell_type}** (rows: edges src->dst, columns: ops)\n\n" + head + "\n".join(rows)


def png_bytes(genotype: Genotype) -> dict[str, bytes]:
    """PNG of every cell, or {} without Graphviz's ``dot`` program."""
    if shutil.which("dot") is None:
        return {}
    return {name: cell_graph(name, cell).pipe(format="png") for name, cell in genotype.cells.items()}


class TensorBoardMonitor:
    """One run's writer; registered with the plugin manager for the run's lifetime."""

    def __init__(self, run: RunContext):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.prefix = run.phase
        self.writer = SummaryWriter(str(run.dir / TENSORBOARD_DIR))
        if run.genotype is not None:  # training a fixed cell: draw it once (needs Graphviz's dot)
            import io

            import numpy as np
            from PIL import Image

            for cell_type, png in png_bytes(run.genotype).items():
                pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                self.writer.add_image(f"cell/{cell_type}", pixels, dataformats="HWC")
            self.writer.add_text("genotype", "```\n" + run.genotype.to_json() + "```", 0)

    @hookimpl
    def nas_step_end(self, run: RunContext, step: int, metrics: Mapping[str, Tensor]) -> None:
        if run is self.run:
            for key, value in metrics.items():
                self.writer.add_scalar(f"{self.prefix}_step/{key}", float(value), step)

    @hookimpl
    def nas_epoch_end(self, run: RunContext, epoch: int, metrics: Mapping[str, float], genotype: Genotype | None,
                      strengths: Mapping[str, Tensor]) -> None:
        if run is not self.run:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"{self.prefix}/{key}", value, epoch + 1)
        for cell_type, values in strengths.items():
            self.writer.add_image(f"alpha_softmax/{cell_type}", heatmap(values), epoch + 1)
            self.writer.add_text(f"alpha_softmax/{cell_type}", strengths_table(cell_type, values, run.spec), epoch + 1)
        if strengths and genotype is not None:  # a search: the genotype changes every epoch
            self.writer.add_text("genotype", "```\n" + genotype.to_json() + "```", epoch + 1)
        self.writer.flush()

    @hookimpl
    def nas_run_end(self, run: RunContext, genotype: Genotype | None, error: BaseException | None) -> None:
        if run is self.run:
            self.writer.close()
            run.plugin_manager.unregister(self)
            log.info("watch it in TensorBoard:  tensorboard --logdir %s", run.dir / TENSORBOARD_DIR)


@hookimpl
def nas_run_start(run: RunContext) -> None:
    if not run.is_writer:  # one event file per run, from rank 0 of a distributed job
        return
    run.plugin_manager.register(TensorBoardMonitor(run), name=f"tensorboard-monitor:{id(run)}")
    log.info("TensorBoard:  tensorboard --logdir %s", run.dir / TENSORBOARD_DIR)
