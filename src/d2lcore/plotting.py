"""Plotly figures for training histories and images, and the renderer the book needs.

Why a renderer of our own: plotly 6+ run under nbclient emits only its own mime type,
which the book's builder (myst-nb) drops, so figures would vanish silently from the
built HTML. :func:`use_book_renderer` makes every figure carry ``text/html`` (a figure
that draws itself with ``figure.js``, without plotly.js inlined:
:func:`~d2lcore.figure_page.plain_figure_html`) beside the plotly mime type, which
JupyterLab renders. The book loads ``plotly.min.js`` once per page, from a local file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.io.base_renderers import PlotlyRenderer
from plotly.subplots import make_subplots

from d2lcore.figure_page import PLOT_CONFIG, plain_figure_html
from d2lcore.train import History

BOOK_RENDERER = "d2lbook"


class BookRenderer(PlotlyRenderer):
    """The plotly mime type (for Jupyter) plus ``text/html`` (for the built book)."""

    def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, Any]:
        bundle = super().to_mimebundle(fig_dict)
        # Without plotly.js (the book loads it once per page): the figure draws itself
        # when it comes near the viewport, its title as HTML that wraps on a phone.
        bundle["text/html"] = plain_figure_html(fig_dict)
        return bundle


def use_book_renderer() -> None:
    """Make plotly figures show both in Jupyter and in the built book; idempotent."""
    pio.renderers[BOOK_RENDERER] = BookRenderer(config=PLOT_CONFIG)
    pio.renderers.default = BOOK_RENDERER
    pio.templates.default = "plotly_white"


def plot_lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    log_y: bool = False,
) -> go.Figure:
    """One line per named series over a shared ``x``."""
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=380)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def plot_history(
    histories: History | Mapping[str, History], *, title: str | None = None
) -> go.Figure:
    """Training and validation loss per epoch (left) and validation accuracy (right,
    when there is any). Several runs can be given by name; a run that diverged is
    marked so in its legend entry."""
    runs = {"": histories} if isinstance(histories, History) else dict(histories)
    has_acc = any(h.val_acc for h in runs.values())
    cols = 2 if has_acc else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        subplot_titles=["loss", "validation accuracy"][:cols],
        horizontal_spacing=0.12,
    )
    palette = pio.templates["plotly_white"].layout.colorway or ("#636efa",)
    diverged: list[str] = []
    for i, (name, h) in enumerate(runs.items()):
        color = palette[i % len(palette)]
        label = f"{name} " if name else ""
        note = f" (diverged at epoch {h.diverged_epoch})" if h.diverged else ""
        if h.diverged:
            diverged.append(f"{name or 'run'} diverged at epoch {h.diverged_epoch}")
        epochs = list(range(1, h.num_epochs + 1))
        fig.add_trace(
            go.Scatter(x=epochs, y=h.train_loss, name=f"{label}train loss{note}",
                       line={"color": color}),
            row=1, col=1,
        )  # fmt: skip
        if h.val_loss:
            fig.add_trace(
                go.Scatter(x=epochs, y=h.val_loss, name=f"{label}validation loss",
                           line={"color": color, "dash": "dash"}),
                row=1, col=1,
            )  # fmt: skip
        if has_acc and h.val_acc:
            fig.add_trace(
                go.Scatter(x=epochs, y=h.val_acc, name=f"{label}validation accuracy",
                           line={"color": color, "dash": "dot"}),
                row=1, col=2,
            )  # fmt: skip
    if diverged:
        # A run that diverged in its first epoch has no points, and plotly leaves an empty
        # trace out of the legend: say it in the panel so it does not vanish silently.
        fig.add_annotation(
            text="<br>".join(diverged), xref="x domain", yref="y domain", x=0.98, y=0.98,
            xanchor="right", yanchor="top", showarrow=False, font={"color": "#c0392b"},
            bgcolor="rgba(255,255,255,0.8)",
        )  # fmt: skip
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="loss", row=1, col=1)
    if has_acc:
        fig.update_yaxes(title_text="accuracy", row=1, col=2)
    fig.update_layout(title=title, height=400)
    return fig


def image_grid(
    images: torch.Tensor, titles: Sequence[str] | None = None, *, ncols: int = 8
) -> go.Figure:
    """A grid of grayscale images ``(n, H, W)`` or ``(n, 1, H, W)`` with values in
    ``[0, 1]`` or ``0..255``, each titled (e.g. with its text label)."""
    imgs = images.detach().cpu().float()
    if imgs.dim() == 4:
        imgs = imgs[:, 0]
    if imgs.max() <= 1.0:
        imgs = imgs * 255
    n = len(imgs)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = make_subplots(
        rows=nrows, cols=ncols, subplot_titles=list(titles) if titles else None,
        horizontal_spacing=0.01, vertical_spacing=0.08 if titles else 0.01,
    )  # fmt: skip
    for i, img in enumerate(imgs):
        fig.add_trace(
            go.Heatmap(z=img.numpy(), colorscale="gray", zmin=0, zmax=255, showscale=False,
                       hovertemplate="x=%{x}, y=%{y}: %{z:.0f}<extra></extra>"),
            row=i // ncols + 1, col=i % ncols + 1,
        )  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(height=max(160, 130 * nrows), margin={"l": 10, "r": 10, "t": 40, "b": 10})
    for ann in fig.layout.annotations:
        ann.font.size = 11
    return fig


def percent_heatmap(
    z: Any, *, scale: float | None = None, unit: str = "", **trace: Any
) -> go.Heatmap:
    """A heat map of the 2-D array ``z`` (learned weights, filters, activations) that
    costs one byte per cell in a page: each value is stored as a whole percent of
    ``scale`` (default: the largest ``|z|``), an ``int8`` that plotly sends as a typed
    array. Red is negative, blue positive, white zero; the colour range is fixed at
    -100..100 % of ``scale``, so heat maps given one ``scale`` compare directly.

    Args:
        scale: what 100 % stands for (values beyond it are clipped); share it between
            configurations to compare their sizes, leave it out to show each one's
            pattern at full contrast.
        unit: the values' unit, for the hover text ("weight").
        trace: more ``go.Heatmap`` settings (``showscale``, ``colorbar``, ``name``, ...).
    """
    values = np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"a heat map needs a 2-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("the values are not all finite numbers")
    top = float(np.abs(values).max()) if scale is None else float(scale)
    if not top > 0:
        top = 1.0  # all zeros: any scale draws them white
    percent = np.clip(np.rint(100 * values / top), -100, 100).astype(np.int8)
    what = f"{unit} " if unit else ""
    settings = {
        "colorscale": "RdBu", "zmin": -100, "zmax": 100, "zmid": 0,
        "hovertemplate": f"row %{{y}}, column %{{x}}: {what}%{{z}}% of {top:.3g}<extra></extra>",
        **trace,
    }  # fmt: skip
    return go.Heatmap(z=percent, **settings)


@dataclass(frozen=True)
class Tiling:
    """Images laid out in one array (``tile``): the array, and where each image starts
    (its top row and left column) and how large it is, for labels and checks; the
    columns and the gaps they were laid out with."""

    array: np.ndarray
    corners: list[tuple[int, int]]
    shapes: list[tuple[int, int]]
    cols: int
    row_gap: int
    col_gap: int

    def image(self, j: int) -> np.ndarray:
        """Image ``j`` as it sits in the array."""
        (top, left), (h, w) = self.corners[j], self.shapes[j]
        return self.array[top:top + h, left:left + w]

    def relaid(self, cols: int) -> Tiling:
        """The same images, with the same gaps, in ``cols`` columns (more rows for fewer
        columns: what a figure of tiles shows on a narrow screen)."""
        return tile([self.image(j) for j in range(len(self.shapes))], cols=cols,
                    row_gap=self.row_gap, col_gap=self.col_gap)  # fmt: skip


def tile(images: Sequence[Any], *, cols: int, row_gap: int = 0, col_gap: int = 0) -> Tiling:
    """Lay 2-D images out in rows of ``cols`` in one array, blank (zero) between them.

    Many small heat maps in a slider figure are slow to redraw: plotly draws each as a
    trace of its own in a subplot of its own, axes and all (ten 28 x 28 templates in a
    2 x 5 grid of subplots redrew about three times slower than the same ten tiled into
    one heat map). Tile them and draw one heat map instead. Images of different sizes
    each sit centred in a cell the size of the largest; ``row_gap`` leaves room for a
    label above each row. In a slider figure, :func:`~d2lcore.tiles.set_tiles` labels
    the tiles and lays them out in fewer columns on a narrow screen.
    """
    arrays = [np.asarray(im.detach().cpu() if isinstance(im, torch.Tensor) else im,
                         dtype=float) for im in images]  # fmt: skip
    if not arrays:
        raise ValueError("no images to tile")
    if cols < 1 or row_gap < 0 or col_gap < 0:
        raise ValueError(f"cols must be at least 1 and the gaps at least 0, got cols={cols}, "
                         f"row_gap={row_gap}, col_gap={col_gap}")
    if any(a.ndim != 2 for a in arrays):
        raise ValueError(f"each image must be 2-D, got shapes {[a.shape for a in arrays]}")
    cell_h = max(a.shape[0] for a in arrays)
    cell_w = max(a.shape[1] for a in arrays)
    rows, cols = -(-len(arrays) // cols), min(cols, len(arrays))
    out = np.zeros((rows * (cell_h + row_gap) - row_gap, cols * (cell_w + col_gap) - col_gap))
    corners = []
    for j, a in enumerate(arrays):
        top = (j // cols) * (cell_h + row_gap) + (cell_h - a.shape[0]) // 2
        left = (j % cols) * (cell_w + col_gap) + (cell_w - a.shape[1]) // 2
        out[top:top + a.shape[0], left:left + a.shape[1]] = a
        corners.append((top, left))
    return Tiling(out, corners, [(a.shape[0], a.shape[1]) for a in arrays], cols,
                  row_gap, col_gap)  # fmt: skip


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON data (what the browser receives)."""
    return json.loads(fig.to_json())


