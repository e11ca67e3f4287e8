"""Fused against per-op edges on one device: the largest relative difference of the supernet's output,
its weight gradients and alpha's gradient (tests/plugins/test_fused_edges.py checks the same on CPU),
for ``space.fused_edges`` true and for its default (on a GPU: the conv ops per edge, the rest shared).

    python benchmarks/fused_numerics.py --device cuda      # float64 and float32; exit 1 above 1e-12 / 1e-5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "plugins")]

from nas_core import DataInfo, MixingWeights  # noqa: E402
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace  # noqa: E402

LIMITS = {torch.float64: 1e-12, torch.float32: 1e-5}


def difference(device: str, dtype: torch.dtype, fusion: bool | None) -> float:
    info = DataInfo((3, 16, 16), 10)
    results = []
    for fused in (False, fusion):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=5, channels=8, fused_edges=fused))
        net = space.build_supernet(info).to(device=device, dtype=dtype)
        gen = torch.Generator().manual_seed(1)
        alphas = [torch.randn(space.arch_spec().shape(t), generator=gen, dtype=dtype).to(device).requires_grad_()
                  for t in ("normal", "reduce")]
        x = torch.randn(16, 3, 16, 16, generator=gen, dtype=dtype).to(device)
        out = net(x, arch_weights=MixingWeights({"normal": alphas[0].softmax(-1), "reduce": alphas[1].softmax(-1)}))
        results.append([out, *torch.autograd.grad(out.square().mean(), [*alphas, *net.parameters()])])
    return max(((a - b).abs().max() / a.abs().max().clamp_min(1)).item() for a, b in zip(*results))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    failed = False
    for fusion in (True, None):
        for dtype, limit in LIMITS.items():
            diff = difference(args.device, dtype, fusion)
            failed |= diff > limit
            print(f"{args.device} {str(dtype):14s} fused_edges={fusion} vs per-op: largest relative difference "
                  f"{diff:.2e} (limit {limit:.0e})")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
