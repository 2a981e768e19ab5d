"""Slider figures: a grid's precomputed runs (or any precomputed trace sets) in one
figure with a control per grid axis, for the built book (no kernel).

Every configuration of a grid gets its own set of traces (any plotly trace type, in
one or several panels); the page shows the selected configuration's set. The figure is a
:class:`~d2lcore.figure_page.PageFigure` of kind "sliders": HTML controls (one range input
per axis), a readout per configuration and the page script ``figure.js``, which switches
the traces, mirrors the selection into the page's URL hash
(``#<fig_id>:lr=0.1,dropout=0.5``) so a link reopens the same configuration, and stacks
the panels on a phone. :func:`d2lcore.tiles.set_tiles` shows a figure's heat maps of
tiled images (templates, filters) as labelled images that go in fewer columns on a phone.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import plotly.graph_objects as go
from plotly.basedatatypes import BaseTraceType
from plotly.subplots import make_subplots

from d2lcore.figure_page import (
    BELOW_PLOT,
    SIDE_MARGINS,
    PageFigure,
    Panels,
    Tiles,
    controls_for,
    subset_html,
)
from d2lcore.figure_text import (
    axis_label,
    default_fig_id,
    describe_config,
    diverged_text,
    grid_in_words,
    readout,
    value_texts,
)
from d2lcore.grid import AxisValue, Grid, GridResults, grid_configs
from d2lcore.plotting import fix_ranges

TRAIN_COLOR, VAL_COLOR, ACC_COLOR = "#1f77b4", "#1f77b4", "#d62728"
DIVERGED_COLOR = "#c0392b"

# Layout in pixels: the plot area and the room above it for the panels' titles (below
# it and beside it: figure_page.BELOW_PLOT and SIDE_MARGINS).
_PLOT_H, _TITLES = 300, 34


def _round(xs: list[float], digits: int = 5) -> list[float]:
    # ~5 significant digits: the page embeds every configuration's curves.
    return [float(f"{x:.{digits}g}") for x in xs]


@dataclass(frozen=True)
class SliderSpec:
    """What the page script's "sliders" kind needs to switch one figure's
    configurations (``figure.js``).

    Trace ``t`` belongs to configuration ``t // per_config``; the configuration at
    control steps ``a`` is ``sum(a[i] * strides[i])``, with the strides of
    :class:`~d2lcore.grid.Grid` (the script never computes the order on its own).
    """

    id: str  #: the div id and the URL-hash key
    names: list[str]  #: axis names, one control each
    values: list[list[str]]  #: each axis' step labels (as in the URL hash)
    strides: list[int]  #: from :attr:`Grid.strides`
    per_config: int  #: traces per configuration
    readouts: list[str]  #: the readout text of each configuration
    diverged: list[str]  #: "diverged at epoch n" or "" per configuration
    diverged_annotations: list[int]  #: the panels' "diverged" marks
    tiles: Tiles | None = None  #: where the tiled images are (:func:`d2lcore.tiles.set_tiles`)


#: What :func:`slider_figure` and :func:`trace_slider_figure` return.
SliderFigure: TypeAlias = PageFigure


def slider_figure(
    results: GridResults,
    *,
    title: str,
    default: Mapping[str, AxisValue] | None = None,
    axis_labels: Mapping[str, str] | None = None,
    fig_id: str | None = None,
    log_y: bool = False,
    fixed_ranges: bool = False,
    caption: str | None = None,
) -> SliderFigure:
    """One figure with a trace set per configuration of ``results`` and a control per axis.

    Args:
        results: the grid; its runs are in ``itertools.product`` order of its axes.
        title: the figure's title.
        default: the configuration shown first (axes left out take their first value).
        axis_labels: what each slider changes, e.g. ``{"lr": "learning rate"}``; names
            the book uses have labels already.
        fig_id: the div id and URL-hash key; derived from the title and axis names if
            not given. Two figures with the same title and axes on one page need ids.
        log_y: draw the loss on a log scale (regression losses span many decades).
        fixed_ranges: keep the y axes (loss, accuracy) still while the sliders move,
            covering every configuration, so runs compare at a glance.
        caption: what the figure shows, in a sentence or two (read before the plot,
            also by a screen reader); a sentence naming the panels and axes by default.
    """
    axes = {name: list(values) for name, values in results.axes.items()}
    texts = {name: value_texts(name, values) for name, values in axes.items()}
    active = _active_steps(axes, default)
    shown = _config_index(axes, active)

    runs = results.runs
    has_val = any(r.history.val_loss for r in runs)
    has_acc = any(r.history.val_acc for r in runs)
    cols = 2 if has_acc else 1
    fig = make_subplots(
        rows=1, cols=cols, subplot_titles=["loss", "validation accuracy"][:cols],
        horizontal_spacing=0.12,
    )  # fmt: skip
    for k, run in enumerate(runs):
        h, visible = run.history, k == shown
        # Every configuration gets the same traces (empty where a run has none), so
        # trace k * per_config + t belongs to configuration k.
        fig.add_trace(
            go.Scatter(y=_round(h.train_loss), x0=1, dx=1, name="train loss", mode="lines",
                       line={"color": TRAIN_COLOR}, visible=visible),
            row=1, col=1,
        )  # fmt: skip
        if has_val:
            fig.add_trace(
                go.Scatter(y=_round(h.val_loss), x0=1, dx=1, name="validation loss",
                           mode="lines", line={"color": VAL_COLOR, "dash": "dash"},
                           visible=visible),
                row=1, col=1,
            )  # fmt: skip
        if has_acc:
            fig.add_trace(
                go.Scatter(y=_round(h.val_acc), x0=1, dx=1, name="validation accuracy",
                           mode="lines", line={"color": ACC_COLOR}, visible=visible),
                row=1, col=2,
            )  # fmt: skip
    per_config = 1 + has_val + has_acc

    # Annotations after the subplot titles: a "diverged" mark per panel.
    readouts = [readout(r, axis_labels) for r in runs]
    diverged = [diverged_text(r.history) for r in runs]
    first = len(fig.layout.annotations)
    for col in range(1, cols + 1):
        suffix = "" if col == 1 else str(col)
        fig.add_annotation(
            name="diverged", text=diverged[shown], visible=bool(diverged[shown]),
            xref=f"x{suffix} domain", yref=f"y{suffix} domain", x=0.5, y=0.5, showarrow=False,
            font={"size": 20, "color": DIVERGED_COLOR}, bgcolor="rgba(255,255,255,0.85)",
            bordercolor=DIVERGED_COLOR, borderwidth=2, borderpad=6,
        )  # fmt: skip
    if caption is None:
        curves = "training and validation loss" if has_val else "training loss"
        accuracy = " (left) and the validation accuracy (right)" if has_acc else ""
        runs_in_words = grid_in_words(axes, axis_labels, "runs", "trained")
        caption = f"The {curves} per epoch{accuracy} of {runs_in_words}."

    max_epochs = max((r.history.num_epochs for r in runs), default=1)
    fig.update_xaxes(title_text="epoch", range=[0.8, max(max_epochs, 2) + 0.2])
    fig.update_yaxes(title_text="loss (log scale)" if log_y else "loss", row=1, col=1,
                     type="log" if log_y else "linear", exponentformat="power")
    if has_acc:
        fig.update_yaxes(title_text="accuracy", row=1, col=2)

    return _finish_figure(
        fig, title=title, caption=caption, axes=axes, texts=texts, active=active,
        axis_labels=axis_labels, fig_id=fig_id, per_config=per_config, readouts=readouts,
        diverged=diverged, diverged_annotations=list(range(first, first + cols)),
        fixed_ranges=fixed_ranges, plot_h=_PLOT_H,
    )  # fmt: skip


def _finish_figure(
    fig: go.Figure,
    *,
    title: str,
    caption: str,
    axes: Mapping[str, list[AxisValue]],
    texts: Mapping[str, list[str]],
    active: list[int],
    axis_labels: Mapping[str, str] | None,
    fig_id: str | None,
    per_config: int,
    readouts: list[str],
    diverged: list[str],
    diverged_annotations: list[int],
    fixed_ranges: bool,
    plot_h: int,
) -> SliderFigure:
    """Lay out a figure whose traces and annotations are in place (legend below the plot,
    margins), check or derive its id and build the page script's spec: the part
    :func:`slider_figure` and :func:`trace_slider_figure` share.

    ``readouts`` and ``diverged`` hold a text per configuration; the annotation indices
    say which of ``fig``'s annotations the page script rewrites; ``plot_h`` is the plot
    area's height in pixels (all rows of panels).
    """
    names = list(axes)
    panels = Panels.of(fig.layout.to_plotly_json(), plot_h)
    top = _TITLES if panels and any(cell[2] >= 0 for cell in panels.cells) else 12
    fig.update_layout(
        height=top + plot_h + BELOW_PLOT,
        margin={"t": top, "b": BELOW_PLOT, **SIDE_MARGINS},
        # Below the plot, under the x axes' titles, where it wraps on a narrow screen.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yref": "container",
                "yanchor": "bottom"},
        showlegend=True,  # also when a configuration has a single trace
        template="plotly_white",
    )  # fmt: skip
    if fixed_ranges:
        fix_ranges(fig, per_config)
    fig_id = fig_id or default_fig_id(title, axes)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", fig_id):
        raise ValueError(f"fig_id {fig_id!r}: use letters, digits, '-' and '_' only")
    spec = SliderSpec(
        id=fig_id, names=names, values=[texts[n] for n in names],
        strides=Grid(axes).strides, per_config=per_config, readouts=readouts,
        diverged=diverged, diverged_annotations=diverged_annotations,
    )  # fmt: skip
    controls = controls_for(texts, active, [axis_label(n, axis_labels) for n in names])
    return PageFigure(
        figure=fig, fig_id=fig_id, kind="sliders", title=title, caption=caption,
        controls=controls, readout=readouts[_config_index(axes, active)], spec=spec,
    )  # fmt: skip


# ----------------------------------------------------------------------------------
# Any precomputed trace sets, not only training histories

Trace: TypeAlias = BaseTraceType | Mapping[str, Any]
Panel: TypeAlias = tuple[int, int]


def _copy_trace(trace: Trace) -> BaseTraceType:
    """A new trace object (the caller's stays as it was); a dict names its ``type``."""
    if isinstance(trace, BaseTraceType):
        return type(trace)(trace)
    return go.Figure(data=[dict(trace)]).data[0]


def _per_panel(titles: str | Sequence[str], count: int, what: str) -> list[str]:
    if isinstance(titles, str):
        return [titles] * count
    if len(titles) != count:
        raise ValueError(f"{len(titles)} {what} for {count} panels")
    return list(titles)


def trace_slider_figure(
    axes: Mapping[str, Sequence[AxisValue]],
    traces: Sequence[Sequence[Trace]],
    *,
    title: str,
    xaxis_title: str | Sequence[str],
    yaxis_title: str | Sequence[str],
    readouts: Sequence[str] | None = None,
    default: Mapping[str, AxisValue] | None = None,
    axis_labels: Mapping[str, str] | None = None,
    fig_id: str | None = None,
    log_y: bool = False,
    panels: Panel = (1, 1),
    trace_panels: Sequence[Panel] | None = None,
    panel_titles: Sequence[str] | None = None,
    fixed_ranges: bool = False,
    plot_height: int | None = None,
    caption: str | None = None,
) -> SliderFigure:
    """One figure with a slider per axis that switches between precomputed trace sets:
    :func:`slider_figure` for results that are not training histories (a decision
    boundary, an attention map, statistics per layer, a function per activation, ...).
    Same page script, URL hash and readout.

    Args:
        axes: each axis' values, e.g. ``{"depth": [10, 20], "init": ["zeros", ...]}``.
        traces: one list of traces per configuration, in :class:`~d2lcore.grid.Grid`
            order (the last axis varies fastest); every list has the same length, and
            trace ``t`` of every list plays the same part (same name in the legend, same
            panel). Any plotly trace (``go.Scatter``, ``go.Heatmap``, ``go.Contour``,
            ``go.Image``, ...) or a dict with its ``type``.
        title: the figure's title.
        xaxis_title, yaxis_title: the axes' titles, with units: one for every panel, or
            one per panel (row by row).
        readouts: a line (plotly's HTML subset) per configuration, shown under the
            configuration's values above the plot.
        default: the configuration shown first (axes left out take their first value).
        axis_labels: what each slider changes.
        fig_id: the div id and URL-hash key (derived from the title and axis names).
        log_y: logarithmic y axes.
        panels: ``(rows, cols)`` of panels (subplots), e.g. ``(1, 2)`` for a heat map
            beside a loss curve.
        trace_panels: the ``(row, col)`` (from 1) of trace ``t`` of every set; without
            it, traces stay on the axes they name (``xaxis="x2"``), the first panel by
            default.
        panel_titles: a title above each panel (row by row).
        fixed_ranges: fix each panel's x and y ranges, and each heat map's colour range
            (``zmin``/``zmax``, shared by trace ``t`` of every set), to cover every
            configuration, so moving a slider does not rescale the plot.
        plot_height: the plot area's height in pixels, all rows of panels together
            (default 300 a row); lower it for rows of small square panels (images).
        caption: what the figure shows, in a sentence or two (read before the plot,
            also by a screen reader); the title and the grid in words by default.
    """
    grid_axes = {name: list(values) for name, values in axes.items()}
    configs = grid_configs(grid_axes)
    if len(traces) != len(configs):
        raise ValueError(f"{len(traces)} trace sets for a grid of {len(configs)} configurations")
    per_config = len(traces[0]) if traces else 0
    if per_config == 0 or any(len(t) != per_config for t in traces):
        raise ValueError("every configuration needs the same, non-zero number of traces")
    if readouts is not None and len(readouts) != len(configs):
        raise ValueError(f"{len(readouts)} readouts for {len(configs)} configurations")
    rows, cols = panels
    if trace_panels is not None and len(trace_panels) != per_config:
        raise ValueError(f"{len(trace_panels)} trace panels for {per_config} traces a set")
    for row, col in trace_panels or []:
        if not (1 <= row <= rows and 1 <= col <= cols):
            raise ValueError(f"panel ({row}, {col}) is outside the {rows} x {cols} panels")
    if plot_height is not None and plot_height < 100:
        raise ValueError(f"plot_height={plot_height}: the plot needs at least 100 pixels")
    texts = {name: value_texts(name, values) for name, values in grid_axes.items()}
    active = _active_steps(grid_axes, default)
    shown = _config_index(grid_axes, active)

    several = rows * cols > 1
    # Many columns of panels (images) get narrower gaps, or the gaps take the width.
    fig = (make_subplots(rows=rows, cols=cols, subplot_titles=panel_titles,
                         horizontal_spacing=min(0.12, 0.24 / max(cols - 1, 1)),
                         vertical_spacing=0.18)
           if several else go.Figure())  # fmt: skip
    for k, trace_set in enumerate(traces):
        for t, trace in enumerate(trace_set):
            copy = _copy_trace(trace)
            copy.visible = k == shown
            if trace_panels is not None and several:
                fig.add_trace(copy, row=trace_panels[t][0], col=trace_panels[t][1])
            else:
                fig.add_trace(copy)
    lines = []
    for k, config in enumerate(configs):
        what = html.escape(describe_config(config, axis_labels), quote=False)
        extra = subset_html(readouts[k]) if readouts is not None else ""
        lines.append(f"<b>{what}</b>" + (f"<br>{extra}" if extra else ""))
    if caption is None:
        caption = f"{title}: {grid_in_words(grid_axes, axis_labels, 'cases', 'computed')}."
    cells = [(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]
    x_titles = _per_panel(xaxis_title, len(cells), "x-axis titles")
    y_titles = _per_panel(yaxis_title, len(cells), "y-axis titles")
    for (row, col), x_title, y_title in zip(cells, x_titles, y_titles, strict=True):
        where = {"row": row, "col": col} if several else {}
        fig.update_xaxes(title_text=x_title, **where)
        fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear",
                         exponentformat="power", **where)  # fmt: skip
    return _finish_figure(
        fig, title=title, caption=caption, axes=grid_axes, texts=texts, active=active,
        axis_labels=axis_labels, fig_id=fig_id, per_config=per_config, readouts=lines,
        diverged=[""] * len(configs), diverged_annotations=[], fixed_ranges=fixed_ranges,
        plot_h=plot_height or _PLOT_H * rows,
    )  # fmt: skip


def _active_steps(
    axes: Mapping[str, list[AxisValue]], default: Mapping[str, AxisValue] | None
) -> list[int]:
    """The step of each slider that ``default`` selects (first values where left out)."""
    chosen = dict(default or {})
    unknown = set(chosen) - set(axes)
    if unknown:
        raise KeyError(f"default names axes {sorted(unknown)} that the grid does not have")
    active = []
    for name, values in axes.items():
        value = chosen.get(name, values[0])
        if value not in values:
            raise KeyError(f"default {name}={value!r} is not in the grid; values: {values}")
        active.append(values.index(value))
    return active


def _config_index(axes: Mapping[str, list[AxisValue]], active: list[int]) -> int:
    """The configuration's position in :class:`~d2lcore.grid.Grid` order for the slider
    steps ``active``."""
    return Grid(axes).index_of_steps(active)
