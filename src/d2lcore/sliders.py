"""A static figure with one slider per grid axis, for the built book (no kernel).

Every configuration of a :class:`~d2lcore.sweep.GridResults` gets its own set of
traces in one plotly figure; only the selected configuration's set is visible.
Plotly's own slider steps cannot combine several sliders, so the steps do nothing
(``method: "skip"``) and a small script, run after ``Plotly.newPlot``, listens to
``plotly_sliderchange``, works out the combination from every slider's position and
shows it. The selection is mirrored into the page's URL hash
(``#<fig_id>:lr=0.1,dropout=0.5``) so a link reopens the same configuration.

plotly.js itself is not in the HTML: the book loads it once per page from a local
file (see ``_ext/offline_assets.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import PlotlyRenderer
from plotly.subplots import make_subplots

from d2lcore.grid import AxisValue, Grid, GridResults, grid_configs
from d2lcore.plotting import PLOT_CONFIG
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
    """A stable id from the title and axis names (same inputs, same id, every build)."""
    slug = "-".join(filter(None, [_slug(title)[:40], *(_slug(n) for n in axes)]))
    if not slug or not slug[0].isalpha():
        # An id must start with a letter; a digest keeps it stable and distinct.
        slug = "fig-" + (slug or hashlib.sha1(title.encode()).hexdigest()[:8])
    return slug


def _round(xs: list[float], digits: int = 5) -> list[float]:
    # ~5 significant digits: the page embeds every configuration's curves.
    return [float(f"{x:.{digits}g}") for x in xs]


def _fmt_loss(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _fmt_acc(x: float) -> str:
    return f"{100 * x:.2f}%"


def readout(run: RunResult, labels: Mapping[str, str] | None = None) -> str:
    """The text above the panels for one configuration: its final numbers, or where it
    diverged. Up to three lines of plotly's HTML subset."""
    config = ", ".join(f"{axis_label(k, labels)} {format_value(v)}" for k, v in run.config.items())
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


@dataclass
class SliderFigure:
    """A grid's figure with its sliders; shows itself in Jupyter and in the book.

    ``figure`` is the plotly figure (the default configuration visible); ``spec`` is
    what the page script needs (axis names and values, readouts, annotation indices).
    """

    figure: go.Figure
    fig_id: str
    spec: dict[str, Any]

    def script(self) -> str:
        """The JavaScript run after ``Plotly.newPlot``; ``{plot_id}`` is the div's id."""
        return _SCRIPT.replace("__SPEC__", json.dumps(self.spec, separators=(",", ":")))

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
) -> SliderFigure:
    """Lay out a figure whose traces and annotations are in place (title, sliders stacked
    below the plot, legend, margins), check or derive its id and build the page
    script's spec: the part :func:`slider_figure` and :func:`trace_slider_figure` share.

    ``readouts`` and ``diverged`` hold a text per configuration; the annotation indices
    say which of ``fig``'s annotations the page script rewrites.
    """
    names = list(axes)
    bottom = _BELOW_PLOT + len(names) * _SLIDER_H
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "y": 0.99, "yanchor": "top"},
        sliders=_sliders(axes, texts, active, axis_labels),
        height=_TOP + _PLOT_H + bottom,
        margin={"t": _TOP, "b": bottom, "l": 60, "r": 20},
        # A row of its own between the title and the readout.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1 + 94 / _PLOT_H,
                "yanchor": "bottom"},
        showlegend=True,  # also when a configuration has a single trace
        template="plotly_white",
    )  # fmt: skip
    fig_id = fig_id or default_fig_id(title, axes)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", fig_id):
        raise ValueError(f"fig_id {fig_id!r}: use letters, digits, '-' and '_' only")
    spec = {
        "id": fig_id,
        "names": names,
        "values": [texts[n] for n in names],
        # The grid's order, from Grid: the script never computes it on its own.
        "strides": Grid(axes).strides,
        "perConfig": per_config,
        "readouts": readouts,
        "diverged": diverged,
        "readoutAnnotation": readout_annotation,
        "divergedAnnotations": diverged_annotations,
    }
    return SliderFigure(figure=fig, fig_id=fig_id, spec=spec)


