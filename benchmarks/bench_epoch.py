"""Seconds per epoch: d2lcore's training loop against the d2l 1.0.3 package's own loop.

Both sides train the same models on Fashion-MNIST at batch size 256 with SGD (lr 0.1) and
the same number of steps per epoch, one side after the other in one process:

- d2lcore: ``fashion_mnist_splits`` (the data set lives on the device as tensors and
  batches are slices of a permutation), ``SoftmaxRegression``, ``MLP`` or the classic
  ``d2lcore.conv.LeNet``, and ``fit`` with ``nn.CrossEntropyLoss`` and
  ``torch.optim.SGD``.
- d2l: ``d2l.FashionMNIST`` (torchvision data set, PIL image -> tensor per example,
  ``DataLoader`` with d2l's default of 4 worker processes), d2l's own model classes
  (``d2l.LeNet`` for LeNet: the same layers as d2lcore's classic LeNet, which a unit test
  checks) and ``d2l.Trainer.fit``, including its matplotlib progress board (drawn with the Agg
  backend; the time spent in ``ProgressBoard.draw`` is reported on its own).

Each model gets one warm-up epoch, then ``--epochs`` timed epochs per side; the table
shows the median. An epoch includes the pass over the validation data on both sides.

Usage::

    python benchmarks/bench_epoch.py                 # all models, 3 timed epochs
    python benchmarks/bench_epoch.py --models lenet --epochs 2 --threads 1
    python benchmarks/bench_epoch.py --models mlp --epochs 3
    python benchmarks/bench_epoch.py --no-d2l        # d2lcore's side only (also without d2l)
    D2L_DEVICE=cpu python benchmarks/bench_epoch.py  # force the device
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

# Before d2l imports pyplot: draw into memory, never open a window.
matplotlib.use("Agg")

import torch  # noqa: E402
from torch import nn  # noqa: E402

try:  # the reference side: absent on a bare GPU machine, where d2lcore's side still runs
    from d2l import torch as d2l
except ImportError:
    d2l = None

# The script's folder is on the path when it runs as a script.
from floors import Floor, matmul_rate, model_arithmetic, rate_line  # noqa: E402

import d2lcore  # noqa: E402
from d2lcore.conv import LeNet  # noqa: E402
from d2lcore.data import Splits, fashion_mnist_splits  # noqa: E402
from d2lcore.datafiles import FASHION_MNIST_FILES, find_fashion_mnist  # noqa: E402
from d2lcore.init import init_weights  # noqa: E402
from d2lcore.models import MLP, SoftmaxRegression  # noqa: E402
from d2lcore.train import fit  # noqa: E402

BATCH_SIZE = 256
LR = 0.1
HIDDEN = 256
DROPOUT = 0.5
MODELS = ("softmax", "mlp", "lenet")
DESCRIPTIONS = {
    "softmax": "softmax 784-10",
    "mlp": "MLP 784-256-10, dropout 0.5",
    "lenet": "LeNet-5 (sigmoid, avg pool)",
}


@dataclass
class Result:
    """Per-epoch seconds (warm-up first) and the final validation accuracy of one side."""

    seconds: list[float]
    val_acc: float | None
    flops: float = 0.0  # d2lcore: the epoch's arithmetic (training and validation)
    plot_seconds: list[float] = field(default_factory=list)
    displays_per_epoch: float = 0.0  # d2l: times the progress board is shown an epoch
    svg_seconds: float = 0.0  # d2l: rendering the final board once as SVG

    def timed(self, values: list[float] | None = None) -> list[float]:
        return (self.seconds if values is None else values)[1:]  # drop the warm-up epoch

    @property
    def median(self) -> float:
        return statistics.median(self.timed())

    @property
    def plot_median(self) -> float | None:
        return statistics.median(self.timed(self.plot_seconds)) if self.plot_seconds else None


# ----------------------------------------------------------------------------------
# d2lcore


def d2lcore_model(name: str) -> nn.Module:
    if name == "softmax":
        return SoftmaxRegression()
    if name == "lenet":
        # The classic: the same layers as d2l.LeNet, with the d2l book's Xavier init.
        return init_weights(LeNet(), "xavier_uniform")
    return MLP(hidden_sizes=(HIDDEN,), dropout=DROPOUT)


def run_d2lcore(name: str, splits: Splits, num_epochs: int, device: torch.device,
                capture: bool | None = None) -> Result:  # fmt: skip
    """Train with d2lcore's loop; ``fit`` records each epoch's seconds (validation included).
    ``capture``: the step replayed as a CUDA graph (``None``: where fit would)."""
    d2lcore.set_seed(0)
    model = d2lcore_model(name).to(device)
    arithmetic = model_arithmetic(model, splits.train[0][0])
    flops = arithmetic.epoch(len(splits.train[1]), len(splits.val[1]) if splits.val else 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    history = fit(
        model,
        splits.loader("train"),  # a new loader: the same batch order for every model
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        num_epochs=num_epochs,
        val_batches=splits.loader("val"),
        device=device,
        capture=capture,
    )
    return Result(seconds=history.seconds, val_acc=history.val_acc[-1], flops=flops)


# ----------------------------------------------------------------------------------
# d2l 1.0.3


if d2l is not None:  # its classes exist only where d2l imports

    class DropoutMLP(d2l.Classifier):
        """The d2l book's concise ``DropoutMLP`` (section "Dropout"), with one hidden layer.

        The d2l 1.0.3 package does not export its MLP classes (they live only in the book's
        notebooks), so this is the book's class, cut to the architecture d2lcore's side trains.
        """

        def __init__(self, num_outputs: int, num_hiddens: int, dropout: float, lr: float) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(
                nn.Flatten(), nn.LazyLinear(num_hiddens), nn.ReLU(),
                nn.Dropout(dropout), nn.LazyLinear(num_outputs),
            )  # fmt: skip


    class TimedTrainer(d2l.Trainer):
        """``d2l.Trainer`` that records the seconds of each ``fit_epoch`` (validation included)
        and how much of it was spent in the model's ``ProgressBoard.draw``."""

        def fit(self, model: d2l.Module, data: d2l.DataModule) -> None:
            self.epoch_seconds: list[float] = []
            self.epoch_plot_seconds: list[float] = []
            self.plot_seconds = 0.0
            board_draw = model.board.draw

            def timed_draw(*args: Any, **kwargs: Any) -> None:
                start = time.perf_counter()
                board_draw(*args, **kwargs)
                self.plot_seconds += time.perf_counter() - start

            model.board.draw = timed_draw  # on this one instance: timing only, same behaviour
            super().fit(model, data)

        def fit_epoch(self) -> None:
            plot_before = self.plot_seconds
            start = time.perf_counter()
            super().fit_epoch()
            if self.gpus:
                torch.cuda.synchronize(self.gpus[0])
            self.epoch_seconds.append(time.perf_counter() - start)
            self.epoch_plot_seconds.append(self.plot_seconds - plot_before)


