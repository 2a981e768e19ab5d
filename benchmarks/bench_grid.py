"""Seconds to train a grid of configurations: stacked against one configuration at a
time, side by side in one process, with the cache off.

The grids, on Fashion-MNIST, batch 256, SGD, one epoch each (validation included):

- ``mlp``: 3 learning rates x 3 dropout rates x 3 initialization schemes of the MLP
  784-256-10;
- ``softmax``: 3 learning rates x 3 initialization schemes x 3 weight decays of softmax
  regression (no hidden layer for dropout);
- ``lenet``: 3 learning rates x 3 dropout rates x 3 initialization schemes of the modern
  LeNet (ReLU, max pooling), on a slice of the data (``--cnn-train-size``), since one
  LeNet epoch on all 50,000 images takes ~10 s on a 2-core CPU.

Every side is ``d2lcore.sweep.train_grid``: ``batched=True`` stacks (the batched-matmul
fast path for softmax and the MLP, ``torch.func`` for LeNet), ``batched=False`` calls
``train_one`` (``d2lcore.train.fit``) per configuration. For softmax and the MLP a third
column stacks them with ``torch.func`` too (``fit_stacked(..., fast=False)``), to show
what the fast path is worth. The last columns time ``train_grid``'s own choice
(``batched=None``: it measures each path for a few steps, ``d2lcore.stack_choice``, and
trains on the fastest), its probe included, and say what it measured.

``--profile`` also runs the batched MLP grid under ``torch.profiler`` and prints where
its time goes (GEMMs, dropout, gathers, ...).

Usage::

    python benchmarks/bench_grid.py                   # all grids, on the default device
    python benchmarks/bench_grid.py --models lenet --cnn-train-size 1000
    python benchmarks/bench_grid.py --models mlp --profile
    D2L_DEVICE=cpu python benchmarks/bench_grid.py    # force the device
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import replace

import torch

# The script's folder is on the path when it runs as a script.
from floors import Floor, matmul_rate, model_arithmetic, rate_line

import d2lcore
from d2lcore.batched import fit_stacked
from d2lcore.data import Splits, fashion_mnist_splits
from d2lcore.stacks import structure
from d2lcore.sweep import (
    GridResults,
    ModelSpec,
    TrainConfig,
    build_model,
    data_fingerprint,
    grid_configs,
    train_grid,
)

BATCH_SIZE = 256
LRS = [0.05, 0.1, 0.2]
INITS = ["default", "normal", "xavier_uniform"]
DROPOUTS = [0.0, 0.2, 0.5]
GRIDS: dict[str, tuple[ModelSpec, dict[str, list]]] = {
    "mlp": (
        ModelSpec("mlp", 784, 10, hidden_sizes=(256,)),
        {"lr": LRS, "dropout": DROPOUTS, "init": INITS},
    ),
    "softmax": (
        ModelSpec("softmax", 784, 10),
        {"lr": LRS, "init": INITS, "weight_decay": [0.0, 1e-4, 1e-3]},
    ),
    "lenet": (
        ModelSpec("lenet", 1, 10, activation="relu", pool="max"),
        {"lr": LRS, "dropout": DROPOUTS, "init": ["default", "kaiming_normal", "xavier_uniform"]},
    ),
}
CONV = ("lenet",)
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
    spec: ModelSpec, axes: dict[str, list], data: Splits, device: torch.device,
    batched: bool | None,
) -> tuple[float, GridResults]:
    """Seconds to train the grid (cache off), and the grid."""
    sync(device)
    start = time.perf_counter()
    grid = train_grid(spec, axes, BASE, data, device=device, batched=batched, cache=False)
    sync(device)
    return time.perf_counter() - start, grid


def timed_func_stack(
    spec: ModelSpec, axes: dict[str, list], data: Splits, device: torch.device
) -> float:
    """Seconds to train the grid stacked with ``torch.func`` only (no fast path), in
    the groups ``train_grid`` would make (models with the same layers)."""
    configs = [replace(BASE, **c) for c in grid_configs(axes)]
    sync(device)
    start = time.perf_counter()
    models = [build_model(spec, c, device) for c in configs]
    groups: dict[object, list[int]] = defaultdict(list)
    for i, m in enumerate(models):
        groups[structure(m)].append(i)
    for members in groups.values():
        fit_stacked([models[i] for i in members], [configs[i] for i in members], data,
                    regression=spec.regression, device=device, fast=False)  # fmt: skip
    sync(device)
    return time.perf_counter() - start


def grid_flops(spec: ModelSpec, axes: dict[str, list], data: Splits, device: torch.device) -> float:
    """The grid's arithmetic: every configuration's epochs of training and validation."""
    total = 0.0
    num_val = len(data.val[1]) if data.val is not None else 0
    for combo in grid_configs(axes):
        config = replace(BASE, **combo)
        arithmetic = model_arithmetic(build_model(spec, config, device), data.train[0][0])
        total += config.num_epochs * arithmetic.epoch(len(data.train[1]), num_val)
    return total


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
    parser.add_argument("--val-size", type=int, default=None, help="validation examples")
    parser.add_argument(
        "--cnn-train-size", type=int, default=2000, help="training examples for LeNet"
    )
    parser.add_argument("--cnn-val-size", type=int, default=1000, help="validation for LeNet")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--profile", action="store_true", help="profile the batched MLP grid")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = d2lcore.get_device()
    start = time.perf_counter()
    full = fashion_mnist_splits(BATCH_SIZE, device=device)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    data_fingerprint(full)
    fp_s = time.perf_counter() - start

    def cut(train: int | None, val: int | None) -> Splits:
        assert full.val is not None
        X, y = full.train
        Xv, yv = full.val
        return Splits((X[:train], y[:train]), (Xv[:val], yv[:val]),
                         eval_batch_size=full.eval_batch_size)  # fmt: skip

    data_of = {name: cut(args.train_size, args.val_size) for name in ("mlp", "softmax")}
    data_of["lenet"] = cut(args.cnn_train_size, args.cnn_val_size)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"Fashion-MNIST, batch {BATCH_SIZE}, 1 epoch + validation; loading {load_s:.1f} s, "
        f"cache fingerprint of the data {fp_s:.2f} s"
    )
    for name in args.models:
        d = data_of[name]
        sizes = f"{len(d.train[1]):,} train / {len(d.val[1]) if d.val else 0:,} val"
        axes = " x ".join(f"{k} {v}" for k, v in GRIDS[name][1].items())
        print(f"  {name}: {sizes}; {axes}")

    # Warm up (first-call costs of the allocator, BLAS, CUDA kernels) on a slice.
    for name in args.models:
        spec, axes = GRIDS[name]
        small = Splits((full.train[0][:512], full.train[1][:512]))
        train_grid(spec, {"lr": LRS}, BASE, small, device=device, cache=False, batched=True)
        train_grid(spec, {"lr": LRS[:1]}, BASE, small, device=device, cache=False, batched=False)

    rate = matmul_rate(device)  # measured in this run, after the warm-up
    print(rate_line(device, rate))
    header = (
        f"{'grid':<8} {'stacked s':>10} {'torch.func s':>13} {'one at a time s':>16} "
        f"{'speedup':>8} {'GFLOP':>7} {'floor s':>8} {'stacked/floor':>13} "
        f"{'alone/floor':>11} {'max rel diff':>13} {'chosen s':>9}  train_grid's choice"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for name in args.models:
        spec, axes = GRIDS[name]
        data = data_of[name]
        floor = Floor(grid_flops(spec, axes, data, device), rate)
        t_batched, batched = timed_grid(spec, axes, data, device, batched=True)
        t_func = None if name in CONV else timed_func_stack(spec, axes, data, device)
        t_single, single = timed_grid(spec, axes, data, device, batched=False)
        diff = max_rel_diff(batched, single)
        # train_grid's own choice (batched=None), measured by it: its probe included.
        t_chosen, chosen = timed_grid(spec, axes, data, device, batched=None)
        func = "(same)" if t_func is None else f"{t_func:.2f}"
        print(
            f"{name:<8} {t_batched:>10.2f} {func:>13} {t_single:>16.2f} "
            f"{t_single / t_batched:>7.2f}x {floor.flops / 1e9:>7.1f} {floor.seconds:>8.3f} "
            f"{floor.ratio(t_batched):>12.1f}x {floor.ratio(t_single):>10.1f}x "
            f"{diff:>13.1e} {t_chosen:>9.2f}  {'; '.join(chosen.meta.get('stacking', []))}"
        )

    if args.profile and "mlp" in args.models:
        spec, axes = GRIDS["mlp"]
        profile_batched(spec, axes, data_of["mlp"], device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