# Runs inside ``Plotly.newPlot(...).then(...)``; plotly.py puts the div's id in {plot_id}.
_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var S = __SPEC__;
var sizes = S.values.map(function (v) { return v.length; });
var shown = -1;
function actives() {
  return gd.layout.sliders.map(function (s) { return s.active || 0; });
}
function flat(a) {
  var k = 0;
  for (var i = 0; i < a.length; i++) { k += a[i] * S.strides[i]; }
  return k;
}
function show(a, moveSliders) {
  var k = flat(a);
  if (k === shown && !moveSliders) { return; }
  shown = k;
  var n = sizes.reduce(function (x, y) { return x * y; }, 1) * S.perConfig;
  var vis = [];
  for (var t = 0; t < n; t++) { vis.push(Math.floor(t / S.perConfig) === k); }
  var lay = {};
  lay['annotations[' + S.readoutAnnotation + '].text'] = S.readouts[k];
  S.divergedAnnotations.forEach(function (j) {
    lay['annotations[' + j + '].text'] = S.diverged[k];
    lay['annotations[' + j + '].visible'] = S.diverged[k] !== '';
  });
  if (moveSliders) {
    a.forEach(function (v, i) { lay['sliders[' + i + '].active'] = v; });
  }
  Plotly.update(gd, {visible: vis}, lay);
}
function hashParts() {
  var h = window.location.hash.replace(/^#/, '');
  return h ? h.split('&') : [];
}
function mine(part) { return part.indexOf(S.id + ':') === 0; }
function fromHash() {
  var part = hashParts().filter(mine)[0];
  if (!part) { return null; }
  var a = actives();
  part.slice(S.id.length + 1).split(',').forEach(function (kv) {
    var eq = kv.indexOf('=');
    var name = kv.slice(0, eq), value = kv.slice(eq + 1);
    try { name = decodeURIComponent(name); value = decodeURIComponent(value); } catch (e) {}
    var i = S.names.indexOf(name);
    if (i < 0) { return; }
    var j = S.values[i].indexOf(value);
    if (j < 0 && value !== '' && !isNaN(Number(value))) {
      // 0.10 and 0.1 name the same learning rate.
      j = S.values[i].map(Number).indexOf(Number(value));
    }
    if (j >= 0) { a[i] = j; }
  });
  return a;
}
function toHash(a) {
  var part = S.id + ':' + S.names.map(function (name, i) {
    return encodeURIComponent(name) + '=' + encodeURIComponent(S.values[i][a[i]]);
  }).join(',');
  var parts = hashParts(), found = false;
  // Other figures' selections (and plain anchors) stay as they were.
  parts = parts.map(function (p) { if (mine(p)) { found = true; return part; } return p; });
  if (!found) { parts.push(part); }
  var url = window.location.href.replace(/#.*$/, '') + '#' + parts.join('&');
  if (window.history && window.history.replaceState) {
    window.history.replaceState(window.history.state, '', url);
  } else {
    window.location.hash = parts.join('&');
  }
}
function restore() {
  var a = fromHash();
  if (a) { show(a, true); }
}
gd.on('plotly_sliderchange', function (e) {
  if (e && e.interaction === false) { return; }
  var a = actives();
  show(a, false);
  toHash(a);
});
window.addEventListener('hashchange', restore);
shown = flat(actives());
restore();
"""


# ----------------------------------------------------------------------------------
# Any precomputed trace sets, not only training histories


def trace_slider_figure(
    axes: Mapping[str, Sequence[AxisValue]],
    traces: Sequence[Sequence[go.Scatter]],
    *,
    title: str,
    xaxis_title: str,
    yaxis_title: str,
    readouts: Sequence[str] | None = None,
    default: Mapping[str, AxisValue] | None = None,
    axis_labels: Mapping[str, str] | None = None,
    fig_id: str | None = None,
    log_y: bool = False,
) -> SliderFigure:
    """One figure with a slider per axis that switches between precomputed trace sets:
    :func:`slider_figure` for results that are not training histories (statistics
    per layer, a function per activation, ...). Same page script, URL hash and readout.

    Args:
        axes: each axis' values, e.g. ``{"depth": [10, 20], "init": ["zeros", ...]}``.
        traces: one list of traces per configuration, in :func:`~d2lcore.sweep.grid_configs`
            order (the last axis varies fastest); every list has the same length, and
            trace ``t`` of every list plays the same part (same name in the legend).
        title: the figure's title.
        xaxis_title, yaxis_title: the axes' titles, with units.
        readouts: a line (plotly's HTML subset) per configuration, shown under the
            configuration's values above the plot.
        default: the configuration shown first (axes left out take their first value).
        axis_labels: what each slider changes.
        fig_id: the div id and URL-hash key (derived from the title and axis names).
        log_y: a logarithmic y axis.
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
    texts = {name: _value_texts(name, values) for name, values in grid_axes.items()}
    active = _active_steps(grid_axes, default)
    shown = _config_index(grid_axes, active)

    fig = go.Figure()
    for k, trace_set in enumerate(traces):
        for trace in trace_set:
            trace = go.Scatter(trace)  # a copy: the caller's traces stay as they were
            trace.visible = k == shown
            fig.add_trace(trace)
    lines = []
    for k, config in enumerate(configs):
        what = ", ".join(
            f"{axis_label(n, axis_labels)} {format_value(v)}" for n, v in config.items()
        )
        extra = readouts[k] if readouts is not None else ""
        lines.append(f"<b>{what}</b>" + (f"<br>{extra}" if extra else ""))
    fig.add_annotation(
        name="readout", text=lines[shown], xref="paper", yref="paper", x=0, y=1, yshift=34,
        xanchor="left", yanchor="bottom", align="left", showarrow=False, font={"size": 13},
    )  # fmt: skip
    fig.update_xaxes(title_text=xaxis_title)
    fig.update_yaxes(title_text=yaxis_title, type="log" if log_y else "linear",
                     exponentformat="power")  # fmt: skip
    return _finish_figure(
        fig, title=title, axes=grid_axes, texts=texts, active=active,
        axis_labels=axis_labels, fig_id=fig_id, per_config=per_config, readouts=lines,
        diverged=[""] * len(configs), readout_annotation=0, diverged_annotations=[],
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
            "y": -(_BELOW_PLOT + i * _SLIDER_H) / _PLOT_H, "yanchor": "top",
            "pad": {"t": 0, "b": 0},
            "name": name,
        })  # fmt: skip
    return sliders
