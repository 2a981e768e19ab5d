"""The static slider figure: its traces, sliders, readout, offline HTML, and (marked
``browser``) the page script driven in headless Chromium."""

from __future__ import annotations

import contextlib
import functools
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
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import pytest

from d2lcore.grid import GridResults, grid_configs
from d2lcore.plotting import script_json
from d2lcore.sliders import (
    SLIDERS_JS,
    default_fig_id,
    describe_config,
    format_value,
    readout,
    slider_figure,
    sliders_program,
    trace_slider_figure,
)
from d2lcore.train import History, RunResult

from .browser_helpers import (
    axis_ranges,
    diverged_marks,
    drag_slider,
    figure_state,
    move_slider,
    wait_for_plots,
)
from .browser_helpers import readout as page_readout
from .conftest import load_module

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


def test_one_slider_per_axis_with_the_values_as_steps():
    fig = slider_figure(make_grid(), title="MLP", default=DEFAULT).figure
    sliders = fig.layout.sliders
    assert [s.name for s in sliders] == list(AXES)
    for s, (name, values) in zip(sliders, AXES.items(), strict=True):
        assert [step.label for step in s.steps] == [format_value(v) for v in values]
        assert all(step.method == "skip" for step in s.steps)
        assert s.active == values.index(DEFAULT[name])
    prefixes = [s.currentvalue.prefix for s in sliders]
    assert prefixes == ["learning rate: ", "dropout rate: ", "initialization: "]


def test_axis_labels_override_the_defaults():
    fig = slider_figure(make_grid(), title="MLP", axis_labels={"lr": "step size η"}).figure
    assert fig.layout.sliders[0].currentvalue.prefix == "step size η: "


