"""``nas report RUN_DIR [RUN_DIR...]``: one self-contained HTML page of one or more runs, for
users who cannot reach a TensorBoard port (a cluster's compute node): every plot is an embedded
PNG and the page links to nothing outside itself, so it opens offline from any copy.

It reads what a run leaves in its directory (``config.yaml``, ``results.json``, ``genotype.json``,
``genotypes/epoch_NNN.json``; README, "Run directory"; the results' numbers through the core's
checked reader ``read_results``, the files it shows as text as they are) and the scalars the
TensorBoard monitor wrote to ``tb/``, with TensorBoard's own reader. A run without ``tb/`` (the
monitor disabled) gets a page from its files that says which parts are missing.

Torch, matplotlib and TensorBoard are imported only when a report is drawn: ``nas`` imports this
module at start-up for the command's arguments."""

from __future__ import annotations

import argparse
import base64
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from nas_core import (CONFIG_FILE, GENOTYPE_FILE, GENOTYPES_DIR, RESULTS_FILE, Genotype, NasError, check_new_files,
                      create_text_exclusive, epoch_genotype_paths, load_yaml, read_results, run_kind,
                      write_text_atomic)

HELP = "one self-contained HTML page of runs (curves, per-edge alphas, heatmaps, cells, genotypes) for offline use"
REPORT_FILE = "report.html"  # the default --out of a single run, inside its directory

MAX_FILE_CHARS = 1_000_000  # a run's own JSON and YAML files are a few kB; a larger one is not shown
MAX_EPOCH_GENOTYPES = 1000  # rows of the genotype table (the paper's searches have 50 epochs)

# the tags of the monitor (monitor.py): epoch metrics `{phase}/{metric}` at x = epoch + 1 (and
# others such as `alpha_entropy/normal` per epoch), step metrics `{phase}_step/{metric}`, and the
# per-edge softmax(alpha) `alpha/{cell_type}/edge_{src}_{dst}/{op}` (parsed back from plots.alpha_tag)
PHASES = ("search", "train", "transfer")
ALPHA_TAG = re.compile(r"alpha/([^/]+)/edge_(\d+)_(\d+)/([^/]+)")
LOSS_WORDS = ("loss", "error", "ppl", "perplexity", "acc")

Series = list[tuple[int, float]]  # (step, value), by step


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="directories of nas run, nas train or nas transfer; several are overlaid")
    parser.add_argument("--out", metavar="FILE",
                        help=f"the HTML file (default: RUN_DIR/{REPORT_FILE} for one run; several runs need --out)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.description = ("Write one HTML file that holds everything (plots as embedded images, no links out), "
                          "to copy from a cluster and open offline: the runs' configs and results, losses and "
                          "errors per epoch, every edge's softmax(alpha) over the epochs, the final heatmaps, the "
                          "cells and the genotype of each epoch.")


def run(args: argparse.Namespace, toolkit: Any) -> int:
    """``nas report``: every input checked before anything is read at length or written."""
    dirs = [check_run_dir(Path(d)) for d in args.runs]
    duplicates = {str(d) for d in dirs if dirs.count(d) > 1}
    if duplicates:
        raise NasError(f"{sorted(duplicates)[0]} is given twice; name each run directory once")
    if args.out is None and len(dirs) > 1:
        raise NasError(f"a report of {len(dirs)} runs needs --out FILE (one run's report goes to "
                       f"RUN_DIR/{REPORT_FILE} by default)")
    out = Path(args.out) if args.out is not None else dirs[0] / REPORT_FILE
    check_new_files([out], "--out", force=args.force)
    page = render([read_run(d, label) for d, label in zip(dirs, run_labels(dirs))])
    write_page(out, page, force=args.force)
    print(f"wrote {out}")
    return 0


# -- input and output checks -------------------------------------------------------------------

