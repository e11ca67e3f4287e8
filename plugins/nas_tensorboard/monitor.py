"""The per-run TensorBoard monitor: scalars, alpha heatmaps and genotypes of each run in
``RUN_DIR/tb`` through torch's ``SummaryWriter``, and a command that opens them (one that works
without an activated virtual environment)."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from nas_core import ArchSpec, Genotype, RunContext, cell_graph, hookimpl

TENSORBOARD_DIR = "tb"  # inside the run directory
log = logging.getLogger("nas")

# viridis at 5 stops; enough for a readable heatmap without matplotlib
_STOPS = torch.tensor([[0.267, 0.005, 0.329], [0.229, 0.322, 0.546], [0.128, 0.567, 0.551],
                       [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]])


def colour_range(values: Tensor) -> tuple[float, float]:
    """The (min, max) of the finite entries of ``values``: the scale of its heatmap."""
    v = values.detach().float().cpu()
    finite = v[torch.isfinite(v)]
    if finite.numel() == 0:
        return (0.0, 1.0)
    return (float(finite.min()), float(finite.max()))


def heatmap(values: Tensor, cell_px: int = 12, value_range: tuple[float, float] | None = None) -> Tensor:
    """[rows, cols] -> a CHW float image in viridis, each value a cell_px square.

    The colour scale spans ``value_range``, by default the matrix's own min..max (the smallest
    value gets the darkest colour, the largest the brightest), so that near-uniform softmax
    weights still show their differences; a constant matrix (or a NaN) gets the middle colour."""
    v = values.detach().float().cpu()
    lo, hi = colour_range(v) if value_range is None else value_range
    v = (v - lo) / (hi - lo) if hi > lo else torch.full_like(v, 0.5)
    v = v.nan_to_num(nan=0.5, posinf=1.0, neginf=0.0).clamp(0, 1) * (len(_STOPS) - 1)
    lo_stop = v.floor().long().clamp(max=len(_STOPS) - 2)
    frac = (v - lo_stop).unsqueeze(-1)
    rgb = _STOPS[lo_stop] * (1 - frac) + _STOPS[lo_stop + 1] * frac  # [rows, cols, 3]
    rgb = rgb.repeat_interleave(cell_px, 0).repeat_interleave(cell_px, 1)
    return rgb.permute(2, 0, 1).contiguous()


def colour_scale_text(value_range: tuple[float, float]) -> str:
    """How a heatmap drawn with ``value_range`` reads, for the text next to it."""
    lo, hi = value_range
    if hi > lo:
        return f"colour scale: {lo:.4f} (dark) .. {hi:.4f} (bright)"
    return f"colour scale: all values {lo:.4f} (middle colour)"


def strengths_table(cell_type: str, values: Tensor, spec: ArchSpec,
                    value_range: tuple[float, float] | None = None) -> str:
    """A Markdown table of ``values`` (rows: edges, columns: ops), with the heatmap's colour scale
    when ``value_range`` is given."""
    head = "| edge | " + " | ".join(spec.ops) + " |\n|" + "---|" * (len(spec.ops) + 1) + "\n"
    rows = [f"| {src}->{dst} | " + " | ".join(f"{x:.3f}" for x in row) + " |"
            for (src, dst), row in zip(spec.edges[cell_type], values.tolist())]
    scale = "" if value_range is None else colour_scale_text(value_range) + "\n\n"
    return f"**{cell_type}** (rows: edges src->dst, columns: ops)\n\n" + scale + head + "\n".join(rows)


def _shown(script: Path) -> str:
    """``script`` relative to the current directory when it lies inside it (with a ``./`` where
    the shell would otherwise search PATH), else absolute."""
    cwd = Path.cwd()
    for candidate in (script.absolute(), script.parent.resolve() / script.name):
        try:
            rel = candidate.relative_to(cwd)
        except ValueError:
            continue
        return str(rel) if rel.parent != Path(".") else os.curdir + os.sep + str(rel)
    return str(script.absolute())


def tensorboard_script(python: Path) -> Path | None:
    """The ``tensorboard`` script installed beside the interpreter ``python`` (a virtual
    environment's ``bin/``), if there is one."""
    for name in ("tensorboard", "tensorboard.exe"):
        script = python.parent / name
        if script.is_file() and os.access(script, os.X_OK):
            return script
    return None


def tensorboard_command(logdir: Path | str) -> str:
    """A shell command that starts TensorBoard on ``logdir`` and works as printed, also from a
    virtual environment that is not activated: the ``tensorboard`` script beside the running
    interpreter (relative to the current directory when inside it), else
    ``<this python, absolute> -m tensorboard.main``."""
    python = Path(sys.executable) if sys.executable else None
    script = tensorboard_script(python) if python is not None else None
    if script is not None:
        program = [_shown(script)]
    else:
        program = [str(python.absolute()) if python is not None else "python3", "-m", "tensorboard.main"]
    return shlex.join([*program, "--logdir", str(logdir)])


def png_bytes(genotype: Genotype) -> dict[str, bytes]:
    """PNG of every cell, or {} without Graphviz's ``dot`` program."""
    if shutil.which("dot") is None:
        return {}
    return {name: cell_graph(name, cell).pipe(format="png") for name, cell in genotype.cells.items()}


# The event writer's background thread fails on a full disk (or a folder gone read-only) and
# Python prints that thread's traceback; the writer raises the same error at its next use in the
# run's thread, where nas reports it in one line. The hook below keeps those threads quiet.
_writer_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_previous_excepthook = threading.excepthook


def _excepthook(args: threading.ExceptHookArgs) -> None:
    if args.thread in _writer_threads and isinstance(args.exc_value, OSError):
        return
    _previous_excepthook(args)


def _quiet_writer_threads(started: set[threading.Thread]) -> None:
    """Silence the OSErrors of the threads that appeared since ``started`` (the writer's)."""
    _writer_threads.update(set(threading.enumerate()) - started)
    if threading.excepthook is not _excepthook:
        global _previous_excepthook
        _previous_excepthook, threading.excepthook = threading.excepthook, _excepthook


class TensorBoardMonitor:
    """One run's writer; registered with the plugin manager for the run's lifetime."""

    def __init__(self, run: RunContext):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.prefix = run.phase
        started = set(threading.enumerate())
        self.writer = SummaryWriter(str(run.dir / TENSORBOARD_DIR))
        _quiet_writer_threads(started)
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
        for cell_type, values in strengths.items():  # each image on its own colour scale, stated in its table
            scale = colour_range(values)
            self.writer.add_image(f"alpha_softmax/{cell_type}", heatmap(values, value_range=scale), epoch + 1)
            self.writer.add_text(f"alpha_softmax/{cell_type}", strengths_table(cell_type, values, run.spec, scale),
                                 epoch + 1)
        if strengths and genotype is not None:  # a search: the genotype changes every epoch
            self.writer.add_text("genotype", "```\n" + genotype.to_json() + "```", epoch + 1)
        self.writer.flush()

    @hookimpl
    def nas_run_end(self, run: RunContext, genotype: Genotype | None, error: BaseException | None) -> None:
        if run is not self.run:
            return
        run.plugin_manager.unregister(self)
        try:
            self.writer.close()
        except OSError as e:  # a failed run reports its own error; a finished one has all else written
            if error is None:
                log.warning("TensorBoard: could not finish writing %s: %s", run.dir / TENSORBOARD_DIR,
                            e.strerror or e)
            return
        log.info("watch it in TensorBoard:  %s", tensorboard_command(run.dir / TENSORBOARD_DIR))