def d2l_model(name: str) -> d2l.Classifier:
    if name == "softmax":
        return d2l.SoftmaxRegression(num_outputs=10, lr=LR)
    if name == "lenet":
        # As the d2l book does: materialize the lazy layers with one batch, then Xavier.
        lenet = d2l.LeNet(lr=LR)
        lenet.apply_init([torch.zeros(1, 1, 28, 28)], d2l.init_cnn)
        return lenet
    return DropoutMLP(num_outputs=10, num_hiddens=HIDDEN, dropout=DROPOUT, lr=LR)


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def d2l_fashion_mnist(tmp: Path, num_train: int) -> d2l.FashionMNIST:
    """``d2l.FashionMNIST(batch_size=256)`` over the local files, without a network.

    torchvision skips its download when the decompressed IDX files are already in
    ``<root>/FashionMNIST/raw/``. d2l 1.0.3's ``FashionMNIST`` takes no ``root``
    argument (it is ``'../data'``, relative to the working directory), so the data set is
    built from a working directory whose ``../data`` is ``tmp/data``.
    """
    source = find_fashion_mnist()
    raw = tmp / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FASHION_MNIST_FILES:
        plain, packed = source / name, source / f"{name}.gz"
        idx = plain.read_bytes() if plain.is_file() else gzip.decompress(packed.read_bytes())
        (raw / name).write_bytes(idx)
    (tmp / "cwd").mkdir()
    with working_directory(tmp / "cwd"):
        data = d2l.FashionMNIST(batch_size=BATCH_SIZE)
    # Same steps per epoch as d2lcore, whose loaders hold 10,000 of the 60,000 training
    # images out for validation: keep d2l's first num_train training images.
    data.train.data = data.train.data[:num_train]
    data.train.targets = data.train.targets[:num_train]
    return data


