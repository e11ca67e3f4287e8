"""Forward plus backward of a dilated depthwise convolution over channels-last input, at the shapes of
DARTS's dil convs: torch's dilated kernel, the spread one (the same taps, zeros between them) and the
undilated kernel over the pixels it reads (every other pixel at stride 2, four interleaved sub-images
at stride 1), and the route ``nas_darts.layers.dilated_route`` takes, with its time against torch's
dilated kernel ("ratio"). The figures behind that rule (docs/performance.md).

    python benchmarks/dilated_conv.py                      # batch 64; paper-config and demo shapes
    python benchmarks/dilated_conv.py --shapes 16x32 64x8  # channels x size
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nas_darts.layers import _PhaseConv, conv2d, dilated_route, spread


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
    print(f"ms per forward+backward over channels-last input, median of {args.repeats}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads; undilated: over every other pixel (stride 2) or over the four "
          "sub-images (stride 1)")
    print(f"{'channels':>8} {'size':>4} {'kernel':>6} {'stride':>6}  {'dilated':>8} {'spread':>8} {'undilated':>9}"
          f"  {'route taken':>11} {'ratio':>6}")
    for shape in args.shapes:
        channels, size = (int(v) for v in shape.split("x"))
        x = torch.randn(args.batch, channels, size, size).contiguous(memory_format=torch.channels_last)
        for kernel in (3, 5):
            w = torch.randn(channels, 1, kernel, kernel)
            for stride in (1, 2):
                pad = kernel - 1  # "same": dilation 2 x (kernel - 1) / 2

                def dilated(x, w):
                    return F.conv2d(x, w, None, stride, pad, 2, channels)

                def spread_(x, w):
                    return F.conv2d(x, spread(w, (2, 2)), None, stride, pad, 1, channels)

                def undilated(x, w):
                    if stride == 2:
                        sub = x[:, :, ::2, ::2].contiguous(memory_format=torch.channels_last)
                        return F.conv2d(sub, w, None, 1, (kernel - 1) // 2, 1, channels)
                    return _PhaseConv.apply(x, w, (2, 2), channels)

                def ours(x, w):
                    return conv2d(x, w, (stride, stride), (pad, pad), (2, 2), channels, True)

                fns = [dilated, spread_, *([undilated] if stride == 2 or size % 2 == 0 else [])]
                for fn in fns[1:]:
                    assert torch.allclose(dilated(x, w), fn(x, w), atol=1e-4)
                ms = [milliseconds(fn, x, w, args.repeats) for fn in (*fns, ours)]
                route = dilated_route(x, w, (stride, stride), (pad, pad), (2, 2), channels, True)
                cells = [f"{v:8.2f}" for v in ms[:2]] + [f"{ms[2]:9.2f}" if len(fns) == 3 else f"{'-':>9}"]
                print(f"{channels:8d} {size:4d} {kernel:6d} {stride:6d}  {' '.join(cells)}  {route:>11} "
                      f"{ms[-1] / ms[0]:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
