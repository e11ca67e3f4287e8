"""`nas report` (issue 21): one self-contained HTML page of runs, every section present, every
plot an embedded image, several runs overlaid, and bad input refused with one line."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from conftest import TINY
from nas_core import cli, load_yaml
from nas_tensorboard import report
from nas_tensorboard.plots import alpha_tag

TRAIN_TINY = ["--set", "network.cells=3", "--set", "network.channels=8", "--set", "train.batch_size=32",
              "--set", "train.max_steps_per_epoch=2", "--set", "train.epochs=2", "--no-progress"]
EDGES = [(src, dst) for dst in range(2, 6) for src in range(dst)]  # a DARTS CNN cell of 4 nodes: 14 edges


def nas(*args: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("NAS_DISABLE_PLUGINS", raising=False)  # the runs record TensorBoard events
        return cli.main(list(args))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny search and a tiny training of the cell it found, both with TensorBoard events."""
    root = tmp_path_factory.mktemp("runs")
    assert nas("run", "--optimizer", "darts_1st", "--set", "search.epochs=2", *TINY, "--out", str(root / "search")) == 0
    assert nas("train", "--genotype", str(root / "search"), *TRAIN_TINY, "--out", str(root / "train")) == 0
    return root / "search", root / "train"


def copy_run(run, dest, *, tb: bool = True):
    """A copy of ``run`` without the report an earlier test wrote there (and without ``tb/`` unless ``tb``)."""
    return shutil.copytree(run, dest, ignore=shutil.ignore_patterns("report.html", *(() if tb else ("tb",))))


def add_alpha_events(run_dir, epochs: int = 2) -> dict:
    """Per-edge softmax(alpha) tags as the monitor writes them (x = 0 .. epochs); returns the last values."""
    from torch.utils.tensorboard import SummaryWriter

    ops = load_yaml((run_dir / "config.yaml").read_text())["space"]["ops"]
    gen, last = torch.Generator().manual_seed(0), {}
    with SummaryWriter(str(run_dir / "tb")) as writer:
        for step in range(epochs + 1):
            for cell_type in ("normal", "reduce"):
                for src, dst in EDGES:
                    probs = torch.softmax(torch.randn(len(ops), generator=gen), 0).tolist()
                    for op, p in zip(ops, probs):
                        writer.add_scalar(alpha_tag(cell_type, src, dst, op), p, step)
                        last[cell_type, src, dst, op] = p
    return last


