"""The benchmark scripts run (smoke mode), so they never rot. Figures are not checked here."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


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
