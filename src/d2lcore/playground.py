"""A playground of small MLPs on 2-D data: the book's answer to the TensorFlow Playground.

- :func:`make_dataset` draws one of four seeded, balanced 2-D data sets (circles, moons,
  XOR, a two-arm spiral) in torch; :func:`playground_data` splits one into training and
  test points.
- :func:`around_default` lists the configurations a page trains: each hyperparameter
  varied around a default, and the products of the pairs that interact (width x
  dropout), instead of the full product of every axis.
- :func:`train_stacked` trains all of them together, full batch: the models of one
  width and depth as one stack (:class:`MLPStack`: batched matmuls, each model with its
  own activation, dropout rate, learning rate and weights), every stack stepping in the
  same loop. Every model equals the :class:`~d2lcore.models.MLP` of its configuration
  trained alone with ``torch.optim.Adam`` (``tests/test_playground.py``).
  It keeps each model's weights at a few epochs: that is what the page stores, and the
  browser evaluates the decision boundary from them (``playground.js``).
- :func:`playground_figure` is that page figure; :func:`boundary_figure` draws one
  model in Python, and :func:`live_playground` re-trains one configuration in a kernel
  and draws its boundary as it trains.
"""

from __future__ import annotations

import base64
import functools
import html
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.io.base_renderers import PlotlyRenderer
from plotly.subplots import make_subplots
from torch import nn

from d2lcore.batched import StackedOptimizer, dropout_generator, losses
from d2lcore.device import make_generator
from d2lcore.grid import AxisValue
from d2lcore.init import init_weights
from d2lcore.models import MLP, check_activation
from d2lcore.plotting import PLOT_CONFIG, script_json
from d2lcore.sliders import _sliders, axis_label, default_fig_id, describe_config, format_value
from d2lcore.train import History, RunResult
from d2lcore.widgets import LiveControls

DATASETS = ("circles", "moons", "xor", "spiral")
#: The order of the hyperparameters (and of the page's sliders after the data set).
HYPERPARAMETERS = ("width", "depth", "activation", "lr", "dropout", "init")
#: What ``init="normal"`` draws from: weights tiny next to Kaiming's for width 16.
NORMAL_STD = 0.01
#: The activations the stack (and ``playground.js``) compute, in the order of their ids.
STACK_ACTIVATIONS = ("relu", "tanh", "sigmoid")

Split = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------------
# Data


def make_dataset(name: str, num_points: int, *, noise: float = 0.1,
                 seed: int = 0) -> Split:  # fmt: skip
    """``num_points`` points ``X`` ``(n, 2)`` of data set ``name`` with labels ``y``
    ``(n,)``: the first half class 0, the rest class 1, Gaussian ``noise`` added to the
    coordinates, which lie within about [-1.2, 1.2]. Drawn from a generator of its own
    seeded with ``seed``."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")
    if num_points < 2 or num_points % 2:
        raise ValueError(f"num_points must be even and at least 2, not {num_points}")
    g = make_generator(seed)
    half = num_points // 2
    y = torch.cat([torch.zeros(half), torch.ones(half)]).long()

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    if name == "circles":  # a disk inside a ring
        r = torch.cat([0.5 * uniform(half), 0.7 + 0.3 * uniform(half)])
        a = 2 * math.pi * uniform(num_points)
        X = torch.stack([r * a.cos(), r * a.sin()], dim=1)
    elif name == "moons":  # two interleaving half circles
        t = math.pi * uniform(num_points)
        upper = torch.stack([t[:half].cos(), t[:half].sin()], dim=1)
        lower = torch.stack([1 - t[half:].cos(), 0.5 - t[half:].sin()], dim=1)
        X = (torch.cat([upper, lower]) - torch.tensor([0.5, 0.25])) / 1.2
    elif name == "xor":  # class 0 where x1 and x2 have the same sign
        X = 2 * uniform(num_points, 2) - 1
        X = (X + 0.1 * X.sign()) / 1.1  # a margin along the axes
        same = X[:, 0] * X[:, 1] > 0
        X[:, 0] = torch.where(same == (y == 0), X[:, 0], -X[:, 0])
    else:  # spiral: two arms, half a turn apart
        r = 0.15 + 0.85 * uniform(num_points)
        a = 3 * math.pi * r + math.pi * y
        X = torch.stack([r * a.cos(), r * a.sin()], dim=1)
    return X + noise * torch.randn(num_points, 2, generator=g), y


@dataclass(frozen=True)
class PlaygroundData:
    """One data set's training and test points."""

    name: str
    train: Split
    test: Split