def page_of(path) -> str:
    page = path.read_text()
    for key, heading in report.SECTIONS:
        assert f'<h2 id="{key}">{heading}</h2>' in page, heading
    # self-contained: every image embedded, every link inside the page, nothing loaded from elsewhere
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.I)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), \
        [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    for external in ("<script", "<link", "url(", "@import", "<iframe", "<object"):
        assert external not in page.lower()
    return page


def section(page: str, key: str) -> str:
    start = page.index(f'<h2 id="{key}">')
    end = page.find("<h2 ", start + 1)
    return page[start:end if end >= 0 else None]


def edge_plots(page: str) -> list[str]:
    return re.findall(r'<img class="edge" alt="([^"]*)"', page)


def test_one_search_gets_every_section_in_its_run_directory(runs, capsys):
    search, _ = runs
    out = search / "report.html"
    out.unlink(missing_ok=True)
    assert nas("report", str(search)) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = page_of(out)
    for metric in ("train_loss", "valid_loss", "valid_top1_error", "arch_loss"):
        assert f'alt="{metric}"' in section(page, "curves")
    assert "darts_1st" in section(page, "runs") and "config.yaml" in section(page, "runs")
    genotypes = section(page, "genotypes")
    assert "<td>1</td>" in genotypes and "<td>2</td>" in genotypes  # one row per epoch
    cells = section(page, "cells")
    assert "normal:" in cells and ("digraph" in cells or 'alt="search normal cell"' in cells)
    recorded = edge_plots(page)
    if recorded:  # the monitor records per-edge alphas: one plot per edge of both cell types
        assert len(recorded) == 2 * len(EDGES)
    else:
        assert "not recorded in this run" in section(page, "alphas")


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_several_runs_overlay_one_colour_each(runs, tmp_path, monkeypatch, capsys):
    drawn = {}
    line_png = report.line_png

    def record(lines, title, **kw):
        lines = list(lines)
        drawn.setdefault(title, []).append(lines)
        return line_png(lines, title, **kw)

    monkeypatch.setattr(report, "line_png", record)
    out = tmp_path / "both.html"
    assert nas("report", *map(str, runs), "--out", str(out)) == 0
    page = page_of(out)
    for metric in ("train_loss", "valid_loss", "valid_top1_error"):
        (lines,) = drawn[metric]  # one plot holding both runs
        assert [label for label, _, _ in lines] == ["search (search)", "train (train)"]
        assert len({hue for _, hue, _ in lines}) == 2
        assert all(len(points) == 2 for _, _, points in lines)  # one point per epoch
        assert section(page, "curves").count(f'alt="{metric}"') == 1
    runs_html = section(page, "runs")
    assert "<td>search</td>" in runs_html and "<td>train</td>" in runs_html
    assert "test_top1_error" in runs_html and "trainer sgd" in runs_html
    assert "a training&#x27;s cell is fixed" not in page  # the search has its genotype table


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_alpha_curves_one_plot_per_edge_and_final_heatmaps(runs, tmp_path):
    run = copy_run(runs[0], tmp_path / "search")
    last = add_alpha_events(run)
    out = tmp_path / "alphas.html"
    assert nas("report", str(run), "--out", str(out)) == 0
    page = page_of(out)
    titles = edge_plots(page)
    assert len(titles) == 2 * len(EDGES)
    assert "search normal c_{k-2} -&gt; 2" in titles and "search reduce 4 -&gt; 5" in titles
    assert '<h4>normal cell</h4>' in page and '<h4>reduce cell</h4>' in page
    assert section(page, "heatmaps").count("<img") == 2
    # the heatmaps show the values of the last epoch, as written
    alphas = report.Alphas.of(report.read_scalars(run, []))
    epoch, values = alphas.final("reduce")
    assert epoch == 2
    spec = alphas.spec()
    assert spec.num_inputs == 2 and list(spec.ops) == load_yaml((run / "config.yaml").read_text())["space"]["ops"]
    expected = [[last["reduce", src, dst, op] for op in spec.ops] for src, dst in spec.edges["reduce"]]
    torch.testing.assert_close(torch.tensor(values), torch.tensor(expected))


def test_a_run_without_tensorboard_events_gets_a_report_saying_what_is_missing(runs, tmp_path):
    run = copy_run(runs[0], tmp_path / "plain", tb=False)
    assert nas("report", str(run)) == 0
    page = page_of(run / "report.html")
    assert "no TensorBoard events" in section(page, "runs")
    assert "its curves are not available" in section(page, "curves")
    assert "not recorded in this run (it has no TensorBoard events)" in section(page, "alphas")
    assert "<td>2</td>" in section(page, "genotypes") and "normal:" in section(page, "cells")


def test_cells_are_pictures_when_graphviz_draws_them(runs, tmp_path, monkeypatch):
    from nas_tensorboard import monitor

    png = report.line_png([("x", "#000000", [(1, 1.0)])], "stand-in for dot's PNG")
    monkeypatch.setattr(monitor, "png_bytes", lambda genotype: {name: png for name in genotype.cells})
    out = tmp_path / "cells.html"
    assert nas("report", str(runs[1]), "--out", str(out)) == 0
    cells = section(page_of(out), "cells")
    assert 'alt="train normal cell"' in cells and 'alt="train reduce cell"' in cells and "digraph" not in cells


def test_force_replaces_an_existing_report(runs, tmp_path):
    out = tmp_path / "mine.html"
    out.write_text("mine")
    assert nas("report", str(runs[1]), "--out", str(out), "--force") == 0
    page_of(out)


BAD = [
    # (arguments, in which folders and files, the message's start after "nas: error: ")
    (["{tmp}/empty"], "{tmp}/empty is not a run directory (no config.yaml)"),
    (["{tmp}/nothing"], "{tmp}/nothing does not exist"),
    (["{search}", "{tmp}/empty"], "{tmp}/empty is not a run directory"),
    (["{search}", "{train}"], "a report of 2 runs needs --out FILE"),
    (["{search}", "{search}", "--out", "{tmp}/r.html"], "{search} is given twice"),
    (["{search}", "--out", "{tmp}/mine.html"], "--out: {tmp}/mine.html exists and nas does not replace files"),
    (["{search}", "--out", "{tmp}/empty"], "--out {tmp}/empty is a directory; name a file"),
    (["{search}", "--out", "{tmp}/a_file/r.html"], "--out {tmp}/a_file: {tmp}/a_file is a file, not a directory"),
]


def files_under(*folders) -> dict:
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, message", BAD, ids=[m.split(" ", 1)[-1][:30] for _, m in BAD])
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, args, message):
    search, train = runs
    (search / "report.html").unlink(missing_ok=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine.html").write_text("mine")
    (tmp_path / "a_file").write_text("mine")
    names = {"tmp": tmp_path, "search": search, "train": train}
    before = files_under(tmp_path, search, train)
    capsys.readouterr()
    assert nas("report", *(a.format(**names) for a in args)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas: error: {message.format(**names)}"), err
    assert err.count("\n") == 1
    assert files_under(tmp_path, search, train) == before
