"""A playground of small MLPs on 2-D data: the book's answer to the TensorFlow Playground.

- :func:`around_default` lists the configurations a page trains: each hyperparameter
  varied around a default, and the products of the pairs that interact (width x
  dropout), instead of the full product of every axis.
- :func:`build_mlp` is the :class:`~d2lcore.models.MLP` of a configuration;
  :func:`flat_weights` lays its weights out as one vector (the layout the page stores
  and ``playground.js`` reads) and :func:`predict_proba` evaluates a model from it.
- :func:`train_stacked` trains all of them together, full batch: the models of one
  layout as one stack (:mod:`d2lcore.stacks`: batched matmuls, each model with its own
  dropout rate, learning rate and weights) in the one training loop
  (:func:`~d2lcore.train.fit_stack`). Every model equals the
  :class:`~d2lcore.models.MLP` of its configuration trained alone with
  ``torch.optim.Adam`` (``tests/test_playground.py``).
  It keeps each model's weights at a few epochs: that is what the page stores, and the
  browser evaluates the decision boundary from them (``playground.js``).

The data sets are :mod:`d2lcore.playground_data`'s; the figure, its page script and the
live controls are :mod:`d2lcore.playground_figure`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from d2lcore.batched import StackedOptimizer, make_stack
from d2lcore.device import make_generator
from d2lcore.grid import AxisValue
from d2lcore.init import init_weights
from d2lcore.models import MLP, check_activation
from d2lcore.playground_data import PlaygroundData
from d2lcore.stacks import dropout_generator, losses
from d2lcore.train import History, RunResult, StackEpochHook, fit_stack

#: The order of the hyperparameters (and of the page's sliders after the data set).
HYPERPARAMETERS = ("width", "depth", "activation", "lr", "dropout", "init")
#: What ``init="normal"`` draws from: weights tiny next to Kaiming's for width 16.
NORMAL_STD = 0.01
#: The activations ``playground.js`` computes, in the order of their ids.
STACK_ACTIVATIONS = ("relu", "tanh", "sigmoid")


# ----------------------------------------------------------------------------------
# Configurations


def around_default(
    default: Mapping[str, AxisValue],
    axes: Mapping[str, Sequence[AxisValue]],
    crossed: Sequence[tuple[str, str]] = (),
) -> list[dict[str, AxisValue]]:
    """The default, then each axis' values with the other axes at their default, then
    every combination of each ``crossed`` pair; each configuration once, in that order."""
    for name, values in axes.items():
        if default[name] not in values:
            raise ValueError(f"default {name}={default[name]!r} is not among {list(values)}")
    for pair in crossed:
        if not set(pair) <= set(axes):
            raise ValueError(f"crossed pair {pair} names an axis not in {list(axes)}")
    found = [dict(default)]
    for name, values in axes.items():
        found += [{**default, name: v} for v in values]
    for a, b in crossed:
        found += [{**default, a: u, b: v} for u in axes[a] for v in axes[b]]
    unique: list[dict[str, AxisValue]] = []
    for config in found:
        if config not in unique:
            unique.append(config)
    return unique


def build_mlp(config: Mapping[str, Any], *, seed: int = 0,
              device: torch.device | str = "cpu") -> MLP:  # fmt: skip
    """The MLP of ``config`` (``width``, ``depth``, ``activation``, ``dropout``, ``init``)
    for 2 inputs and 2 classes, initialized from ``seed`` (``init="normal"`` draws with
    standard deviation :data:`NORMAL_STD`); its dropout masks come from
    :func:`~d2lcore.stacks.dropout_generator` of the same seed."""
    device = torch.device(device)
    model = MLP(2, (int(config["width"]),) * int(config["depth"]), 2,
                activation=check_activation(str(config["activation"])),
                dropout=float(config["dropout"]), generator=dropout_generator(seed, device))
    init_weights(model, str(config["init"]), std=NORMAL_STD, generator=make_generator(seed))
    return model.to(device)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def flat_weights(model: nn.Module) -> np.ndarray:
    """Every ``nn.Linear`` of ``model`` in order, its weight ``(out, in)`` row by row
    and then its bias, as one float32 vector: the layout ``playground.js`` reads."""
    parts = [t.detach().reshape(-1) for m in linears(model) for t in (m.weight, m.bias)]
    return torch.cat(parts).cpu().numpy().astype(np.float32)


def load_flat_weights(model: nn.Module, weights: np.ndarray) -> nn.Module:
    """The inverse of :func:`flat_weights`: ``model`` with those weights, in place."""
    flat = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    tensors = [t for m in linears(model) for t in (m.weight, m.bias)]
    if sum(t.numel() for t in tensors) != len(flat):
        raise ValueError(f"{len(flat)} weights for a model with "
                         f"{sum(t.numel() for t in tensors)}")  # fmt: skip
    start = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[start : start + t.numel()].view_as(t))
            start += t.numel()
    return model


@torch.no_grad()
def predict_proba(config: Mapping[str, Any], weights: np.ndarray,
                  points: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """P(class 1) at ``points`` ``(n, 2)`` of the model of ``config`` with ``weights``
    (as :func:`flat_weights` lays them out), in evaluation mode."""
    model = load_flat_weights(build_mlp(config), weights).eval()
    return model(points.float()).softmax(dim=-1)[:, 1]


# ----------------------------------------------------------------------------------
# Stacked training


SnapshotHook = Callable[[int, list[np.ndarray]], None]


def train_stacked(
    configs: Sequence[Mapping[str, Any]],
    data: Sequence[PlaygroundData],
    *,
    num_epochs: int,
    snapshot_epochs: Sequence[int],
    eval_every: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_epoch_end: StackEpochHook | None = None,
    on_snapshot: SnapshotHook | None = None,
) -> list[RunResult]:
    """Train the MLP of ``configs[k]`` on ``data[k]`` for every ``k`` together: full
    batch, Adam with each model's ``lr``, ``num_epochs`` steps; return a
    :class:`~d2lcore.train.RunResult` per model.

    Each model starts as :func:`build_mlp` makes it (from ``seed``); the models of one
    layout (width, depth, activation, with or without dropout) train as one stack
    (:mod:`d2lcore.stacks`) in :func:`~d2lcore.train.fit_stack`. A model's history holds
    the loss of each training step (with dropout, as :func:`~d2lcore.train.fit` records
    it), and the loop marks it diverged when that stops being finite. Every
    ``eval_every`` epochs and at each of ``snapshot_epochs`` (0 is the initialization)
    its loss and accuracy on its training and test points are measured in evaluation
    mode (no dropout). Its extras:

    - ``curves``, ``(L, 5)``: epoch, training loss, test loss, training and test
      accuracy, every ``eval_every`` epochs;
    - ``weights``, ``(S, P)`` float32: its weights at each snapshot epoch, laid out as
      :func:`flat_weights`; ``snapshots``, ``(S, 5)``: the same numbers as ``curves``.

    ``test_acc`` is the final test accuracy. A measurement that is not finite is not
    kept; a snapshot then, or after the model diverged, repeats its last finite state.
    ``on_epoch_end(epoch, histories)`` and ``on_snapshot(epoch, weights)`` (every
    model's latest weights, at each snapshot epoch) let a live figure follow the
    training, one stack after the other.
    """
    if len(configs) != len(data) or not configs:
        raise ValueError(f"{len(configs)} configurations for {len(data)} data sets")
    snaps = sorted(set(snapshot_epochs))
    if snaps[0] < 0 or snaps[-1] > num_epochs:
        raise ValueError(f"snapshot epochs must lie in 0..{num_epochs}, got {snaps}")
    if len({len(d.train[1]) for d in data}) > 1:
        raise ValueError("models trained together need training sets of one size")
    for c in configs:
        if c["activation"] not in STACK_ACTIVATIONS:
            raise ValueError(f"the page script computes {STACK_ACTIVATIONS}, "
                             f"not {c['activation']!r}")  # fmt: skip
    device = torch.device(device)
    models = [build_mlp(c, seed=seed, device=device) for c in configs]
    # One stack per width and depth, its models grouped by activation.
    layouts: dict[tuple[int, int], list[int]] = {}
    for k in sorted(range(len(configs)),
                    key=lambda k: STACK_ACTIVATIONS.index(configs[k]["activation"])):  # fmt: skip
        layouts.setdefault((int(configs[k]["width"]), int(configs[k]["depth"])), []).append(k)
    record = _Record(models, snaps, eval_every, on_snapshot)
    # These tensors are far too small for intra-op threads to pay off; on a busy CPU
    # the threads' waiting for each other made training ten times slower (measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        groups = [_Group(rows, models, configs, data, seed, device) for rows in layouts.values()]
        for i, group in enumerate(groups):  # the initialization, one snapshot call
            record.measure(0, group, last=i == len(groups) - 1)
        for group in groups:
            group.train(record, num_epochs, on_epoch_end)
    finally:
        torch.set_num_threads(threads)
    results = []
    for k, c in enumerate(configs):
        h = record.histories[k]
        record.fill(k, len(snaps))
        if not record.weights[k]:  # diverged before its first snapshot: its last state
            record.weights[k] = [flat_weights(models[k])] * len(snaps)
            record.stats[k] = [[float(e)] + [math.nan] * 4 for e in snaps]
        final = record.curves[k][-1] if record.curves[k] else None
        test_acc = final[4] if final is not None and not h.diverged else None
        results.append(RunResult(
            config=dict(c), history=h, test_acc=test_acc,
            extras={"curves": np.asarray(record.curves[k], np.float32).reshape(-1, 5),
                    "weights": np.stack(record.weights[k]),
                    "snapshots": np.asarray(record.stats[k], np.float32)}))  # fmt: skip
    return results


class _Group:
    """The models of one layout in :func:`train_stacked`: their stack, data and
    optimizer. ``rows[i]`` is the caller's index of the stack's model ``i``."""

    def __init__(self, rows: list[int], models: list[MLP],
                 configs: Sequence[Mapping[str, Any]], data: Sequence[PlaygroundData],
                 seed: int, device: torch.device) -> None:  # fmt: skip
        self.rows, self.models = rows, [models[k] for k in rows]
        self.X = torch.stack([data[k].train[0].float() for k in rows]).to(device)  # (K, n, 2)
        self.y = torch.stack([data[k].train[1] for k in rows]).to(device)  # (K, n)
        self.X_test = torch.stack([data[k].test[0].float() for k in rows]).to(device)
        self.y_test = torch.stack([data[k].test[1] for k in rows]).to(device)
        self.stack = make_stack(self.models, [seed] * len(rows), self.X[0, :1], device,
                                shared_input=False)  # fmt: skip
        self.optimizer = StackedOptimizer(self.stack, "adam",
                                          [float(configs[k]["lr"]) for k in rows])  # fmt: skip

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One full batch per epoch: every model's own training points."""
        yield self.stack.select(self.X), self.stack.select(self.y)

    def train(self, record: _Record, num_epochs: int, on_epoch_end: StackEpochHook | None) -> None:
        def hook(epoch: int, histories: list[History]) -> None:
            for k, history in zip(self.rows, histories, strict=True):
                record.histories[k] = history
            record.measure(epoch, self)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record.histories)

        histories = fit_stack(self.stack, self, loss_fn=lambda out, y: losses(out, y, False),
                              optimizer=self.optimizer, num_epochs=num_epochs,
                              device=self.X.device, on_epoch_end=hook)  # fmt: skip
        for k, history in zip(self.rows, histories, strict=True):
            record.histories[k] = history

    @torch.no_grad()
    def measure(self) -> list[tuple[int, list[float]]]:
        """Per model still training: its index, its training loss, test loss, training
        and test accuracy."""
        self.stack.eval()
        select = self.stack.select
        y, y_test = select(self.y), select(self.y_test)
        out, out_test = self.stack(select(self.X)), self.stack(select(self.X_test))
        numbers = torch.stack([losses(out, y, False), losses(out_test, y_test, False),
                               (out.argmax(-1) == y).float().mean(1),
                               (out_test.argmax(-1) == y_test).float().mean(1)], dim=1)
        self.stack.train()
        return [(self.rows[r], values)
                for r, values in zip(self.stack.rows, numbers.cpu().tolist(), strict=True)]

    def weights(self, k: int) -> np.ndarray:
        """Model ``k``'s weights now, as :func:`flat_weights` lays them out."""
        self.stack.write_back([self.stack.rows.index(self.rows.index(k))])
        return flat_weights(self.models[self.rows.index(k)])


