"""A static figure with one slider per grid axis, for the built book (no kernel).

Every configuration of a grid gets its own set of traces (any plotly trace type, in
one or several panels) in one plotly figure; only the selected configuration's set is
visible. Plotly's own slider steps cannot combine several sliders, so the steps do
nothing (``method: "skip"``) and the page script ``sliders.js`` (beside this module),
called after ``Plotly.newPlot`` as ``d2lSliders.attach(id, spec)``, listens to
``plotly_sliderchange``, finds the configuration from every slider's position and
shows it. The selection is mirrored into the page's URL hash
(``#<fig_id>:lr=0.1,dropout=0.5``) so a link reopens the same configuration.

Neither plotly.js nor ``sliders.js`` needs to be in the book's HTML: the book loads
both once per page from local files (``_ext/offline_assets.py``). A figure's HTML also
carries ``sliders.js`` inline, run only where the page has not loaded it (a notebook
shown outside the book); the book removes that copy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BaseTraceType
from plotly.io.base_renderers import PlotlyRenderer
from plotly.subplots import make_subplots

from d2lcore.grid import AxisValue, Grid, GridResults, grid_configs
from d2lcore.plotting import PLOT_CONFIG, fix_ranges, script_json
from d2lcore.train import History, RunResult

#: What a slider changes, for the axis names the book uses; others read "weight decay"
#: for ``weight_decay``.
AXIS_LABELS = {
    "lr": "learning rate",
    "dropout": "dropout rate",
    "init": "initialization",
    "weight_decay": "weight decay",
    "batch_size": "batch size",
    "num_epochs": "epochs",
    "num_hiddens": "hidden units",
}

TRAIN_COLOR, VAL_COLOR, ACC_COLOR = "#1f77b4", "#1f77b4", "#d62728"
DIVERGED_COLOR = "#c0392b"

# Layout in pixels: the plot area, and the room below it for the x-axis title and
# for each slider (its current value above the rail, step labels below).
_TOP, _PLOT_H, _BELOW_PLOT, _SLIDER_H = 158, 300, 70, 82


def axis_label(name: str, labels: Mapping[str, str] | None = None) -> str:
    """What the axis ``name`` changes, in words ("learning rate" for ``lr``)."""
    if labels and name in labels:
        return labels[name]
    return AXIS_LABELS.get(name, name.replace("_", " "))


def format_value(value: AxisValue) -> str:
    """A short, URL-safe-ish text for an axis value: ``0.1``, ``1e-05``, ``xavier_normal``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _value_texts(name: str, values: list[AxisValue]) -> list[str]:
    texts = [format_value(v) for v in values]
    if len(set(texts)) < len(texts):  # values closer than 6 digits: fall back to repr
        texts = [repr(v) if isinstance(v, float) else format_value(v) for v in values]
    if len(set(texts)) < len(texts):
        raise ValueError(f"axis {name!r} has repeated values: {values}")
    return texts


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_fig_id(title: str, axes: Mapping[str, Any]) -> str:
    """A stable id from the title and axis names: a readable slug, then a short digest of
    the full title and the names, so titles that differ only beyond the slug's 40
    characters or in non-ASCII letters ("Loss (α)", "Loss (β)") get different ids.
    The same inputs give the same id in every build; axis values are left out, so a
    link still fits when a build profile trains other values."""
    names = [str(n) for n in axes]
    digest = hashlib.sha256("\x1f".join([title, *names]).encode()).hexdigest()[:8]
    slug = "-".join(filter(None, [_slug(title)[:40], *(_slug(n)[:20] for n in names)]))
    if not slug or not slug[0].isalpha():
        slug = "fig-" + slug  # an id starts with a letter
    return f"{slug.rstrip('-')}-{digest}"


def _round(xs: list[float], digits: int = 5) -> list[float]:
    # ~5 significant digits: the page embeds every configuration's curves.
    return [float(f"{x:.{digits}g}") for x in xs]


