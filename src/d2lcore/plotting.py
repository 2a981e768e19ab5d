"""Plotly figures for training histories and images, and the renderer the book needs.

Why a renderer of our own: plotly 6+ run under nbclient emits only its own mime type,
which the book's builder (myst-nb) drops, so figures would vanish silently from the
built HTML. :func:`use_book_renderer` makes every figure carry ``text/html`` (a ``div``
and a ``Plotly.newPlot`` call, without plotly.js inlined) beside the plotly mime type,
which JupyterLab renders. The book loads ``plotly.min.js`` once per page, from a
local file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.io.base_renderers import PlotlyRenderer
from plotly.subplots import make_subplots

from d2lcore.train import History

BOOK_RENDERER = "d2lbook"
#: Plotly configuration of every figure: no logo, no round trip to plotly's servers.
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class BookRenderer(PlotlyRenderer):
    """The plotly mime type (for Jupyter) plus ``text/html`` (for the built book)."""

    def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, Any]:
        bundle = super().to_mimebundle(fig_dict)
        bundle["text/html"] = pio.to_html(
            fig_dict,
            include_plotlyjs=False,  # loaded once per page by the book
            include_mathjax=False,
            full_html=False,
            config=PLOT_CONFIG,
            default_width="100%",
            validate=False,
        )
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


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON data (what the browser receives)."""
    return json.loads(fig.to_json())