class _Record:
    """What :func:`train_stacked` keeps of every model, in the caller's order."""

    def __init__(self, models: Sequence[MLP], snaps: list[int], eval_every: int,
                 on_snapshot: SnapshotHook | None) -> None:  # fmt: skip
        self.snaps, self.eval_every, self.on_snapshot = snaps, eval_every, on_snapshot
        self.histories = [History() for _ in models]
        self.curves: list[list[list[float]]] = [[] for _ in models]
        self.weights: list[list[np.ndarray]] = [[] for _ in models]
        self.stats: list[list[list[float]]] = [[] for _ in models]
        self.latest = [flat_weights(m) for m in models]  # each one's last snapshot

    def measure(self, epoch: int, group: _Group, *, last: bool = True) -> None:
        """Measure the models of ``group`` if ``epoch`` is an epoch of the curves or a
        snapshot; then, unless not ``last``, call ``on_snapshot``."""
        curve = epoch > 0 and epoch % self.eval_every == 0
        snapshot = epoch in self.snaps
        if not (curve or snapshot):
            return
        for k, values in group.measure():
            numbers = [float(epoch), *values]
            if not all(map(math.isfinite, numbers)):
                continue  # nothing to draw: a snapshot repeats its last finite state
            if curve:
                self.curves[k].append(numbers)
            if snapshot:
                self.latest[k] = group.weights(k)
                self.weights[k].append(self.latest[k])
                self.stats[k].append(numbers)
        if snapshot:
            for k in group.rows:
                self.fill(k, self.snaps.index(epoch) + 1)
            if last and self.on_snapshot is not None:
                self.on_snapshot(epoch, self.latest)

    def fill(self, k: int, length: int) -> None:
        """Repeat model ``k``'s last snapshot up to ``length`` snapshots."""
        while self.weights[k] and len(self.weights[k]) < length:
            self.weights[k].append(self.weights[k][-1])
            self.stats[k].append(self.stats[k][-1])
