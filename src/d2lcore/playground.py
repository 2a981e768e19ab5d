"""A playground of small MLPs on 2-D data: the book's answer to the TensorFlow Playground.

- :func:`around_default` lists the configurations a page trains: each hyperparameter
  varied around a default, and the products of the pairs that interact (width x
  dropout), instead of the full product of every axis.
- :func:`build_mlp` is the :class:`~d2lcore.models.MLP` of a configuration;
  :func:`flat_weights` lays its weights out as one vector (the layout the page stores
  and ``playground.js`` reads) and :func:`predict_proba` evaluates a model from it.
- :func:`train_stacked` trains all of them together, full batch: the models of one
  width and depth as one stack (:class:`MLPStack`: batched matmuls, each model with its
  own activation, dropout rate, learning rate and weights), every stack stepping in the
  same loop. Every model equals the :class:`~d2lcore.models.MLP` of its configuration
  trained alone with ``torch.optim.Adam`` (``tests/test_playground.py``).
  It keeps each model's weights at a few epochs: that is what the page stores, and the
  browser evaluates the decision boundary from them (``playground.js``).

The data sets are :mod:`d2lcore.playground_data`'s; the figure, its page script and the
live controls are :mod:`d2lcore.playground_figure`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from d2lcore.batched import StackedOptimizer, dropout_generator, losses
from d2lcore.device import make_generator
from d2lcore.grid import AxisValue
from d2lcore.init import init_weights
from d2lcore.models import MLP, check_activation
from d2lcore.playground_data import PlaygroundData
from d2lcore.train import History, RunResult

#: The order of the hyperparameters (and of the page's sliders after the data set).
HYPERPARAMETERS = ("width", "depth", "activation", "lr", "dropout", "init")
#: What ``init="normal"`` draws from: weights tiny next to Kaiming's for width 16.
NORMAL_STD = 0.01
#: The activations the stack (and ``playground.js``) compute, in the order of their ids.
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
    :func:`~d2lcore.batched.dropout_generator` of the same seed."""
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