def test_one_trace_set_per_configuration_in_grid_order():
    grid = make_grid()
    fig = slider_figure(grid, title="MLP", default=DEFAULT).figure
    assert len(fig.data) == len(grid) * 3
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
    fig = slider_figure(grid, title="MLP", default={"dropout": 0.5}).figure
    visible = [k // 3 for k, t in enumerate(fig.data) if t.visible]
    assert grid.runs[visible[0]].config == {"lr": 0.01, "dropout": 0.5, "init": "normal"}
    with pytest.raises(KeyError):
        slider_figure(grid, title="MLP", default={"lr": 0.3})
    with pytest.raises(KeyError):
        slider_figure(grid, title="MLP", default={"momentum": 0.9})


def _annotation(fig, name):
    return [a for a in fig.layout.annotations if a.name == name]


def test_readout_shows_the_default_configurations_final_numbers():
    grid = make_grid()
    fig = slider_figure(grid, title="MLP", default=DEFAULT).figure
    (ann,) = _annotation(fig, "readout")
    run = grid.get(**DEFAULT)
    text = ann.text
    assert "learning rate 0.1, dropout rate 0.5, initialization xavier_normal" in text
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
    assert all(not a.visible for a in _annotation(fig, "diverged"))


def test_a_diverged_run_says_where_and_marks_each_panel():
    grid = make_grid()
    config = {"lr": 1.0, "dropout": 0.0, "init": "normal"}
    fig = slider_figure(grid, title="MLP", default=config).figure
    (ann,) = _annotation(fig, "readout")
    assert "diverged at epoch 3" in ann.text
    assert "train loss" not in ann.text  # no final numbers for a run that blew up
    marks = _annotation(fig, "diverged")
    assert len(marks) == 2 and all(m.visible and m.text == "diverged at epoch 3" for m in marks)
    assert {m.xref for m in marks} == {"x domain", "x2 domain"}
    # Its recorded epochs before divergence are drawn, nothing after.
    shown = [t for t in fig.data if t.visible]
    assert close(list(shown[0].y), grid.get(**config).history.train_loss)


def _plotly_call(html: str) -> tuple[list, dict]:
    """The data and layout passed to Plotly.newPlot in ``html``."""
    decoder = json.JSONDecoder()

    def value_after_comma(pos: int) -> tuple[object, int]:
        i = html.index(",", pos) + 1
        while html[i].isspace():
            i += 1
        return decoder.raw_decode(html, i)

    data, end = value_after_comma(html.index("Plotly.newPlot("))  # after the div id
    layout, _ = value_after_comma(end)
    return data, layout


def _script_spec(html: str, fig_id: str) -> dict:
    """The spec the figure's script hands to ``d2lSliders.attach``."""
    call = f"window.d2lSliders.attach('{fig_id}', "
    return json.JSONDecoder().raw_decode(html, html.index(call) + len(call))[0]


def test_html_is_offline_and_embeds_every_runs_history():
    grid = make_grid()
    sf = slider_figure(grid, title="MLP", default=DEFAULT)
    html = sf.to_html()
    assert "plotly-graph-div" in html
    assert "<script src=" not in html and "cdn" not in html.lower()
    assert f'id="{sf.fig_id}"' in html
    data, layout = _plotly_call(html)
    assert len(data) == 3 * len(grid)
    for k, run in enumerate(grid.runs):
        h = run.history
        assert close(data[3 * k]["y"], h.train_loss)
        assert close(data[3 * k + 1]["y"], h.val_loss)
        assert close(data[3 * k + 2]["y"], h.val_acc)
    assert [s["name"] for s in layout["sliders"]] == list(AXES)
    spec = _script_spec(html, sf.fig_id)
    assert spec["id"] == sf.fig_id and spec["names"] == list(AXES)
    assert spec["values"] == [[format_value(v) for v in vs] for vs in AXES.values()]
    assert spec["readouts"] == [readout(r) for r in grid.runs]
    assert spec["diverged"] == [f"diverged at epoch {r.history.diverged_epoch}"
                                if r.diverged else "" for r in grid.runs]  # fmt: skip


def test_floats_are_rounded_to_five_significant_digits():
    data, _ = _plotly_call(slider_figure(make_grid(), title="MLP").to_html())
    for trace in data:
        for y in trace["y"]:
            assert y == float(f"{y:.5g}")


def test_mimebundle_has_html_for_the_book_and_plotly_json_for_jupyter():
    sf = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    bundle = sf._repr_mimebundle_()
    assert "plotly-graph-div" in bundle["text/html"]
    fig_json = bundle["application/vnd.plotly.v1+json"]
    assert [t["visible"] for t in fig_json["data"]] == [t.visible for t in sf.figure.data]


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


def test_a_grid_without_validation_has_one_panel_and_one_trace_per_configuration():
    grid = make_grid({"lr": [0.01, 0.1]}, with_val=False)
    fig = slider_figure(grid, title="Linear regression", default={"lr": 0.1}).figure
    assert len(fig.data) == 2
    assert [t.visible for t in fig.data] == [False, True]
    assert "xaxis2" not in fig.to_dict()["layout"]
    (ann,) = _annotation(fig, "readout")
    assert "validation" not in ann.text and "train loss" in ann.text


# --- The page script, in a real browser -------------------------------------------------

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@contextlib.contextmanager
def serve_page(root: Path, body: str) -> Iterator[str]:
    """Write ``index.html`` (plotly.js, then ``body``) and plotly.js into ``root`` and
    serve the folder on 127.0.0.1 while the ``with`` block runs; yields the page's URL."""
    shutil.copy(PLOTLY_JS, root / "plotly.min.js")
    (root / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><script src="plotly.min.js">'
        f"</script></head><body>{body}</body></html>"
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
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


def select(page: Any, fig_id: str, *steps: int) -> dict:
    """Move slider ``i`` of the figure to ``steps[i]``; return the figure's state."""
    for i, step in enumerate(steps):
        move_slider(page, fig_id, i, step)
    return figure_state(page, fig_id)


@contextlib.contextmanager
def figure_page(root: Path, browser, body: str) -> Iterator[tuple[Any, list[str]]]:
    """:func:`serve_page` opened in a new browser page, its plots drawn; yields the page
    and the list that collects the page's JavaScript errors."""
    with serve_page(root, body) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        wait_for_plots(page)
        yield page, errors


@pytest.fixture(scope="module")
def served_page(tmp_path_factory):
    """A page with two slider figures and plotly.js beside it, served on 127.0.0.1."""
    pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium")
    first = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    second = slider_figure(make_grid({"lr": [0.01, 0.1, 1.0]}, with_val=False),
                           title="Linear regression", default={"lr": 0.1})  # fmt: skip
    body = f"{first.to_html()}<p>text</p>{second.to_html()}"
    with serve_page(tmp_path_factory.mktemp("sliders"), body) as url:
        yield url, first.fig_id, second.fig_id


def _expect(page, fig_id, grid, config):
    state = figure_state(page, fig_id)
    assert state["config"] == {k: format_value(v) for k, v in config.items()}
    h = grid.get(**config).history
    series = [h.train_loss, h.val_loss, h.val_acc] if grid.runs[0].history.val_loss else [
        h.train_loss]  # fmt: skip
    assert [len(t["y"]) for t in state["visible"]] == [len(s) for s in series]
    assert all(close(t["y"], s) for t, s in zip(state["visible"], series, strict=True))
    text = page_readout(page, fig_id)
    if h.diverged:
        assert f"diverged at epoch {h.diverged_epoch}" in text
        assert diverged_marks(page, fig_id)
    else:
        assert f"train loss {h.train_loss[-1]:.4g}" in text
        assert not diverged_marks(page, fig_id)
    return state


@pytest.mark.browser
def test_sliders_switch_configurations_in_the_browser(served_page, browser):
    url, first, second = served_page
    grid, grid2 = make_grid(), make_grid({"lr": [0.01, 0.1, 1.0]}, with_val=False)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    wait_for_plots(page)
    _expect(page, first, grid, DEFAULT)
    # Dropout, then the learning rate: the plot shows exactly that pair.
    move_slider(page, first, 1, 0)
    _expect(page, first, grid, {**DEFAULT, "dropout": 0.0})
    move_slider(page, first, 0, 2)
    state = _expect(page, first, grid, {"lr": 1.0, "dropout": 0.0, "init": "xavier_normal"})
    assert state["hash"] == f"#{first}:lr=1,dropout=0,init=xavier_normal"
    # Every combination, one slider move at a time.
    for combo in itertools.product(*(range(len(v)) for v in AXES.values())):
        actives = figure_state(page, first)["actives"]
        for i, j in enumerate(combo):
            if actives[i] != j:
                move_slider(page, first, i, j)
        _expect(page, first, grid, {k: v[j] for (k, v), j in zip(AXES.items(), combo, strict=True)})
    # Dragging the grip across the rail works too.
    move_slider(page, first, 0, 0)
    drag_slider(page, first, 0, 2)
    _expect(page, first, grid, {"lr": 1.0, "dropout": 0.5, "init": "xavier_normal"})
    # The second figure adds its part to the hash and leaves the first one's alone.
    before = figure_state(page, first)["hash"]
    move_slider(page, second, 0, 0)
    state = _expect(page, second, grid2, {"lr": 0.01})
    assert state["hash"] == f"{before}&{second}:lr=0.01"
    assert errors == []


@pytest.mark.browser
def test_a_url_hash_restores_the_configuration(served_page, browser):
    url, first, second = served_page
    grid, grid2 = make_grid(), make_grid({"lr": [0.01, 0.1, 1.0]}, with_val=False)
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    # A plain anchor and a differently written number (0.010) are fine.
    page.goto(f"{url}#top&{first}:lr=0.010,dropout=0,init=normal&{second}:lr=1")
    wait_for_plots(page)
    page.wait_for_function(f"() => document.getElementById('{first}').layout.sliders[0]"
                           ".active === 0")  # fmt: skip
    _expect(page, first, grid, {"lr": 0.01, "dropout": 0.0, "init": "normal"})
    _expect(page, second, grid2, {"lr": 1.0})
    # The restored sliders keep working from where they were put.
    move_slider(page, first, 2, 1)
    _expect(page, first, grid, {"lr": 0.01, "dropout": 0.0, "init": "xavier_normal"})
    # A link to another configuration on the same page (a hash change) restores it too.
    page.evaluate(f"() => {{ window.location.hash = '{first}:lr=1,dropout=0.5,init=normal'; }}")
    page.wait_for_function(f"() => document.getElementById('{first}').layout.sliders[0]"
                           ".active === 2")  # fmt: skip
    _expect(page, first, grid, {"lr": 1.0, "dropout": 0.5, "init": "normal"})


def test_log_y_puts_the_loss_panel_on_a_log_scale():
    linear = slider_figure(make_grid(), title="MLP").figure
    log = slider_figure(make_grid(), title="MLP", log_y=True).figure
    assert linear.layout.yaxis.type == "linear"
    assert log.layout.yaxis.type == "log" and "log" in log.layout.yaxis.title.text


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


def make_trace_figure(**kwargs):
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
    assert [s.name for s in fig.layout.sliders] == list(TRACE_AXES)
    assert [s.active for s in fig.layout.sliders] == [1, 1]
    assert sf.spec.per_config == 2 and sf.spec.diverged_annotations == []
    # Each readout names its configuration (what the book's browser test checks) first.
    assert sf.spec.readouts[shown] == "<b>depth 5, initialization normal</b><br>case 4"
    assert fig.layout.annotations[sf.spec.readout_annotation].text == sf.spec.readouts[shown]
    assert len(set(sf.spec.readouts)) == 6


def test_trace_figure_leaves_the_callers_traces_alone_and_checks_its_inputs():
    sets = trace_sets()
    trace_slider_figure(TRACE_AXES, sets, title="t", xaxis_title="x", yaxis_title="y")
    assert all(t.visible is None for s in sets for t in s)
    with pytest.raises(ValueError, match="6 configurations"):
        trace_slider_figure(TRACE_AXES, sets[:5], title="t", xaxis_title="x", yaxis_title="y")
    with pytest.raises(ValueError, match="same"):
        trace_slider_figure(TRACE_AXES, [*sets[:5], sets[5][:1]], title="t",
                            xaxis_title="x", yaxis_title="y")  # fmt: skip
    with pytest.raises(KeyError):
        make_trace_figure(default={"depth": 3})
    log = make_trace_figure(log_y=True).figure
    assert log.layout.yaxis.type == "log" and log.layout.yaxis.title.text == "std"


@pytest.mark.browser
def test_trace_figure_sliders_switch_traces_in_the_browser(tmp_path, browser):
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
        assert errors == []


# ----------------------------------------------------------------------------------
# Any trace type, several panels, fixed ranges

MAP_AXES = {"lr": [0.1, 1.0], "seed": [0, 1, 2]}
MAP_X, MAP_Y = [-1.0, 0.0, 1.0, 2.0], [10.0, 20.0, 30.0]


def map_z(k: int) -> list[list[float]]:
    """A 3 x 4 map whose numbers say which configuration it belongs to."""
    return [[10.0 * k + 4 * i + j for j in range(4)] for i in range(3)]


def map_loss(k: int) -> list[float]:
    return [5.0 - k * 0.5, 4.0 - k * 0.5, 3.5 - k * 0.5]


def map_sets(kind=go.Heatmap) -> list[list]:
    """Per configuration: a map (left panel) and a loss curve (right panel)."""
    return [[kind(z=map_z(k), x=MAP_X, y=MAP_Y, name="decision function"),
             go.Scatter(y=map_loss(k), x0=1, dx=1, mode="lines", name="train loss")]
            for k in range(len(grid_configs(MAP_AXES)))]  # fmt: skip


def make_map_figure(kind=go.Heatmap, **kwargs):
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
    data, layout = _plotly_call(sf.to_html())
    for k in range(6):
        assert data[2 * k]["z"] == map_z(k) and data[2 * k + 1]["y"] == map_loss(k)
    assert [layout["xaxis"]["title"]["text"], layout["xaxis2"]["title"]["text"]] == [
        "x₁", "epoch"]  # fmt: skip
    assert layout["yaxis2"]["title"]["text"] == "loss"
    # The panels' titles come first; the readout is the annotation after them.
    titles = [a["text"] for a in layout["annotations"][:2]]
    assert titles == ["decision function", "loss"]
    assert sf.spec.readout_annotation == 2 and sf.spec.per_config == 2
    assert layout["annotations"][2]["text"] == sf.spec.readouts[shown]


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
    data, _ = _plotly_call(sf.to_html())
    assert [d["z"][1][1] for d in data] == [[k, k, k] for k in range(6)]
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


@pytest.mark.browser
def test_moving_a_slider_shows_each_configurations_map(tmp_path, browser):
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


# ----------------------------------------------------------------------------------
# Hostile text: nothing a page embeds can end the <script> block

HOSTILE = "</script><script>window.__pwned = 1</script><!--"
HOSTILE_IMG = '<img src=x onerror="window.__pwned = 2">\u2028&amp;'


def hostile_figure():
    axes = {f"lr{HOSTILE}": [0.1, 1.0], "init": [f"a{HOSTILE}", f"b{HOSTILE_IMG}"]}
    sets = [[go.Scatter(y=[k, k + 1], name=f"curve {HOSTILE}")] for k in range(4)]
    return trace_slider_figure(
        axes, sets, title=f"Title {HOSTILE}", xaxis_title=f"x {HOSTILE}", yaxis_title="y",
        readouts=[f"readout {k} {HOSTILE}{HOSTILE_IMG}" for k in range(4)],
        axis_labels={"init": f"label {HOSTILE}"},
    )  # fmt: skip


def test_script_json_escapes_what_would_end_a_script_block():
    text = script_json({"a": "</script>&\u2028\u2029<!--", "b": ["α"]})
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == {"a": "</script>&\u2028\u2029<!--", "b": ["α"]}


def test_hostile_values_stay_inside_the_script_block():
    sf = hostile_figure()
    html = sf.to_html()
    # One <script> block, opened and closed once: no value ended it or opened another.
    assert html.count("<script") == 1 and html.lower().count("</script") == 1
    assert "<!--" not in html and "\u2028" not in html
    spec = _script_spec(html, sf.fig_id)
    assert spec["names"][0] == f"lr{HOSTILE}"
    assert spec["values"][1] == [f"a{HOSTILE}", f"b{HOSTILE_IMG}"]
    assert spec["readouts"][0].endswith(f"readout 0 {HOSTILE}{HOSTILE_IMG}")
    # The configuration's own text is escaped for plotly's HTML subset; it reads as typed.
    assert "label &lt;/script&gt;" in spec["readouts"][0]
    assert re.fullmatch(r"[a-z][a-z0-9-]*", sf.fig_id)


@pytest.mark.browser
def test_hostile_values_render_and_run_nothing_in_the_browser(tmp_path, browser):
    sf = hostile_figure()
    with figure_page(tmp_path, browser, sf.to_html()) as (page, errors):
        move_slider(page, sf.fig_id, 1, 1)
        move_slider(page, sf.fig_id, 0, 1)
        state = figure_state(page, sf.fig_id)
        assert [t["index"] for t in state["visible"]] == [3]
        assert f"readout 3 {HOSTILE}" in page_readout(page, sf.fig_id)
        page.wait_for_timeout(200)  # an injected image's onerror would have fired by now
        assert page.evaluate("() => window.__pwned") is None
        assert page.evaluate("() => document.querySelectorAll('img').length") == 0
        assert errors == []


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


def test_describe_config_is_the_readouts_wording():
    config = {"lr": 0.1, "dropout": 0.5, "init": "normal"}
    assert describe_config(config) == "learning rate 0.1, dropout rate 0.5, initialization normal"
    assert describe_config({"lr": 1e-5}, {"lr": "η"}) == "η 1e-05"
    assert readout(make_grid().get(**DEFAULT)).startswith(f"<b>{describe_config(DEFAULT)}</b>")


# ----------------------------------------------------------------------------------
# sliders.js: a file of the package, served once per book page

ROOT = Path(__file__).resolve().parents[1]


def load_offline_assets():
    return load_module(ROOT / "_ext" / "offline_assets.py", "offline_assets")


class FakeApp:
    """What ``_ext/offline_assets.py`` uses of Sphinx's application."""

    def __init__(self, outdir: Path | None = None, srcdir: Path | None = None):
        self.js_files: list[tuple[str, int]] = []
        self.outdir, self.srcdir = outdir, srcdir
        self.builder = type("Builder", (), {"format": "html"})()
        self.config = type("Config", (), {"offline_mathjax_dir": "mathjax"})()

    def add_js_file(self, filename: str, priority: int = 500) -> None:
        self.js_files.append((filename, priority))


def test_the_script_is_a_file_of_the_package_and_the_figure_inlines_it():
    program = SLIDERS_JS.read_text()
    assert sliders_program() == program and "d2lSliders" in program
    assert "</" not in program and "{plot_id}" not in program
    html = slider_figure(make_grid(), title="MLP").to_html()
    assert html.count(program) == 1  # for pages that do not load the file
    assert "sliders.js" in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["d2lcore"]  # fmt: skip


def test_the_wheel_ships_the_script(tmp_path):
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
        assert z.read("d2lcore/sliders.js").decode() == SLIDERS_JS.read_text()


def test_the_book_serves_the_script_once_and_drops_the_inline_copies(tmp_path):
    assets = load_offline_assets()
    assert assets.SLIDERS_JS.resolve() == SLIDERS_JS.resolve()
    figures = [slider_figure(make_grid(), title=t).to_html() for t in ("One", "Two")]
    context = {"body": "".join(figures)}
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", context, None)
    assert app.js_files == [("vendor/plotly.min.js", 200), ("vendor/d2l-sliders.js", 201)]
    assert sliders_program() not in context["body"]
    assert context["body"].count("window.d2lSliders.attach(") == 2
    # A page with plotly figures and no sliders gets plotly.js alone.
    plain = {"body": go.Figure().to_html(include_plotlyjs=False, full_html=False)}
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", plain, None)
    assert app.js_files == [("vendor/plotly.min.js", 200)]
    # The file is copied beside plotly.js at the end of the build.
    (tmp_path / "src" / "mathjax").mkdir(parents=True)
    for part in assets.MATHJAX_PARTS:
        target = tmp_path / "src" / "mathjax" / part
        (target.parent if "." in part else target).mkdir(parents=True, exist_ok=True)
        if "." in part:
            target.write_text("")
    app = FakeApp(outdir=tmp_path / "out", srcdir=tmp_path / "src")
    assets._copy_assets(app, None)
    served = tmp_path / "out" / "_static" / "vendor" / "d2l-sliders.js"
    assert served.read_text() == sliders_program()


@pytest.mark.browser
def test_figures_work_with_the_served_script_and_with_both(tmp_path, browser):
    shutil.copy(SLIDERS_JS, tmp_path / "d2l-sliders.js")
    first = slider_figure(make_grid(), title="MLP", default=DEFAULT)
    second = make_trace_figure(default={"depth": 2, "init": "zeros"})
    stripped = first.to_html().replace(sliders_program(), "")
    body = (f'<script src="d2l-sliders.js"></script>{stripped}'
            f"{second.to_html()}")  # the second still carries its copy: it must do nothing
    with serve_page(tmp_path, body) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        loaded: list[str] = []
        page.on("request", lambda r: loaded.append(r.url.rsplit("/", 1)[-1]))
        page.goto(url)
        wait_for_plots(page)
        move_slider(page, first.fig_id, 0, 2)
        _expect(page, first.fig_id, make_grid(), {**DEFAULT, "lr": 1.0})
        move_slider(page, second.fig_id, 1, 2)
        assert page_readout(page, second.fig_id).endswith("case 2")
        assert loaded.count("d2l-sliders.js") == 1
        assert errors == []


def test_a_contours_range_is_its_extent():
    fig = make_map_figure(go.Contour, fixed_ranges=True).figure
    assert fig.layout.xaxis.range == (-1.0, 2.0) and fig.layout.yaxis.range == (10.0, 30.0)
    zs = [z for k in range(6) for row in map_z(k) for z in row]
    assert {(t.zmin, t.zmax) for t in fig.data[::2]} == {(min(zs), max(zs))}


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to parse sliders.js")
def test_sliders_js_is_valid_javascript():
    done = subprocess.run(["node", "--check", str(SLIDERS_JS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


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