def _fmt_loss(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _fmt_acc(x: float) -> str:
    return f"{100 * x:.2f}%"


def describe_config(
    config: Mapping[str, AxisValue], labels: Mapping[str, str] | None = None
) -> str:
    """A configuration in words: "learning rate 0.1, dropout rate 0.5". The one place
    that says it, for the slider readouts and the live controls alike."""
    return ", ".join(f"{axis_label(k, labels)} {format_value(v)}" for k, v in config.items())


def readout(run: RunResult, labels: Mapping[str, str] | None = None) -> str:
    """The text above the panels for one configuration: its final numbers, or where it
    diverged. Up to three lines of plotly's HTML subset."""
    config = html.escape(describe_config(run.config, labels), quote=False)
    h = run.history
    if h.diverged:
        line = (f"diverged at epoch {h.diverged_epoch} (the loss stopped being a finite "
                f"number); {h.num_epochs} epochs recorded before")  # fmt: skip
    else:
        line = f"after {h.num_epochs} epochs: train loss {_fmt_loss(h.final()['train_loss'])}"
        if h.val_loss:
            line += f", validation loss {_fmt_loss(h.val_loss[-1])}"
        # Accuracies on a line of their own, so the readout fits a phone's width.
        accuracies = [f"validation accuracy {_fmt_acc(h.val_acc[-1])}"] if h.val_acc else []
        if run.test_acc is not None:
            accuracies.append(f"test accuracy {_fmt_acc(run.test_acc)}")
        if accuracies:
            line += "<br>" + ", ".join(accuracies)
    return f"<b>{config}</b><br>{line}"


def _diverged_text(h: History) -> str:
    return f"diverged at epoch {h.diverged_epoch}" if h.diverged else ""


#: The page script, a static file beside this module (package data).
SLIDERS_JS = Path(__file__).with_name("sliders.js")


@functools.cache
def sliders_program() -> str:
    """The text of ``sliders.js``: what the book serves once per page, and what a figure
    carries inline for pages that do not load it."""
    text = SLIDERS_JS.read_text(encoding="utf-8")
    if re.search(r"</script|<!--", text, re.IGNORECASE):
        raise ValueError(f"{SLIDERS_JS} cannot be inlined in a <script> block")
    return text


@dataclass(frozen=True)
class SliderSpec:
    """What the page script needs to switch one figure's configurations (its JSON is
    the second argument of ``d2lSliders.attach``).

    Trace ``t`` belongs to configuration ``t // per_config``; the configuration at
    slider positions ``a`` is ``sum(a[i] * strides[i])``, with the strides of
    :class:`~d2lcore.grid.Grid` (the script never computes the order on its own).
    """

    id: str  #: the div id and the URL-hash key
    names: list[str]  #: axis names, one slider each
    values: list[list[str]]  #: each axis' step labels (as in the URL hash)
    strides: list[int]  #: from :attr:`Grid.strides`
    per_config: int  #: traces per configuration
    readouts: list[str]  #: the readout text of each configuration
    diverged: list[str]  #: "diverged at epoch n" or "" per configuration
    readout_annotation: int  #: the index of the readout in ``layout.annotations``
    diverged_annotations: list[int]  #: the panels' "diverged" marks

    def to_json(self) -> str:
        """The spec as JSON that is safe inside a ``<script>`` block."""
        return script_json(dataclasses.asdict(self))


@dataclass
class SliderFigure:
    """A grid's figure with its sliders; shows itself in Jupyter and in the book.

    ``figure`` is the plotly figure (the default configuration visible); ``spec`` is
    what the page script needs.
    """

    figure: go.Figure
    fig_id: str
    spec: SliderSpec

    def script(self) -> str:
        """The JavaScript run after ``Plotly.newPlot``; ``{plot_id}`` is the div's id.

        ``sliders.js`` first (it does nothing where the page has loaded it already),
        then one call that attaches the sliders to this figure.
        """
        attach = f"window.d2lSliders.attach('{{plot_id}}', {self.spec.to_json()});"
        return f"{sliders_program()}\n{attach}"

    def to_html(self) -> str:
        """The figure's ``div`` and scripts, without plotly.js (the page loads it)."""
        return pio.to_html(
            self.figure,
            include_plotlyjs=False,
            include_mathjax=False,
            full_html=False,
            div_id=self.fig_id,
            post_script=self.script(),
            config=PLOT_CONFIG,
            default_width="100%",
            validate=False,
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        # JupyterLab renders the plotly mime type (the default configuration; the live
        # controls are the interactive part there); the built book keeps text/html.
        bundle = PlotlyRenderer(config=PLOT_CONFIG).to_mimebundle(self.figure.to_dict())
        bundle["text/html"] = self.to_html()
        return bundle


def slider_figure(
    results: GridResults,
    *,
    title: str,
    default: Mapping[str, AxisValue] | None = None,
    axis_labels: Mapping[str, str] | None = None,
    fig_id: str | None = None,
    log_y: bool = False,
    fixed_ranges: bool = False,
) -> SliderFigure:
    """One figure with a trace set per configuration of ``results`` and a slider per axis.

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
    """
    axes = {name: list(values) for name, values in results.axes.items()}
    texts = {name: _value_texts(name, values) for name, values in axes.items()}
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

    # Annotations after the subplot titles: the readout, then a "diverged" mark per panel.
    readouts = [readout(r, axis_labels) for r in runs]
    diverged = [_diverged_text(r.history) for r in runs]
    first = len(fig.layout.annotations)
    fig.add_annotation(
        name="readout", text=readouts[shown], xref="paper", yref="paper", x=0, y=1, yshift=34,
        xanchor="left", yanchor="bottom", align="left", showarrow=False, font={"size": 13},
    )  # fmt: skip
    for col in range(1, cols + 1):
        suffix = "" if col == 1 else str(col)
        fig.add_annotation(
            name="diverged", text=diverged[shown], visible=bool(diverged[shown]),
            xref=f"x{suffix} domain", yref=f"y{suffix} domain", x=0.5, y=0.5, showarrow=False,
            font={"size": 20, "color": DIVERGED_COLOR}, bgcolor="rgba(255,255,255,0.85)",
            bordercolor=DIVERGED_COLOR, borderwidth=2, borderpad=6,
        )  # fmt: skip

    max_epochs = max((r.history.num_epochs for r in runs), default=1)
    fig.update_xaxes(title_text="epoch", range=[0.8, max(max_epochs, 2) + 0.2])
    fig.update_yaxes(title_text="loss (log scale)" if log_y else "loss", row=1, col=1,
                     type="log" if log_y else "linear", exponentformat="power")
    if has_acc:
        fig.update_yaxes(title_text="accuracy", row=1, col=2)

    return _finish_figure(
        fig, title=title, axes=axes, texts=texts, active=active, axis_labels=axis_labels,
        fig_id=fig_id, per_config=per_config, readouts=readouts, diverged=diverged,
        readout_annotation=first,
        diverged_annotations=list(range(first + 1, first + 1 + cols)),
        fixed_ranges=fixed_ranges,
    )  # fmt: skip


def _finish_figure(
    fig: go.Figure,
    *,
    title: str,
    axes: Mapping[str, list[AxisValue]],
    texts: Mapping[str, list[str]],
    active: list[int],
    axis_labels: Mapping[str, str] | None,
    fig_id: str | None,
    per_config: int,
    readouts: list[str],
    diverged: list[str],
    readout_annotation: int,
    diverged_annotations: list[int],
    fixed_ranges: bool,
    plot_h: int = _PLOT_H,
) -> SliderFigure:
    """Lay out a figure whose traces and annotations are in place (title, sliders stacked
    below the plot, legend, margins), check or derive its id and build the page
    script's spec: the part :func:`slider_figure` and :func:`trace_slider_figure` share.

    ``readouts`` and ``diverged`` hold a text per configuration; the annotation indices
    say which of ``fig``'s annotations the page script rewrites; ``plot_h`` is the plot
    area's height in pixels (all rows of panels).
    """
    names = list(axes)
    bottom = _BELOW_PLOT + len(names) * _SLIDER_H
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "y": 0.99, "yanchor": "top"},
        sliders=_sliders(axes, texts, active, axis_labels, plot_h),
        height=_TOP + plot_h + bottom,
        margin={"t": _TOP, "b": bottom, "l": 60, "r": 20},
        # A row of its own between the title and the readout.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1 + 94 / plot_h,
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
        diverged=diverged, readout_annotation=readout_annotation,
        diverged_annotations=diverged_annotations,
    )  # fmt: skip
    return SliderFigure(figure=fig, fig_id=fig_id, spec=spec)


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
    texts = {name: _value_texts(name, values) for name, values in grid_axes.items()}
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
        extra = readouts[k] if readouts is not None else ""
        lines.append(f"<b>{what}</b>" + (f"<br>{extra}" if extra else ""))
    first = len(fig.layout.annotations)  # after the panels' titles
    fig.add_annotation(
        name="readout", text=lines[shown], xref="paper", yref="paper", x=0, y=1, yshift=34,
        xanchor="left", yanchor="bottom", align="left", showarrow=False, font={"size": 13},
    )  # fmt: skip
    cells = [(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]
    x_titles = _per_panel(xaxis_title, len(cells), "x-axis titles")
    y_titles = _per_panel(yaxis_title, len(cells), "y-axis titles")
    for (row, col), x_title, y_title in zip(cells, x_titles, y_titles, strict=True):
        where = {"row": row, "col": col} if several else {}
        fig.update_xaxes(title_text=x_title, **where)
        fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear",
                         exponentformat="power", **where)  # fmt: skip
    return _finish_figure(
        fig, title=title, axes=grid_axes, texts=texts, active=active,
        axis_labels=axis_labels, fig_id=fig_id, per_config=per_config, readouts=lines,
        diverged=[""] * len(configs), readout_annotation=first, diverged_annotations=[],
        fixed_ranges=fixed_ranges, plot_h=plot_height or _PLOT_H * rows,
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


def _sliders(
    axes: Mapping[str, list[AxisValue]],
    texts: Mapping[str, list[str]],
    active: list[int],
    axis_labels: Mapping[str, str] | None,
    plot_h: int = _PLOT_H,
) -> list[dict[str, Any]]:
    """plotly slider specs, one per axis, stacked below the plot (as :func:`slider_figure`
    lays them out); the page script does the switching (``method: skip``)."""
    sliders = []
    for i, name in enumerate(axes):
        sliders.append({
            "active": active[i],
            "currentvalue": {"prefix": f"{axis_label(name, axis_labels)}: ",
                             "font": {"size": 13}},
            "steps": [{"label": t, "value": t, "method": "skip"} for t in texts[name]],
            "x": 0.02, "len": 0.96, "xanchor": "left",  # room for the end labels
            "y": -(_BELOW_PLOT + i * _SLIDER_H) / plot_h, "yanchor": "top",
            "pad": {"t": 0, "b": 0},
            "name": name,
        })  # fmt: skip
    return sliders