def check_run_dir(path: Path) -> Path:
    if not path.exists():
        raise NasError(f"{path} does not exist; pass run directories (folders with a {CONFIG_FILE})")
    if not (path / CONFIG_FILE).is_file():
        raise NasError(f"{path} is not a run directory (no {CONFIG_FILE}); pass folders that nas run, nas train "
                       f"or nas transfer wrote")
    return path


def write_page(out: Path, page: str, *, force: bool) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # as nas show --out cells/v2 does
        if force:
            write_text_atomic(out, page)
        else:  # created whole, and never over a file that appeared since the check
            create_text_exclusive(out, page)
    except FileExistsError:
        raise NasError(f"--out: {out} appeared while the report was drawn; nas does not replace files") from None
    except OSError as e:
        raise NasError(f"--out {out}: cannot write it ({e.strerror or e})") from None


def run_labels(dirs: Sequence[Path]) -> list[str]:
    """Each run's name in legends: its folder's name, or the path as given where names repeat."""
    names = [d.resolve().name or str(d) for d in dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, dirs)]


# -- reading a run -----------------------------------------------------------------------------

@attrs.define
class RunData:
    dir: Path
    label: str
    kind: str  # search, train, transfer-... (the run directory's marker), or "unknown"
    config_text: str | None
    config: Mapping[str, Any]
    results_text: str | None
    results: Mapping[str, Any]  # results.json, checked ({}: none yet, or damaged, with a note)
    genotype: Genotype | None
    epoch_genotypes: list[tuple[int, Genotype]]
    scalars: dict[str, Series] | None  # None: no TensorBoard events
    notes: list[str] = attrs.Factory(list)  # what could not be read, shown on the page

    @property
    def is_search(self) -> bool:
        return self.kind == "search"


def read_text(path: Path, notes: list[str]) -> str | None:
    """The file's text, or None (absent; unreadable or too large, with a note saying so)."""
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8") as f:
            text = f.read(MAX_FILE_CHARS + 1)
    except (OSError, UnicodeDecodeError) as e:
        notes.append(f"{path.name}: cannot be read ({getattr(e, 'strerror', None) or e})")
        return None
    if len(text) > MAX_FILE_CHARS:
        notes.append(f"{path.name}: larger than {MAX_FILE_CHARS} characters, not shown")
        return None
    return text


def read_genotype(path: Path, notes: list[str]) -> Genotype | None:
    text = read_text(path, notes)
    if text is None:
        return None
    try:
        return Genotype.from_json(text, source=str(path))
    except NasError as e:
        notes.append(str(e))
        return None


def read_run(run_dir: Path, label: str) -> RunData:
    notes: list[str] = []
    config_text = read_text(run_dir / CONFIG_FILE, notes)
    try:
        config = load_yaml(config_text) if config_text is not None else None
    except yaml.YAMLError as e:  # also beyond load_yaml's bounds: the page shows the text, without a summary
        notes.append(f"{CONFIG_FILE}: not readable YAML ({' '.join(str(e).split())[:200]})")
        config = None
    epochs = list(epoch_genotype_paths(run_dir).items())[-MAX_EPOCH_GENOTYPES:]
    epoch_genotypes = [(epoch, g) for epoch, p in epochs if (g := read_genotype(p, notes)) is not None]
    try:
        results = read_results(run_dir) or {}
    except NasError as e:  # the page still shows the file's text
        notes.append(str(e))
        results = {}
    return RunData(dir=run_dir, label=label, kind=kind_of(run_dir), config_text=config_text,
                   config=config if isinstance(config, Mapping) else {},
                   results_text=read_text(run_dir / RESULTS_FILE, notes), results=results,
                   genotype=read_genotype(run_dir / GENOTYPE_FILE, notes), epoch_genotypes=epoch_genotypes,
                   scalars=read_scalars(run_dir, notes), notes=notes)


