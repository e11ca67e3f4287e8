"""The second-order DARTS step's Hessian-vector product: the paper's central finite difference
(r = 0.01) against the exact product by double backward (``optimizer.hvp: exact``), on the paper's
search network (8 cells, C=16, batch 64) at several points of a search on real images (the embedded
digits, upsampled to 32x32 and repeated to 3 channels: CIFAR-10's format).

At each point the vector is the one the architect uses, v = grad_w' L_val(w', alpha), and the truth is
the exact product (``--truth float64`` computes it in float64; the default float32 is the search's own
precision: at the paper config a float64 double backward needs over 22 GB on CPU). Printed per
point: the relative error of each product
(||h - h_true|| / ||h_true||), its cosine with the truth, the error it causes in the architecture
gradient (||xi (h - h_true)|| / ||g_true||), and seconds. Peak memory of each product is measured in
fresh processes at the first point (resident set size on CPU, ``max_memory_allocated`` on CUDA).

    python benchmarks/hvp_error.py                            # CPU, points after 0, 10, 30 search steps
    python benchmarks/hvp_error.py --device cuda --points 0,50,200,500 --json out.json
    python benchmarks/hvp_error.py --smoke                    # tiny network, 2 points (CI)

The search between points is first-order DARTS (the weights and alphas move as in a search; the
products are measured with the second-order architect at each point). Figures of one run compare.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class _Run:
    """What an optimizer step reads of its run: the epoch, seeded generators, the reduction (identity)."""

    epoch, components = 0, {}

    def __init__(self) -> None:
        self.generators: dict[str, Any] = {}

    def generator(self, stream: str):
        import torch

        return self.generators.setdefault(stream, torch.Generator().manual_seed(0))

    @staticmethod
    def reduce(tensors):
        return list(tensors)


def _digits(cfg: dict, device):
    """Batches of the embedded digits as CIFAR-format images: 3 x image x image, normalised."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    images = F.interpolate(images, size=(cfg["image"],) * 2, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(y)
    b = cfg["batch"]
    return [(images[i:i + b].to(device), labels[i:i + b].to(device)) for i in range(0, len(images) - b + 1, b)]


def _build(cfg: dict, device):
    import torch
    from torch.utils.data import TensorDataset

    from nas_core import DataInfo
    from nas_darts.architect import DartsOptions, darts_second_order
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
    from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation
    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages

    torch.manual_seed(0)
    info = DataInfo((3, cfg["image"], cfg["image"]), 10)
    space = DartsCnnSpace(DartsCnnOptions(cells=cfg["cells"], channels=cfg["channels"]))
    net = space.build_supernet(info).to(device)
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=space.arch_spec()).to(device)
    blank = TensorDataset(torch.zeros(20, *info.input_shape), torch.zeros(20, dtype=torch.long))  # unread: batches come from _digits
    task = ClassificationTask(ClassificationOptions(), data=LabelledImages(blank, blank, info))
    return darts_second_order(DartsOptions(), supernet=net, relaxation=relax, task=task, epochs=50)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _product(opt, v, batch, hvp: str, fd_eps: float = 0.01):
    import attrs

    opt.opts = attrs.evolve(opt.opts, hvp=hvp, fd_eps=fd_eps)
    return opt.hessian_vector_product(v, batch)


def _flat(ts):
    import torch

    return torch.cat([t.reshape(-1) for t in ts])


def _as_double(opt, v, batches):
    """A float64 copy of the optimizer (network, relaxation, momentum buffers), v and the batches."""

    twin = copy.deepcopy(opt)
    twin.net.double()
    twin.relax.double()
    for state in twin.w_opt.state.values():
        if "momentum_buffer" in state:
            state["momentum_buffer"] = state["momentum_buffer"].double()
    return twin, [t.double() for t in v], [(x.double(), y) for x, y in batches]


def measure_point(opt, train, val, radii: list[float], device, truth_dtype: str) -> dict:
    """Every product at the search's current point, against the exact one in ``truth_dtype``."""
    import torch

    xi = opt.xi
    w_virtual = [w.requires_grad_(True) for w in opt.virtual_step(train, xi)]
    out = opt.forward_pass(w_virtual, opt.mixing(None), val, None, "arch")
    grads = torch.autograd.grad(out.loss, [*opt.alphas, *w_virtual])
    d_alpha, v = grads[:len(opt.alphas)], [g.detach() for g in grads[len(opt.alphas):]]

    if truth_dtype == "float64":
        twin, v64, (train64,) = _as_double(opt, v, [train])
        truth = _flat(_product(twin, v64, train64, "exact"))
        del twin
    else:  # the exact product in the search's own precision (float64 needs about twice its memory)
        truth = _flat(_product(opt, v, train, "exact")).double()
    g_true = _flat(d_alpha).double() - xi * truth
    rows = {}
    for name, hvp, r in [("exact", "exact", 0.0), *[(f"fd r={x:g}", "finite_difference", x) for x in radii]]:
        _sync(device)
        start = time.perf_counter()
        h = _flat(_product(opt, v, train, hvp, r or 0.01)).double()
        _sync(device)
        seconds = time.perf_counter() - start
        err = h - truth
        rows[name] = {"rel_error": float(err.norm() / truth.norm()),
                      "cosine": float(torch.nn.functional.cosine_similarity(h, truth, dim=0)),
                      "arch_grad_rel_error": float(xi * err.norm() / g_true.norm()), "seconds": seconds}
    hessian_share = float(xi * truth.norm() / g_true.norm())
    return {"xi": xi, "hessian_term_share": hessian_share, "products": rows}