def run_d2l(name: str, data: d2l.FashionMNIST, num_epochs: int, device: torch.device) -> Result:
    """Train with ``d2l.Trainer``; validation accuracy comes from its progress board."""
    d2lcore.set_seed(0)
    model = d2l_model(name)
    trainer = TimedTrainer(max_epochs=num_epochs, num_gpus=1 if device.type == "cuda" else 0)
    # Outside a notebook IPython's display() prints each figure: keep it off the table.
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(model, data)
    board = model.board
    val_acc = board.data["val_acc"][-1].y if "val_acc" in board.data else None
    # In a notebook every display also renders the board as SVG; here display() only
    # prints the figure's repr, so time one such rendering to say what a reader pays.
    displays = sum(len(line) for line in board.data.values())
    svg_seconds = 0.0
    if board.fig is not None:
        start = time.perf_counter()
        board.fig.savefig(io.BytesIO(), format="svg")
        svg_seconds = time.perf_counter() - start
        d2l.plt.close(board.fig)
    return Result(
        seconds=trainer.epoch_seconds,
        val_acc=None if val_acc is None else float(val_acc),
        plot_seconds=trainer.epoch_plot_seconds,
        displays_per_epoch=displays / num_epochs,
        svg_seconds=svg_seconds,
    )


# ----------------------------------------------------------------------------------
# Report