def kind_of(run_dir: Path) -> str:
    """The kind the run directory's marker names; without one, a folder of per-epoch genotypes is a search's."""
    return run_kind(run_dir) or ("search" if (run_dir / GENOTYPES_DIR).is_dir() else "unknown")


def read_scalars(run_dir: Path, notes: list[str]) -> dict[str, Series] | None:
    """Every scalar of the run's event files, read by TensorBoard's own reader (all points kept);
    a step written twice (an epoch redone after a resume) keeps its last value."""
    from nas_tensorboard.monitor import TENSORBOARD_DIR

    folder = run_dir / TENSORBOARD_DIR
    if not folder.is_dir():
        notes.append(f"no TensorBoard events ({TENSORBOARD_DIR}/ is missing: the run was made with the "
                     f"tensorboard plugin disabled): no curves, alphas or heatmaps")
        return None
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {kind: 1 for kind in (ea.IMAGES, ea.AUDIO, ea.HISTOGRAMS, ea.COMPRESSED_HISTOGRAMS, ea.TENSORS)}
    try:
        events = ea.EventAccumulator(str(folder), size_guidance={**guidance, ea.SCALARS: 0}).Reload()
        return {tag: sorted({e.step: e.value for e in events.Scalars(tag)}.items())
                for tag in events.Tags()[ea.SCALARS]}
    except Exception as e:  # noqa: BLE001 - a damaged event file costs its curves, not the whole report
        notes.append(f"{TENSORBOARD_DIR}/: the event files cannot be read ({type(e).__name__}: {e})")
        return None


# -- plots -------------------------------------------------------------------------------------

