"""The weight gradient of a depthwise convolution wider than 3 columns over channels-last input on CPU:
oneDNN's own, and by blocks of 3 columns (``nas_darts.layers.weight_gradient_by_blocks``), at the shapes
of DARTS's 5x5 sep and dil convs (the paper config's and the demo's; sub-images of the dil convs'
route; with a channel multiplier, as in fused edges), with the time of the blocks against oneDNN's
("ratio") and what ``nas_darts.layers.splits_weight_gradient`` chooses. The figures behind that rule
(docs/performance.md).

    python benchmarks/depthwise_backward.py                 # every shape below
    python benchmarks/depthwise_backward.py --shapes 64x16x32 --kernels 5 7
"""

from __future__ import annotations

import argparse
import time

import torch

from nas_darts.layers import splits_weight_gradient, weight_gradient_by_blocks

# batch x channels x size: the paper config's cells (32, 16 and 8 pixels), the dil convs' sub-images there,
# the demo's cells, and small batches
SHAPES = ["64x16x32", "64x32x16", "64x64x8", "256x16x16", "256x32x8", "256x64x4", "64x8x8", "64x16x4",
          "32x32x8", "16x16x32"]


def milliseconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="batch x channels x height (= width)")
    parser.add_argument("--kernels", nargs="+", type=int, default=[5])
    parser.add_argument("--multipliers", nargs="+", type=int, default=[1, 2], help="output channels per input")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"ms per weight gradient (stride 1, 'same' padding), median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'batch':>5} {'channels':>8} {'size':>4} {'kernel':>6} {'mult':>4}  {'oneDNN':>8} {'blocks':>8} "
          f"{'ratio':>6}  split")
    for shape in args.shapes:
        batch, channels, size = (int(v) for v in shape.split("x"))
        x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
        for kernel in args.kernels:
            for mult in args.multipliers:
                w = torch.randn(channels * mult, 1, kernel, kernel)
                pad = (kernel // 2, kernel // 2)
                grad = torch.randn(batch, channels * mult, size, size).contiguous(memory_format=torch.channels_last)

                def onednn():
                    return torch.ops.aten.convolution_backward(grad, x, w, None, [1, 1], list(pad), [1, 1], False,
                                                               [0, 0], channels, [False, True, False])[1]

                def blocks():
                    return weight_gradient_by_blocks(grad, x, w, (1, 1), pad, (1, 1), channels)

                expected = onednn()  # the same to float32's rounding of sums of batch x size^2 products
                assert (blocks() - expected).abs().max() <= 1e-5 * expected.abs().max()
                a, b = milliseconds(onednn, args.repeats), milliseconds(blocks, args.repeats)
                split = splits_weight_gradient(x, w, channels, size)
                print(f"{batch:5d} {channels:8d} {size:4d} {kernel:6d} {mult:4d}  {a:8.2f} {b:8.2f} {b / a:5.2f}x  "
                      f"{'yes' if split else 'no'}", flush=True)


if __name__ == "__main__":
    main()
