"""The benchmark scripts run (smoke mode), so they never rot. Figures are not checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from nas_core import allocator


@pytest.mark.slow  # 80 s: nine fresh processes; `pytest -m slow` runs it
def test_search_step_benchmark_smoke(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, "benchmarks/search_step.py", "--smoke", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    engines_modes = {(r["engine"], r["mode"]) for r in data["results"]}
    assert len(engines_modes) == 9
    assert all(r["seconds"] > 0 and r["forward_gflop"] > 0 and r["peak_rss_mb"] > 0 for r in data["results"])
    assert "ours/reference darts_2nd time" in data["ratios"]
    assert "ours/reference darts_2nd time" in proc.stdout
    # our engines run as the nas program does (freed memory kept, on glibc), the reference as a plain process
    glibc = allocator.on_glibc()
    assert {(r["engine"], r["freed_memory_kept"]) for r in data["results"]} == {
        ("reference", False), ("ours", glibc), ("ours_recompute", glibc)}


@pytest.mark.slow  # two fresh processes
def test_search_step_profile_counts_operator_calls(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "benchmarks/search_step.py", "--smoke", "--profile", "--engines", "ours",
                           "--modes", "weight,darts_1st", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    weight, first = json.loads(out.read_text())["results"]
    # a first-order step is the weight step plus an architecture pass: more calls, every one counted once
    assert 0 < weight["op_calls"] < first["op_calls"] and weight["cuda_kernels"] == 0
    assert weight["top_ops"] and all(ms >= 0 for _, _, ms in weight["top_ops"])
    assert "operator calls per step" in proc.stdout


def test_dilated_conv_benchmark_runs():
    proc = subprocess.run([sys.executable, "benchmarks/dilated_conv.py", "--batch", "2", "--shapes", "4x4",
                           "--repeats", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert [(r[2], r[3]) for r in rows] == [("3", "1"), ("3", "2"), ("5", "1"), ("5", "2")]


@pytest.mark.slow  # a benchmark's smoke run, like search_step's and method_step's
def test_hvp_error_benchmark_smoke(tmp_path):
    out = tmp_path / "hvp.json"
    proc = subprocess.run([sys.executable, "benchmarks/hvp_error.py", "--smoke", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [p["step"] for p in data["points"]] == [0, 2]
    for point in data["points"]:
        assert set(point["products"]) == {"exact", "fd r=0.01", "fd r=0.001", "fd r=0.0001"}
        # the exact product in float32 is the float64 truth up to float32 rounding
        assert point["products"]["exact"]["rel_error"] < 1e-4
    assert set(data["peak_extra_mb"]) == {"exact", "finite_difference"}


@pytest.mark.slow  # every method's demo components built at once
def test_method_step_benchmark_smoke(tmp_path):
    out = tmp_path / "methods.json"
    tiny = ["--set", "space.cells=3", "--set", "space.channels=4", "--set", "search.batch_size=16"]
    proc = subprocess.run([sys.executable, "benchmarks/method_step.py", *tiny, "--rounds", "1", "--steps", "1",
                           "--warmup", "0", "--methods", "darts_1st,darts_2nd,sdarts_adv,pdarts_stage3",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data["median_seconds"]) == {"darts_1st", "darts_2nd", "sdarts_adv", "pdarts_stage3"}
    assert all(v > 0 for v in data["median_seconds"].values()) and data["eigenvalue_seconds"] > 0
    assert "x darts_2nd" in proc.stdout


@pytest.mark.parametrize("method", ["pcdarts", "drnas", "gdas", "fairdarts", "nb201", "darts_minus", "sdarts",
                                    "robust_darts", "darts_pt", "pdarts", "snas", "reinmax", "rdarts_spaces", "oles",
                                    "lambda_darts"])
def test_fidelity_scripts_skip_cleanly_without_the_authors_code(method):
    """Each side-by-side check needs the authors' checkout (benchmarks/fidelity/README.md); without it,
    it says which variable to set and exits 0, so CI and users without the code are not failed."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SRC")}
    proc = subprocess.run([sys.executable, f"benchmarks/fidelity/{method}.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith("skipped: set ") and "_SRC=" in proc.stdout


def test_the_flop_count_of_a_grouped_convs_weight_gradient_is_its_forwards():
    """torch's own formula counts it as if the conv were ungrouped; the benchmark's counter does not."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO / "benchmarks"))
    from search_step import flop_counter

    for groups in (1, 8):
        x = torch.randn(2, 32, 8, 8, requires_grad=True)
        w = torch.randn(32, 32 // groups, 3, 3, requires_grad=True)
        with flop_counter() as counter:
            F.conv2d(x, w, padding=1, groups=groups).sum().backward()
        counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
        forward = 2 * 2 * 32 * (32 // groups) * 9 * 8 * 8  # 2 flops per multiply-add, at every output
        assert counts["aten.convolution"] == forward
        assert counts["aten.convolution_backward"] == 2 * forward  # input and weight gradients


def test_depthwise_backward_benchmark_runs():
    proc = subprocess.run([sys.executable, "benchmarks/depthwise_backward.py", "--shapes", "2x4x8", "--kernels", "5",
                           "--repeats", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    # multipliers 1 and 2; too small a tensor to split either way
    assert [(r[3], r[4], r[-1]) for r in rows] == [("5", "1", "no"), ("5", "2", "no")]


def test_the_step_benchmark_keeps_freed_memory_as_the_nas_program_does(monkeypatch):
    from benchmarks import search_step

    monkeypatch.setattr(allocator, "reuse_freed_memory", lambda: True)
    engines = ("reference", "ours", "baseline")
    assert [search_step._keep_freed_memory(e, "as-nas") for e in engines] == [False, True, True]
    assert [search_step._keep_freed_memory(e, "kept") for e in engines] == [True, True, True]
    assert [search_step._keep_freed_memory(e, "returned") for e in engines] == [False, False, False]