def playground_data(name: str, *, num_train: int = 200, num_test: int = 200,
                    noise: float = 0.1, seed: int = 0) -> PlaygroundData:  # fmt: skip
    """Training points of ``name`` drawn with ``seed`` and test points with ``seed + 1``."""
    return PlaygroundData(name, make_dataset(name, num_train, noise=noise, seed=seed),
                          make_dataset(name, num_test, noise=noise, seed=seed + 1))


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


# ----------------------------------------------------------------------------------
# Figures

CLASS_COLORS = ("#e8840c", "#0877bd")  # class 0, class 1
#: P(class 1) from class 0's colour through white to class 1's.
BOUNDARY_COLORSCALE = [[0.0, "#f5b46b"], [0.5, "#f7f7f7"], [1.0, "#6aaed6"]]
EXTENT = 1.5  # the plane shown: [-EXTENT, EXTENT]^2
LOSS_STYLES = ({"color": "#1f77b4"}, {"color": "#d62728", "dash": "dash"})


def plane(resolution: int) -> tuple[np.ndarray, torch.Tensor]:
    """The coordinates of a ``resolution`` x ``resolution`` grid over the plane shown,
    and its points ``(resolution**2, 2)``, row by row (y outer, x inner: a heat map's
    ``z[i][j]`` is at ``(x[j], y[i])``)."""
    xs = np.round(np.linspace(-EXTENT, EXTENT, resolution), 4)
    gy, gx = np.meshgrid(xs, xs, indexing="ij")
    return xs, torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32)


def _points_trace(split: Split, name: str, symbol: str, **kwargs: Any) -> go.Scatter:
    X, y = split
    return go.Scatter(x=np.round(X[:, 0].numpy(), 3).tolist(),
                      y=np.round(X[:, 1].numpy(), 3).tolist(), mode="markers", name=name,
                      marker={"color": [CLASS_COLORS[int(c)] for c in y], "symbol": symbol,
                              "size": 6, "line": {"color": "white", "width": 0.5}},
                      **kwargs)  # fmt: skip


