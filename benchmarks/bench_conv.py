"""A convolution's weight gradient: torch's own against ``d2lcore.conv.BatchGradConv2d``'s
(a forward convolution with the batch axis read as channels), side by side in one run.

Two parts:

- each layer shape alone: LeNet's two convolutions at batch 256, and the 3 x 3 and 1 x 1
  convolutions of the modern networks at batch 128; the time of the weight gradient
  (bias included) both ways, best and median of ``--repeats``;
- the classic LeNet's training step (batch 256, SGD, Fashion-MNIST) with its second
  convolution as ``nn.Conv2d`` and as ``BatchGradConv2d``, blocks of 20 steps taking
  turns, the median step and the median of the paired ratios.

It prints which shapes the batch route is faster for, which is what decides where
``d2lcore.conv`` uses it.

Usage::

    python benchmarks/bench_conv.py               # one thread, as bench_epoch.py's table
    python benchmarks/bench_conv.py --threads 2 --blocks 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from d2lcore.conv import BatchGradConv2d, LeNet
from d2lcore.data import fashion_mnist_splits
from d2lcore.device import keep_freed_memory
from d2lcore.init import init_weights

# (batch, in channels, out channels, image side, kernel, padding, where in the book)
SHAPES = [
    (256, 1, 6, 28, 5, 2, "LeNet, 1st convolution"),
    (256, 6, 16, 14, 5, 0, "LeNet, 2nd convolution"),
    (128, 3, 16, 32, 3, 1, "3x3 on RGB input"),
    (128, 16, 16, 28, 3, 1, "3x3, 16 channels"),
    (128, 32, 32, 14, 3, 1, "3x3, 32 channels"),
    (128, 64, 64, 7, 3, 1, "3x3, 64 channels"),
    (128, 32, 64, 14, 1, 0, "1x1, NiN/ResNet shortcut"),
]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best and median milliseconds of ``fn`` after three warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def layer_table(repeats: int) -> None:
    print(f"{'layer':<26} {'shape (N, Cin, Cout, HxW, k)':<30} "
          f"{'torch ms':>15} {'batch route ms':>15} {'faster':>8}")  # fmt: skip
    for n, c_in, c_out, side, k, pad, where in SHAPES:
        X = torch.rand(n, c_in, side, side)
        W = torch.randn(c_out, c_in, k, k)
        grad = torch.randn(n, c_out, side + 2 * pad - k + 1, side + 2 * pad - k + 1)
        native = timed(lambda: torch.ops.aten.convolution_backward(  # noqa: B023
            grad, X, W, [c_out], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,  # noqa: B023
            [False, True, True]), repeats)  # fmt: skip

        def batch_route() -> None:
            F.conv2d(X.transpose(0, 1), grad.transpose(0, 1), padding=pad).transpose(0, 1)  # noqa: B023
            grad.sum((0, 2, 3))  # noqa: B023

        ours = timed(batch_route, repeats)
        shape = f"({n}, {c_in}, {c_out}, {side}x{side}, {k})"
        print(f"{where:<26} {shape:<30} {native[0]:6.2f} / {native[1]:6.2f} "
              f"{ours[0]:6.2f} / {ours[1]:6.2f} {native[1] / ours[1]:7.2f}x")  # fmt: skip
    print("(best / median ms of the weight and bias gradients; 'faster' is torch's median "
          "over the batch route's: above 1, the batch route wins)")


def lenet_steps(blocks: int) -> None:
    """The classic LeNet's step, its second convolution both ways, blocks taking turns."""
    splits = fashion_mnist_splits(batch_size=256, device="cpu")
    X, y = splits.train
    loss_fn = nn.CrossEntropyLoss()

    def make(plain: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = init_weights(LeNet(), "xavier_uniform")
        if plain:
            conv = nn.Conv2d(6, 16, kernel_size=5)
            conv.load_state_dict(model.net[3].state_dict())
            model.net[3] = conv
        assert isinstance(model.net[3], BatchGradConv2d) != plain
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    def block(side: tuple[nn.Module, torch.optim.Optimizer], first: int, steps: int = 20) -> float:
        model, optimizer = side
        start = time.perf_counter()
        for k in range(first, first + steps):
            i = (k * 256) % (len(y) - 256)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(X[i : i + 256]), y[i : i + 256]).backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps * 1000

    plain, ours = make(True), make(False)
    times: dict[str, list[float]] = {"nn.Conv2d": [], "BatchGradConv2d": []}
    for b in range(blocks + 2):  # the first two rounds warm up
        t_plain, t_ours = block(plain, 20 * b), block(ours, 20 * b)
        if b >= 2:
            times["nn.Conv2d"].append(t_plain)
            times["BatchGradConv2d"].append(t_ours)
    ratios = [a / b for a, b in zip(times["nn.Conv2d"], times["BatchGradConv2d"], strict=True)]
    print(f"\nclassic LeNet training step, batch 256, {blocks} blocks of 20 steps each way:")
    for name, values in times.items():
        print(f"  second convolution as {name:<16} median {statistics.median(values):6.2f} ms "
              f"a step (best {min(values):.2f})")  # fmt: skip
    print(f"  paired ratio nn.Conv2d / BatchGradConv2d: median {statistics.median(ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as fit does on the CPU
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    layer_table(args.repeats)
    lenet_steps(args.blocks)


if __name__ == "__main__":
    main()
