"""Seconds per search step of each method against collapse, relative to DARTS's, in one run: every
method built from its demo preset (the same supernet: the demo's 4 cells, C=8, batch 64, digits),
each step one architecture and one weight update on real batches, median over the timed steps after
warm-up, the methods interleaved round by round so a machine that slows down slows them alike.

Besides the per-step rows: the cost of one RobustDARTS eigenvalue reading (Lanczos on the
architecture Hessian, the demo's 20 products at most) and P-DARTS's steps in its first and last
stage (8 ops per edge over 2 cells; 3 ops per edge over 4 cells: skip, sep 3x3 and dil 3x3 on every
edge stand in for what the pruning keeps). DARTS-PT's search steps are
DARTS's; its selection's cost is in the collapse table's search cost.

    python benchmarks/method_step.py                   # CPU, 3 rounds of 3 steps
    python benchmarks/method_step.py --device cuda --set space.cells=8 --set space.channels=16 \\
        --set search.batch_size=64 --rounds 5          # the paper's supernet (on digits)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# label -> (preset, extra --set): each method's search step as its demo configures it
METHODS: dict[str, tuple[str, list[str]]] = {
    "darts_1st": ("demo", ["optimizer.name=darts_1st"]),
    "darts_2nd": ("demo", []),
    "darts_2nd_exact_hvp": ("demo", ["optimizer.hvp=exact"]),
    "darts_minus": ("darts_minus_demo", []),
    "sdarts_rs": ("sdarts_rs_demo", []),
    "sdarts_adv": ("sdarts_adv_demo", []),
    "pdarts_stage1": ("pdarts_demo", []),
    "pdarts_stage3": ("pdarts_demo", []),
}


def build(toolkit: Any, label: str, sets: list[str], device: str, tmp: Path) -> tuple[Any, Any]:
    """(the prepared search phase, a run context at epoch 1 of the search) for one method."""
    from nas_core.config import Layer, parse_set, resolve
    from nas_core.context import RunContext
    from nas_core.search import prepare_search
    from nas_core.staged_search import stage_config

    preset, extra = METHODS[label]
    config = resolve(toolkit.registries, [Layer(parse_set([*extra, *sets, f"device={device}"]), "--set")],
                     preset=preset)
    if config.search.stages:
        stage = 1 if label.endswith("stage1") else len(config.search.stages)
        decided = {}
        if stage > 1:  # what P-DARTS keeps after two prunings: 3 ops per edge (a typical set stands in)
            probe = prepare_search(toolkit.registries, stage_config(toolkit, config, 1, {}))
            typical = [op for op in ("skip_connect", "sep_conv_3x3", "dil_conv_3x3") if op in probe.spec.ops]
            kept = {t: [typical or list(probe.spec.ops[:3]) for _ in edges] for t, edges in probe.spec.edges.items()}
            decided = {"relaxation": {"kept": kept}, "space": {"edge": {"kept": kept}}}
        config = stage_config(toolkit, config, stage, decided)
    phase = prepare_search(toolkit.registries, config)
    run = RunContext(dir=tmp / label, config=config, phase="search", device=phase.device,
                     plugin_manager=toolkit.plugin_manager, epochs=config.search.epochs, spec=phase.spec,
                     components=phase.components())
    run.start_epoch_state(min(1, config.search.epochs - 1))  # past any weights-only warm-up epoch 0
    optimizer = phase.optimizer
    if getattr(optimizer, "opts", None) is not None and optimizer.opts.freeze_alpha_epochs > run.epoch:
        import attrs

        optimizer.opts = attrs.evolve(optimizer.opts, freeze_alpha_epochs=0)  # time the full step
    return phase, run


def time_steps(phase: Any, run: Any, steps: int, warmup: int) -> list[float]:
    import torch

    batches, _ = phase.batches(run)
    batches = iter(batches)
    seconds = []
    for i in range(warmup + steps):
        batch = next(batches)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        phase.step(batch, {}, run)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def eigenvalue_seconds(phase: Any, run: Any) -> float:
    """One RobustDARTS reading on the demo's settings (tol 1e-3, at most 20 products)."""
    from nas_robust_darts.hessian import dominant_eigenvalue

    batch = next(iter(phase.task.loader("arch", batch_size=phase.settings.batch_size, run=run, evaluation=True)))
    start = time.perf_counter()
    dominant_eigenvalue(phase.supernet, phase.relaxation, phase.task, batch, generator=run.generator("hessian"),
                        tol=1e-3, max_iter=20)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], help="a config key for every method (KEY=VALUE)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from nas_core import Toolkit

    toolkit = Toolkit.load()
    labels = args.methods.split(",")
    unknown = [m for m in labels if m not in METHODS]
    if unknown:
        sys.exit(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        built = {label: build(toolkit, label, args.set, args.device, Path(tmp)) for label in labels}
        seconds: dict[str, list[float]] = {label: [] for label in labels}
        eigen: list[float] = []
        for r in range(args.rounds):
            for label in labels:
                seconds[label] += time_steps(*built[label], args.steps, args.warmup if r == 0 else 0)
            if "darts_2nd" in built:
                eigen.append(eigenvalue_seconds(*built["darts_2nd"]))
    medians = {label: statistics.median(s) for label, s in seconds.items()}
    ref = medians.get("darts_2nd") or next(iter(medians.values()))
    print(f"{'method':<22} {'s/step':>8} {'x darts_2nd':>12} {'x darts_1st':>12}")
    for label, m in medians.items():
        first = f"{m / medians['darts_1st']:.2f}" if "darts_1st" in medians else "-"
        print(f"{label:<22} {m:>8.3f} {m / ref:>12.2f} {first:>12}")
    result: dict[str, Any] = {"device": args.device, "sets": args.set, "median_seconds": medians, "samples": seconds}
    if eigen:
        e = statistics.median(eigen)
        print(f"robust_darts eigenvalue reading: {e:.3f} s = {e / ref:.2f} darts_2nd steps (one per epoch in the demo)")
        result["eigenvalue_seconds"] = e
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