def boundary_figure(config: Mapping[str, Any], data: PlaygroundData, weights: np.ndarray,
                    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                    resolution: int = 61, num_epochs: int = 1) -> go.Figure:  # fmt: skip
    """One model's decision boundary (P(class 1) over the plane) with the training and
    test points, beside loss curves (``curves[name] = (epochs, losses)``): what the live
    controls draw."""
    xs, points = plane(resolution)
    z = predict_proba(config, weights, points).numpy().reshape(resolution, resolution)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=["P(class 1) over the plane", "loss"])  # fmt: skip
    fig.add_trace(go.Heatmap(x=xs, y=xs, z=np.round(z, 3), zmin=0, zmax=1,
                             colorscale=BOUNDARY_COLORSCALE, showscale=False,
                             name="P(class 1)"), row=1, col=1)  # fmt: skip
    fig.add_trace(_points_trace(data.train, "training points", "circle"), row=1, col=1)
    fig.add_trace(_points_trace(data.test, "test points", "diamond-open"), row=1, col=1)
    for (name, (epochs, values)), style in zip(curves.items(), LOSS_STYLES, strict=False):
        fig.add_trace(go.Scatter(x=list(epochs), y=list(values), name=name, line=style),
                      row=1, col=2)  # fmt: skip
    fig.update_xaxes(title_text="x1", range=[-EXTENT, EXTENT], row=1, col=1)
    fig.update_yaxes(title_text="x2", range=[-EXTENT, EXTENT], row=1, col=1)
    fig.update_xaxes(title_text="epoch", range=[0, num_epochs], row=1, col=2)
    fig.update_yaxes(title_text="cross-entropy loss (log scale)", type="log", row=1, col=2)
    fig.update_layout(title=html.escape(describe_config(config), quote=False), height=420,
                      template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return fig


def _f16(values: np.ndarray) -> str:
    """``values`` as little-endian float16, base64: 2 bytes a number in the page."""
    half = np.asarray(values, dtype="<f2")
    if not np.isfinite(half).all():
        raise ValueError("a value does not fit in float16 (|x| > 65504) or is not finite")
    return base64.b64encode(half.tobytes()).decode("ascii")


#: The page script, a static file beside this module (package data).
PLAYGROUND_JS = Path(__file__).with_name("playground.js")


@functools.cache
def playground_program() -> str:
    """The text of ``playground.js``: served once per book page, inlined elsewhere."""
    text = PLAYGROUND_JS.read_text(encoding="utf-8")
    if re.search(r"</script|<!--", text, re.IGNORECASE):
        raise ValueError(f"{PLAYGROUND_JS} cannot be inlined in a <script> block")
    return text


@dataclass
class PlaygroundFigure:
    """The playground's plotly figure and what its page script needs (``spec``)."""

    figure: go.Figure
    fig_id: str
    spec: dict[str, Any]

    def script(self) -> str:
        attach = f"window.d2lPlayground.attach('{{plot_id}}', {script_json(self.spec)});"
        return f"{playground_program()}\n{attach}"

    def to_html(self) -> str:
        """The figure's ``div`` and scripts, without plotly.js (the page loads it)."""
        return pio.to_html(self.figure, include_plotlyjs=False, include_mathjax=False,
                           full_html=False, div_id=self.fig_id, post_script=self.script(),
                           config=PLOT_CONFIG, default_width="100%", validate=False)  # fmt: skip

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = PlotlyRenderer(config=PLOT_CONFIG).to_mimebundle(self.figure.to_dict())
        bundle["text/html"] = self.to_html()
        return bundle


def playground_figure(
    runs: Mapping[str, Sequence[RunResult]],
    data: Mapping[str, PlaygroundData],
    *,
    axes: Mapping[str, Sequence[AxisValue]],
    default: Mapping[str, AxisValue],
    crossed: Sequence[tuple[str, str]],
    snapshot_epochs: Sequence[int],
    title: str,
    resolution: int = 61,
    fig_id: str | None = None,
) -> PlaygroundFigure:
    """The playground: a slider for the data set, one per hyperparameter of ``axes`` and
    one for the epoch; the decision boundary of the selected model at the selected
    epoch, computed in the browser from its stored weights (float16), with the data
    set's points, beside its training and test loss up to that epoch.

    ``runs[name]`` holds the results of :func:`train_stacked` on data set ``name``, one
    per configuration of :func:`around_default` ``(default, axes, crossed)``, in that
    order, each with the same ``snapshot_epochs`` and ``eval_every``. A slider moved to
    a value that was trained only with the other axes at their default puts them there
    (crossed axes keep their values). Axis ranges, the colour scale and the loss scale
    stay fixed while the sliders move.

    The figure's traces draw the first view (what a renderer without the page script
    shows); in the page, ``playground.js`` draws every view as three layout images (the
    boundary, the points, the loss curves) and an HTML readout, which plotly redraws
    without redrawing the figure, and labels the plane under the pointer with the
    model's P(class 1) there.
    """
    names = list(data)
    configs = around_default(default, axes, crossed)
    for name, values in {"dataset": names, **axes, "epoch": list(snapshot_epochs)}.items():
        if len(values) < 2:  # plotly draws no slider with a single step
            raise ValueError(f"axis {name!r} needs two values or more, got {list(values)}")
    hyper = list(axes)
    for name in names:
        if len(runs[name]) != len(configs):
            raise ValueError(f"{len(runs[name])} runs of {name!r} for {len(configs)} "
                             "configurations of around_default")
    snaps = list(snapshot_epochs)
    num_epochs = snaps[-1]
    loss_epochs = [int(e) for e in np.asarray(runs[names[0]][0].extras["curves"])[:, 0]]
    slider_axes: dict[str, list[AxisValue]] = {"dataset": list(names), **{
        n: list(v) for n, v in axes.items()}, "epoch": list(snaps)}  # fmt: skip
    texts = {n: [format_value(v) for v in vs] for n, vs in slider_axes.items()}
    steps = [[list(axes[n]).index(c[n]) for n in hyper] for c in configs]
    default_steps = [list(axes[n]).index(default[n]) for n in hyper]

    blobs, stats, loss_blobs, diverged = [], [], [], []
    lo, hi = math.inf, 0.0
    for name in names:
        for run in runs[name]:
            blobs.append(np.asarray(run.extras["weights"], np.float32))
            stats.append([[float(f"{v:.4g}") for v in row] for row in run.extras["snapshots"]])
            table = np.asarray(run.extras["curves"], np.float32)  # epoch, losses, accuracies
            curves = [table[:, 1], table[:, 2]]
            loss_blobs.append([_f16(c) for c in curves])
            positive = [float(v) for c in curves for v in c if v > 0]
            lo, hi = min([lo, *positive]), max([hi, *positive])
            diverged.append(run.history.diverged_epoch or 0)
    offsets = np.cumsum([0] + [b.size for b in blobs]).tolist()
    layers = [[2] + [int(c["width"])] * int(c["depth"]) + [2] for c in configs]

    xs, points = plane(resolution)
    shown_data = data[names[0]]
    first = runs[names[0]][0]
    z = predict_proba(configs[0], _half_round(first.extras["weights"][-1]), points)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=["P(class 1) over the plane", "loss so far"])  # fmt: skip
    fig.add_trace(go.Heatmap(x=xs, y=xs, z=np.round(z.numpy().reshape(resolution, -1), 3),
                             zmin=0, zmax=1, colorscale=BOUNDARY_COLORSCALE, showscale=False,
                             name="P(class 1)", hovertemplate="x1 %{x}, x2 %{y}: "
                             "P(class 1) = %{z:.2f}<extra></extra>"), row=1, col=1)  # fmt: skip
    fig.add_trace(_points_trace(shown_data.train, "training points", "circle"), row=1, col=1)
    fig.add_trace(_points_trace(shown_data.test, "test points", "diamond-open"), row=1, col=1)
    table = np.asarray(first.extras["curves"])  # what the page script draws first, too
    for column, name, style in ((1, "training loss", LOSS_STYLES[0]),
                                (2, "test loss", LOSS_STYLES[1])):
        fig.add_trace(go.Scatter(x=table[:, 0].tolist(), y=_f16_round(table[:, column]),
                                 name=name, mode="lines", line=style), row=1, col=2)  # fmt: skip
    # The plane square (one unit as long on both axes), its size fixed; no grid or zero
    # lines, which the page script's image of the boundary would lie under.
    fig.update_xaxes(title_text="x1", range=[-EXTENT, EXTENT], constrain="domain",
                     showgrid=False, zeroline=False, row=1, col=1)  # fmt: skip
    fig.update_yaxes(title_text="x2", range=[-EXTENT, EXTENT], constrain="domain",
                     scaleanchor="x", showgrid=False, zeroline=False, row=1, col=1)  # fmt: skip
    fig.update_xaxes(title_text="epoch", range=[0, num_epochs], row=1, col=2)
    # Losses below 1e-3 (a perfect fit) would stretch the scale over many decades.
    loss_range = [math.log10(max(lo, 1e-3)) - 0.1, math.log10(hi) + 0.1]
    fig.update_yaxes(title_text="cross-entropy loss (log scale)", type="log",
                     range=loss_range, row=1, col=2)  # fmt: skip
    plot_h, top, below, slider_h = 360, 158, 70, 82
    active = [0] + default_steps + [len(snaps) - 1]
    bottom = below + len(slider_axes) * slider_h
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "y": 0.99, "yanchor": "top"},
        sliders=_sliders(slider_axes, texts, active, {"dataset": "data set"}, plot_h),
        height=top + plot_h + bottom, margin={"t": top, "b": bottom, "l": 60, "r": 20},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1 + 94 / plot_h,
                "yanchor": "bottom"},
        template="plotly_white", uirevision="playground",
    )  # fmt: skip
    fig_id = fig_id or default_fig_id(title, slider_axes)
    labels = [axis_label(n, {"dataset": "data set"}) for n in slider_axes]
    spec = {
        "id": fig_id, "labels": labels, "values": [texts[n] for n in slider_axes],
        "steps": steps, "default": default_steps,
        "crossed": [[hyper.index(a), hyper.index(b)] for a, b in crossed],
        "layers": layers, "activations": [STACK_ACTIVATIONS.index(c["activation"])
                                          for c in configs],
        "weights": _f16(np.concatenate([b.ravel() for b in blobs])), "offsets": offsets,
        "stats": stats, "losses": loss_blobs, "loss_epochs": loss_epochs,
        "diverged": diverged, "snapshots": snaps, "grid": xs.tolist(),
        "points": [[_xy(data[n].train), _xy(data[n].test)] for n in names],
        "colors": list(CLASS_COLORS), "colorscale": BOUNDARY_COLORSCALE, "extent": EXTENT,
        "loss_styles": list(LOSS_STYLES), "loss_range": loss_range,
        "static_traces": list(range(len(fig.data))),
    }  # fmt: skip
    return PlaygroundFigure(figure=fig, fig_id=fig_id, spec=spec)