def memory_child(cfg: dict, hvp: str, device_name: str) -> dict:
    """Peak memory of one product in this (fresh) process, with a random v of the weights' shapes."""
    import torch

    device = torch.device(device_name)
    opt = _build(cfg, device)
    train = _digits(cfg, device)[0]
    gen = torch.Generator().manual_seed(2)
    v = [torch.randn(w.shape, generator=gen).to(device) for w in opt.weights]
    if device.type == "cuda":
        _product(opt, v, train, hvp)  # warm-up: lazy inits out of the way (the allocator counts exactly)
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _product(opt, v, train, hvp)
        return {"peak_extra_mb": (torch.cuda.max_memory_allocated() - base) / 2**20}
    # CPU: the first product in this fresh process (after a warm-up, memory the allocator kept would hide
    # the peak); VmHWM is the peak resident set size, reset to the current one by writing 5 to clear_refs
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss = _status_mb("VmRSS")
    _product(opt, v, train, hvp)
    return {"peak_extra_mb": _status_mb("VmHWM") - rss}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(f"{field}:"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--points", default="0,10,30", help="search steps done before each measurement")
    p.add_argument("--radii", default="0.01,0.001,0.0001", help="fd_eps values of the finite difference")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--truth", choices=("float32", "float64"), default="float32",
                   help="precision of the exact product the others are measured against (float64: about 2.5x "
                        "the memory of float32's; at the paper config on CPU that is over 22 GB)")
    p.add_argument("--smoke", action="store_true", help="tiny network, 2 points")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    cfg = {"cells": args.cells, "channels": args.channels, "batch": args.batch, "image": args.image}
    if args.smoke:
        cfg, args.points, args.truth = {"cells": 3, "channels": 4, "batch": 8, "image": 8}, "0,2", "float64"

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(memory_child(cfg, args.child, args.device)))
        return
    device = torch.device(args.device)
    points = sorted(int(x) for x in args.points.split(","))
    radii = [float(x) for x in args.radii.split(",")]
    opt = _build(cfg, device)
    opt.second_order = False  # the search between points: first order (cheaper); xi below is the lr
    batches, run = _digits(cfg, device), _Run()
    print(f"paper search network: {cfg}, device {args.device}, {len(batches)} digit batches; truth: exact in {args.truth}")
    results, done = [], 0
    for point in points:
        while done < point:
            train, val = batches[(2 * done) % len(batches)], batches[(2 * done + 1) % len(batches)]
            opt.step(train, val, {}, run)
            done += 1
        opt.second_order = True
        train, val = batches[(2 * done) % len(batches)], batches[(2 * done + 1) % len(batches)]
        row = {"step": point, **measure_point(opt, train, val, radii, device, args.truth)}
        opt.second_order = False
        results.append(row)
        print(f"\nafter {point} search steps: xi {row['xi']:.4g}, the Hessian term is "
              f"{row['hessian_term_share']:.3g} of the architecture gradient's norm")
        print(f"  {'product':<14} {'rel. error':>11} {'cosine':>9} {'arch-grad err':>14} {'seconds':>8}")
        for name, r in row["products"].items():
            print(f"  {name:<14} {r['rel_error']:>11.3e} {r['cosine']:>9.5f} {r['arch_grad_rel_error']:>14.3e} "
                  f"{r['seconds']:>8.2f}")
    summary: dict[str, Any] = {"config": cfg, "device": args.device, "truth": args.truth, "points": results}
    times = {name: statistics.median(r["products"][name]["seconds"] for r in results)
             for name in results[0]["products"]}
    print("\nmedian seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    fd = f"fd r={radii[0]:g}"
    print(f"exact / {fd} time: {times['exact'] / times[fd]:.2f}x")
    if not args.no_memory:
        memory = {}
        for hvp in ("exact", "finite_difference"):
            proc = subprocess.run([sys.executable, __file__, "--child", hvp, "--device", args.device,
                                   "--cells", str(cfg["cells"]), "--channels", str(cfg["channels"]),
                                   "--batch", str(cfg["batch"]), "--image", str(cfg["image"]),
                                   *(["--threads", str(args.threads)] if args.threads else [])],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                print(f"memory of {hvp}: failed: {proc.stderr.strip()[-800:]}")
                continue
            memory[hvp] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_extra_mb"]
        summary["peak_extra_mb"] = memory
        if len(memory) == 2:
            print(f"peak memory above the model: exact {memory['exact']:.0f} MB, finite difference "
                  f"{memory['finite_difference']:.0f} MB ({memory['exact'] / memory['finite_difference']:.2f}x)")
    summary["median_seconds"] = times
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