# ----------------------------------------------------------------------------------
# Axis ranges that hold still

# Traces drawn as cells (each value fills a cell centred on its coordinate) and the
# colour-scaled grids whose ``zmin``/``zmax`` fix_ranges shares. Both fill their extent
# exactly: plotly's autorange leaves no margin around them.
_CELL_TRACES = {"heatmap", "image"}
_Z_TRACES = {"heatmap", "contour"}


def _numbers(values: Any) -> np.ndarray | None:
    """``values`` as a flat float array without NaNs, or ``None`` if they are not numbers
    (category names, dates: leave such an axis to plotly)."""
    if values is None:
        return None
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    return array[np.isfinite(array)]


def _coords(trace: Any, axis: str, count: int) -> np.ndarray | None:
    """A trace's coordinates along ``axis`` ("x" or "y"): given, or ``{axis}0 + d{axis}*i``."""
    given = getattr(trace, axis, None)
    if given is not None:
        return _numbers(given)
    start = getattr(trace, f"{axis}0", None)
    step = getattr(trace, f"d{axis}", None)
    start = 0.0 if start is None or isinstance(start, str) else float(start)
    return start + (1.0 if step is None else float(step)) * np.arange(count)


def _trace_extent(trace: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The x and y values a trace covers: its points, or the edges of its cells."""
    kind = trace.type
    if kind in _CELL_TRACES or kind in _Z_TRACES:
        z = np.asarray(trace.z if trace.z is not None else [[]], dtype=object)
        rows, cols = (z.shape[0], z.shape[1]) if z.ndim >= 2 else (0, 0)
        xs, ys = _coords(trace, "x", cols), _coords(trace, "y", rows)
        if kind in _CELL_TRACES:  # each cell reaches half a step beyond its centre
            xs, ys = _cell_edges(xs), _cell_edges(ys)
        return xs, ys
    given = [g for g in (getattr(trace, "x", None), getattr(trace, "y", None)) if g is not None]
    if not given:
        return np.empty(0), np.empty(0)  # an empty trace (a run that diverged at once)
    count = len(given[0])
    return _coords(trace, "x", count), _coords(trace, "y", count)


def _cell_edges(centres: np.ndarray | None) -> np.ndarray | None:
    if centres is None or len(centres) == 0:
        return centres
    half = np.min(np.diff(np.sort(centres))) / 2 if len(centres) > 1 else 0.5
    return np.array([centres.min() - half, centres.max() + half])


def _axis_range(points: list[np.ndarray], cells: list[np.ndarray], log: bool) -> list[float] | None:
    """A range over ``points`` with a 5% margin (as plotly's autorange leaves) and over
    ``cells`` (edges of heat maps, extents of contours) exactly; in decades on a log axis."""
    ends: list[float] = []
    for arrays, margin in ((points, 0.05), (cells, 0.0)):
        values = np.concatenate(arrays) if arrays else np.empty(0)
        if log:
            values = np.log10(values[values > 0])
        if len(values) == 0:
            continue
        low, high = float(values.min()), float(values.max())
        pad = margin * (high - low) if high > low else margin * 10 * (abs(low) or 1.0)
        ends += [low - pad, high + pad]
    return [min(ends), max(ends)] if ends else None


def _axis_key(ref: str) -> str:
    """The layout key of a trace's axis reference: ``x2`` -> ``xaxis2``."""
    return f"{ref[0]}axis{ref[1:]}"


def fix_ranges(fig: go.Figure, per_config: int) -> None:
    """Fix every panel's x and y range, and each heat map's colour range, to cover all
    of ``fig``'s traces, visible or not, so showing another set does not rescale.

    Trace ``t`` plays the same part as trace ``t + per_config`` (a slider figure's
    layout): traces of one part share ``zmin``/``zmax``. Ranges the figure already sets
    (and colour ranges a trace sets) are kept. An axis with categories or dates is left
    to plotly, and so is the y axis of an image (plotly points it down).
    """
    # axis reference ("x", "y2", ...) -> (point coordinates, cell edges), over all traces
    spans: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    skip: set[str] = set()
    z_values: dict[int, list[np.ndarray]] = {}
    for t, trace in enumerate(fig.data):
        if not hasattr(trace, "xaxis"):
            continue  # pie, table, ...: no x/y axes
        xs, ys = _trace_extent(trace)
        for ref, values in ((trace.xaxis or "x", xs), (trace.yaxis or "y", ys)):
            if values is None:
                skip.add(ref)
            else:
                points, cells = spans.setdefault(ref, ([], []))
                exact = trace.type in _CELL_TRACES or trace.type in _Z_TRACES
                (cells if exact else points).append(values)
        if trace.type == "image":
            skip.add(trace.yaxis or "y")
        if trace.type in _Z_TRACES and trace.zmin is None and trace.zmax is None:
            z = _numbers(trace.z)
            if z is not None and len(z):
                z_values.setdefault(t % per_config, []).append(z)
    for t, trace in enumerate(fig.data):
        if t % per_config in z_values and trace.zmin is None and trace.zmax is None:
            zs = np.concatenate(z_values[t % per_config])
            trace.update(zmin=float(zs.min()), zmax=float(zs.max()))
    for ref, (points, cells) in spans.items():
        axis = fig.layout[_axis_key(ref)]
        if ref in skip or axis.range is not None or axis.autorange is not None:
            continue
        span = _axis_range(points, cells, axis.type == "log")
        if span is not None:
            axis.range = span
