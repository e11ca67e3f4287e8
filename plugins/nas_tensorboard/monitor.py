"""The per-run TensorBoard monitor: each run's scalars, op strengths, heatmaps, cells and genotypes
in ``RUN_DIR/tb`` through torch's ``SummaryWriter``, and a command that opens them (one that works
without an activated virtual environment and names the run after its directory).

Tags (``{phase}`` is ``search``, ``train`` or ``transfer``; x is the global step for ``*_step``
tags, else the epoch, from 1; op strengths and what derives from them also at 0, as the search starts):

- ``{phase}_step/{metric}``: every step metric (``train_loss``, ``arch_loss``, the DARTS
  optimizer's ``train_lr``, ``arch_lr`` and ``arch_grad_norm``) and ``seconds``, the wall time of the step;
- ``{phase}/{metric}``: the epoch metrics (means of the step metrics, ``lr``, ``valid_*``, what
  components and plugins add to ``run.epoch_metrics``) and ``epoch_seconds``;
- a search's: ``alpha/{cell_type}/edge_{src}_{dst}/{op}`` (the relaxation's strengths, laid out as
  one chart per edge in the Custom Scalars tab), ``alpha_entropy/{cell_type}``,
  ``collapse/parameter_free_{cell_type}`` (parameter-free ops in the derived cell), the images
  ``alpha_heatmap/{cell_type}`` and ``cell/{cell_type}`` (with Graphviz's ``dot``), the texts
  ``genotype`` and ``alpha_softmax/{cell_type}`` (the strengths as a table).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from nas_core import ArchSpec, Genotype, RunContext, cell_graph, dot_available, hookimpl
from nas_tensorboard.plots import (alpha_charts, alpha_tag, edge_labels, entropy, heatmap_png, parameter_free_count,
                                   png_to_chw)
from nas_tensorboard.plugin import TensorBoardOptions

TENSORBOARD_DIR = "tb"  # inside the run directory
EPOCH_SAMPLES = 1000  # images and texts per tag that the printed command has TensorBoard keep (every epoch)
log = logging.getLogger("nas")


def strengths_table(cell_type: str, values: Tensor, spec: ArchSpec) -> str:
    """A Markdown table of ``values`` (rows: edges, columns: ops)."""
    head = "| edge | " + " | ".join(spec.ops) + " |\n|" + "---|" * (len(spec.ops) + 1) + "\n"
    rows = [f"| `{label}` | " + " | ".join(f"{x:.3f}" for x in row) + " |"
            for label, row in zip(edge_labels(spec, cell_type), values.tolist())]
    return f"**{cell_type}** (rows: edges, columns: ops)\n\n" + head + "\n".join(rows)


def alpha_layout(spec: ArchSpec) -> dict[str, dict[str, list[Any]]]:
    """The Custom Scalars tab's layout: per cell type, one multi-line chart per group of competing
    edges (:func:`~nas_tensorboard.plots.alpha_charts`), each line one op's strength (an exact tag)."""
    return {f"alpha {cell_type}": {title: ["Multiline", [f"^{re.escape(alpha_tag(cell_type, src, dst, op))}$"
                                                         for src, dst in edges for op in spec.ops]]
                                   for title, edges in alpha_charts(spec, cell_type)}
            for cell_type in spec.edges}


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


def tensorboard_command(run_dir: Path | str) -> str:
    """A shell command that starts TensorBoard on the run directory ``run_dir`` and works as printed,
    also from a virtual environment that is not activated: the ``tensorboard`` script beside the
    running interpreter (relative to the current directory when inside it), else ``<this python,
    absolute> -m tensorboard.main``. ``--logdir_spec NAME:RUN_DIR`` names the run ``NAME/tb``, as
    ``--logdir runs/`` does (``--logdir RUN_DIR/tb`` would name it ``.``); a name or path that
    TensorBoard's spec would misread (a comma, a colon in the name) falls back to ``--logdir RUN_DIR``.
    TensorBoard keeps 10 images and texts per tag unless told otherwise: up to 1000 are asked for,
    so that the slider steps through every epoch's heatmap, cell and genotype (0, which the flag's
    reservoir reads as "all", makes the Images tab show none)."""
    python = Path(sys.executable) if sys.executable else None
    script = tensorboard_script(python) if python is not None else None
    if script is not None:
        program = [_shown(script)]
    else:
        program = [str(python.absolute()) if python is not None else "python3", "-m", "tensorboard.main"]
    program += ["--samples_per_plugin", f"images={EPOCH_SAMPLES},text={EPOCH_SAMPLES}"]
    name = Path(run_dir).name or Path(run_dir).resolve().name
    spec = f"{name}:{run_dir}"
    if name and ":" not in name and "," not in spec and "://" not in spec:
        return shlex.join([*program, "--logdir_spec", spec])
    return shlex.join([*program, "--logdir", str(run_dir)])


