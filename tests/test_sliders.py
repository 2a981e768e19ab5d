"""The slider figures of :mod:`d2lcore.sliders` (interactive figures of
:mod:`d2lcore.figure_page`): their traces, controls, readouts, captions and panels, the
data their page script reads, the book's serving of the page scripts, and (marked
``browser``) the page script ``figure.js`` in headless Chromium, driven by the mouse and
the keyboard, on a phone's width, without JavaScript and through links."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html as htmllib
import http.server
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import plotly
import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from booktools import offline_assets
from d2lcore.figure_page import (
    FIGURE_CSS,
    FIGURE_JS,
    KIND_SCRIPTS,
    PageFigure,
    Panels,
    json_loads_data,
    program,
    script_json,
)
from d2lcore.figure_text import default_fig_id, describe_config, format_value, readout
from d2lcore.grid import GridResults, grid_configs
from d2lcore.plotting import percent_heatmap, tile
from d2lcore.sliders import SliderFigure, slider_figure, trace_slider_figure
from d2lcore.tiles import set_tiles
from d2lcore.train import History, RunResult

from .browser_helpers import (
    axis_ranges,
    control_locator,
    diverged_marks,
    drag_slider,
    figure_state,
    move_slider,
    press_key,
    wait_for_plots,
)
from .browser_helpers import readout as page_readout

AXES = {"lr": [0.01, 0.1, 1.0], "dropout": [0.0, 0.5], "init": ["normal", "xavier_normal"]}
NUM_EPOCHS = 6


def make_history(lr: float, dropout: float, init: str) -> History:
    """A made-up but distinct history per configuration; lr=1 with normal init diverges."""
    h = History()
    if lr == 1.0 and init == "normal":
        h.train_loss, h.val_loss, h.val_acc = [2.31, 40.2], [2.4, 51.7], [0.1, 0.1]
        h.seconds = [0.1, 0.1]
        h.diverged, h.diverged_epoch = True, 3
        return h
    offset = 0.1 * (init == "normal") + 0.2 * dropout
    for e in range(1, NUM_EPOCHS + 1):
        loss = offset + 2.0 * math.exp(-3 * lr * e) + 1e-3 / 7 * e
        h.train_loss.append(loss)
        h.val_loss.append(loss * 1.0731 + 0.01)
        h.val_acc.append(1 - loss / 3)
        h.seconds.append(0.1)
    return h


def make_grid(axes: dict = AXES, with_val: bool = True) -> GridResults:
    runs = []
    for config in grid_configs(axes):
        h = make_history(config["lr"], config.get("dropout", 0.0), config.get("init", "x"))
        if not with_val:
            h.val_loss, h.val_acc = [], []
        test_acc = None if h.diverged or not with_val else h.val_acc[-1] - 0.0123
        runs.append(RunResult(config=config, history=h, test_acc=test_acc))
    return GridResults(axes={k: list(v) for k, v in axes.items()}, runs=runs)


DEFAULT = {"lr": 0.1, "dropout": 0.5, "init": "xavier_normal"}


def close(a: list[float], b: list[float], rel: float = 1e-4) -> bool:
    """Equal up to the figure's rounding to 5 significant digits."""
    if len(a) != len(b):
        return False
    return all(math.isclose(x, y, rel_tol=rel) for x, y in zip(a, b, strict=True))


def text_of(readout_html: str) -> str:
    """What a readout's HTML reads as in the page (its ``textContent``)."""
    return htmllib.unescape(re.sub(r"<[^>]+>", "", readout_html))


def start_tags(page: str, tag: str) -> list[dict[str, str | None]]:
    """The attributes of every ``<tag>`` of an HTML fragment (unescaped, as a browser
    reads them; what ``<script>`` and ``<style>`` blocks hold is not markup)."""
    found: list[dict[str, str | None]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, name: str, attrs: list[tuple[str, str | None]]) -> None:
            if name == tag:
                found.append(dict(attrs))

    Parser().feed(page)
    return found


def readout_div(page: str, fig_id: str) -> tuple[dict[str, str | None], str]:
    """The readout ``<div>`` of figure ``fig_id`` in its HTML: its attributes and content."""
    (attrs,) = [d for d in start_tags(page, "div") if d.get("id") == f"{fig_id}-readout"]
    m = re.search(rf'<div [^>]*id="{fig_id}-readout"[^>]*>(.*?)</div>', page, re.S)
    assert m is not None
    return attrs, m.group(1)


# ----------------------------------------------------------------------------------
# Controls, traces and readouts


def test_one_control_per_axis_with_the_values_as_steps():
    sf = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    assert isinstance(sf, PageFigure) and SliderFigure is PageFigure and sf.kind == "sliders"
    assert [c.name for c in sf.controls] == list(AXES)
    for c, (name, values) in zip(sf.controls, AXES.items(), strict=True):
        assert c.values == [format_value(v) for v in values]
        assert c.active == values.index(DEFAULT[name])
    assert [c.label for c in sf.controls] == ["learning rate", "dropout rate", "initialization"]
    # Title and controls are HTML around the plot, not plotly's.
    assert not sf.figure.layout.sliders and sf.figure.layout.title.text is None
    assert sf.title == "MLP"


def test_axis_labels_override_the_defaults():
    sf = slider_figure(make_grid(), title="MLP", axis_labels={"lr": "step size η"})
    assert [c.label for c in sf.controls] == ["step size η", "dropout rate", "initialization"]
    assert sf.readout.startswith("<b>step size η 0.01, dropout rate 0")


def test_the_controls_are_labelled_range_inputs_disabled_until_the_script_runs():
    sf = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    page = sf.to_html()
    inputs = start_tags(page, "input")
    assert len(inputs) == len(AXES)
    for i, (inp, c) in enumerate(zip(inputs, sf.controls, strict=True)):
        assert (inp["type"], inp["class"]) == ("range", "d2l-control-input")
        assert (inp["id"], inp["name"]) == (f"{sf.fig_id}-control-{i}", c.name)
        assert (inp["min"], inp["max"], inp["step"]) == ("0", str(len(c.values) - 1), "1")
        assert inp["value"] == str(c.active)
        assert inp["aria-valuetext"] == c.values[c.active]  # the value in words, not a step
        assert "disabled" in inp  # until figure.js runs
    ids = [f"{sf.fig_id}-control-{i}" for i in range(len(AXES))]
    labels = re.findall(r'<label for="([^"]+)">([^<]*)</label>', page)
    assert labels == list(zip(ids, [c.label for c in sf.controls], strict=True))
    outputs = re.findall(r'<output for="([^"]+)"[^>]*>([^<]*)</output>', page)
    assert outputs == list(zip(ids, ["0.1", "0.5", "xavier_normal"], strict=True))
    (group,) = [d for d in start_tags(page, "div") if d.get("class") == "d2l-controls"]
    assert group["role"] == "group" and group["aria-label"] == "MLP: controls"
    (figure,) = start_tags(page, "figure")
    assert figure["class"] == "d2l-figure" and figure["data-d2l-kind"] == "sliders"
    assert figure["id"] == f"{sf.fig_id}-figure"
    assert figure["aria-labelledby"] == f"{sf.fig_id}-title"
    assert figure["aria-describedby"] == f"{sf.fig_id}-caption"
    # The plot's div is empty: figure.js draws it. Without the script a note says why.
    assert re.search(rf'<div id="{sf.fig_id}" class="plotly-graph-div d2l-plot"[^>]*></div>', page)
    assert '<noscript><p class="d2l-noscript">' in page


def test_one_trace_set_per_configuration_in_grid_order():
    grid = make_grid()
    sf = slider_figure(grid, title="MLP", default=DEFAULT)
    fig = sf.figure
    assert len(fig.data) == len(grid) * 3 and sf.spec.per_config == 3
    assert sf.spec.strides == [4, 2, 1]  # grid order: the last axis varies fastest
    for k, run in enumerate(grid.runs):
        train, val, acc = fig.data[3 * k : 3 * k + 3]
        assert (train.name, val.name, acc.name) == (
            "train loss",
            "validation loss",
            "validation accuracy",
        )
        assert close(list(train.y), run.history.train_loss)
        assert close(list(val.y), run.history.val_loss)
        assert close(list(acc.y), run.history.val_acc)
        assert (train.x0, train.dx) == (1, 1)  # epochs are 1-based
        assert val.line.dash == "dash" and train.line.dash is None
        assert train.xaxis == "x" and acc.xaxis == "x2"  # loss left, accuracy right


