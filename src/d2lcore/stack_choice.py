"""Which way a group of configurations trains fastest on this device, measured rather
than assumed: one at a time, stacked on the batched-matmul path
(:class:`~d2lcore.sequential_stack.SequentialStack`), or stacked with ``torch.func``
(:class:`~d2lcore.stacks.FuncStack`).

Which wins depends on the model, the device and the batch: on a 2-core CPU stacked
softmax regressions train four times faster than one at a time while stacked LeNets (as
grouped convolutions) train at half the speed; on a GPU, where one small model cannot
keep the device busy, stacking wins, and ``torch.func`` beat the matmul path for
softmax. :func:`choose` trains each possible path for a few steps on the group's own
models, batches and optimizer, and picks the fastest a model; the choice is kept for the
rest of the process (and on disk, :func:`kept_in`), keyed by what the speed depends on.
Where the probe would cost more than a tenth of training the group itself (or the
data holds fewer than its steps), it is skipped: the group stacks where the matmul path
applies or the device is a GPU, and trains one at a time otherwise.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d2lcore.batched import fit_stacked
from d2lcore.cache import read_json, write_json
from d2lcore.config import ModelSpec, TrainConfig
from d2lcore.data import Splits
from d2lcore.sequential_stack import SequentialStack
from d2lcore.stacks import structure
from d2lcore.train import seeded

#: The ways a group can train, by name.
PATHS = ("alone", "matmuls", "torch.func")
#: Training steps a probe times on each path in a run, after a run of one step to warm up.
PROBE_STEPS = 2
#: Timed runs of each path, taking turns: the fastest counts.
ROUNDS = 2

#: ``train_alone(config, data)``: train one configuration (``sweep.train_one``).
TrainAlone = Callable[[TrainConfig, Splits], object]
#: ``build(config)``: a configuration's initialized model (``sweep.build_model``).
Build = Callable[[TrainConfig], nn.Module]


@dataclass(frozen=True)
class Choice:
    """The path a group trains on, and why: ``seconds`` holds each measured path's
    seconds per model and training step (empty where nothing was measured)."""

    path: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def stacked(self) -> bool:
        return self.path != "alone"

    @property
    def fast(self) -> bool:
        """Stack on the matmul path where it applies (else ``torch.func``)."""
        return self.path != "torch.func"

    def describe(self) -> str:
        if not self.seconds:
            return f"{self.path} (not measured: the group trains for less than a probe costs)"
        timed = ", ".join(f"{p} {1e3 * s:.2f} ms" for p, s in self.seconds.items())
        return f"{self.path} (measured a model's step: {timed})"


_chosen: dict[str, Choice] = {}


_store: Path | None = None


@contextmanager
def kept_in(folder: Path | None) -> Iterator[None]:
    """Within the block, keep measured choices in ``folder`` (a grid cache's; ``None``:
    in this process only), so each kind of group is measured once per machine."""
    global _store
    before, _store = _store, folder
    try:
        yield
    finally:
        _store = before


def choose(spec: ModelSpec, models: Sequence[nn.Module], configs: Sequence[TrainConfig],
           data: Splits, device: torch.device, *, train_alone: TrainAlone,
           build: Build) -> Choice:  # fmt: skip
    """The fastest path for ``models`` (built from ``configs``, which can stack) on
    ``device``, measured with fresh models (``build``) and runs (``train_alone``) on the
    first training examples: once per process for each kind of group (once per machine
    inside :func:`kept_in`)."""
    first = configs[0]
    fast = SequentialStack.reproduces(models)
    paths = 2 if fast else 1  # stacked paths to measure
    steps = first.num_epochs * math.ceil(len(data.train[1]) / first.batch_size)  # a model's
    # The probe trains 1 + ROUNDS x PROBE_STEPS steps of one model and of the group on
    # each stacked path: that many steps of every model a path, where a stacked step may
    # cost twice one alone. Worth it at most a tenth of the training.
    probe = (1 + ROUNDS * PROBE_STEPS) * paths
    if steps < 20 * probe or len(data.train[1]) < PROBE_STEPS * first.batch_size:
        return _unmeasured(fast, device)
    key = _key(spec, models, configs, data, device)
    if key in _chosen:
        return _chosen[key]
    file = None if _store is None else _store / "stacking" / f"{key[:32]}.json"
    choice = None if file is None else _read(file)
    if choice is None:
        with seeded(0):  # the probe leaves torch's global random streams as they were
            choice = _measure(spec, configs, data, device, train_alone, build, fast)
        if file is not None:  # not kept (a read-only cache): measured again next time
            write_json(file, {"path": choice.path, "seconds": choice.seconds})
    _chosen[key] = choice
    return choice


def _read(file: Path) -> Choice | None:
    """The choice kept in ``file``; ``None`` where it is missing or not one (corrupt,
    edited, of another version): it is measured again and overwritten."""
    kept: Any = read_json(file)
    try:
        seconds = {str(p): float(t) for p, t in kept["seconds"].items()}
        if kept["path"] in PATHS and set(seconds) <= set(PATHS):
            return Choice(kept["path"], seconds)
    except (TypeError, KeyError, AttributeError, ValueError):
        pass
    return None


def _unmeasured(fast: bool, device: torch.device) -> Choice:
    """A group too small to measure: stacked on a GPU and on the matmul path; on a CPU
    one at a time where only ``torch.func`` could stack (grouped convolutions, measured
    slower than one model at a time in ``benchmarks/bench_grid.py``)."""
    if fast:
        return Choice("matmuls")
    return Choice("torch.func" if device.type != "cpu" else "alone")


def _key(spec: ModelSpec, models: Sequence[nn.Module], configs: Sequence[TrainConfig],
         data: Splits, device: torch.device) -> str:  # fmt: skip
    """What the speed of each path depends on: the device, the threads, the models'
    layers, how many stack, the batch, the optimizer, the input's shape and whether every
    model sees the same batches."""
    first = configs[0]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    parts = (str(device), name, torch.__version__, torch.get_num_threads(), repr(spec),
             repr(structure(models[0])), len(models), first.batch_size, first.optimizer,
             tuple(data.train[0].shape[1:]), len({c.seed for c in configs}) == 1)  # fmt: skip
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _measure(spec: ModelSpec, configs: Sequence[TrainConfig], data: Splits,
             device: torch.device, train_alone: TrainAlone, build: Build,
             fast: bool) -> Choice:  # fmt: skip
    """Seconds a model and step of each path: a run of one step to warm up, then
    :data:`ROUNDS` timed runs of :data:`PROBE_STEPS` steps on the first training
    examples, the paths taking turns, and the fastest run of each kept (what else the
    machine does slows one run, not every path's best)."""
    batch = configs[0].batch_size
    # One epoch, or as many as a warm-up of the learning rate needs to leave one after it
    # (a schedule stays: on a GPU it decides whether the step replays as a graph).
    epochs = 1 + max(c.warmup_epochs for c in configs)
    one = [replace(c, num_epochs=epochs) for c in configs]

    def cut(steps: int) -> Splits:
        n = steps * batch
        return Splits((data.train[0][:n], data.train[1][:n]), eval_batch_size=data.eval_batch_size)

    def timed(run: Callable[[Splits], object]) -> float:
        _sync(device)
        start = time.perf_counter()
        run(cut(PROBE_STEPS))
        _sync(device)
        return (time.perf_counter() - start) / (epochs * PROBE_STEPS)

    def stacked(fast_path: bool) -> Callable[[Splits], object]:
        def run(probe: Splits) -> object:
            models = [build(c) for c in one]
            return fit_stacked(models, one, probe, regression=spec.regression, device=device,
                               fast=fast_path)  # fmt: skip

        return run

    runs: dict[str, tuple[Callable[[Splits], object], int]] = {
        "alone": (lambda probe: train_alone(one[0], probe), 1)}  # (run, models it trains)
    if fast:
        runs["matmuls"] = (stacked(True), len(one))
    runs["torch.func"] = (stacked(False), len(one))
    for run, _ in runs.values():
        run(cut(1))  # warm up
    seconds = {path: math.inf for path in runs}
    for _ in range(ROUNDS):
        for path, (run, models) in runs.items():
            seconds[path] = min(seconds[path], timed(run) / models)
    return Choice(min(seconds, key=lambda p: seconds[p]), seconds)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