def png_bytes(genotype: Genotype) -> dict[str, bytes]:
    """PNG of every cell, or {} without Graphviz's ``dot`` program."""
    if not dot_available():
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
        section = run.config.settings.get("tensorboard") if run.config is not None else None
        self.options: TensorBoardOptions = section or TensorBoardOptions()  # a config built without the plugin
        started = set(threading.enumerate())
        self.writer = SummaryWriter(str(run.dir / TENSORBOARD_DIR))
        _quiet_writer_threads(started)
        self.epoch_started = self.step_ended = time.monotonic()
        relaxation = run.components.get("relaxation")
        if relaxation is not None and run.spec is not None:  # a search: op strengths from the start
            self.writer.add_custom_scalars(alpha_layout(run.spec))
            if run.start_epoch == 0:  # a resumed run has these
                self.write_strengths(relaxation.strengths(), 0)
        elif run.genotype is not None:  # training a fixed cell: draw it once
            self.write_genotype(run.genotype, 0)

    def write_strengths(self, strengths: Mapping[str, Tensor], x: int) -> None:
        """Per cell type: every op's strength on every edge, their entropy, a heatmap and a table."""
        spec = self.run.spec
        scale = (0.0, 1.0) if self.options.heatmap_scale == "fixed" else None
        for cell_type, values in strengths.items():
            values = values.detach().float().cpu()
            for (src, dst), row in zip(spec.edges[cell_type], values.tolist()):
                for op, value in zip(spec.ops, row):
                    self.writer.add_scalar(alpha_tag(cell_type, src, dst, op), value, x)
            self.writer.add_scalar(f"alpha_entropy/{cell_type}", entropy(values), x)
            png = heatmap_png(values, spec, cell_type, value_range=scale,
                              title=f"softmax(alpha), {cell_type} cell, epoch {x}")
            self.writer.add_image(f"alpha_heatmap/{cell_type}", png_to_chw(png), x)
            self.writer.add_text(f"alpha_softmax/{cell_type}", strengths_table(cell_type, values, spec), x)

    def write_genotype(self, genotype: Genotype, x: int) -> None:
        """The genotype as text and its cells as pictures (with Graphviz's ``dot``, as ``nas show`` draws them)."""
        self.writer.add_text("genotype", "```\n" + genotype.to_json() + "```", x)
        for cell_type, png in png_bytes(genotype).items():
            self.writer.add_image(f"cell/{cell_type}", png_to_chw(png), x)

    def write_collapse(self, genotype: Genotype, x: int) -> None:
        """How many ops of each derived cell are parameter-free (where the space says which are):
        the collapse of DARTS cells into skip connections and pooling (Zela et al., ICLR 2020)."""
        spec = self.run.spec
        if spec is not None and spec.parameter_free:
            for cell_type in genotype.cells:
                self.writer.add_scalar(f"collapse/parameter_free_{cell_type}",
                                       parameter_free_count(genotype, cell_type, spec), x)

    @hookimpl
    def nas_epoch_start(self, run: RunContext) -> None:
        if run is self.run:
            self.epoch_started = self.step_ended = time.monotonic()

    @hookimpl
    def nas_step_end(self, run: RunContext, step: int, metrics: Mapping[str, Tensor]) -> None:
        if run is not self.run:
            return
        now = time.monotonic()
        for key, value in metrics.items():
            self.writer.add_scalar(f"{self.prefix}_step/{key}", float(value), step)
        # from the previous step's end (or the epoch's start): the step as the run lives it, loading included
        self.writer.add_scalar(f"{self.prefix}_step/seconds", now - self.step_ended, step)
        self.step_ended = now

    @hookimpl
    def nas_epoch_end(self, run: RunContext, epoch: int, metrics: Mapping[str, float], genotype: Genotype | None,
                      strengths: Mapping[str, Tensor]) -> None:
        if run is not self.run:
            return
        # steps, evaluation, derivation and checkpoint: all but this monitor's own drawing
        self.writer.add_scalar(f"{self.prefix}/epoch_seconds", time.monotonic() - self.epoch_started, epoch + 1)
        for key, value in metrics.items():
            self.writer.add_scalar(f"{self.prefix}/{key}", value, epoch + 1)
        if strengths:  # a search: the strengths and the genotype derived from them change every epoch
            self.write_strengths(strengths, epoch + 1)
            if genotype is not None:
                self.write_genotype(genotype, epoch + 1)
                self.write_collapse(genotype, epoch + 1)
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
        log.info("watch it in TensorBoard:  %s", tensorboard_command(run.dir))