def _xy(split: Split) -> list[list[float]]:
    X, y = split
    return [np.round(X[:, 0].numpy(), 3).tolist(), np.round(X[:, 1].numpy(), 3).tolist(),
            y.tolist()]  # fmt: skip


def _f16_round(values: np.ndarray) -> list[float]:
    return np.asarray(values, np.float32).astype("<f2").astype(float).tolist()


def _half_round(weights: np.ndarray) -> np.ndarray:
    """``weights`` as the page stores them (float16), back in float32."""
    return np.asarray(weights, np.float32).astype("<f2").astype(np.float32)


# ----------------------------------------------------------------------------------
# Live controls


def live_playground(
    data: Mapping[str, PlaygroundData],
    axes: Mapping[str, Sequence[AxisValue]],
    *,
    default: Mapping[str, AxisValue],
    num_epochs: int,
    draw_every: int = 50,
    eval_every: int = 4,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> LiveControls:
    """Live controls for the playground: choose a data set and any configuration, press
    Train; the boundary is redrawn every ``draw_every`` epochs while the model trains."""
    panel: LiveControls | None = None
    xs, points = plane(61)  # boundary_figure's default resolution

    def show(fig: dict[str, Any]) -> None:
        assert panel is not None
        bundle = PlotlyRenderer(config=PLOT_CONFIG).to_mimebundle(fig)
        panel.output.outputs = ({"output_type": "display_data", "data": bundle,
                                 "metadata": {}},)  # fmt: skip

    def train_fn(config: dict[str, AxisValue], on_epoch_end: Any) -> RunResult:
        chosen = data[str(config["dataset"])]
        model_config = {n: config[n] for n in axes}
        history = History()

        def on_epoch(epoch: int, histories: list[History]) -> None:
            history.train_loss = histories[0].train_loss
            on_epoch_end(epoch, histories[0])

        frame: dict[str, Any] = {}

        def on_snapshot(epoch: int, weights: list[np.ndarray]) -> None:
            steps = list(range(1, len(history.train_loss) + 1))
            if not frame:  # built once: plotly's validation costs more than the training
                frame.update(boundary_figure(
                    model_config, chosen, weights[0],
                    {"training loss (training steps)": (steps, history.train_loss)},
                    num_epochs=num_epochs).to_dict())  # fmt: skip
            else:  # then only the numbers change
                z = predict_proba(model_config, weights[0], points).numpy()
                frame["data"][0]["z"] = np.round(z.reshape(len(xs), -1), 3)
                frame["data"][3].update(x=steps, y=list(history.train_loss))
            show(frame)

        snaps = [*range(0, num_epochs, draw_every), num_epochs]
        (run,) = train_stacked([model_config], [chosen], num_epochs=num_epochs,
                               snapshot_epochs=snaps, eval_every=eval_every,
                               on_epoch_end=on_epoch, on_snapshot=on_snapshot)  # fmt: skip
        run.config = dict(config)
        return run

    def final_figure(run: RunResult) -> go.Figure:
        table = np.asarray(run.extras["curves"])
        return boundary_figure({n: run.config[n] for n in axes},
                               data[str(run.config["dataset"])], run.extras["weights"][-1],
                               {"training loss": (table[:, 0].tolist(), table[:, 1].tolist()),
                                "test loss": (table[:, 0].tolist(), table[:, 2].tolist())},
                               num_epochs=num_epochs)  # fmt: skip

    panel = LiveControls(train_fn, {"dataset": list(data), **axes},
                         default={"dataset": next(iter(data)), **default},
                         labels={"dataset": "data set"}, bounds=bounds,
                         num_epochs=num_epochs, figure=final_figure)  # fmt: skip
    return panel
