"""The playground's figure (:func:`playground_figure`): controls for the data set, each
hyperparameter and the epoch over the models :func:`~d2lcore.playground.train_stacked`
trained, the decision boundary drawn in the browser by ``playground.js`` (the figure's
kind, beside ``figure.js``) from the stored weights; :func:`boundary_figure`
draws one model in Python, and :func:`live_playground` re-trains one configuration in a
kernel and draws its boundary as it trains.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.io.base_renderers import PlotlyRenderer
from plotly.subplots import make_subplots

from d2lcore.data import Split
from d2lcore.figure_page import (
    BELOW_PLOT,
    PLOT_CONFIG,
    SIDE_MARGINS,
    ColorBar,
    PageFigure,
    controls_for,
)
from d2lcore.figure_text import axis_label, default_fig_id, describe_config, format_value
from d2lcore.grid import AxisValue
from d2lcore.playground import STACK_ACTIVATIONS, around_default, predict_proba, train_stacked
from d2lcore.playground_data import PlaygroundData
from d2lcore.train import History, RunResult
from d2lcore.widgets import LiveControls

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
    caption: str | None = None,
) -> PageFigure:
    """The playground: a control for the data set, one per hyperparameter of ``axes`` and
    one for the epoch; the decision boundary of the selected model at the selected
    epoch, computed in the browser from its stored weights (float16), with the data
    set's points, beside its training and test loss up to that epoch.

    ``runs[name]`` holds the results of :func:`train_stacked` on data set ``name``, one
    per configuration of :func:`around_default` ``(default, axes, crossed)``, in that
    order, each with the same ``snapshot_epochs`` and ``eval_every``. A control moved to
    a value that was trained only with the other axes at their default puts them there
    (crossed axes keep their values). Axis ranges, the colour scale and the loss scale
    stay fixed while the controls move. ``caption`` says what the figure shows (a
    sentence about the plane and the loss by default).

    The figure's traces draw the first view (what a renderer without the page script
    shows); in the page, ``playground.js`` draws every view as three layout images (the
    boundary, the points, the loss curves), which plotly redraws without redrawing the
    figure, and labels the plane under the pointer (or a tap) with the model's
    P(class 1) there.
    """
    names = list(data)
    configs = around_default(default, axes, crossed)
    for name, values in {"dataset": names, **axes, "epoch": list(snapshot_epochs)}.items():
        if len(values) < 2:  # a control with a single step changes nothing
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
    plot_h, top, below = 360, 34, BELOW_PLOT
    active = [0] + default_steps + [len(snaps) - 1]
    fig.update_layout(
        height=top + plot_h + below, margin={"t": top, "b": below, **SIDE_MARGINS},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yref": "container",
                "yanchor": "bottom"},
        template="plotly_white", uirevision="playground",
    )  # fmt: skip
    fig_id = fig_id or default_fig_id(title, slider_axes)
    labels = [axis_label(n, {"dataset": "data set"}) for n in slider_axes]
    spec = {
        "labels": labels, "steps": steps, "default": default_steps,
        "crossed": [[hyper.index(a), hyper.index(b)] for a, b in crossed],
        "layers": layers, "activations": [STACK_ACTIVATIONS.index(c["activation"])
                                          for c in configs],
        # One text per model, so that the page decodes only the models it shows.
        "weights": [_f16(b.ravel()) for b in blobs],
        "stats": stats, "losses": loss_blobs, "loss_epochs": loss_epochs,
        "diverged": diverged, "snapshots": snaps, "grid": xs.tolist(),
        "points": [[_xy(data[n].train), _xy(data[n].test)] for n in names],
        "colors": list(CLASS_COLORS), "colorscale": BOUNDARY_COLORSCALE, "extent": EXTENT,
        "loss_styles": list(LOSS_STYLES), "loss_range": loss_range,
        "static_traces": list(range(len(fig.data))),
    }  # fmt: skip
    if caption is None:
        caption = ("Left: the plane coloured by the model's probability of class 1 "
                   "(orange near 0, blue near 1), with the training points (dots) and test "
                   "points (open diamonds); right: the training and test loss up to the "
                   f"chosen epoch. {sum(len(r) for r in runs.values())} models were trained "
                   "beforehand; moving the pointer over the plane, or tapping it, shows "
                   "the probability there.")  # fmt: skip
    return PageFigure(
        figure=fig, fig_id=fig_id, kind="playground", title=title, caption=caption,
        controls=controls_for(texts, active, labels),
        readout=_readout(texts["dataset"][0], [f"{labels[i + 1]} {texts[n][default_steps[i]]}"
                                               for i, n in enumerate(hyper)],
                         stats[steps.index(default_steps)][-1]),
        spec=spec,
        colorbar=ColorBar("P(class 1)", BOUNDARY_COLORSCALE, ("0", "0.5", "1")),
    )  # fmt: skip


def _readout(dataset: str, settings: list[str], stats: list[float]) -> str:
    """The readout of one model at one epoch (``stats``: epoch, training and test loss,
    training and test accuracy), as ``playground.js`` writes it after every change."""
    epoch, train_loss, test_loss, train_acc, test_acc = stats
    line = (f"epoch {int(epoch)}: training loss {to_precision(train_loss)}, test loss "
            f"{to_precision(test_loss)}, "
            f"training accuracy {100 * train_acc:.1f}%, test accuracy {100 * test_acc:.1f}%")
    return f"<b>{html.escape(dataset + ': ' + ', '.join(settings))}</b><br>{html.escape(line)}"


def to_precision(x: float, digits: int = 3) -> str:
    """``x`` as JavaScript's ``x.toPrecision(digits)`` writes it (what the page script
    writes): fixed notation for exponents from -6 to ``digits - 1``, else "1.23e+5"."""
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    e = int(exponent)
    if -6 <= e < digits:
        return f"{x:.{digits - 1 - e}f}"
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


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