def fmt_list(xs: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side (>= 1)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--no-d2l", action="store_true",
                        help="time d2lcore's side only (implied where d2l does not import)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of this process (default: torch's choice); on a machine busy with"
        " other work, 1 avoids threads waiting on each other at every small operation",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    num_epochs = 1 + args.epochs  # one warm-up epoch, then the timed ones
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # d2l's 4 workers on a smaller machine make torch warn at every epoch; the output
    # states the worker count instead.
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    device = d2lcore.get_device()
    load_before = os.getloadavg()[0]
    rate = matmul_rate(device)  # measured in this run, with these threads
    splits = fashion_mnist_splits(batch_size=BATCH_SIZE, device=device)
    num_train = len(splits.train[1])
    with_d2l = d2l is not None and not args.no_d2l
    runs: dict[str, tuple[Result, Result | None]] = {}
    eager: dict[str, Result] = {}
    steps_ours = len(splits.loader("train"))
    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as tmp:
        data = d2l_fashion_mnist(Path(tmp), num_train) if with_d2l else None
        if data is not None:
            steps_d2l = len(data.train_dataloader())
            assert steps_d2l == steps_ours, (steps_d2l, steps_ours)
        for name in args.models:
            ours = run_d2lcore(name, splits, num_epochs, device)
            theirs = run_d2l(name, data, num_epochs, device) if data is not None else None
            runs[name] = (ours, theirs)
            if device.type == "cuda":  # what replaying the step as a CUDA graph is worth
                eager[name] = run_d2lcore(name, splits, num_epochs, device, capture=False)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({where}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, "
        + (f"d2l {d2l_version()}" if with_d2l else "d2l's side not run (--no-d2l or no d2l)")
    )
    print(
        f"Fashion-MNIST, batch {BATCH_SIZE}, SGD lr {LR}: {num_train:,} training examples = "
        f"{steps_ours} steps per epoch on both sides; each epoch also evaluates 10,000 "
        "examples (d2lcore: held-out validation split; d2l: the test split)"
    )
    if data is not None:
        print(
            f"d2l's DataLoader keeps its default num_workers={data.num_workers} "
            f"(this machine has {os.cpu_count()} CPUs); its epochs include drawing the "
            "matplotlib progress board (Agg backend)"
        )
    print(f"1 warm-up epoch, then median of {args.epochs} timed epochs per side")
    print(rate_line(device, rate))
    # Other processes on the same cores move every figure: say how busy the machine was.
    load_after, cpus = os.getloadavg()[0], os.cpu_count() or 1
    print(f"1-minute load average: {load_before:.2f} before, {load_after:.2f} after ({cpus} CPUs)")
    if device.type == "cpu" and torch.get_num_threads() > 1 and max(load_before, load_after) > 1:
        print(
            "note: other work shared the CPUs; torch's threads then wait on each other at"
            " every small operation and d2lcore's figures suffer most: try --threads 1"
        )
    print()

    header = (
        f"{'model':<28} {'d2lcore s/epoch':>15} {'d2l s/epoch':>12} "
        f"{'d2l/d2lcore':>11} {'GFLOP/epoch':>11} {'floor s':>8} {'d2lcore/floor':>13} "
        f"{'d2l plotting s':>14} {'d2lcore val acc':>15} {'d2l val acc':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, (ours, theirs) in runs.items():
        floor = Floor(ours.flops, rate)
        floors = (f"{floor.flops / 1e9:>11.1f} {floor.seconds:>8.3f} "
                  f"{floor.ratio(ours.median):>12.1f}x")  # fmt: skip
        if theirs is None:
            print(f"{DESCRIPTIONS[name]:<28} {ours.median:>15.3f} {'-':>12} {'-':>11} "
                  f"{floors} {'-':>14} {ours.val_acc:>15.4f} {'-':>11}")  # fmt: skip
            continue
        plot = theirs.plot_median
        print(
            f"{DESCRIPTIONS[name]:<28} {ours.median:>15.3f} {theirs.median:>12.3f} "
            f"{theirs.median / ours.median:>10.1f}x {floors} "
            f"{'-' if plot is None else f'{plot:.3f}':>14} "
            f"{ours.val_acc:>15.4f} "
            f"{'-' if theirs.val_acc is None else f'{theirs.val_acc:.4f}':>11}"
        )
    for name, result in eager.items():
        print(f"{DESCRIPTIONS[name]:<28} without CUDA graphs (D2L_CUDA_GRAPHS=off): "
              f"{result.median:.3f} s/epoch, {Floor(result.flops, rate).ratio(result.median):.1f}x "
              f"its floor; with them {runs[name][0].median:.3f} s")  # fmt: skip
    print("\nevery epoch's seconds (warm-up first):")
    for name, (ours, theirs) in runs.items():
        print(f"  {name:<8} d2lcore [{fmt_list(ours.seconds)}]")
        if theirs is not None:
            print(
                f"  {name:<8} d2l     [{fmt_list(theirs.seconds)}]"
                f"  of which plotting [{fmt_list(theirs.plot_seconds)}]"
            )
    if not with_d2l:
        return 0
    print(
        "\nd2l plotting = time inside ProgressBoard.draw (matplotlib calls; outside a notebook"
        " IPython's display() prints the figure's repr instead of rendering it)."
    )
    for name, (_, theirs) in runs.items():
        assert theirs is not None
        print(
            f"  {name:<8} the board is shown {theirs.displays_per_epoch:.0f} times an epoch;"
            f" rendering it once as SVG (as a notebook does) takes {theirs.svg_seconds:.3f} s"
            f" (final board, {theirs.displays_per_epoch * theirs.svg_seconds:.2f} s an epoch"
            " at that size, not counted above)"
        )
    return 0


def d2l_version() -> str:
    from importlib.metadata import version

    return version("d2l")


if __name__ == "__main__":
    raise SystemExit(main())
