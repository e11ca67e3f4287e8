"""Forward plus backward of a dilated depthwise convolution: torch's dilated kernel against the spread
one (nas_darts.layers.spread: the same taps, zeros between them), in both memory formats, at the
shapes of DARTS's dil convs. The figures behind ``nas_darts.layers.spreads`` (docs/performance.md).

    python benchmarks/dilated_conv.py                      # batch 64; paper-config and demo shapes
    python benchmarks/dilated_conv.py --shapes 16x32 64x8  # channels x size
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nas_darts.layers import spread


def milliseconds(fn, x: torch.Tensor, w: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        xs, ws = x.detach().requires_grad_(), w.detach().requires_grad_()
        start = time.perf_counter()
        y = fn(xs, ws)
        y.backward(torch.ones_like(y))
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shapes", nargs="+", default=["16x32", "32x16", "64x8", "8x8", "16x4"],
                        help="channels x height (= width)")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"ms per forward+backward, median of {args.repeats}, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"{'channels':>8} {'size':>4} {'kernel':>6} {'stride':>6}  {'CL dilated':>10} {'CL spread':>9} {'ratio':>6}"
          f"  {'contig dilated':>14} {'contig spread':>13}")
    for shape in args.shapes:
        channels, size = (int(v) for v in shape.split("x"))
        x = torch.randn(args.batch, channels, size, size)
        for kernel in (3, 5):
            w = torch.randn(channels, 1, kernel, kernel)
            for stride in (1, 2):
                pad = kernel - 1

                def dilated(x, w):
                    return F.conv2d(x, w, None, stride, pad, 2, channels)

                def spread_(x, w):
                    return F.conv2d(x, spread(w, (2, 2)), None, stride, pad, 1, channels)

                cl = x.contiguous(memory_format=torch.channels_last)
                assert torch.allclose(dilated(cl, w), spread_(cl, w), atol=1e-4)
                row = [milliseconds(f, v, w, args.repeats) for v in (cl, x) for f in (dilated, spread_)]
                print(f"{channels:8d} {size:4d} {kernel:6d} {stride:6d}  {row[0]:10.2f} {row[1]:9.2f} "
                      f"{row[1] / row[0]:5.2f}x  {row[2]:14.2f} {row[3]:13.2f}", flush=True)


if __name__ == "__main__":
    main()
