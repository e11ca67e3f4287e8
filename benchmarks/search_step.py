"""Seconds, peak memory and FLOPs of one DARTS search step: our engine against the textbook
reference in benchmarks/reference/, each measurement in a fresh subprocess.

    python benchmarks/search_step.py                 # paper search config, CPU: table + ratios
    python benchmarks/search_step.py --scaling       # also batch 16/32/64 x 5/8 cells
    python benchmarks/search_step.py --smoke         # tiny config, 1 step (CI)
    python benchmarks/search_step.py --demo --profile   # the README demo's config; operator calls per step
    python benchmarks/search_step.py --device cuda --json results.json
    python benchmarks/search_step.py --baseline ../old --engines ours,baseline --modes darts_2nd
                                                     # A/B: this tree against another checkout's code

Figures from one run are comparable with each other; machines and days differ, so report
ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGINES = ("reference", "ours", "ours_recompute")  # also "ours_per_op": ours with space.fused_edges false
MODES = ("weight", "darts_1st", "darts_2nd")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# one measurement (runs in its own process)
# ---------------------------------------------------------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _build(engine: str, mode: str, cfg: dict, device):
    """A ``step()`` closure for one engine and mode, and a forward function for FLOP counting."""
    import torch

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    size, in_ch = cfg["image"], cfg.get("in_channels", 3)
    batches = [(torch.randn(cfg["batch"], in_ch, size, size, generator=gen).to(device),
                torch.randint(0, 10, (cfg["batch"],), generator=gen).to(device)) for _ in range(2)]
    train, val = batches
    if engine == "reference":
        from benchmarks.reference import textbook

        net = textbook.Network(c=cfg["channels"], cells=cfg["cells"], in_channels=in_ch).to(device)
        net.alphas = [a.to(device).detach().requires_grad_(True) for a in net.alphas]
        w_opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        architect = textbook.Architect(net)

        def step():
            if mode != "weight":
                architect.step(train, val, 0.025, w_opt, unrolled=mode == "darts_2nd")
            textbook.weight_step(net, train, w_opt)

        return step, lambda: net(train[0]), lambda flag: None

    from nas_core import DataInfo
    from nas_darts.architect import DartsOptions, DartsOptimizer
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
    from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation
    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages

    info = DataInfo((in_ch, size, size), 10)
    fused = False if engine == "ours_per_op" else cfg.get("fused")
    space = DartsCnnSpace(DartsCnnOptions(cells=cfg["cells"], channels=cfg["channels"],  # baseline: as ours
                                          recompute_edges=engine == "ours_recompute",
                                          **({} if fused is None else {"fused_edges": fused})))
    net = space.build_supernet(info).to(device)
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=space.arch_spec()).to(device)
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=LabelledImages(list(zip(*train)), [], info))
    opt = DartsOptimizer(DartsOptions(), supernet=net, relaxation=relax, task=task, epochs=50,
                         second_order=mode == "darts_2nd")

    class Run:  # what a step asks of the run: a generator per stream, the (identity) reduction, the epoch
        generator = staticmethod(lambda stream: torch.Generator().manual_seed(0))
        reduce = staticmethod(list)
        epoch = 0
        components: dict = {}

    def step():
        if mode == "weight":
            opt.weight_step(train)
        else:
            opt.step(train, val, {}, Run())

    def set_recompute(flag: bool) -> None:
        net.recompute_edges = flag

    return step, lambda: net(train[0], arch_weights=relax.weights()), set_recompute


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """A conv's backward: each gradient asked for (input, weight) as many multiply-adds as its forward.
    torch 2.14's own formula counts a grouped conv's weight gradient as if the conv were ungrouped,
    ``groups`` times its work (a depthwise conv's, C times)."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed) * (bool(output_mask[0]) + bool(output_mask[1]))


def flop_counter():
    """``FlopCounterMode`` with the weight gradient of grouped convs counted right."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})


def _keep_freed_memory(engine: str, policy: str) -> bool:
    """Whether this process keeps the memory a step frees (nas_core.allocator), by ``--freed-memory``: "as-nas",
    our engines as the ``nas`` program runs them (a baseline checkout from before the module, as it ran) and the
    reference as a plain process; "kept", every engine; "returned", none (glibc's default)."""
    if policy == "returned" or (policy == "as-nas" and engine == "reference"):
        return False
    import nas_core

    try:
        from nas_core import allocator
    except ImportError:
        return False
    # a baseline checkout from before the module: the editable install of this tree fills in the
    # submodule the checkout lacks, so it is the checkout's only if it lies beside the checkout's package
    if Path(allocator.__file__).parent != Path(nas_core.__file__).parent:
        return False
    return allocator.reuse_freed_memory()


def measure(engine: str, mode: str, cfg: dict) -> dict:
    import torch

    kept = _keep_freed_memory(engine, cfg.get("freed_memory", "as-nas"))
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    cuda = device.type == "cuda"
    step, forward, set_recompute = _build(engine, mode, cfg, device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    base_rss = _rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    for _ in range(cfg["warmup"]):
        step()
    sync()
    times = []
    for _ in range(cfg["steps"]):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"engine": engine, "mode": mode, **cfg, "seconds": statistics.median(times), "all_seconds": times,
              "peak_rss_mb": peak_rss, "peak_extra_mb": peak_rss - base_rss,
              "torch_threads": torch.get_num_threads(), "freed_memory_kept": kept}
    if cuda:
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["peak_extra_mb"] = result["cuda_peak_mb"] - base_cuda
        result["device_name"] = torch.cuda.get_device_name(device)
    with flop_counter() as counter:
        with torch.no_grad():
            forward()
    result["forward_gflop"] = counter.get_total_flops() / 1e9
    # FLOPs of the algorithm, without recomputation: counting under checkpointing keeps every
    # activation alive (the counting mode defeats it) and would not fit in memory
    set_recompute(False)
    with flop_counter() as counter:
        step()
    result["step_gflop"] = counter.get_total_flops() / 1e9
    result["gflops_per_s"] = result["step_gflop"] / result["seconds"]  # useful FLOPs per second
    set_recompute(engine == "ours_recompute")
    if cfg.get("profile"):
        result.update(profile(step, cuda))
    return result


def profile(step, cuda: bool, top: int = 12) -> dict:
    """One more step under torch.profiler: the operator calls it makes (aten ops called from Python or
    by autograd, not the ops they call in turn), CUDA kernels launched, and the operators that take
    the most self time."""
    import torch
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with torch.profiler.profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    calls = sum(1 for e in events if e.name.startswith("aten::")
                and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")))
    kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    table = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"op_calls": calls, "cuda_kernels": kernels,
            "top_ops": [[e.key, e.count, e.self_cpu_time_total / 1e3] for e in table]}


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------

def run_one(engine: str, mode: str, cfg: dict, timeout: float, baseline: Path | None = None) -> dict | None:
    """``engine`` "baseline" is "ours" with the code of the ``baseline`` checkout imported first."""
    # "baseline" gets --fused/--no-fused too (a checkout without space.fused_edges then fails, saying so)
    worker = "ours" if engine == "baseline" else engine
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, mode, "--config", json.dumps(cfg)]
    trees = [baseline, baseline / "plugins"] if engine == "baseline" and baseline else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*trees, ROOT, os.environ.get("PYTHONPATH", "")]))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"  {engine}/{mode}: timed out after {timeout:.0f} s", flush=True)
        return None
    if proc.returncode != 0:
        why = "killed (out of memory?)" if proc.returncode < 0 else proc.stderr.strip()[-1500:]
        print(f"  {engine}/{mode}: failed with exit code {proc.returncode}: {why}", flush=True)
        return None
    result = {**json.loads(proc.stdout.strip().splitlines()[-1]), "engine": engine}
    print(f"  {engine:15s} {mode:10s} {result['seconds']:8.3f} s/step", flush=True)
    return result


