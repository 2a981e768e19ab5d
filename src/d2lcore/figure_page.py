"""An interactive figure as the page shows it: HTML controls beside a plotly plot.

:class:`PageFigure` is what :func:`~d2lcore.sliders.slider_figure`,
:func:`~d2lcore.sliders.trace_slider_figure` and
:func:`~d2lcore.playground_figure.playground_figure` return. Its HTML reads without
JavaScript (title, caption, the controls disabled at the configuration shown first, that
configuration's readout, a note that the controls need JavaScript) and carries its data
as JSON; the page script ``figure.js`` (beside this module) enables the controls, draws
the plot when plotly.js has loaded and the figure comes near the viewport, and follows
every change. A figure's kind ("sliders", "playground") says which page script draws it.

Neither plotly.js nor the page scripts need to be in the figure's HTML: the book loads
them once per page (``booktools/offline_assets.py``). A figure also carries them inline, run
only where the page has not defined them (a notebook shown outside the book), and its
style sheet ``figure.css``; the book removes those copies.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import PlotlyRenderer

#: Plotly configuration of every figure: no logo, no round trip to plotly's servers, and
#: no toolbar (its eight to ten buttons a figure were Tab stops before the controls, and
#: covered the title on a phone; dragging still zooms, a double click resets).
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}
#: The room in pixels below a figure's plot (the x axis's tick labels and title, a row of
#: the legend: figure.js adds a row's room for each row more it takes on a narrow screen)
#: and beside it (the y axis's tick labels and title; half of the last x tick label).
#: Plotly widens margins it finds short (automargin) by drawing the figure a second time.
BELOW_PLOT = 104
SIDE_MARGINS = {"l": 72, "r": 24}

# In a <script> block, "</script>" ends the block whatever JavaScript thinks of it, "<!--"
# changes how it is parsed, and U+2028/U+2029 end a line inside older engines' strings.
# Inside JSON strings (the only place these characters can occur) an escape reads the same.
_SCRIPT_ESCAPES = str.maketrans({
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
})  # fmt: skip


def script_json(value: Any) -> str:
    """``value`` as compact JSON that is safe to embed in an HTML ``<script>`` block."""
    return script_safe(json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                  allow_nan=False))  # fmt: skip


def script_safe(text: str) -> str:
    """JSON text (from any encoder) made safe to embed in an HTML ``<script>`` block."""
    return text.translate(_SCRIPT_ESCAPES)


HERE = Path(__file__).parent
#: The page script every interactive figure needs, and each kind's own (besides "sliders",
#: which the first holds).
FIGURE_JS = HERE / "figure.js"
FIGURE_CSS = HERE / "figure.css"
KIND_SCRIPTS = {"plain": (), "sliders": (), "playground": (HERE / "playground.js",)}
#: The narrowest a panel may be, in CSS pixels: on a narrower screen a figure's panels
#: stack into as many columns as fit. Small square panels (images) may be narrower.
MIN_PANEL_WIDTH = 240

# In a <script> or <style> block these would end the block or change how it is parsed.
_UNSAFE = re.compile(r"</script|</style|<!--", re.IGNORECASE)


@functools.cache
def program(path: Path) -> str:
    """The text of a page script or style sheet beside this module: what the book serves
    once per page, and what a figure carries inline for pages that do not load it."""
    text = path.read_text(encoding="utf-8")
    if _UNSAFE.search(text):
        raise ValueError(f"{path} cannot be inlined in a <script> or <style> block")
    return text


@dataclass(frozen=True)
class Control:
    """One control: the axis ``name`` (its URL-hash key), what it changes in words
    (``label``), each step's text and the step shown first."""

    name: str
    label: str
    values: list[str]
    active: int


@dataclass(frozen=True)
class TileLayout:
    """The tiles of :class:`Tiles` in ``cols`` columns: the tiled array's ``shape``, each
    tile's top row and left column, where its label goes (x, y) and the axes' ranges."""

    cols: int
    shape: tuple[int, int]
    corners: list[tuple[int, int]]
    labels: list[tuple[float, float]]
    x_range: tuple[float, float]
    y_range: tuple[float, float]


@dataclass(frozen=True)
class Tiles:
    """What the page script needs to lay a figure's tiled images
    (:func:`d2lcore.tiles.set_tiles`) out again in fewer columns on a narrow screen: the
    traces of a configuration's set that hold them, each tile's shape, the width of the
    widest, its layout in 1, 2, ..., ``len(layouts)`` columns (the last is the figure's
    own), the label annotation of each tile and the narrowest a tile may be on the screen
    (CSS pixels)."""

    traces: list[int]
    shapes: list[tuple[int, int]]
    cell_width: int
    layouts: list[TileLayout]
    annotations: list[int]
    min_width: int


