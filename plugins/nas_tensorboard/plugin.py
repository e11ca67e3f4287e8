"""Writes scalars, alpha heatmaps and genotypes of each run to ``RUN_DIR/tb`` with torch's
``SummaryWriter``. Disable with ``NAS_DISABLE_PLUGINS=tensorboard``."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor

from nas_core.genotype import Genotype
from nas_core.hookspecs import hookimpl
from nas_core.interfaces import ArchSpec
from nas_core.run import RunInfo

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


class TensorBoardMonitor:
    """One run's writer; registered with the plugin manager for the run's lifetime."""

    def __init__(self, run: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.prefix = run.phase
        self.writer = SummaryWriter(str(run.dir / TENSORBOARD_DIR))
        if run.genotype is not None:  # training a fixed cell: draw it once (needs Graphviz's dot)
            import io

            import numpy as np
            from PIL import Image

            from nas_core.draw import png_bytes

            for cell_type, png in png_bytes(run.genotype).items():
                pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                self.writer.add_image(f"cell/{cell_type}", pixels, dataformats="HWC")
            self.writer.add_text("genotype", "```\n" + run.genotype.to_json() + "```", 0)

    @hookimpl
    def nas_step_end(self, run: RunInfo, step: int, metrics: Mapping[str, float]) -> None:
        if run is self.run:
            for key, value in metrics.items():
                self.writer.add_scalar(f"{self.prefix}_step/{key}", value, step)

    @hookimpl
    def nas_epoch_end(self, run: RunInfo, epoch: int, metrics: Mapping[str, float], genotype: Genotype,
                      strengths: Mapping[str, Tensor]) -> None:
        if run is not self.run:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"{self.prefix}/{key}", value, epoch + 1)
        for cell_type, values in strengths.items():
            self.writer.add_image(f"alpha_softmax/{cell_type}", heatmap(values), epoch + 1)
            self.writer.add_text(f"alpha_softmax/{cell_type}", strengths_table(cell_type, values, run.spec), epoch + 1)
        self.writer.add_text("genotype", "```\n" + genotype.to_json() + "```", epoch + 1)
        self.writer.flush()

    @hookimpl
    def nas_run_end(self, run: RunInfo, genotype: Genotype | None, error: BaseException | None) -> None:
        if run is self.run:
            self.writer.close()
            run.plugin_manager.unregister(self)
            log.info("watch it in TensorBoard:  tensorboard --logdir %s", run.dir / TENSORBOARD_DIR)


@hookimpl
def nas_run_start(run: RunInfo) -> None:
    run.plugin_manager.register(TensorBoardMonitor(run), name=f"tensorboard-monitor:{id(run)}")
    log.info("TensorBoard:  tensorboard --logdir %s", run.dir / TENSORBOARD_DIR)