def print_table(results: list[dict]) -> None:
    head = f"{'engine':15s} {'mode':10s} {'batch':>5s} {'cells':>5s} {'s/step':>8s} {'peak MB':>8s} {'+MB':>7s} " \
           f"{'fwd GFLOP':>9s} {'step GFLOP':>10s} {'GFLOP/s':>8s}"
    print(head)
    print("-" * len(head))
    for r in results:
        peak = r.get("cuda_peak_mb", r["peak_rss_mb"])
        engine = r["engine"] + ("*" if r.get("freed_memory_kept") else "")
        print(f"{engine:15s} {r['mode']:10s} {r['batch']:5d} {r['cells']:5d} {r['seconds']:8.3f} {peak:8.0f} "
              f"{r['peak_extra_mb']:7.0f} "
              f"{r['forward_gflop']:9.2f} {r['step_gflop']:10.2f} {r['gflops_per_s']:8.1f}")
    if any(r.get("freed_memory_kept") for r in results):
        print("* keeps the memory a step frees for the next (nas_core.allocator, as the nas program does)")
    for r in results:
        if "op_calls" in r:
            kernels = f", {r['cuda_kernels']} CUDA kernels" if r["cuda_kernels"] else ""
            print(f"\n{r['engine']} {r['mode']}: {r['op_calls']} operator calls per step{kernels}; most self time:")
            for name, count, ms in r["top_ops"]:
                print(f"  {name:45s} {count:6d} calls {ms:9.1f} ms")