class MLPStack:
    """K MLPs of one width and depth (2 inputs, 2 outputs), each with its own
    activation, dropout rate and weights, as stacked tensors: layer ``l`` has a weight
    ``(K, in, out)`` (``nn.Linear``'s transposed, so a batch goes through as
    ``h @ W``) and a bias ``(K, out)``. Give it the models grouped by activation: each
    activation is then computed on one slice of the stack."""

    def __init__(self, models: Sequence[MLP], configs: Sequence[Mapping[str, Any]],
                 device: torch.device) -> None:  # fmt: skip
        shapes = {(int(c["width"]), int(c["depth"])) for c in configs}
        if len(shapes) != 1:
            raise ValueError(f"an MLPStack holds one width and depth, not {sorted(shapes)}")
        ((self.width, self.depth),) = shapes
        self.params: list[torch.Tensor] = []
        for layers in zip(*(linears(m) for m in models), strict=True):
            W = torch.stack([layer.weight.detach().T for layer in layers])
            b = torch.stack([layer.bias.detach() for layer in layers])
            self.params += [W.to(device).requires_grad_(), b.to(device).requires_grad_()]
        act = [STACK_ACTIVATIONS.index(c["activation"]) for c in configs]
        if act != sorted(act):
            raise ValueError("give the models grouped by activation, in STACK_ACTIVATIONS order")
        self.groups = [(fn, slice(act.index(i), len(act) - act[::-1].index(i)))
                       for i, fn in enumerate((torch.relu, torch.tanh, torch.sigmoid))
                       if i in act]  # fmt: skip
        self.rate = torch.tensor([float(c["dropout"]) for c in configs]).view(-1, 1, 1).to(device)

    def forward(self, X: torch.Tensor, uniforms: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """Logits ``(K, n, 2)`` for inputs ``X`` ``(K, n, 2)``; with ``uniforms`` (one
        ``(K, n, width)`` per hidden layer) dropout acts as
        :class:`~d2lcore.models.Dropout` does: ``h * (u >= p) / (1 - p)``."""
        h = X
        for l in range(self.depth):  # noqa: E741
            z = torch.baddbmm(self.params[2 * l + 1][:, None, :], h, self.params[2 * l])
            if len(self.groups) == 1:
                h = self.groups[0][0](z)
            else:
                h = torch.cat([fn(z[rows]) for fn, rows in self.groups])
            if uniforms is not None:
                h = h * (uniforms[l] >= self.rate) / (1.0 - self.rate)
        return torch.baddbmm(self.params[-1][:, None, :], h, self.params[-2])

    def flat(self, k: int) -> np.ndarray:
        """Model ``k``'s weights as :func:`flat_weights` lays them out."""
        parts = [t for W, b in zip(self.params[::2], self.params[1::2], strict=True)
                 for t in (W[k].T.reshape(-1), b[k])]  # fmt: skip
        return torch.cat(parts).detach().cpu().numpy().astype(np.float32)


def _draw_uniforms(configs: Sequence[Mapping[str, Any]], generators: list[torch.Generator],
                   n: int, device: torch.device) -> list[torch.Tensor] | None:  # fmt: skip
    """One ``(K, n, width)`` tensor of uniforms per hidden layer, drawn as each model's
    Dropout layers draw alone: from the model's own generator, ``(n, width)`` per layer
    in order; zeros (keep every unit) for a model without dropout. ``None`` when no
    model has dropout."""
    if all(float(c["dropout"]) == 0 for c in configs):
        return None
    width, depth = int(configs[0]["width"]), int(configs[0]["depth"])
    u = torch.zeros(depth, len(configs), n, width, device=device)
    for k, c in enumerate(configs):
        if float(c["dropout"]) > 0:
            for l in range(depth):  # noqa: E741
                u[l, k] = torch.rand(n, width, generator=generators[k], device=device)
    return list(u)


SnapshotHook = Callable[[int, list[np.ndarray]], None]
StackEpochHook = Callable[[int, list[History]], None]


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

    Each model starts as :func:`build_mlp` makes it (from ``seed``); its history holds
    the loss of each training step (with dropout, as :func:`~d2lcore.train.fit`
    records it). Every ``eval_every`` epochs and at each of ``snapshot_epochs`` (0 is
    the initialization) its loss and accuracy on its training and test points are
    measured in evaluation mode (no dropout). Its extras:

    - ``curves``, ``(L, 5)``: epoch, training loss, test loss, training and test
      accuracy, every ``eval_every`` epochs;
    - ``weights``, ``(S, P)`` float32: its weights at each snapshot epoch, laid out as
      :func:`flat_weights`; ``snapshots``, ``(S, 5)``: the same numbers as ``curves``.

    ``test_acc`` is the final test accuracy. A model whose loss stops being finite is
    marked diverged; its later snapshots repeat its last finite state.
    ``on_epoch_end(epoch, histories)`` and ``on_snapshot(epoch, weights)`` (every
    model's weights, at each snapshot epoch) let a live figure follow the training.
    """
    if len(configs) != len(data) or not configs:
        raise ValueError(f"{len(configs)} configurations for {len(data)} data sets")
    snaps = sorted(set(snapshot_epochs))
    if snaps[0] < 0 or snaps[-1] > num_epochs:
        raise ValueError(f"snapshot epochs must lie in 0..{num_epochs}, got {snaps}")
    if len({len(d.train[1]) for d in data}) > 1:
        raise ValueError("models trained together need training sets of one size")
    device = torch.device(device)
    # One stack per width and depth, its models grouped by activation.
    shapes = sorted({(int(c["width"]), int(c["depth"])) for c in configs})
    groups = []
    for shape in shapes:
        rows = [k for k, c in enumerate(configs) if (int(c["width"]), int(c["depth"])) == shape]
        rows.sort(key=lambda k: STACK_ACTIVATIONS.index(configs[k]["activation"]))
        groups.append(_Group(rows, [configs[k] for k in rows], [data[k] for k in rows],
                             seed, device))  # fmt: skip
    histories = [History() for _ in configs]  # in the caller's order, like every list here
    curves: list[list[list[float]]] = [[] for _ in configs]
    weights: list[list[np.ndarray]] = [[] for _ in configs]
    stats: list[list[list[float]]] = [[] for _ in configs]
    # These tensors are far too small for intra-op threads to pay off; on a busy CPU
    # the threads' waiting for each other made training ten times slower (measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _loop(groups, histories, curves, weights, stats, num_epochs=num_epochs, snaps=snaps,
              eval_every=eval_every, on_epoch_end=on_epoch_end, on_snapshot=on_snapshot)
    finally:
        torch.set_num_threads(threads)
    results = []
    for k, c in enumerate(configs):
        h = histories[k]
        final = curves[k][-1] if curves[k] else None
        test_acc = final[4] if final is not None and not h.diverged else None
        results.append(RunResult(
            config=dict(c), history=h, test_acc=test_acc,
            extras={"curves": np.asarray(curves[k], np.float32).reshape(-1, 5),
                    "weights": np.stack(weights[k]),
                    "snapshots": np.asarray(stats[k], np.float32)}))  # fmt: skip
    return results


def _loop(groups: list[_Group], histories: list[History], curves: list[list[list[float]]],
          weights: list[list[np.ndarray]], stats: list[list[list[float]]], *,
          num_epochs: int, snaps: list[int], eval_every: int,
          on_epoch_end: StackEpochHook | None,
          on_snapshot: SnapshotHook | None) -> None:  # fmt: skip
    """The epochs of :func:`train_stacked`, filling its lists (in the caller's order)."""
    K = len(histories)
    alive = [True] * K

    def mark_diverged(k: int, epoch: int) -> None:
        alive[k] = False
        histories[k].diverged, histories[k].diverged_epoch = True, epoch

    start_time = time.perf_counter()
    for epoch in range(num_epochs + 1):
        if epoch > 0:
            step_losses = [g.step() for g in groups]
            seconds = (time.perf_counter() - start_time) / K
            start_time = time.perf_counter()
            for g, values in zip(groups, step_losses, strict=True):
                for k, value in zip(g.rows, values, strict=True):
                    if not alive[k]:
                        continue
                    if not math.isfinite(value):
                        mark_diverged(k, epoch)
                        continue
                    histories[k].train_loss.append(value)
                    histories[k].seconds.append(seconds)
        evaluate = epoch > 0 and epoch % eval_every == 0
        if epoch in snaps or evaluate:
            for g in groups:
                for row, (k, numbers) in enumerate(zip(g.rows, g.measure(), strict=True)):
                    numbers = [float(epoch), *numbers]
                    if alive[k] and not all(map(math.isfinite, numbers)):
                        mark_diverged(k, epoch)
                    if alive[k] and evaluate:
                        curves[k].append(numbers)
                    if epoch in snaps:
                        if alive[k] or not weights[k]:
                            weights[k].append(g.stack.flat(row))
                            stats[k].append(numbers)
                        else:  # diverged: its last finite state
                            weights[k].append(weights[k][-1])
                            stats[k].append(stats[k][-1])
            if epoch in snaps and on_snapshot is not None:
                on_snapshot(epoch, [w[-1] for w in weights])
        if epoch > 0 and on_epoch_end is not None:
            on_epoch_end(epoch, histories)


class _Group:
    """The models of one width and depth in :func:`train_stacked`: their stack, data,
    dropout streams and optimizer. ``rows[i]`` is the caller's index of row ``i``."""

    def __init__(self, rows: list[int], configs: list[Mapping[str, Any]],
                 data: list[PlaygroundData], seed: int, device: torch.device) -> None:  # fmt: skip
        self.rows, self.configs = rows, configs
        self.stack = MLPStack([build_mlp(c, seed=seed) for c in configs], configs, device)
        self.X = torch.stack([d.train[0].float() for d in data]).to(device)  # (K, n, 2)
        self.y = torch.stack([d.train[1] for d in data]).to(device)  # (K, n)
        self.X_test = torch.stack([d.test[0].float() for d in data]).to(device)
        self.y_test = torch.stack([d.test[1] for d in data]).to(device)
        self.generators = [dropout_generator(seed, device) for _ in configs]
        self.device = device
        self.opt = StackedOptimizer(
            "adam", self.stack.params, [0] * len(self.stack.params),
            torch.tensor([float(c["lr"]) for c in configs], device=device),
            torch.zeros(len(configs), device=device))  # fmt: skip

    def step(self) -> list[float]:
        """One full-batch step of every model; the loss of each before it."""
        uniforms = _draw_uniforms(self.configs, self.generators, self.X.shape[1], self.device)
        for p in self.stack.params:
            p.grad = None
        loss = losses(self.stack.forward(self.X, uniforms), self.y, False)  # (K,)
        loss.sum().backward()  # independent models: each gets its own gradient
        self.opt.step(self.stack.params)
        return loss.detach().cpu().tolist()

    @torch.no_grad()
    def measure(self) -> list[list[float]]:
        """Per model: training loss, test loss, training and test accuracy."""
        out, out_test = self.stack.forward(self.X, None), self.stack.forward(self.X_test, None)
        numbers = torch.stack([losses(out, self.y, False), losses(out_test, self.y_test, False),
                               (out.argmax(-1) == self.y).float().mean(1),
                               (out_test.argmax(-1) == self.y_test).float().mean(1)], dim=1)
        return numbers.cpu().tolist()