def colour(i: int) -> str:
    """The i-th colour of matplotlib's default cycle (tab10): one per run, or one per op."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["tab10"](i % 10))


def plain(text: str) -> str:
    """``text`` as matplotlib prints it literally ($ would start mathematical notation)."""
    return text.replace("$", r"\$")


def line_png(lines: Iterable[tuple[str, str, Series]], title: str, *, size: tuple[float, float] = (4.2, 2.8),
             legend: bool = True, ylim: tuple[float, float] | None = None) -> bytes:
    """One line per (label, colour, points), with markers (a curve of one epoch is one point)."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=90, layout="constrained")
    ax = fig.add_subplot()
    for label, hue, points in lines:
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=2.5, linewidth=1.2,
                color=hue, label=plain(label))
    ax.set_title(plain(title), fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if legend:
        ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def img(png: bytes, alt: str, cls: str = "plot") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{esc(alt)}" title="{esc(alt)}" src="data:image/png;base64,{data}">'


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


# -- the sections ------------------------------------------------------------------------------

SECTIONS = (("runs", "Runs"), ("curves", "Losses and errors"), ("other", "Other scalars per epoch"),
            ("alphas", "Architecture weights per edge"), ("heatmaps", "Final architecture weights"),
            ("cells", "Cells"), ("genotypes", "Genotype per epoch"))


def config_summary(run: RunData) -> str:
    c = run.config
    names = ("task", "dataset", "space", "relaxation", "optimizer", "discretizer") if run.is_search else (
        "task", "dataset", "space", "trainer")
    parts = [f"{k} {c[k]['name']}" for k in names if isinstance(c.get(k), Mapping) and c[k].get("name")]
    budget = c.get("search" if run.is_search else "train")
    if isinstance(budget, Mapping):
        parts += [f"{k} {budget[k]}" for k in ("epochs", "batch_size") if k in budget]
    if "seed" in c:
        parts.append(f"seed {c['seed']}")
    return ", ".join(parts) or "(config.yaml not readable)"


def results_summary(run: RunData) -> str:
    """The final numbers of results.json: validation and test metrics, parameters."""
    return ", ".join(f"{k} {v:.4g}" for k, v in run.results.items() if k.startswith(("valid_", "test_", "params"))
                     and isinstance(v, int | float) and not isinstance(v, bool))


def runs_section(runs: Sequence[RunData]) -> str:
    rows = "".join(f'<tr><td><span class="swatch" style="background:{colour(i)}"></span>{esc(r.label)}</td>'
                   f"<td>{esc(r.kind)}</td><td><code>{esc(r.dir)}</code></td><td>{esc(config_summary(r))}</td>"
                   f"<td>{esc(results_summary(r))}</td></tr>" for i, r in enumerate(runs))
    out = ["<table><tr><th>run</th><th>kind</th><th>directory</th><th>config</th><th>results</th></tr>", rows,
           "</table>"]
    for r in runs:
        out.append(f"<h3>{esc(r.label)}</h3>")
        out += [note(f"{r.label}: {n}") for n in r.notes]
        if r.results_text is not None:  # a training's is its outcome; a search's mostly repeats its genotype
            out.append(f"<details{'' if r.is_search else ' open'}><summary>{RESULTS_FILE}</summary>"
                       f"<pre>{esc(r.results_text)}</pre></details>")
        else:
            out.append(note(f"{r.label}: no {RESULTS_FILE} (the run has not finished)"))
        if r.config_text is not None:
            out.append(f"<details><summary>{CONFIG_FILE}</summary><pre>{esc(r.config_text)}</pre></details>")
    return "\n".join(out)


def epoch_metric(tag: str) -> tuple[str, str] | None:
    """(metric, phase) of an epoch scalar's tag: ``search/valid_loss`` -> (valid_loss, search); a
    tag of no phase (``alpha_entropy/normal``) is its own metric; None for step and alpha tags."""
    head, _, rest = tag.partition("/")
    if not rest or head.endswith("_step") or head == "alpha":
        return None
    return (rest, head) if head in PHASES else (tag, "")


def epoch_metrics(runs: Sequence[RunData]) -> dict[str, list[tuple[int, str, Series]]]:
    """metric -> (run index, phase, points), metrics in the order they were first written: runs
    of different phases overlay on the metric's name (a search's valid_loss beside a training's)."""
    metrics: dict[str, list[tuple[int, str, Series]]] = {}
    for i, r in enumerate(runs):
        for tag, points in (r.scalars or {}).items():
            if (found := epoch_metric(tag)) and points:
                metrics.setdefault(found[0], []).append((i, found[1], points))
    return metrics


def curves_sections(runs: Sequence[RunData]) -> tuple[str, str]:
    """The plots of the losses and errors, and of every other epoch scalar; each run one colour."""
    metrics = epoch_metrics(runs)
    several_phases = len({phase for found in metrics.values() for _, phase, _ in found}) > 1
    plots: dict[bool, list[str]] = {True: [], False: []}
    for metric, found in metrics.items():
        lines = [(runs[i].label + (f" ({phase})" if several_phases and phase else ""), colour(i), points)
                 for i, phase, points in found]
        plots[any(w in metric for w in LOSS_WORDS)].append(img(line_png(lines, metric), metric))
    missing = [note(f"{r.label}: no TensorBoard events; its curves are not available") for r in runs
               if r.scalars is None]
    return ("".join(missing) + (f'<div class="grid">{"".join(plots[True])}</div>' if plots[True] else
                                note("no loss or error was recorded")),
            f'<div class="grid">{"".join(plots[False])}</div>' if plots[False] else note("none recorded"))


@attrs.define
class Alphas:
    """The per-edge softmax(alpha) curves of one run: cell type -> edge -> op -> points."""
    curves: dict[str, dict[tuple[int, int], dict[str, Series]]]
    ops: list[str]  # in the order the monitor wrote them: the space's order

    @classmethod
    def of(cls, scalars: Mapping[str, Series]) -> Alphas:
        curves: dict[str, dict[tuple[int, int], dict[str, Series]]] = {}
        ops: dict[str, None] = {}
        for tag, points in scalars.items():
            if m := ALPHA_TAG.fullmatch(tag):
                cell_type, src, dst, op = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
                curves.setdefault(cell_type, {}).setdefault((src, dst), {})[op] = points
                ops.setdefault(op)
        return cls(curves, list(ops))

    def spec(self) -> Any:
        """An ArchSpec of the recorded edges, for the plots' edge labels and heatmap rows. The
        first intermediate node is numbered after the inputs and every edge ends in an intermediate
        node (ArchSpec), so the smallest destination is the number of inputs."""
        from nas_core import ArchSpec

        edges = {ct: tuple(sorted(e, key=lambda sd: (sd[1], sd[0]))) for ct, e in self.curves.items()}
        first = min(dst for e in edges.values() for _, dst in e)
        return ArchSpec(ops=tuple(self.ops), edges=edges, num_inputs=first,
                        inputs_per_node=1)  # not read by the plots

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest finite value of all curves, padded by 5 %."""
        values = [v for edges in self.curves.values() for per_op in edges.values() for points in per_op.values()
                  for _, v in points if math.isfinite(v)] or [0.0, 1.0]
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo) or 0.01
        return lo - pad, hi + pad

    def final(self, cell_type: str) -> tuple[int, list[list[float]]]:
        """The last epoch recorded and the [edges, ops] softmax(alpha) at it (NaN where missing)."""
        rows = self.spec().edges[cell_type]
        last = max(points[-1][0] for per_op in self.curves[cell_type].values() for points in per_op.values())
        values = [[dict(self.curves[cell_type][edge].get(op, [])).get(last, math.nan) for op in self.ops]
                  for edge in rows]
        return last, values


def search_runs_with_alphas(runs: Sequence[RunData]) -> tuple[list[tuple[RunData, Alphas]], list[str]]:
    """The runs whose per-edge alphas were recorded, and a note for each other search run."""
    found, notes = [], []
    for r in runs:
        alphas = Alphas.of(r.scalars or {})
        if alphas.curves:
            found.append((r, alphas))
        elif r.is_search:
            why = "it has no TensorBoard events" if r.scalars is None else \
                "its TensorBoard events hold no alpha/ tags (a run made before nas recorded them)"
            notes.append(note(f"{r.label}: not recorded in this run ({why})"))
    if not found and not notes:
        notes.append(note("no search among these runs: trainings have no architecture weights"))
    return found, notes


def alphas_section(runs: Sequence[RunData]) -> str:
    """Small multiples: one plot per edge (a line per op), grouped by cell type, per run. The
    plots of a run share one y range, so that edges compare at a glance."""
    from nas_tensorboard.plots import edge_labels

    found, out = search_runs_with_alphas(runs)
    for r, alphas in found:
        spec = alphas.spec()
        legend = "".join(f'<span class="swatch" style="background:{colour(j)}"></span>{esc(op)} '
                         for j, op in enumerate(alphas.ops))
        out.append(f"<h3>{esc(r.label)}</h3><p>softmax(alpha) per epoch; ops: {legend}</p>")
        ylim = alphas.value_range()
        for cell_type, edges in spec.edges.items():
            plots = []
            for (src, dst), title in zip(edges, edge_labels(spec, cell_type)):
                per_op = alphas.curves[cell_type][(src, dst)]
                lines = [(op, colour(j), per_op[op]) for j, op in enumerate(alphas.ops) if op in per_op]
                png = line_png(lines, title, size=(2.6, 1.9), legend=False, ylim=ylim)
                plots.append(img(png, f"{r.label} {cell_type} {title}", cls="edge"))
            out.append(f'<h4>{esc(cell_type)} cell</h4><div class="grid">{"".join(plots)}</div>')
    return "\n".join(out)


def heatmaps_section(runs: Sequence[RunData]) -> str:
    import torch

    from nas_tensorboard.plots import heatmap_png

    found, out = search_runs_with_alphas(runs)
    for r, alphas in found:
        spec, pictures = alphas.spec(), []
        for cell_type in spec.edges:
            epoch, values = alphas.final(cell_type)
            title = f"{r.label}: softmax(alpha), {cell_type} cell, epoch {epoch}"
            pictures.append(img(heatmap_png(torch.tensor(values), spec, cell_type, title=plain(title)), title))
        out.append(f'<h3>{esc(r.label)}</h3><div class="grid">{"".join(pictures)}</div>')
    return "\n".join(out)


def cells_section(runs: Sequence[RunData]) -> str:
    """The final (or trained) cells as `nas show` draws them: PNG with Graphviz's dot, else its DOT text."""
    from nas_core import cell_graph
    from nas_tensorboard.monitor import png_bytes

    out = []
    for r in runs:
        out.append(f"<h3>{esc(r.label)}</h3>")
        if r.genotype is None:
            out.append(note(f"{r.label}: no {GENOTYPE_FILE}" + (" yet" if r.is_search else "")))
            continue
        out.append(f"<pre>{esc(compact(r.genotype))}</pre>")
        pictures = png_bytes(r.genotype)
        if pictures:
            out.append('<div class="grid">' + "".join(img(p, f"{r.label} {name} cell") for name, p in
                                                      pictures.items()) + "</div>")
        else:
            out.append(note("Graphviz's dot program is not installed here (apt-get install graphviz; brew install "
                            "graphviz): the cells in DOT, for any Graphviz viewer"))
            out += [f"<details><summary>{esc(name)} cell (DOT)</summary><pre>{esc(cell_graph(name, cell).source)}"
                    f"</pre></details>" for name, cell in r.genotype.cells.items()]
    return "\n".join(out)


def compact(genotype: Genotype) -> str:
    """One line per cell type: each node's inputs as op(input node), nodes separated by |."""
    return "\n".join(f"{name}: " + " | ".join(" ".join(f"{op}({src})" for op, src in node) for node in cell.nodes)
                     + f"  concat {list(cell.concat)}" for name, cell in genotype.cells.items())


def genotypes_section(runs: Sequence[RunData]) -> str:
    out = []
    for r in runs:
        if not r.epoch_genotypes:
            if r.is_search:
                out.append(f"<h3>{esc(r.label)}</h3>" + note(f"{r.label}: no {GENOTYPES_DIR}/epoch_NNN.json"))
            continue
        rows, previous = [], None
        for epoch, g in r.epoch_genotypes:
            changed = previous is not None and g != previous
            rows.append(f'<tr{" class=changed" if changed else ""}><td>{epoch}</td><td><pre>{esc(compact(g))}</pre>'
                        f"</td><td>{'changed' if changed else ''}</td></tr>")
            previous = g
        out.append(f"<h3>{esc(r.label)}</h3><table><tr><th>epoch</th><th>derived cells</th><th></th></tr>"
                   + "".join(rows) + "</table>")
    return "\n".join(out) or note("no search among these runs: a training's cell is fixed (see Cells)")


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:110em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top;text-align:left}
pre{margin:0;font-size:.85em;white-space:pre-wrap}.note{color:#8a4b00}.grid{display:flex;flex-wrap:wrap;gap:.4em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
tr.changed{background:#fff6d5}details{margin:.3em 0}"""


def render(runs: Sequence[RunData]) -> str:
    curves, other = curves_sections(runs)
    bodies = {"runs": runs_section(runs), "curves": curves, "other": other, "alphas": alphas_section(runs),
              "heatmaps": heatmaps_section(runs), "cells": cells_section(runs), "genotypes": genotypes_section(runs)}
    title = "nas report: " + ", ".join(r.label for r in runs)
    toc = " · ".join(f'<a href="#{key}">{esc(heading)}</a>' for key, heading in SECTIONS)
    sections = "\n".join(f'<h2 id="{key}">{esc(heading)}</h2>\n{bodies[key]}' for key, heading in SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>{esc(title)}</h1>\n<p>{toc}</p>\n{sections}\n</body></html>\n")