def ratios(results: list[dict]) -> dict[str, float]:
    """Ratios of the medians over repeated measurements (--repeat)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["engine"], r["mode"]), []).append(r)
    by = {key: {**rs[0], "seconds": statistics.median(r["seconds"] for r in rs),
                "peak_extra_mb": statistics.median(r["peak_extra_mb"] for r in rs)} for key, rs in groups.items()}
    out: dict[str, float] = {}
    for engine in ("ours", "ours_recompute"):
        for mode in MODES:
            if (engine, mode) in by and ("reference", mode) in by:
                ours, ref = by[engine, mode], by["reference", mode]
                out[f"{engine}/reference {mode} time"] = ours["seconds"] / ref["seconds"]
                out[f"{engine}/reference {mode} memory"] = ours["peak_extra_mb"] / ref["peak_extra_mb"]
        if (engine, "weight") in by:
            for mode in ("darts_1st", "darts_2nd"):
                if (engine, mode) in by:
                    out[f"{engine} {mode}/weight time"] = by[engine, mode]["seconds"] / by[engine, "weight"]["seconds"]
    for other in ("baseline", "ours_per_op"):
        for mode in MODES:
            if ("ours", mode) in by and (other, mode) in by:
                ours, them = by["ours", mode], by[other, mode]
                out[f"ours/{other} {mode} time"] = ours["seconds"] / them["seconds"]
                out[f"ours/{other} {mode} memory"] = ours["peak_extra_mb"] / them["peak_extra_mb"]
                if "op_calls" in ours and "op_calls" in them:
                    out[f"ours/{other} {mode} operator calls"] = ours["op_calls"] / them["op_calls"]
    for mode in MODES:
        if ("ours", mode) in by and ("reference", mode) in by and "op_calls" in by["ours", mode]:
            out[f"ours/reference {mode} operator calls"] = by["ours", mode]["op_calls"] / by["reference", mode]["op_calls"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--image", type=int, default=32, help="input height and width")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--scaling", action="store_true", help="also ours darts_2nd at batch 16/32/64 x cells 5/8")
    p.add_argument("--smoke", action="store_true", help="tiny config, one step: checks the script runs")
    p.add_argument("--demo", action="store_true", help="the demo preset's search config: 4 cells, C=8, "
                                                       "digits' 1x8x8 images, batch 64")
    p.add_argument("--profile", action="store_true", help="also count operator calls per step (torch.profiler) and "
                                                          "list the operators taking the most time")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                   help="our engines with space.fused_edges on or off (default: the space's default); "
                        "engine ours_per_op is always off, for both in one run")
    p.add_argument("--freed-memory", choices=("as-nas", "kept", "returned"), default="as-nas",
                   help="whether a process keeps the memory a step frees for the next (nas_core.allocator): "
                        "as-nas (default), our engines do as the nas program does and the reference does not; "
                        "kept, every engine; returned, none (glibc's default)")
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--baseline", type=Path, help="engine 'baseline': our step with the code of this checkout "
                                                  "(e.g. a git worktree of an earlier commit), for A/B comparisons")
    p.add_argument("--repeat", type=int, default=1, help="measure every engine/mode this many times, interleaved")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    p.add_argument("--worker", nargs=2, metavar=("ENGINE", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        print(json.dumps(measure(*args.worker, json.loads(args.config))))
        return
    in_channels = 3
    if args.demo:
        args.batch, args.cells, args.channels, args.image, in_channels = 64, 4, 8, 8, 1
    if args.smoke:
        args.batch, args.cells, args.channels, args.image, args.steps, args.warmup = 4, 3, 4, 8, 1, 0
    cfg = {k: getattr(args, k) for k in ("device", "batch", "cells", "channels", "image", "steps", "warmup", "threads",
                                         "profile", "fused", "freed_memory")}
    cfg["in_channels"] = in_channels
    print(f"search step, darts_cnn: batch {args.batch}, {args.cells} cells, C={args.channels}, "
          f"{args.image}x{args.image}x{in_channels}, 10 classes, device {args.device}\n")
    results = [r for _ in range(args.repeat) for e in args.engines.split(",") for m in args.modes.split(",")
               if (r := run_one(e, m, cfg, args.timeout, args.baseline)) is not None]
    print()
    print_table(results)
    print()
    table = ratios(results)
    for name, value in table.items():
        print(f"{name:45s} {value:6.2f}x")
    scaling = []
    if args.scaling:
        print("\nscaling: ours darts_2nd")
        for cells in (5, 8):
            for batch in (16, 32, 64):
                r = run_one("ours", "darts_2nd", {**cfg, "cells": cells, "batch": batch}, args.timeout)
                if r is not None:
                    scaling.append(r)
        print_table(scaling)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": table, "scaling": scaling}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if len(results) < args.repeat * len(args.engines.split(",")) * len(args.modes.split(",")):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