def test_only_the_default_configuration_is_visible():
    grid = make_grid()
    fig = slider_figure(grid, title="MLP", default=DEFAULT).figure
    shown = grid.runs.index(grid.get(**DEFAULT))
    assert [t.visible for t in fig.data] == [k // 3 == shown for k in range(len(fig.data))]


def test_axes_left_out_of_default_take_their_first_value():
    grid = make_grid()
    sf = slider_figure(grid, title="MLP", default={"dropout": 0.5})
    visible = [k // 3 for k, t in enumerate(sf.figure.data) if t.visible]
    assert grid.runs[visible[0]].config == {"lr": 0.01, "dropout": 0.5, "init": "normal"}
    assert [c.active for c in sf.controls] == [0, 1, 0]
    with pytest.raises(KeyError):
        slider_figure(grid, title="MLP", default={"lr": 0.3})
    with pytest.raises(KeyError):
        slider_figure(grid, title="MLP", default={"momentum": 0.9})


def _annotations(fig: go.Figure, name: str) -> list[Any]:
    return [a for a in fig.layout.annotations if a.name == name]


def test_readout_shows_the_default_configurations_final_numbers():
    grid = make_grid()
    sf = slider_figure(grid, title="MLP", default=DEFAULT)
    run = grid.get(**DEFAULT)
    assert sf.spec.readouts == [readout(r) for r in grid.runs]
    assert sf.readout == sf.spec.readouts[grid.runs.index(run)] == readout(run)
    text = sf.readout
    assert text.startswith("<b>learning rate 0.1, dropout rate 0.5, initialization "
                           "xavier_normal</b><br>")  # fmt: skip
    patterns = {
        "train": r"train loss ([\d.]+)",
        "val": r"validation loss ([\d.]+)",
        "acc": r"validation accuracy ([\d.]+)%",
        "test": r"test accuracy ([\d.]+)%",
    }
    found = {key: float(m.group(1)) for key, p in patterns.items() if (m := re.search(p, text))}
    assert set(found) == {"train", "val", "acc", "test"}
    h = run.history
    assert math.isclose(found["train"], h.train_loss[-1], rel_tol=1e-3)
    assert math.isclose(found["val"], h.val_loss[-1], rel_tol=1e-3)
    assert math.isclose(found["acc"], 100 * h.val_acc[-1], abs_tol=0.006)
    assert math.isclose(found["test"], 100 * run.test_acc, abs_tol=0.006)
    assert f"after {h.num_epochs} epochs" in text
    assert all(not a.visible for a in _annotations(sf.figure, "diverged"))
    # The readout is no annotation of the plot: a live region above it, holding the
    # default's readout before any script runs.
    assert not _annotations(sf.figure, "readout")
    attrs, content = readout_div(sf.to_html(), sf.fig_id)
    assert (attrs["class"], attrs["role"], attrs["aria-live"]) == ("d2l-readout", "status",
                                                                  "polite")  # fmt: skip
    assert attrs["aria-atomic"] == "true"
    assert content == sf.readout


def test_a_diverged_run_says_where_and_marks_each_panel():
    grid = make_grid()
    config = {"lr": 1.0, "dropout": 0.0, "init": "normal"}
    sf = slider_figure(grid, title="MLP", default=config)
    assert "diverged at epoch 3" in sf.readout
    assert "train loss" not in sf.readout  # no final numbers for a run that blew up
    marks = _annotations(sf.figure, "diverged")
    assert len(marks) == 2 and all(m.visible and m.text == "diverged at epoch 3" for m in marks)
    assert {m.xref for m in marks} == {"x domain", "x2 domain"}
    # The page script rewrites these marks for each configuration.
    annotations = list(sf.figure.layout.annotations)
    assert [annotations[j].name for j in sf.spec.diverged_annotations] == ["diverged"] * 2
    assert sf.spec.diverged == [f"diverged at epoch {r.history.diverged_epoch}"
                                if r.diverged else "" for r in grid.runs]  # fmt: skip
    # Its recorded epochs before divergence are drawn, nothing after.
    shown = [t for t in sf.figure.data if t.visible]
    assert close(list(shown[0].y), grid.get(**config).history.train_loss)


def test_log_y_puts_the_loss_panel_on_a_log_scale():
    linear = slider_figure(make_grid(), title="MLP").figure
    log = slider_figure(make_grid(), title="MLP", log_y=True).figure
    assert linear.layout.yaxis.type == "linear"
    assert log.layout.yaxis.type == "log" and "log" in log.layout.yaxis.title.text


def test_a_grid_without_validation_has_one_panel_and_one_trace_per_configuration():
    grid = make_grid({"lr": [0.01, 0.1]}, with_val=False)
    sf = slider_figure(grid, title="Linear regression", default={"lr": 0.1})
    fig = sf.figure
    assert len(fig.data) == 2
    assert [t.visible for t in fig.data] == [False, True]
    assert "xaxis2" not in fig.to_dict()["layout"]
    assert "validation" not in sf.readout and "train loss" in sf.readout
    assert json.loads(sf.data_json())["panels"] is None  # nothing to stack


# ----------------------------------------------------------------------------------
# Captions and panels


def test_captions_say_what_the_figure_shows_and_a_caption_replaces_them():
    runs = ("the 12 runs of 3 values of learning rate x 2 values of dropout rate x 2 values "
            "of initialization, trained beforehand; the controls pick one.")  # fmt: skip
    assert slider_figure(make_grid(), title="MLP").caption == (
        "The training and validation loss per epoch (left) and the validation accuracy "
        f"(right) of {runs}")
    linear = slider_figure(make_grid({"lr": [0.01, 0.1]}, with_val=False), title="Linear")
    assert linear.caption == ("The training loss per epoch of the 2 runs of 2 values of "
                              "learning rate, trained beforehand; the controls pick one.")
    assert make_trace_figure().caption == (
        "Per layer: the 6 cases of 2 values of depth x 3 values of initialization, computed "
        "beforehand; the controls pick one.")
    # caption= replaces it, and is text in the page (escaped), read before the plot.
    mine = "Loss <b>and</b> accuracy & more"
    for sf in (slider_figure(make_grid(), title="MLP", caption=mine),
               make_trace_figure(caption=mine)):  # fmt: skip
        assert sf.caption == mine
        page = sf.to_html()
        assert (f'<p class="d2l-figure-caption" id="{sf.fig_id}-caption">'
                "Loss &lt;b&gt;and&lt;/b&gt; accuracy &amp; more</p>") in page
        assert page.index("d2l-figure-caption") < page.index("d2l-plot")


def test_the_title_is_html_above_the_plot():
    sf = slider_figure(make_grid(), title="Loss <b>&</b> accuracy<br>of an MLP")
    page = sf.to_html()
    # plotly's bold kept, the line break a space (the title wraps where it needs), the
    # rest escaped.
    assert (f'<div class="d2l-figure-title" id="{sf.fig_id}-title">Loss <b>&amp;</b> '
            "accuracy of an MLP</div>") in page  # fmt: skip
    assert page.index("d2l-figure-title") < page.index("d2l-figure-caption")


def test_panels_say_where_each_panel_is_for_the_page_script():
    data = json.loads(slider_figure(make_grid(), title="MLP").data_json())
    assert Panels(**data["panels"]) == Panels(1, 2, [["x", "y", 0], ["x2", "y2", 1]], 300, 240)
    maps = make_map_figure()
    panels = json.loads(maps.data_json())["panels"]
    assert panels["cells"] == [["x", "y", 0], ["x2", "y2", 1]]
    assert [maps.figure.layout.annotations[c[2]].text for c in panels["cells"]] == [
        "decision function", "loss"]  # fmt: skip
    # Rows of low panels (images) may be narrower; untitled panels have no title (-1).
    axes = {"lr": [0.1, 1.0]}
    traces = [[go.Heatmap(z=[[k + j] * 4] * 4) for j in range(10)] for k in range(2)]
    low = trace_slider_figure(axes, traces, title="t", xaxis_title="x", yaxis_title="y",
                              panels=(2, 5), trace_panels=[(j // 5 + 1, j % 5 + 1)
                                                           for j in range(10)],
                              plot_height=280)  # fmt: skip
    panels = json.loads(low.data_json())["panels"]
    assert (panels["rows"], panels["cols"], panels["plot_height"]) == (2, 5, 280)
    assert panels["min_width"] == 140
    assert panels["cells"] == [[f"x{s}", f"y{s}", -1] for s in ["", *range(2, 11)]]
    # Panels.of: the panels of any layout with a grid of axes, such as make_subplots'.
    grid = make_subplots(rows=2, cols=2, subplot_titles=["a", "b", "c"]).layout
    assert Panels.of(grid.to_plotly_json(), 600) == Panels(
        2, 2, [("x", "y", 0), ("x2", "y2", 1), ("x3", "y3", 2), ("x4", "y4", -1)], 600, 240)
    assert Panels.of(go.Figure().layout.to_plotly_json(), 300) is None  # a single panel


# ----------------------------------------------------------------------------------
# The data the page script reads


def test_the_data_holds_every_configurations_traces_and_readout():
    grid = make_grid()
    sf = slider_figure(grid, title="MLP", default=DEFAULT)
    page = sf.to_html()
    assert "plotly-graph-div" in page
    assert "<script src=" not in page and "cdn" not in page.lower()
    data = json_loads_data(page, sf.fig_id)
    assert data == json.loads(sf.data_json())
    assert (data["kind"], data["id"]) == ("sliders", sf.fig_id)
    assert data["names"] == list(AXES)
    assert data["values"] == [[format_value(v) for v in vs] for vs in AXES.values()]
    assert (data["strides"], data["per_config"]) == ([4, 2, 1], 3)
    traces = data["traces"]
    assert len(traces) == 3 * len(grid)
    for k, run in enumerate(grid.runs):
        h = run.history
        assert close(traces[3 * k]["y"], h.train_loss)
        assert close(traces[3 * k + 1]["y"], h.val_loss)
        assert close(traces[3 * k + 2]["y"], h.val_acc)
    assert data["readouts"] == [readout(r) for r in grid.runs]
    assert data["diverged"] == sf.spec.diverged
    layout = data["figure"]["layout"]
    assert "sliders" not in layout and "title" not in layout
    assert [layout["annotations"][j]["name"] for j in data["diverged_annotations"]] == [
        "diverged", "diverged"]  # fmt: skip
    assert data["figure"]["config"]["displaylogo"] is False


def test_floats_are_rounded_to_five_significant_digits():
    sf = slider_figure(make_grid(), title="MLP")
    for trace in json_loads_data(sf.to_html(), sf.fig_id)["traces"]:
        for y in trace["y"]:
            assert y == float(f"{y:.5g}")


def test_mimebundle_has_html_for_the_book_and_plotly_json_for_jupyter():
    sf = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    bundle = sf._repr_mimebundle_()
    assert bundle["text/html"] == sf.to_html()
    fig_json = bundle["application/vnd.plotly.v1+json"]
    assert [t.get("visible") for t in fig_json["data"]] == [t.visible for t in sf.figure.data]
    assert fig_json["layout"]["title"]["text"] == "MLP"  # JupyterLab shows no HTML title


def test_fig_id_is_stable_and_distinct():
    grid = make_grid()
    a = slider_figure(grid, title="Dropout and the learning rate")
    b = slider_figure(make_grid(), title="Dropout and the learning rate")
    c = slider_figure(grid, title="Another figure")
    assert a.fig_id == b.fig_id and a.fig_id != c.fig_id
    assert re.fullmatch(r"[a-z][a-z0-9-]*", a.fig_id)
    assert a.to_html() == b.to_html()  # rebuilds give the same page
    assert slider_figure(grid, title="x", fig_id="mine").fig_id == "mine"
    with pytest.raises(ValueError):
        slider_figure(grid, title="x", fig_id="has:colon")


# ----------------------------------------------------------------------------------
# trace_slider_figure: any precomputed trace sets

TRACE_AXES = {"depth": [2, 5], "init": ["zeros", "normal", "kaiming_normal"]}


def trace_sets() -> list[list[go.Scatter]]:
    """Two traces per configuration whose numbers say which configuration they are."""
    sets = []
    for k, config in enumerate(grid_configs(TRACE_AXES)):
        layers = list(range(1, config["depth"] + 1))
        sets.append([
            go.Scatter(x=layers, y=[k + 1.0] * len(layers), name="activation std"),
            go.Scatter(x=layers, y=[10.0 * (k + 1)] * len(layers), name="gradient std"),
        ])  # fmt: skip
    return sets


def make_trace_figure(**kwargs: Any) -> PageFigure:
    readouts = [f"case {k}" for k in range(len(grid_configs(TRACE_AXES)))]
    return trace_slider_figure(
        TRACE_AXES, trace_sets(), title="Per layer", xaxis_title="layer",
        yaxis_title="std", readouts=readouts, **kwargs,
    )  # fmt: skip


def test_trace_figure_keeps_each_configurations_traces_in_grid_order():
    sf = make_trace_figure(default={"depth": 5, "init": "normal"})
    fig = sf.figure
    assert len(fig.data) == 6 * 2
    for k, config in enumerate(grid_configs(TRACE_AXES)):
        act, grad = fig.data[2 * k], fig.data[2 * k + 1]
        assert (act.name, grad.name) == ("activation std", "gradient std")
        assert list(act.y) == [k + 1.0] * config["depth"]
    shown = list(itertools.product(*TRACE_AXES.values())).index((5, "normal"))
    assert [t.visible for t in fig.data] == [k // 2 == shown for k in range(12)]
    assert [c.name for c in sf.controls] == list(TRACE_AXES)
    assert [c.active for c in sf.controls] == [1, 1]
    assert sf.spec.per_config == 2 and sf.spec.diverged_annotations == []
    # Each readout names its configuration (what the book's browser test checks) first.
    assert sf.spec.readouts[shown] == "<b>depth 5, initialization normal</b><br>case 4"
    assert sf.readout == sf.spec.readouts[shown]
    assert len(set(sf.spec.readouts)) == 6
    # Without readouts, each names its configuration alone.
    bare = trace_slider_figure(TRACE_AXES, trace_sets(), title="t", xaxis_title="x",
                               yaxis_title="y")  # fmt: skip
    assert bare.spec.readouts[0] == "<b>depth 2, initialization zeros</b>"


def test_trace_figure_leaves_the_callers_traces_alone_and_checks_its_inputs():
    sets = trace_sets()
    trace_slider_figure(TRACE_AXES, sets, title="t", xaxis_title="x", yaxis_title="y")
    assert all(t.visible is None for s in sets for t in s)
    with pytest.raises(ValueError, match="6 configurations"):
        trace_slider_figure(TRACE_AXES, sets[:5], title="t", xaxis_title="x", yaxis_title="y")
    with pytest.raises(ValueError, match="same"):
        trace_slider_figure(TRACE_AXES, [*sets[:5], sets[5][:1]], title="t",
                            xaxis_title="x", yaxis_title="y")  # fmt: skip
    with pytest.raises(ValueError, match="readouts"):
        trace_slider_figure(TRACE_AXES, sets, title="t", xaxis_title="x", yaxis_title="y",
                            readouts=["one"])  # fmt: skip
    with pytest.raises(KeyError):
        make_trace_figure(default={"depth": 3})
    log = make_trace_figure(log_y=True).figure
    assert log.layout.yaxis.type == "log" and log.layout.yaxis.title.text == "std"


# ----------------------------------------------------------------------------------
# Any trace type, several panels, fixed ranges

MAP_AXES = {"lr": [0.1, 1.0], "seed": [0, 1, 2]}
MAP_X, MAP_Y = [-1.0, 0.0, 1.0, 2.0], [10.0, 20.0, 30.0]


def map_z(k: int) -> list[list[float]]:
    """A 3 x 4 map whose numbers say which configuration it belongs to."""
    return [[10.0 * k + 4 * i + j for j in range(4)] for i in range(3)]


def map_loss(k: int) -> list[float]:
    return [5.0 - k * 0.5, 4.0 - k * 0.5, 3.5 - k * 0.5]


def map_sets(kind: Any = go.Heatmap) -> list[list]:
    """Per configuration: a map (left panel) and a loss curve (right panel)."""
    return [[kind(z=map_z(k), x=MAP_X, y=MAP_Y, name="decision function"),
             go.Scatter(y=map_loss(k), x0=1, dx=1, mode="lines", name="train loss")]
            for k in range(len(grid_configs(MAP_AXES)))]  # fmt: skip


def make_map_figure(kind: Any = go.Heatmap, **kwargs: Any) -> PageFigure:
    return trace_slider_figure(
        MAP_AXES, map_sets(kind), title="Boundary and loss", panels=(1, 2),
        trace_panels=[(1, 1), (1, 2)], panel_titles=["decision function", "loss"],
        xaxis_title=["x₁", "epoch"], yaxis_title=["x₂", "loss"],
        readouts=[f"map {k}" for k in range(6)], **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("kind", [go.Heatmap, go.Contour])
def test_a_map_beside_a_curve_reaches_the_page_for_every_configuration(kind):
    sf = make_map_figure(kind, default={"lr": 1.0, "seed": 1})
    fig = sf.figure
    assert [t.type for t in fig.data] == [kind().type, "scatter"] * 6
    assert [(t.xaxis, t.yaxis) for t in fig.data[:2]] == [("x", "y"), ("x2", "y2")]
    shown = grid_configs(MAP_AXES).index({"lr": 1.0, "seed": 1})
    assert [t.visible for t in fig.data] == [k // 2 == shown for k in range(12)]
    data = json_loads_data(sf.to_html(), sf.fig_id)
    traces, layout = data["traces"], data["figure"]["layout"]
    for k in range(6):
        assert traces[2 * k]["z"] == map_z(k) and traces[2 * k + 1]["y"] == map_loss(k)
    assert [layout["xaxis"]["title"]["text"], layout["xaxis2"]["title"]["text"]] == [
        "x₁", "epoch"]  # fmt: skip
    assert layout["yaxis2"]["title"]["text"] == "loss"
    # The panels' titles are the only annotations: the readout is HTML above the plot.
    assert [a["text"] for a in layout["annotations"]] == ["decision function", "loss"]
    assert sf.spec.per_config == 2 and sf.readout == sf.spec.readouts[shown]
    assert sf.readout == "<b>learning rate 1, seed 1</b><br>map 4"


def test_traces_may_name_their_panels_and_be_dicts():
    sets = [[{"type": "heatmap", "z": map_z(k)},
             go.Scatter(y=map_loss(k), xaxis="x2", yaxis="y2", name="loss")]
            for k in range(6)]  # fmt: skip
    fig = trace_slider_figure(MAP_AXES, sets, title="t", panels=(1, 2), xaxis_title="x",
                              yaxis_title="y").figure  # fmt: skip
    assert [(t.type, t.xaxis, t.yaxis) for t in fig.data[:2]] == [
        ("heatmap", None, None), ("scatter", "x2", "y2")]  # fmt: skip
    assert fig.layout.xaxis2.title.text == "x"
    with pytest.raises(ValueError, match="outside"):
        trace_slider_figure(MAP_AXES, map_sets(), title="t", trace_panels=[(1, 1), (1, 2)],
                            xaxis_title="x", yaxis_title="y")  # fmt: skip
    with pytest.raises(ValueError, match="panels"):
        trace_slider_figure(MAP_AXES, map_sets(), title="t", panels=(1, 2),
                            xaxis_title=["one"], yaxis_title="y")  # fmt: skip


def test_an_image_per_configuration():
    sets = [[go.Image(z=[[[k, 0, 0], [0, k, 0]], [[0, 0, k], [k, k, k]]])] for k in range(6)]
    sf = trace_slider_figure(MAP_AXES, sets, title="Filters", xaxis_title="column",
                             yaxis_title="row", fixed_ranges=True)  # fmt: skip
    traces = json_loads_data(sf.to_html(), sf.fig_id)["traces"]
    assert [d["z"][1][1] for d in traces] == [[k, k, k] for k in range(6)]
    assert sf.figure.layout.xaxis.range == (-0.5, 1.5)  # cells, edge to edge
    assert sf.figure.layout.yaxis.range is None  # plotly points an image's y axis down


def test_fixed_ranges_cover_every_configuration():
    free = make_map_figure().figure
    assert free.layout.xaxis2.range is None and free.data[0].zmin is None
    fig = make_map_figure(fixed_ranges=True).figure
    # The map's cells reach half a step beyond the outer coordinates.
    assert fig.layout.xaxis.range == (-1.5, 2.5) and fig.layout.yaxis.range == (5.0, 35.0)
    # Curves get plotly's 5% margin around every configuration's points.
    losses = [y for k in range(6) for y in map_loss(k)]
    low, high = min(losses), max(losses)
    pad = 0.05 * (high - low)
    assert fig.layout.yaxis2.range == pytest.approx((low - pad, high + pad))
    assert fig.layout.xaxis2.range == pytest.approx((0.9, 3.1))
    # One colour scale for every configuration's map.
    zs = [z for k in range(6) for row in map_z(k) for z in row]
    assert {(t.zmin, t.zmax) for t in fig.data[::2]} == {(min(zs), max(zs))}
    assert all(t.type == "scatter" for t in fig.data[1::2])  # curves have no colour range


def test_fixed_ranges_keep_what_the_caller_set():
    sets = map_sets()
    for trace_set in sets:
        trace_set[0].update(zmin=-1, zmax=1)
    fig = trace_slider_figure(MAP_AXES, sets, title="t", panels=(1, 2),
                              trace_panels=[(1, 1), (1, 2)], xaxis_title="x",
                              yaxis_title="y", log_y=True, fixed_ranges=True).figure  # fmt: skip
    assert {(t.zmin, t.zmax) for t in fig.data[::2]} == {(-1, 1)}
    # A log axis' range is in decades.
    losses = [y for k in range(6) for y in map_loss(k)]
    low, high = math.log10(min(losses)), math.log10(max(losses))
    pad = 0.05 * (high - low)
    assert fig.layout.yaxis2.range == pytest.approx((low - pad, high + pad))
    # slider_figure: epochs are fixed already; the losses and accuracies now too.
    grid = make_grid()
    sf = slider_figure(grid, title="MLP", fixed_ranges=True)
    assert sf.figure.layout.xaxis.range == (0.8, NUM_EPOCHS + 0.2)
    top = max(y for r in grid.runs for y in r.history.val_loss)
    assert sf.figure.layout.yaxis.range[1] > top
    assert slider_figure(grid, title="MLP").figure.layout.yaxis.range is None


def test_fixed_ranges_leave_category_axes_to_plotly():
    sets = [[go.Bar(x=["a", "b"], y=[k, 2 * k])] for k in range(6)]
    fig = trace_slider_figure(MAP_AXES, sets, title="t", xaxis_title="x", yaxis_title="y",
                              fixed_ranges=True).figure  # fmt: skip
    assert fig.layout.xaxis.range is None
    assert fig.layout.yaxis.range == pytest.approx((-0.5, 10.5))


def test_a_contours_range_is_its_extent():
    fig = make_map_figure(go.Contour, fixed_ranges=True).figure
    assert fig.layout.xaxis.range == (-1.0, 2.0) and fig.layout.yaxis.range == (10.0, 30.0)
    zs = [z for k in range(6) for row in map_z(k) for z in row]
    assert {(t.zmin, t.zmax) for t in fig.data[::2]} == {(min(zs), max(zs))}


def test_rows_of_small_panels_get_a_lower_plot_and_narrower_gaps():
    """Ten 28 x 28 images in 2 x 5 panels: with the default gaps (0.12 of the width each)
    the gaps would take half the width, and 300 px a row would leave most of it empty."""
    axes = {"lr": [0.1, 1.0]}
    traces = [[go.Heatmap(z=[[k + j] * 28] * 28) for j in range(10)] for k in range(2)]
    panels = [(j // 5 + 1, j % 5 + 1) for j in range(10)]
    common = {"title": "t", "xaxis_title": "x", "yaxis_title": "y", "panels": (2, 5),
              "trace_panels": panels}
    tall = trace_slider_figure(axes, traces, **common).figure
    low = trace_slider_figure(axes, traces, plot_height=280, **common).figure
    assert tall.layout.height - low.layout.height == 600 - 280
    widths = [d[1] - d[0] for d in (low.layout[f"xaxis{c}"].domain for c in ["", 2, 3, 4, 5])]
    assert min(widths) > 0.15, widths  # each panel gets more than 3/4 of a fifth
    two = trace_slider_figure(axes, [[go.Scatter(y=[1])] * 2] * 2, title="t", xaxis_title="x",
                              yaxis_title="y", panels=(1, 2),
                              trace_panels=[(1, 1), (1, 2)]).figure  # fmt: skip
    assert two.layout.xaxis2.domain[0] - two.layout.xaxis.domain[1] == pytest.approx(0.12)
    with pytest.raises(ValueError, match="plot_height=50"):
        trace_slider_figure(axes, traces, plot_height=50, **common)


# ----------------------------------------------------------------------------------
# Images tiled into one heat map (set_tiles)

TILE_LABELS = [f"template {j}" for j in range(10)]


def tile_images(k: int) -> list[np.ndarray]:
    """Ten 28 x 28 images (the last one 20 x 24) of configuration ``k``: image j's pixel
    (r, c) holds a number that says which configuration, image and pixel it is."""
    return [(np.add.outer(np.arange(28 if j < 9 else 20), np.arange(28 if j < 9 else 24))
             % 50 + j + 10 * k) for j in range(10)]  # fmt: skip


def make_tile_figure(tiles: bool = True) -> tuple[PageFigure, list]:
    """Ten images in two rows of five per configuration of a 2-configuration grid, drawn
    as percent heat maps with a colour bar below (as the book's templates), labelled by
    :func:`set_tiles` if ``tiles``; also the tilings."""
    tilings = [tile(tile_images(k), cols=5, row_gap=6, col_gap=2) for k in range(2)]
    fig = trace_slider_figure(
        {"lr": [0.1, 1.0]}, [[percent_heatmap(t.array, scale=100.0, showscale=True,
                                              colorbar={"orientation": "h", "y": -0.04,
                                                        "yanchor": "top"})]
                             for t in tilings],
        title="Templates", xaxis_title="", yaxis_title="", plot_height=250)  # fmt: skip
    return (set_tiles(fig, tilings[0], TILE_LABELS) if tiles else fig), tilings


def test_tiles_are_labelled_square_and_carry_their_layouts_for_a_narrow_screen():
    fig, (first, _) = make_tile_figure()
    height, width = first.array.shape
    labels = [a for a in fig.figure.layout.annotations if a.text in TILE_LABELS]
    assert [a.text for a in labels] == TILE_LABELS
    # Each label centred over its tile, in the blank rows above it.
    (top, left), (_, w) = first.corners[9], first.shapes[9]
    assert (labels[9].x, labels[9].y) == (left + (w - 1) / 2, top - 0.5)
    x, y = fig.figure.layout.xaxis, fig.figure.layout.yaxis
    assert not x.visible and not y.visible and y.scaleanchor == "x"
    assert tuple(x.range) == (-0.5, width - 0.5) and tuple(y.range) == (height - 0.5, -6.5)
    assert fig.figure.layout.margin.l == fig.figure.layout.margin.r == 10
    spec = json_loads_data(fig.to_html(), fig.fig_id)["tiles"]
    assert spec["traces"] == [0] and spec["cell_width"] == 28 and spec["min_width"] == 84
    assert spec["annotations"] == [fig.figure.layout.annotations.index(a) for a in labels]
    # One layout per number of columns, the last the figure's own: what relaid draws.
    assert [lay["cols"] for lay in spec["layouts"]] == [1, 2, 3, 4, 5]
    for lay in spec["layouts"]:
        again = first.relaid(lay["cols"])
        assert lay["shape"] == list(again.array.shape)
        assert lay["corners"] == [list(c) for c in again.corners]
        assert lay["y_range"] == [again.array.shape[0] - 0.5, -6.5]
    with pytest.raises(ValueError, match="9 labels for 10 tiles"):
        set_tiles(make_tile_figure(tiles=False)[0], first, TILE_LABELS[:9])
    with pytest.raises(ValueError, match="without tiles"):
        set_tiles(fig, first, TILE_LABELS)
    other = trace_slider_figure({"lr": [0.1, 1.0]}, [[go.Heatmap(z=[[k]])] for k in range(2)],
                                title="t", xaxis_title="", yaxis_title="")  # fmt: skip
    with pytest.raises(ValueError, match="no heat map of shape"):
        set_tiles(other, first, TILE_LABELS)
    with pytest.raises(ValueError, match="one panel"):
        set_tiles(make_map_figure(), first, TILE_LABELS)


# ----------------------------------------------------------------------------------
# Hostile text: nothing a page embeds can end a <script> block or become markup

HOSTILE = "</script><script>window.__pwned = 1</script><!--"
HOSTILE_IMG = '<img src=x onerror="window.__pwned = 2">\u2028&amp;'


def hostile_figure() -> PageFigure:
    axes = {f"lr{HOSTILE}": [0.1, 1.0], "init": [f"a{HOSTILE}", f"b{HOSTILE_IMG}"]}
    sets = [[go.Scatter(y=[k, k + 1], name=f"curve {HOSTILE}")] for k in range(4)]
    return trace_slider_figure(
        axes, sets, title=f"Title {HOSTILE}", xaxis_title=f"x {HOSTILE}", yaxis_title="y",
        readouts=[f"readout {k} {HOSTILE}{HOSTILE_IMG}" for k in range(4)],
        axis_labels={"init": f"label {HOSTILE}"}, caption=f"caption {HOSTILE}{HOSTILE_IMG}",
    )  # fmt: skip


def test_script_json_escapes_what_would_end_a_script_block():
    text = script_json({"a": "</script>&\u2028\u2029<!--", "b": ["α"]})
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == {"a": "</script>&\u2028\u2029<!--", "b": ["α"]}


def test_hostile_values_stay_inside_the_script_blocks_and_the_text():
    sf = hostile_figure()
    data_json = sf.data_json()
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in data_json
    page = sf.to_html()
    data = json_loads_data(page, sf.fig_id)
    assert data["names"][0] == f"lr{HOSTILE}"
    assert data["values"][1] == [f"a{HOSTILE}", f"b{HOSTILE_IMG}"]
    assert data["traces"][0]["name"] == f"curve {HOSTILE}"
    assert data["figure"]["layout"]["xaxis"]["title"]["text"] == f"x {HOSTILE}"
    # A readout is plotly's HTML subset: its markup beyond that is escaped, so it shows
    # as text and runs nothing.
    escaped = htmllib.escape(f"{HOSTILE}{HOSTILE_IMG}", quote=False)
    assert data["readouts"][0].endswith(f"readout 0 {escaped}")
    # The configuration's own text is escaped for HTML; it reads as typed.
    assert "label &lt;/script&gt;" in data["readouts"][0]
    assert re.fullmatch(r"[a-z][a-z0-9-]*", sf.fig_id)
    # Title, caption, labels and values are text in the page's markup: escaped.
    inputs = start_tags(page, "input")
    assert inputs[0]["name"] == f"lr{HOSTILE}"
    assert inputs[1]["aria-valuetext"] == f"a{HOSTILE}"
    assert f">label {htmllib.escape(HOSTILE)}</label>" in page
    assert f">caption {htmllib.escape(HOSTILE + HOSTILE_IMG)}</p>" in page
    # Two <script> blocks (the data, the program), each opened and closed once: no value
    # ended one or opened another, and no value became an element.
    assert page.count("<script") == 2 and page.lower().count("</script") == 2, (
        "a value ended a <script> block or opened one: "
        + repr(re.findall(r".{60}<script.{60}", page)[:4]))
    assert "<!--" not in page and "<img" not in page
    for block in re.findall(r"<script[^>]*>(.*?)</script>", page, re.S):
        assert "\u2028" not in block and "\u2029" not in block


# ----------------------------------------------------------------------------------
# Ids


def test_default_ids_differ_where_titles_differ_only_in_letters_the_slug_drops():
    axes = {"lr": [0.1, 1.0]}
    ids = {default_fig_id(t, axes) for t in ["Loss (α)", "Loss (β)", "Loss"]}
    assert len(ids) == 3
    long = "A title that goes on for longer than the slug keeps, "
    assert default_fig_id(long + "one", axes) != default_fig_id(long + "two", axes)
    assert default_fig_id("t", {"lr": [1]}) != default_fig_id("t", {"dropout": [1]})
    # Values are left out: a profile that trains other values keeps the links.
    assert default_fig_id("t", {"lr": [1]}) == default_fig_id("t", {"lr": [2, 3]})
    assert all(re.fullmatch(r"[a-z][a-z0-9-]*", i) for i in ids)
    assert re.fullmatch(r"fig-[a-z0-9-]+", default_fig_id("2-D playground", axes))


def test_default_ids_are_the_same_in_every_build():
    # A fixed value: a digest of the text itself (no hash(), no process state).
    assert default_fig_id("Loss (α)", {"lr": [0.1]}) == "loss-lr-64c80092"
    fig = slider_figure(make_grid(), title="Loss (α)")
    assert fig.fig_id == default_fig_id("Loss (α)", AXES)


def test_readout_of_an_early_stopped_run_says_which_epoch_the_test_measured():
    """A run that kept its best epoch's weights (``fine_tune(restore_best=True)``) reads
    its final validation accuracy, then the best one and the epoch whose weights the test
    accuracy was measured with, so the two are not read as one epoch's."""
    run = make_grid().runs[0]
    last = run.history.val_acc[-1]
    kept = dataclasses.replace(run, metrics={"best_epoch": 2.0, "best_val_acc": 0.8125},
                               test_acc=0.79)  # fmt: skip
    text = readout(kept)
    assert f"validation accuracy {100 * last:.2f}%" in text
    assert "best validation accuracy 81.25% at epoch 2, whose weights are kept" in text
    assert text.endswith("test accuracy 79.00% with them")
    assert "with them" not in readout(dataclasses.replace(run, test_acc=0.79))


def test_describe_config_is_the_readouts_wording():
    config = {"lr": 0.1, "dropout": 0.5, "init": "normal"}
    assert describe_config(config) == "learning rate 0.1, dropout rate 0.5, initialization normal"
    assert describe_config({"lr": 1e-5}, {"lr": "η"}) == "η 1e-05"
    assert readout(make_grid().get(**DEFAULT)).startswith(f"<b>{describe_config(DEFAULT)}</b>")


# ----------------------------------------------------------------------------------
# figure.js, figure.css (and playground.js): files of the package, served once per book
# page

ROOT = Path(__file__).resolve().parents[1]
PAGE_FILES = (FIGURE_JS, FIGURE_CSS, *KIND_SCRIPTS["playground"])


def load_offline_assets() -> Any:
    return offline_assets


class FakeApp:
    """What ``booktools/offline_assets.py`` uses of Sphinx's application: the scripts and
    style sheets it adds (``js_files``: file and priority; ``js_attributes``: each
    file's attributes, ``defer``)."""

    def __init__(self, outdir: Path | None = None, srcdir: Path | None = None):
        self.js_files: list[tuple[str, int]] = []
        self.js_attributes: dict[str, dict[str, str]] = {}
        self.css_files: list[str] = []
        self.outdir, self.srcdir = outdir, srcdir
        self.builder = type("Builder", (), {"format": "html"})()
        self.config = type("Config", (), {"offline_mathjax_dir": "mathjax"})()

    def add_js_file(self, filename: str, priority: int = 500, **attributes: str) -> None:
        self.js_files.append((filename, priority))
        self.js_attributes[filename] = attributes

    def add_css_file(self, filename: str, priority: int = 500, **attributes: str) -> None:
        self.css_files.append(filename)


def test_the_page_files_are_files_of_the_package_that_inline_safely(tmp_path):
    for path in PAGE_FILES:
        text = program(path)
        assert text == path.read_text(encoding="utf-8")
        assert "</script" not in text.lower() and "</style" not in text.lower()
        assert "<!--" not in text
    assert "d2lFigures" in program(FIGURE_JS)
    unsafe = tmp_path / "unsafe.js"
    unsafe.write_text("var end = '</script>';")
    with pytest.raises(ValueError, match="cannot be inlined"):
        program(unsafe)
    page = slider_figure(make_grid(), title="MLP").to_html()
    # For pages that do not load the files: once each, the kind's own script none.
    assert page.count(program(FIGURE_JS)) == 1 and page.count(program(FIGURE_CSS)) == 1
    assert KIND_SCRIPTS["sliders"] == ()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "setuptools"]["package-data"]["d2lcore"]  # fmt: skip
    assert {p.name for p in PAGE_FILES} <= set(package_data)


def test_the_wheel_ships_the_page_files(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src" / "d2lcore", tmp_path / "src" / "d2lcore",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    build = "from setuptools import build_meta; print(build_meta.build_wheel('dist'))"
    done = subprocess.run([sys.executable, "-c", build], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as z:
        for path in PAGE_FILES:
            assert z.read(f"d2lcore/{path.name}").decode() == path.read_text(encoding="utf-8")


def _fake_mathjax(folder: Path, parts: tuple[str, ...]) -> None:
    for part in parts:
        target = folder / part
        (target.parent if "." in part else target).mkdir(parents=True, exist_ok=True)
        if "." in part:
            target.write_text("")


def test_the_book_serves_the_page_files_once_and_drops_the_inline_copies(tmp_path, monkeypatch):
    assets = load_offline_assets()
    assert assets.FIGURE_JS.resolve() == FIGURE_JS.resolve()
    assert assets.FIGURE_CSS.resolve() == FIGURE_CSS.resolve()
    assert assets.PLAYGROUND_JS.resolve() == KIND_SCRIPTS["playground"][0].resolve()
    figures = [slider_figure(make_grid(), title=t).to_html() for t in ("One", "Two")]
    context = {"body": "".join(figures)}
    css = f"<style>{program(FIGURE_CSS)}</style>"
    assert context["body"].count(program(FIGURE_JS)) == 2 and context["body"].count(css) == 2
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", context, None)
    assert app.js_files == [("vendor/plotly.min.js", 200), ("vendor/d2l-figure.js", 201)]
    # Deferred, by default: the page paints its text before plotly.js runs.
    assert all(a == {"defer": "defer"} for a in app.js_attributes.values())
    assert app.css_files == ["vendor/d2l-figure.css"]  # once for the page
    body = context["body"]
    assert program(FIGURE_JS) not in body and css not in body and "<style" not in body
    # What stays of each figure: its data, and the call that attaches it.
    assert body.count('class="d2l-figure-data"') == 2
    assert body.count("window.d2lFigures && window.d2lFigures.attach(") == 2
    # Blocking: the same scripts, without the attribute.
    monkeypatch.setattr(assets, "PLOTLY_LOADING", "blocking")
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", {"body": "".join(figures)}, None)
    assert [f for f, _ in app.js_files] == ["vendor/plotly.min.js", "vendor/d2l-figure.js"]
    assert all(a == {} for a in app.js_attributes.values())
    # A page with plotly's own figures and no interactive one gets plotly.js alone.
    plain = {"body": go.Figure().to_html(include_plotlyjs=False, full_html=False)}
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", plain, None)
    assert app.js_files == [("vendor/plotly.min.js", 200)] and app.css_files == []
    # A page without figures gets nothing.
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", {"body": "<p>text</p>"}, None)
    assert app.js_files == [] and app.css_files == []
    # The files are copied beside plotly.js at the end of the build.
    _fake_mathjax(tmp_path / "src" / "mathjax", assets.MATHJAX_PARTS)
    app = FakeApp(outdir=tmp_path / "out", srcdir=tmp_path / "src")
    assets._copy_assets(app, None)
    vendor = tmp_path / "out" / "_static" / "vendor"
    for served, path in [("d2l-figure.js", FIGURE_JS), ("d2l-figure.css", FIGURE_CSS),
                         ("d2l-playground.js", KIND_SCRIPTS["playground"][0])]:  # fmt: skip
        assert (vendor / served).read_text() == path.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to parse the page scripts")
@pytest.mark.parametrize("script", [FIGURE_JS, *KIND_SCRIPTS["playground"]], ids=lambda p: p.name)
def test_the_page_scripts_are_valid_javascript(script):
    done = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------------
# The page script, in a real browser

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
PLOTLY_HEAD = '<script src="plotly.min.js"></script>'


@contextlib.contextmanager
def serve_page(root: Path, body: str, head: str = PLOTLY_HEAD) -> Iterator[str]:
    """Write ``index.html`` (``head``, by default plotly.js; then ``body``) and plotly.js
    into ``root`` and serve the folder on 127.0.0.1 while the ``with`` block runs; yields
    the page's URL."""
    shutil.copy(PLOTLY_JS, root / "plotly.min.js")
    (root / "index.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Figures</title>{head}</head><body>{body}</body></html>"
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def open_page(browser: Any, url: str, width: int = 1000, height: int = 900) -> tuple[Any, list]:
    """``url`` in a new browser page of that viewport, its plots drawn; returns the page
    and the list that collects its JavaScript errors."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    wait_for_plots(page)
    return page, errors


@contextlib.contextmanager
def figure_page(root: Path, browser: Any, body: str) -> Iterator[tuple[Any, list[str]]]:
    """:func:`serve_page` opened in a new browser page, its plots drawn; yields the page
    and the list that collects the page's JavaScript errors."""
    with serve_page(root, body) as url:
        page, errors = open_page(browser, url)
        yield page, errors
        page.close()


def select(page: Any, fig_id: str, *steps: int) -> dict:
    """Move control ``i`` of the figure to ``steps[i]``; return the figure's state."""
    for i, step in enumerate(steps):
        move_slider(page, fig_id, i, step)
    return figure_state(page, fig_id)


def _chromium() -> None:
    pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium")


@pytest.fixture(scope="module")
def served_page(tmp_path_factory):
    """A page with two slider figures and plotly.js beside it, served on 127.0.0.1."""
    _chromium()
    first = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    second = slider_figure(make_grid({"lr": [0.01, 0.1, 1.0]}, with_val=False),
                           title="Linear regression", default={"lr": 0.1})  # fmt: skip
    body = f"{first.to_html()}<p>text</p>{second.to_html()}"
    with serve_page(tmp_path_factory.mktemp("sliders"), body) as url:
        yield url, first, second


def _expect(page: Any, fig: PageFigure, grid: GridResults, config: dict) -> dict:
    """Assert the figure shows ``config`` of ``grid``: the controls, the traces plotly
    holds, the readout and the "diverged" marks; return the figure's state."""
    fig_id = fig.fig_id
    state = figure_state(page, fig_id)
    values = {k: format_value(v) for k, v in config.items()}
    assert state["config"] == values
    assert state["valuetexts"] == list(values.values())
    h = grid.get(**config).history
    series = [h.train_loss, h.val_loss, h.val_acc] if grid.runs[0].history.val_loss else [
        h.train_loss]  # fmt: skip
    k = grid.runs.index(grid.get(**config))
    assert [t["index"] for t in state["visible"]] == [k * len(series) + j
                                                      for j in range(len(series))]  # fmt: skip
    assert [len(t["y"]) for t in state["visible"]] == [len(s) for s in series]
    assert all(close(t["y"], s) for t, s in zip(state["visible"], series, strict=True))
    assert state["readout"] == page_readout(page, fig_id) == text_of(fig.spec.readouts[k])
    if h.diverged:
        assert f"diverged at epoch {h.diverged_epoch}" in state["readout"]
        assert diverged_marks(page, fig_id) == [f"diverged at epoch {h.diverged_epoch}"] * 2
    else:
        assert f"train loss {h.train_loss[-1]:.4g}" in state["readout"]
        assert not diverged_marks(page, fig_id)
    return state


@pytest.mark.browser
def test_controls_switch_configurations_in_the_browser(served_page, browser):
    url, first, second = served_page
    grid, grid2 = make_grid(), make_grid({"lr": [0.01, 0.1, 1.0]}, with_val=False)
    page, errors = open_page(browser, url)
    # The script enabled the controls and left the address alone.
    assert page.locator("input.d2l-control-input:disabled").count() == 0
    assert _expect(page, first, grid, DEFAULT)["hash"] == ""
    _expect(page, second, grid2, {"lr": 0.1})
    # Dropout, then the learning rate: the plot shows exactly that pair.
    move_slider(page, first.fig_id, 1, 0)
    _expect(page, first, grid, {**DEFAULT, "dropout": 0.0})
    move_slider(page, first.fig_id, 0, 2)
    state = _expect(page, first, grid, {"lr": 1.0, "dropout": 0.0, "init": "xavier_normal"})
    assert state["hash"] == f"#{first.fig_id}:lr=1,dropout=0,init=xavier_normal"
    # Every combination, one control move at a time.
    for combo in itertools.product(*(range(len(v)) for v in AXES.values())):
        actives = figure_state(page, first.fig_id)["actives"]
        for i, j in enumerate(combo):
            if actives[i] != j:
                move_slider(page, first.fig_id, i, j)
        _expect(page, first, grid, {k: v[j] for (k, v), j in zip(AXES.items(), combo,
                                                                  strict=True)})  # fmt: skip
    # Dragging the thumb along the track works too.
    move_slider(page, first.fig_id, 0, 0)
    drag_slider(page, first.fig_id, 0, 2)
    _expect(page, first, grid, {"lr": 1.0, "dropout": 0.5, "init": "xavier_normal"})
    # The second figure adds its part to the hash and leaves the first one's alone.
    before = figure_state(page, first.fig_id)["hash"]
    move_slider(page, second.fig_id, 0, 0)
    state = _expect(page, second, grid2, {"lr": 0.01})
    assert state["hash"] == f"{before}&{second.fig_id}:lr=0.01"
    page.close()
    assert errors == []


def _wait_steps(page: Any, fig_id: str, steps: list[int]) -> None:
    page.wait_for_function(
        """([id, steps]) => JSON.stringify(Array.from(document.querySelectorAll(
             '#' + id + '-figure input.d2l-control-input'), i => Number(i.value)))
             === JSON.stringify(steps)""",
        arg=[fig_id, steps],
        timeout=5_000,
    )


@pytest.mark.browser
def test_a_url_hash_restores_the_configuration(served_page, browser):
    url, first, second = served_page
    grid, grid2 = make_grid(), make_grid({"lr": [0.01, 0.1, 1.0]}, with_val=False)
    # A plain anchor and a differently written number (0.010) are fine.
    page, errors = open_page(
        browser, f"{url}#top&{first.fig_id}:lr=0.010,dropout=0,init=normal&{second.fig_id}:lr=1")
    _wait_steps(page, first.fig_id, [0, 0, 0])
    _expect(page, first, grid, {"lr": 0.01, "dropout": 0.0, "init": "normal"})
    _expect(page, second, grid2, {"lr": 1.0})
    # The restored controls keep working from where they were put.
    move_slider(page, first.fig_id, 2, 1)
    _expect(page, first, grid, {"lr": 0.01, "dropout": 0.0, "init": "xavier_normal"})
    # A link to another configuration on the same page (a hash change) restores it too.
    page.evaluate("(id) => { window.location.hash = id + ':lr=1,dropout=0.5,init=normal'; }",
                  first.fig_id)  # fmt: skip
    _wait_steps(page, first.fig_id, [2, 1, 0])
    _expect(page, first, grid, {"lr": 1.0, "dropout": 0.5, "init": "normal"})
    # Names and values the figure does not have are ignored.
    page.evaluate("(id) => { window.location.hash = id + ':lr=7,momentum=0.9,dropout=0'; }",
                  first.fig_id)  # fmt: skip
    _wait_steps(page, first.fig_id, [2, 0, 0])
    _expect(page, first, grid, {"lr": 1.0, "dropout": 0.0, "init": "normal"})
    page.close()
    assert errors == []


_SHOWN = """(id) => { const el = document.getElementById(id + '-figure');
  const gd = document.getElementById(id), live = el.querySelector('.d2l-readout');
  const inputs = Array.from(el.querySelectorAll('input.d2l-control-input'));
  return {steps: inputs.map(i => Number(i.value)),
          valuetexts: inputs.map(i => i.getAttribute('aria-valuetext')),
          outputs: inputs.map(i => el.querySelector('output[for="' + i.id + '"]').textContent),
          readout: live.textContent, role: live.getAttribute('role'),
          live: live.getAttribute('aria-live'), shown: gd.d2lShown,
          y: gd.data.map(t => Array.from(t.y)), hash: location.hash}; }"""


def _check_keyboard_moves(page: Any, fig: PageFigure, i: int) -> None:
    """With control ``i`` of ``fig`` focused: ArrowRight (ArrowLeft at the end), Home,
    End and ArrowLeft each move it one step or to an end, and the value in words, the
    readout (a polite live region), the traces plotly holds and the address follow."""
    data = json.loads(fig.data_json())
    n, per = len(data["values"][i]), data["per_config"]
    state = page.evaluate(_SHOWN, fig.fig_id)
    start = state["steps"][i]
    keys = [("ArrowRight", start + 1) if start < n - 1 else ("ArrowLeft", start - 1),
            ("Home", 0), ("End", n - 1), ("ArrowLeft", n - 2)]
    for key, step in keys:
        before = state
        page.keyboard.press(key)
        page.wait_for_function(f"(id) => ({_SHOWN})(id).steps[{i}] === {step}", arg=fig.fig_id,
                               timeout=5_000)  # fmt: skip
        page.wait_for_timeout(30)
        state = page.evaluate(_SHOWN, fig.fig_id)
        what = f"{fig.fig_id} control {i} after {key}"
        text = data["values"][i][step]
        assert state["valuetexts"][i] == text and state["outputs"][i] == text, what
        k = sum(s * stride for s, stride in zip(state["steps"], data["strides"], strict=True))
        assert (state["role"], state["live"]) == ("status", "polite")
        assert state["readout"] == text_of(data["readouts"][k]), what
        assert state["shown"] == k, what
        assert state["y"] == [t["y"] for t in data["traces"][k * per:(k + 1) * per]], what
        if state["steps"] != before["steps"]:
            assert state["readout"] != before["readout"] and state["y"] != before["y"], what
        part = ",".join(f"{name}={vs[s]}" for name, vs, s in zip(data["names"], data["values"],
                                                                 state["steps"], strict=True))
        assert f"{fig.fig_id}:{part}" in state["hash"], what
        assert page.evaluate("() => document.activeElement.id") == f"{fig.fig_id}-control-{i}"


@pytest.mark.browser
def test_the_keyboard_reaches_and_moves_every_control(served_page, browser):
    """From the top of the page, Tab reaches every control of every figure in page order
    (nothing else on this page takes the focus), and the keys move each one."""
    url, first, second = served_page
    page, errors = open_page(browser, url)
    ids = page.evaluate("() => Array.from(document.querySelectorAll("
                        "'input.d2l-control-input'), i => i.id)")  # fmt: skip
    expected = [(fig, i) for fig in (first, second) for i in range(len(fig.controls))]
    assert ids == [f"{fig.fig_id}-control-{i}" for fig, i in expected]
    for fig, i in expected:
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.id") == f"{fig.fig_id}-control-{i}"
        _check_keyboard_moves(page, fig, i)
    # Past the last control the focus leaves the figures (to the browser's own UI).
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") not in ids
    page.close()
    assert errors == []


@pytest.mark.browser
def test_without_javascript_the_page_shows_the_default_and_disabled_controls(served_page,
                                                                             browser):
    url, first, second = served_page
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(url)
    for fig in (first, second):
        figure = page.locator(f"#{fig.fig_id}-figure")
        inputs = figure.locator("input.d2l-control-input")
        assert inputs.count() == len(fig.controls)
        for i, c in enumerate(fig.controls):
            control = inputs.nth(i)
            assert control.is_disabled() and control.is_visible()
            assert control.input_value() == str(c.active)
            assert control.get_attribute("aria-valuetext") == c.values[c.active]
            assert figure.locator("output").nth(i).text_content() == c.values[c.active]
        live = figure.locator(".d2l-readout")
        assert live.text_content() == text_of(fig.readout) and live.is_visible()
        assert figure.locator(".d2l-figure-title").text_content() == fig.title
        assert figure.locator(".d2l-figure-caption").text_content() == fig.caption
        assert figure.locator(".d2l-noscript").is_visible()
        assert figure.locator(".d2l-plot svg").count() == 0  # nothing drew it
    context.close()


@pytest.fixture(scope="module")
def phone_page(tmp_path_factory):
    """A page with two 1 x 2-panel figures (a map beside a curve; the loss beside the
    accuracy) served on 127.0.0.1."""
    _chromium()
    maps = make_map_figure(fixed_ranges=True)
    mlp = slider_figure(make_grid(), title="An MLP's loss and accuracy for each learning "
                        "rate, dropout rate and initialization", default=DEFAULT)  # fmt: skip
    body = f"<h1>Figures on a phone</h1>{maps.to_html()}<p>text</p>{mlp.to_html()}"
    with serve_page(tmp_path_factory.mktemp("phone"), body) as url:
        yield url, maps, mlp


_LAYOUT = """(id) => { const el = document.getElementById(id + '-figure');
  const gd = document.getElementById(id), fl = gd._fullLayout;
  const box = e => { const r = e.getBoundingClientRect();
                     return [r.left, r.top, r.right, r.bottom]; };
  const parts = {title: el.querySelector('.d2l-figure-title'),
                 caption: el.querySelector('.d2l-figure-caption'),
                 readout: el.querySelector('.d2l-readout'), plot: gd};
  el.querySelectorAll('.d2l-control').forEach((c, i) => { parts['control ' + i] = c; });
  const boxes = {};
  Object.keys(parts).forEach(k => { boxes[k] = box(parts[k]); });
  return {boxes: boxes, svg: box(gd.querySelector('.main-svg')),
          x: [fl.xaxis.domain, fl.xaxis2.domain], y: [fl.yaxis.domain, fl.yaxis2.domain],
          width: document.documentElement.clientWidth,
          scroll: document.documentElement.scrollWidth}; }"""


def check_fits(page: Any, fig_id: str, width: int) -> dict:
    """The figure on a screen ``width`` pixels wide: its panels in one column, nothing
    wider than the screen, its parts side by side or one below the other."""
    lay = page.evaluate(_LAYOUT, fig_id)
    assert lay["scroll"] <= width, f"the page is {lay['scroll']} px wide on a {width} px screen"
    (x1, x2), (y1, y2) = lay["x"], lay["y"]
    assert y2[1] <= y1[0] + 1e-6, f"the second panel is not below the first: {y1}, {y2}"
    assert x2 == pytest.approx(x1), "stacked panels share the width"
    boxes = lay["boxes"]
    for name, (left, top, right, bottom) in [*boxes.items(), ("plot's svg", lay["svg"])]:
        assert right > left and bottom > top, f"{name} is not shown: {boxes[name]}"
        assert -0.5 <= left and right <= width + 0.5, f"{name} {left}..{right} leaves {width} px"
    for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2):
        apart = (ba[2] <= bb[0] + 0.5 or bb[2] <= ba[0] + 0.5 or ba[3] <= bb[1] + 0.5
                 or bb[3] <= ba[1] + 0.5)  # fmt: skip
        assert apart, f"{a} {ba} and {b} {bb} overlap at {width} px"
    return lay


@pytest.mark.browser
def test_on_a_phone_the_panels_stack_and_nothing_overflows(phone_page, browser):
    url, maps, mlp = phone_page
    page, errors = open_page(browser, url, width=390, height=844)
    for fig in (maps, mlp):
        check_fits(page, fig.fig_id, 390)
    # The controls work there too, and the panels stay stacked.
    control_locator(page, maps.fig_id, 1).focus()
    page.keyboard.press("End")
    page.wait_for_timeout(100)
    state = figure_state(page, maps.fig_id)
    assert state["actives"] == [0, 2]
    assert state["visible"][0]["z"] == map_z(2)
    check_fits(page, maps.fig_id, 390)
    # Narrower still, after the page was laid out: the figures follow the window.
    page.set_viewport_size({"width": 320, "height": 700})
    page.wait_for_timeout(400)  # the page script waits for the resizing to stop
    for fig in (maps, mlp):
        check_fits(page, fig.fig_id, 320)
    # On a wide screen again the panels stand side by side.
    page.set_viewport_size({"width": 1000, "height": 900})
    page.wait_for_function(
        "(id) => { const fl = document.getElementById(id)._fullLayout;"
        " return fl.xaxis2.domain[0] > fl.xaxis.domain[1]"
        " && fl.yaxis2.domain[1] === fl.yaxis.domain[1]; }",
        arg=maps.fig_id, timeout=5_000,
    )  # fmt: skip
    page.close()
    assert errors == []


_TILES = """(id) => { const gd = document.getElementById(id);
  const labels = Array.from(gd.querySelectorAll('.annotation')).map(a => {
    const r = a.getBoundingClientRect();
    return [a.textContent, r.left, r.top, r.right, r.bottom]; });
  const img = gd.querySelector('.hm image, image').getBoundingClientRect();
  return {z: gd.data[0].z, labels: labels,
          image: [img.left, img.top, img.right, img.bottom],
          scroll: document.documentElement.scrollWidth}; }"""


@pytest.mark.browser
def test_on_a_phone_tiles_go_in_fewer_columns_each_wide_enough_and_labelled(tmp_path,
                                                                           browser):  # fmt: skip
    """Ten images in rows of five: on a phone (390 and 320 pixels) in rows of as many as
    are 84 pixels wide or more, their labels above them, none over another, the pixels
    square; every configuration laid out so; on a wide screen in rows of five again."""
    fig, tilings = make_tile_figure()
    with serve_page(tmp_path, fig.to_html()) as url:
        page, errors = open_page(browser, url, width=390, height=844)
        for width, step in ((390, 0), (320, 1)):
            if width != 390:
                page.set_viewport_size({"width": width, "height": 700})
                page.wait_for_timeout(400)  # the page script waits for the resizing to stop
                move_slider(page, fig.fig_id, 0, step)
            shown = page.evaluate(_TILES, fig.fig_id)
            assert shown["scroll"] <= width
            z = np.array(shown["z"])
            cols = next(c for c in range(1, 6) if z.shape == tilings[step].relaid(c).array.shape)
            assert cols < 5, f"five columns at {width} px"
            np.testing.assert_array_equal(z, np.rint(tilings[step].relaid(cols).array))
            # Each tile at least 84 pixels wide, with square pixels.
            image = shown["image"]
            scale = (image[2] - image[0]) / z.shape[1]
            assert 28 * scale >= 84 - 0.5, f"{28 * scale:.0f} px a tile at {width} px"
            assert (image[3] - image[1]) / z.shape[0] == pytest.approx(scale, rel=0.02)
            assert image[0] >= -0.5 and image[2] <= width + 0.5
            # The labels in order, each above its own tile, none over another.
            labels = shown["labels"]
            assert [lab[0] for lab in labels] == TILE_LABELS
            corners = tilings[step].relaid(cols).corners
            for (text, left, _, right, bottom), (row, col) in zip(labels, corners, strict=True):
                centre = image[0] + (col + 14) * scale
                assert left < centre < right, f"{text} is not over its tile"
                assert bottom <= image[1] + row * scale + 1, f"{text} is not above its tile"
            for a, b in itertools.combinations(labels, 2):
                apart = a[3] <= b[1] + 0.5 or b[3] <= a[1] + 0.5 or a[4] <= b[2] + 0.5 \
                    or b[4] <= a[2] + 0.5
                assert apart, f"{a[0]} and {b[0]} overlap at {width} px"
        page.set_viewport_size({"width": 1000, "height": 900})
        page.wait_for_function(
            f"(id) => document.getElementById(id).data[0].z[0].length === "
            f"{tilings[1].array.shape[1]}", arg=fig.fig_id, timeout=5_000)  # fmt: skip
        np.testing.assert_array_equal(page.evaluate(_TILES, fig.fig_id)["z"],
                                      np.rint(tilings[1].array))
        page.close()
    assert errors == []


@pytest.mark.browser
def test_on_a_phone_a_link_with_a_configuration_opens_on_it(phone_page, browser):
    url, maps, mlp = phone_page
    link = f"{url}#{maps.fig_id}:lr=1,seed=2&{mlp.fig_id}:lr=0.01,dropout=0,init=normal"
    page, errors = open_page(browser, link, width=320, height=700)
    _wait_steps(page, maps.fig_id, [1, 2])
    state = figure_state(page, maps.fig_id)
    assert [t["index"] for t in state["visible"]] == [10, 11]
    assert state["visible"][0]["z"] == map_z(5) and state["readout"].endswith("map 5")
    _expect(page, mlp, make_grid(), {"lr": 0.01, "dropout": 0.0, "init": "normal"})
    for fig in (maps, mlp):
        check_fits(page, fig.fig_id, 320)
    page.close()
    assert errors == []


@pytest.mark.browser
def test_trace_figure_controls_switch_traces_in_the_browser(tmp_path, browser):
    sf = make_trace_figure(default={"depth": 2, "init": "zeros"})
    with figure_page(tmp_path, browser, sf.to_html()) as (page, errors):
        configs = grid_configs(TRACE_AXES)
        for depth_step, init_step in [(0, 2), (1, 2), (1, 0)]:
            state = select(page, sf.fig_id, depth_step, init_step)
            k = depth_step * 3 + init_step
            assert [t["index"] for t in state["visible"]] == [2 * k, 2 * k + 1]
            assert state["visible"][0]["y"] == [k + 1.0] * configs[k]["depth"]
            assert page_readout(page, sf.fig_id).endswith(f"case {k}")
        assert state["hash"] == f"#{sf.fig_id}:depth=5,init=zeros"
        # The keyboard too.
        press_key(page, sf.fig_id, 1, "End")
        state = figure_state(page, sf.fig_id)
        assert [t["index"] for t in state["visible"]] == [10, 11]
        assert state["valuetexts"] == ["5", "kaiming_normal"]
        assert errors == []


@pytest.mark.browser
def test_moving_a_control_shows_each_configurations_map(tmp_path, browser):
    sf = make_map_figure(default={"lr": 0.1, "seed": 0}, fixed_ranges=True)
    with figure_page(tmp_path, browser, sf.to_html()) as (page, errors):
        ranges = axis_ranges(page, sf.fig_id)
        for lr_step, seed_step in [(1, 0), (1, 2), (0, 1)]:
            state = select(page, sf.fig_id, lr_step, seed_step)
            k = lr_step * 3 + seed_step
            assert [t["index"] for t in state["visible"]] == [2 * k, 2 * k + 1]
            assert state["visible"][0]["type"] == "heatmap"
            assert state["visible"][0]["z"] == map_z(k)
            assert state["visible"][1]["y"] == map_loss(k)
            assert page_readout(page, sf.fig_id).endswith(f"map {k}")
            assert axis_ranges(page, sf.fig_id) == ranges  # nothing rescaled
        assert errors == []


@pytest.mark.browser
def test_hostile_values_render_and_run_nothing_in_the_browser(tmp_path, browser):
    sf = hostile_figure()
    with serve_page(tmp_path, sf.to_html()) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_timeout(200)
        assert page.evaluate("() => window.__pwned") is None, "the page ran a value's script"
        assert page.evaluate(f"() => !!document.getElementById('{sf.fig_id}')"), (
            "a value's '<!--' hid the rest of the figure")
        wait_for_plots(page)
        move_slider(page, sf.fig_id, 1, 1)
        move_slider(page, sf.fig_id, 0, 1)
        state = figure_state(page, sf.fig_id)
        assert [t["index"] for t in state["visible"]] == [3]
        assert state["valuetexts"] == ["1", f"b{HOSTILE_IMG}"]
        assert page.locator(".d2l-figure-title").text_content() == f"Title {HOSTILE}"
        page.wait_for_timeout(200)  # an injected image's onerror would have fired by now
        assert page.evaluate("() => window.__pwned") is None
        assert page.evaluate("() => document.querySelectorAll('img').length") == 0
        assert f"readout 3 {HOSTILE}" in page_readout(page, sf.fig_id)
        page.close()
        assert errors == []


@pytest.mark.browser
def test_figures_work_with_the_served_script_and_with_both(tmp_path, browser):
    shutil.copy(FIGURE_JS, tmp_path / "d2l-figure.js")
    first = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    second = make_trace_figure(default={"depth": 2, "init": "zeros"})
    stripped = first.to_html().replace(program(FIGURE_JS), "")
    body = (f'<script src="d2l-figure.js"></script>{stripped}'
            f"{second.to_html()}")  # the second still carries its copy: it must do nothing
    with serve_page(tmp_path, body) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        loaded: list[str] = []
        page.on("request", lambda r: loaded.append(r.url.rsplit("/", 1)[-1]))
        page.goto(url)
        wait_for_plots(page)
        assert page.evaluate("() => window.d2lFigures.figures.length") == 2
        move_slider(page, first.fig_id, 0, 2)
        _expect(page, first, make_grid(), {**DEFAULT, "lr": 1.0})
        move_slider(page, second.fig_id, 1, 2)
        assert page_readout(page, second.fig_id).endswith("case 2")
        assert loaded.count("d2l-figure.js") == 1
        page.close()
        assert errors == []


@pytest.mark.browser
def test_deferred_scripts_attach_every_figure(tmp_path, browser):
    """The book's "defer" loading: plotly.js and figure.js run after the page is parsed,
    the figures' own calls find no figure.js, and figure.js attaches them all."""
    shutil.copy(FIGURE_JS, tmp_path / "d2l-figure.js")
    first = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    second = make_map_figure(default={"lr": 0.1, "seed": 0})
    assets = load_offline_assets()
    context = {"body": first.to_html() + "<p>text</p>" + second.to_html()}
    app = FakeApp()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(assets, "PLOTLY_LOADING", "defer")
        assets._add_plotly(app, "page", "page.html", context, None)
    head = "".join(f'<script defer src="{Path(f).name}"></script>' for f, _ in app.js_files)
    head += f"<style>{program(FIGURE_CSS)}</style>"
    assert head.index("plotly.min.js") < head.index("d2l-figure.js")
    with serve_page(tmp_path, context["body"], head=head) as url:
        page, errors = open_page(browser, f"{url}#{second.fig_id}:lr=1,seed=1")
        assert page.evaluate("() => window.d2lFigures.figures.length") == 2
        state = figure_state(page, second.fig_id)
        assert state["actives"] == [1, 1] and state["visible"][0]["z"] == map_z(4)
        move_slider(page, first.fig_id, 1, 0)
        _expect(page, first, make_grid(), {**DEFAULT, "dropout": 0.0})
        page.close()
        assert errors == []
