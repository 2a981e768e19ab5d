"""Seconds to train a 27-configuration grid: batched (stacked weights) against one
configuration at a time, side by side in one process, with the cache off.

The grid is 3 learning rates x 3 dropout rates x 3 initialization schemes of the MLP
784-256-10, and 3 learning rates x 3 initialization schemes x 3 weight decays of softmax
regression (which has no hidden layer for dropout), on Fashion-MNIST, batch 256, SGD,
one epoch each (validation included). Both sides are ``d2lcore.sweep.train_grid``: with
``batched=False`` it calls ``train_one`` (``d2lcore.train.fit``) per configuration.

``--profile`` also runs the batched MLP grid under ``torch.profiler`` and prints where
its time goes (GEMMs, dropout, gathers, ...).

Usage::

    python benchmarks/bench_grid.py                   # both models, on the default device
    python benchmarks/bench_grid.py --models mlp --profile
    D2L_DEVICE=cpu python benchmarks/bench_grid.py    # force the device
"""

from __future__ import annotations

import argparse
import time

import torch

import d2lcore
from d2lcore.data import Splits, fashion_mnist_splits
from d2lcore.sweep import (
    GridResults,
    ModelSpec,
    TrainConfig,
    data_fingerprint,
    train_grid,
)

BATCH_SIZE = 256
LRS = [0.05, 0.1, 0.2]
INITS = ["default", "normal", "xavier_uniform"]
GRIDS: dict[str, tuple[ModelSpec, dict[str, list]]] = {
    "mlp": (
        ModelSpec("mlp", 784, 10, hidden_sizes=(256,)),
        {"lr": LRS, "dropout": [0.0, 0.2, 0.5], "init": INITS},
    ),
    "softmax": (
        ModelSpec("softmax", 784, 10),
        {"lr": LRS, "init": INITS, "weight_decay": [0.0, 1e-4, 1e-3]},
    ),
}
BASE = TrainConfig(lr=0.1, num_epochs=1, batch_size=BATCH_SIZE)

# Profiler op names -> what they are in the batched MLP step.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "GEMMs (matmuls)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "dropout (draw, mask, scale)": (
        "aten::uniform_",
        "aten::rand",
        "aten::where",
        "aten::ge",
        "aten::mul",
    ),
    "activation fwd+bwd": ("aten::clamp_min", "aten::relu", "aten::threshold_backward"),
    "loss (log-softmax, gather)": (
        "aten::_log_softmax",
        "aten::_log_softmax_backward_data",
        "aten::gather",
        "aten::scatter_add_",
        "aten::neg",
        "aten::mean",
    ),
    "batch gather (X[idx])": ("aten::index", "aten::index_select", "aten::randperm"),
    "optimizer (addcmul_)": ("aten::addcmul_", "aten::addcmul", "aten::lerp_"),
    "copies / reductions": ("aten::copy_", "aten::sum", "aten::fill_", "aten::zero_"),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_grid(
    spec: ModelSpec, axes: dict[str, list], data: Splits, device: torch.device, batched: bool
) -> tuple[float, GridResults]:
    """Seconds to train the grid (cache off), and the grid."""
    sync(device)
    start = time.perf_counter()
    grid = train_grid(spec, axes, BASE, data, device=device, batched=batched, cache=False)
    sync(device)
    return time.perf_counter() - start, grid


def max_rel_diff(a: GridResults, b: GridResults) -> float:
    """The largest relative difference of any epoch's numbers between two grids."""
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for name in ("train_loss", "val_loss", "val_acc"):
            for x, y in zip(getattr(ra.history, name), getattr(rb.history, name), strict=True):
                worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return worst


def profile_batched(
    spec: ModelSpec, axes: dict[str, list], data: Splits, device: torch.device
) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        train_grid(spec, axes, BASE, data, device=device, cache=False)
        sync(device)
    events = prof.key_averages()
    use_cuda = device.type == "cuda"

    def self_time(e: object) -> float:  # microseconds
        return float(getattr(e, "self_device_time_total" if use_cuda else "self_cpu_time_total"))

    total = sum(self_time(e) for e in events if e.key.startswith("aten::"))
    print(
        f"\nwhere the batched MLP grid's {'GPU' if use_cuda else 'CPU'} time goes "
        f"(self time of aten ops, {total / 1e6:.2f} s in all):"
    )
    seen = set()
    for category, names in CATEGORIES.items():
        t = sum(self_time(e) for e in events if e.key in names)
        seen.update(names)
        print(f"  {category:<30} {t / 1e6:7.2f} s  {100 * t / total:5.1f} %")
    rest = sum(self_time(e) for e in events if e.key.startswith("aten::") and e.key not in seen)
    print(f"  {'other':<30} {rest / 1e6:7.2f} s  {100 * rest / total:5.1f} %")
    sort = "self_cuda_time_total" if use_cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    parser.add_argument(
        "--train-size", type=int, default=None, help="training examples (default: all 50,000)"
    )
    parser.add_argument("--profile", action="store_true", help="profile the batched MLP grid")
    args = parser.parse_args(argv)

    device = d2lcore.get_device()
    start = time.perf_counter()
    data = fashion_mnist_splits(BATCH_SIZE, train_size=args.train_size, device=device)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    data_fingerprint(data)
    fp_s = time.perf_counter() - start

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"Fashion-MNIST: {len(data.train[1]):,} training examples, batch {BATCH_SIZE}, "
        f"1 epoch + validation on {len(data.val[1]) if data.val else 0:,}; loading "
        f"{load_s:.1f} s, cache fingerprint of the data {fp_s:.2f} s\n"
    )

    # Warm up (first-call costs of the allocator, BLAS, CUDA kernels) on a slice.
    small = Splits((data.train[0][:1024], data.train[1][:1024]))
    for name in args.models:
        spec, axes = GRIDS[name]
        train_grid(spec, axes, BASE, small, device=device, cache=False)
        train_grid(spec, {"lr": LRS}, BASE, small, device=device, cache=False, batched=False)

    for name in args.models:
        print(f"{name}: " + " x ".join(f"{k} {v}" for k, v in GRIDS[name][1].items()))
    header = (
        f"{'grid':<8} {'batched s':>10} {'one at a time s':>16} {'speedup':>8} {'max rel diff':>13}"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for name in args.models:
        spec, axes = GRIDS[name]
        t_batched, batched = timed_grid(spec, axes, data, device, batched=True)
        t_single, single = timed_grid(spec, axes, data, device, batched=False)
        diff = max_rel_diff(batched, single)
        print(
            f"{name:<8} {t_batched:>10.2f} {t_single:>16.2f} {t_single / t_batched:>7.1f}x "
            f"{diff:>13.1e}"
        )
        best = max(batched, key=lambda r: r.history.val_acc[-1])
        print(f"{'':<8} best: {best.config}, val acc {best.history.val_acc[-1]:.4f}")

    if args.profile and "mlp" in args.models:
        spec, axes = GRIDS["mlp"]
        profile_batched(spec, axes, data, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
