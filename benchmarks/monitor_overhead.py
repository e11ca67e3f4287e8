"""What the TensorBoard monitor adds to a demo search: the same short search (the ``demo`` preset,
a few steps per epoch) run without the monitor (``NAS_DISABLE_PLUGINS=tensorboard``) and with it,
alternately, each in a fresh process. Prints the median seconds of each and their ratio, and,
from the runs with the monitor, the seconds spent inside its hooks (timed around them, so this
share does not drown in the machine's noise as a difference of two runs may).

    python benchmarks/monitor_overhead.py                       # 2 epochs of 5 steps, 3 pairs
    python benchmarks/monitor_overhead.py --steps 0 --pairs 1   # whole demo epochs
    python benchmarks/monitor_overhead.py --json out.json

What the monitor does: start the event writer, write the step scalars, and per epoch the op
strengths, heatmaps (matplotlib), the cells (only with Graphviz's ``dot``, which the output
states) and a flush. Machines are shared: compare figures from one run only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MONITOR_HOOKS = ("nas_epoch_start", "nas_step_end", "nas_epoch_end", "nas_run_end")


def timed_search(argv: list[str]) -> None:
    """In the child process: ``nas run argv``, timing it and (when loaded) the monitor's hooks."""
    from nas_core import cli

    spent = [0.0]

    def timing(function: Any) -> Any:
        @functools.wraps(function)  # keeps the hook marker and the argument names pluggy reads
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        return timed

    if "tensorboard" not in os.environ.get("NAS_DISABLE_PLUGINS", ""):
        from nas_tensorboard import monitor, plugin

        plugin.nas_run_start = timing(plugin.nas_run_start)  # the writer's start and the initial alphas
        for name in MONITOR_HOOKS:
            setattr(monitor.TensorBoardMonitor, name, timing(getattr(monitor.TensorBoardMonitor, name)))
    started = time.perf_counter()
    if cli.main(argv) != 0:
        sys.exit(f"nas {' '.join(argv)} failed")
    print(json.dumps({"run_s": time.perf_counter() - started, "monitor_s": spent[0]}))


def one_search(out: Path, monitor: bool, args: argparse.Namespace) -> dict[str, float]:
    """Seconds of one search in a fresh process, with or without the monitor, and of its hooks."""
    steps = [] if args.steps == 0 else ["--set", f"search.max_steps_per_epoch={args.steps}"]
    argv = ["run", "--preset", "demo", "--set", f"search.epochs={args.epochs}", *steps,
            "--threads", str(args.threads), "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NAS_DISABLE_PLUGINS": "" if monitor else "tensorboard"}
    result = subprocess.run([sys.executable, __file__, "--timed-search", json.dumps(argv)], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"nas {' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    if (out / "tb").is_dir() != monitor:
        sys.exit(f"{out}: the monitor was {'not ' if monitor else ''}expected to write tb/")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps per epoch (0: whole demo epochs)")
    parser.add_argument("--pairs", type=int, default=3, help="runs without and with the monitor, alternately")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--timed-search", help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args()
    if args.timed_search:
        return timed_search(json.loads(args.timed_search))

    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="nas-monitor-") as tmp:
        for i in range(args.pairs):
            for variant in ("off", "on"):  # alternating: a machine's drift hits both alike
                out = Path(tmp) / f"{variant}-{i}"
                runs[variant].append(one_search(out, variant == "on", args))
                shutil.rmtree(out)
                print(f"pair {i + 1}/{args.pairs} monitor {variant}: {runs[variant][-1]['run_s']:.2f} s", flush=True)
    off = statistics.median(r["run_s"] for r in runs["off"])
    on = statistics.median(r["run_s"] for r in runs["on"])
    hooks = statistics.median(r["monitor_s"] for r in runs["on"])
    share = statistics.median(r["monitor_s"] / r["run_s"] for r in runs["on"])
    figures = {"epochs": args.epochs, "steps_per_epoch": args.steps or "all", "pairs": args.pairs,
               "threads": args.threads, "dot": shutil.which("dot") is not None, "runs": runs,
               "median_off_s": off, "median_on_s": on, "ratio": on / off, "median_monitor_s": hooks,
               "monitor_share": share}
    print(f"demo search, {args.epochs} epochs of {figures['steps_per_epoch']} steps, {args.threads} thread(s), "
          f"cells drawn: {'yes' if figures['dot'] else 'no (no dot)'}")
    print(f"median seconds per run: without the monitor {off:.2f}, with it {on:.2f}; ratio {on / off:.3f}")
    print(f"inside the monitor's hooks: {hooks:.2f} s per run ({hooks / args.epochs:.2f} s per epoch, start-up "
          f"included), {100 * share:.1f} % of the run")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