@dataclass(frozen=True)
class Panels:
    """Where a figure's panels are, so that the page script can stack them on a narrow
    screen: ``rows`` x ``cols`` of them, ``cells`` row by row as ``(x axis, y axis,
    index of the panel's title annotation or -1)``, the plot area's height and the
    narrowest a panel may be (CSS pixels)."""

    rows: int
    cols: int
    cells: list[tuple[str, str, int]]
    plot_height: int
    min_width: int

    @classmethod
    def of(cls, layout: Mapping[str, Any], plot_height: int) -> Panels | None:
        """The panels of a layout (``make_subplots``' or any grid of x/y axis pairs with
        their domains); ``None`` for a single panel or axes that form no grid."""
        pairs = []
        for key in layout:
            m = re.fullmatch(r"xaxis(\d*)", key)
            if m is None or f"yaxis{m.group(1)}" not in layout:
                continue
            xd = tuple(layout[key].get("domain") or (0, 1))
            yd = tuple(layout[f"yaxis{m.group(1)}"].get("domain") or (0, 1))
            pairs.append((f"x{m.group(1)}", f"y{m.group(1)}", xd, yd))
        xs = sorted({round(p[2][0], 6) for p in pairs})
        ys = sorted({round(p[3][1], 6) for p in pairs}, reverse=True)
        if len(pairs) < 2 or len(xs) * len(ys) != len(pairs):
            return None
        pairs.sort(key=lambda p: (ys.index(round(p[3][1], 6)), xs.index(round(p[2][0], 6))))
        titles: dict[int, int] = {}  # a panel's title: a paper annotation centred over its top edge
        for i, a in enumerate(layout.get("annotations") or []):
            if a.get("xref") == "paper" and a.get("yref") == "paper" and "x" in a and "y" in a:
                for j, (_, _, xd, yd) in enumerate(pairs):
                    if abs(a["x"] - (xd[0] + xd[1]) / 2) < 1e-3 and abs(a["y"] - yd[1]) < 1e-3:
                        titles.setdefault(j, i)
        cells = [(x, y, titles.get(j, -1)) for j, (x, y, _, _) in enumerate(pairs)]
        # A row of low panels (images) holds narrower ones.
        min_width = max(110, min(MIN_PANEL_WIDTH, plot_height // len(ys)))
        return cls(len(ys), len(xs), cells, plot_height, min_width)


@dataclass(frozen=True)
class ColorBar:
    """A colour scale in HTML beside the plot (a plotly colour bar would not follow the
    panels as they stack): its ``title`` with units, the scale's ``[stop, colour]`` pairs
    and the texts under its ends (and middle, for three)."""

    title: str
    colorscale: Sequence[Sequence[Any]]
    ticks: Sequence[str]

    def to_html(self) -> str:
        stops = ", ".join(f"{c} {100 * float(t):g}%" for t, c in self.colorscale)
        ticks = "".join(f"<span>{html.escape(t)}</span>" for t in self.ticks)
        words = f"colour scale of {self.title}, from {self.ticks[0]} to {self.ticks[-1]}"
        return (
            f'<div class="d2l-colorbar" role="img" aria-label="{html.escape(words)}">'
            f'<span class="d2l-colorbar-title">{html.escape(self.title)}</span>'
            f'<span class="d2l-colorbar-scale"><span class="d2l-colorbar-ramp" '
            f'style="background: linear-gradient(to right, {stops})"></span>'
            f'<span class="d2l-colorbar-ticks">{ticks}</span></span></div>'
        )


@dataclass
class PageFigure:
    """An interactive figure: a plotly figure, its controls and what its kind's page
    script needs (``spec``: a dataclass or a dict, as JSON).

    ``figure`` holds every trace the page script needs (for a slider figure, every
    configuration's, only the first configuration's visible) and the layout; a page may
    still change it before it is shown. Title, caption and readout are HTML around it.
    """

    figure: go.Figure
    fig_id: str
    kind: str
    title: str
    caption: str
    controls: list[Control]
    readout: str  #: the readout of the configuration shown first (HTML)
    spec: Any
    colorbar: ColorBar | None = None

    def data_json(self) -> str:
        """What the page script reads: the figure, the controls, the kind's spec, as
        JSON that is safe inside a ``<script>`` block."""
        spec = self.spec
        if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
            spec = dataclasses.asdict(spec)
        layout = self.figure.layout.to_plotly_json()
        payload = {
            "kind": self.kind, "id": self.fig_id,
            "names": [c.name for c in self.controls],
            "values": [c.values for c in self.controls],
            "panels": _panels_json(layout), **spec,
        }  # fmt: skip
        # The figure through plotly's encoder (numpy arrays as typed arrays), the rest
        # through json; both escaped the same way for the <script> block.
        to_json = pio.json.to_json_plotly
        figure = to_json({"layout": layout, "config": PLOT_CONFIG})
        traces = to_json([t.to_plotly_json() for t in self.figure.data])
        return (script_json(payload)[:-1]
                + f',"figure":{script_safe(figure)},"traces":{script_safe(traces)}}}')  # fmt: skip

    def to_html(self) -> str:
        """The figure's HTML: controls, readout, plot and scripts, without plotly.js."""
        return figure_html(
            fig_id=self.fig_id, kind=self.kind, title=self.title, caption=self.caption,
            height=int(self.figure.layout.height or 450), data_json=self.data_json(),
            controls=self.controls, readout=self.readout, colorbar=self.colorbar,
        )  # fmt: skip

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        # JupyterLab renders the plotly mime type (the first configuration, titled; the
        # live controls are the interactive part there); the built book keeps text/html.
        fig = go.Figure(self.figure)
        fig.update_layout(title=self.title)
        bundle = PlotlyRenderer(config=PLOT_CONFIG).to_mimebundle(fig.to_dict())
        bundle["text/html"] = self.to_html()
        return bundle


def figure_html(
    *,
    fig_id: str,
    kind: str,
    title: str,
    caption: str,
    height: int,
    data_json: str,
    controls: Sequence[Control] = (),
    readout: str | None = None,
    colorbar: ColorBar | None = None,
) -> str:
    """A figure's HTML: its title, caption, controls and readout, the plot's empty
    ``div`` (``height`` pixels), its data (``data_json``) and the page scripts.

    ``title`` may hold plotly's HTML subset (``<b>``, ``<br>``, ...); the rest is text
    except ``readout``, which is HTML (escaped by its writer)."""
    fid = html.escape(fig_id)
    name = _title_text(title)
    parts = [
        f'<figure class="d2l-figure" id="{fid}-figure" data-d2l-kind="{kind}"'
        + (f' aria-labelledby="{fid}-title"' if name else "")
        + (f' aria-describedby="{fid}-caption"' if caption else "") + ">",
        f"<style>{program(FIGURE_CSS)}</style>",
    ]
    if name:
        parts.append(f'<div class="d2l-figure-title" id="{fid}-title">{_title_html(title)}</div>')
    if caption:
        parts.append(f'<p class="d2l-figure-caption" id="{fid}-caption">{html.escape(caption)}</p>')
    if controls:
        parts.append(f'<div class="d2l-controls" role="group" aria-label="{html.escape(name)}: '
                     'controls">' + "".join(_control_html(fid, i, c)
                                           for i, c in enumerate(controls)) + "</div>")  # fmt: skip
    if readout is not None:
        parts.append(f'<div class="d2l-readout" id="{fid}-readout" role="status" '
                     f'aria-live="polite" aria-atomic="true">{readout}</div>')  # fmt: skip
    if colorbar is not None:
        parts.append(colorbar.to_html())
    scripts = "".join(program(p) for p in (FIGURE_JS, *KIND_SCRIPTS[kind]))
    # Where the page loads figure.js itself (deferred), it attaches every figure.
    attach = ("window.d2lFigures && window.d2lFigures.attach("
              f"document.getElementById('{fid}-figure'));")
    what = f"{name}: the plot" if name else "a plot"
    if controls:
        parts.append('<noscript><p class="d2l-noscript">The plot and its controls need '
                     "JavaScript; the numbers above are the first configuration's.</p>"
                     "</noscript>")  # fmt: skip
        what += "; its numbers are in the text above"
    parts += [
        f'<div id="{fid}" class="plotly-graph-div d2l-plot" role="img" '
        f'aria-label="{html.escape(what)}" style="height:{height}px; width:100%;"></div>',
        f'<script type="application/json" class="d2l-figure-data">{data_json}</script>',
        f"<script>{scripts}\n{attach}</script>",
        "</figure>",
    ]
    return "".join(parts)


def _panels_json(layout: Mapping[str, Any]) -> dict[str, Any] | None:
    """:meth:`Panels.of` the layout (its plot area: the height less the margins), as JSON."""
    margin = layout.get("margin") or {}
    top, bottom = int(margin.get("t", 100)), int(margin.get("b", 80))
    panels = Panels.of(layout, max(int(layout.get("height") or 450) - top - bottom, 100))
    return dataclasses.asdict(panels) if panels else None


_SUBSET_TAGS = re.compile(r"&lt;(/?(?:b|i|em|sub|sup)|br ?/?)&gt;", re.IGNORECASE)


def subset_html(text: str, *, breaks: bool = True) -> str:
    """Text in plotly's HTML subset as safe HTML: everything escaped but bold, italics,
    sub- and superscripts and line breaks (spaces if not ``breaks``), without attributes.
    What a page passes as a readout or a title cannot add markup or run code."""

    def tag(m: re.Match[str]) -> str:
        name = m.group(1).lower()
        if name.startswith("br"):
            return "<br>" if breaks else " "
        return f"<{name}>"

    return _SUBSET_TAGS.sub(tag, html.escape(text, quote=False))


def _title_html(title: str) -> str:
    """A title in plotly's HTML subset as safe HTML, on one line (it wraps where the
    screen needs)."""
    return " ".join(subset_html(title, breaks=False).split())


def _title_text(title: str) -> str:
    """A title in plotly's HTML subset as plain text (for labels)."""
    return " ".join(re.sub(r"<[^<>]*>", " ", title).split())


def plain_figure_html(fig_dict: Mapping[str, Any]) -> str:
    """A figure without controls (any plotly figure, as a dict) as the book shows it:
    its title as HTML above the plot, the legend below it, the panels stacking on a
    phone, drawn by ``figure.js`` when it comes near the viewport."""
    layout = dict(fig_dict.get("layout") or {})
    title = layout.pop("title", None)
    text = (title.get("text") if isinstance(title, Mapping) else title) or ""
    margin = dict(layout.get("margin") or {})
    height = int(layout.get("height") or 450)
    if text and "t" not in margin:
        margin["t"] = 40  # room for the panels' titles, not for the figure's own
        height -= 60
    legend = dict(layout.get("legend") or {})
    if layout.get("showlegend", True) is not False and not {"x", "y"} & set(legend):
        # Below the plot, where it wraps on a narrow screen and takes no width.
        legend.update(orientation="h", x=0, xanchor="left", y=0, yref="container",
                      yanchor="bottom")  # fmt: skip
        margin["b"] = margin.get("b", 80) + 40
        height += 40
        layout["legend"] = legend
    layout.update(margin=margin, height=height)
    to_json = pio.json.to_json_plotly
    text_json = to_json({"layout": layout, "config": PLOT_CONFIG})
    traces = to_json(list(fig_dict.get("data") or []))
    digest = hashlib.sha256((text_json + traces).encode()).hexdigest()[:12]
    payload = script_json({"kind": "plain", "id": f"plot-{digest}", "names": [], "values": [],
                           "panels": _panels_json(layout)})  # fmt: skip
    data_json = (payload[:-1] + f',"figure":{script_safe(text_json)},'
                 f'"traces":{script_safe(traces)}}}')  # fmt: skip
    return figure_html(fig_id=f"plot-{digest}", kind="plain", title=text, caption="",
                       height=height, data_json=data_json)


def _control_html(fid: str, i: int, c: Control) -> str:
    cid = f"{fid}-control-{i}"
    text = html.escape(c.values[c.active])
    return (
        f'<div class="d2l-control"><label for="{cid}">{html.escape(c.label)}</label>'
        f'<output for="{cid}" aria-hidden="true">{text}</output>'
        f'<input type="range" class="d2l-control-input" id="{cid}" name="{html.escape(c.name)}" '
        f'min="0" max="{len(c.values) - 1}" step="1" value="{c.active}" '
        f'aria-valuetext="{text}" disabled></div>'
    )


def controls_for(
    axes: Mapping[str, Sequence[str]], active: Sequence[int], labels: Sequence[str]
) -> list[Control]:
    """One :class:`Control` per axis: its step texts, the step shown first, its label."""
    items = zip(axes.items(), active, labels, strict=True)
    return [Control(name, label, list(texts), a) for (name, texts), a, label in items]


def json_loads_data(html_text: str, fig_id: str) -> dict[str, Any]:
    """The data a figure's HTML carries for its page script (for tests and tools)."""
    m = re.search(rf'id="{re.escape(fig_id)}-figure".*?<script type="application/json" '
                  r'class="d2l-figure-data">(.*?)</script>', html_text, re.S)  # fmt: skip
    if m is None:
        raise ValueError(f"no figure {fig_id!r} in the HTML")
    return json.loads(m.group(1))
