"""Arithmetic floors for the benchmarks: what a model's training costs in floating-point
operations, what this device's matrix product does per second, and the seconds below
which no implementation on this device could train it.

The operations are counted by torch itself (``torch.utils.flop_counter.FlopCounterMode``,
which counts matrix products and convolutions, forward and backward); elementwise work
(activations, pooling, dropout, the optimizer's update) is left out, since it moves
memory rather than multiplying. The rate is a square float32 matrix product timed in the
same process, with the same threads, right before it is used: the floor of an epoch is
its arithmetic divided by that rate. A loop that reaches its floor does all its work at
the speed of the device's best kernel.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, size: int | None = None, repeats: int = 15) -> float:
    """This device's float32 matrix-product rate in FLOP/s: the fastest of ``repeats``
    products of two ``size`` x ``size`` matrices (1024 on the CPU, 8192 on a GPU), after
    a warm-up. The fastest, not the median: a floor is what the device can do, and on a
    shared machine the others measure the neighbours too."""
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    inner = 1 if device.type == "cpu" else 10
    times = []
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        _sync(device)
        if i:  # the first is the warm-up
            times.append((time.perf_counter() - start) / inner)
    return 2 * n**3 / min(times)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of the matrix products and convolutions ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@dataclass(frozen=True)
class Arithmetic:
    """FLOPs per example of a training step (forward and backward) and of evaluation."""

    train_per_example: float
    eval_per_example: float

    def epoch(self, num_train: int, num_eval: int) -> float:
        """FLOPs of an epoch over ``num_train`` examples and an evaluation of ``num_eval``."""
        return self.train_per_example * num_train + self.eval_per_example * num_eval


def model_arithmetic(
    model: nn.Module, example: torch.Tensor, num_classes: int = 10, batch: int = 8
) -> Arithmetic:
    """Count one training step and one evaluation of ``model`` on ``batch`` copies of
    ``example`` (one input without its batch axis), on a copy of the model on the CPU, so
    the model being benchmarked is not touched."""
    probe = copy.deepcopy(model).to("cpu")
    X = example.detach().to("cpu").unsqueeze(0).expand(batch, *example.shape).contiguous()
    y = torch.zeros(batch, dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        probe.train()
        loss_fn(probe(X), y).backward()

    def evaluate() -> None:
        probe.eval()
        with torch.no_grad():
            probe(X)

    return Arithmetic(count_flops(step) / batch, count_flops(evaluate) / batch)


@dataclass(frozen=True)
class Floor:
    """An amount of arithmetic at a measured rate."""

    flops: float
    rate: float  # FLOP/s

    @property
    def seconds(self) -> float:
        return self.flops / self.rate

    def ratio(self, seconds: float) -> float:
        """How many times its floor a measured time is."""
        return seconds / self.seconds

    def describe(self) -> str:
        return f"{self.flops / 1e9:.1f} GFLOP, floor {self.seconds:.3f} s"


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread" + ("" if n == 1 else "s")


def rate_line(device: torch.device, rate: float) -> str:
    """One line that says what the floors below were measured against."""
    size = 8192 if device.type == "cuda" else 1024
    return (f"matrix-product rate of this device, measured now: {rate / 1e9:.1f} GFLOP/s "
            f"(float32, {size} x {size}, {_threads()}); a floor is a "
            "model's arithmetic (matrix products and convolutions, counted by torch's "
            "FlopCounterMode) at that rate")  # fmt: skip
