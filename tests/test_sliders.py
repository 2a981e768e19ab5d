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
import threading
from collections.abc import Iterator
from pathlib import Path

import plotly
import plotly.graph_objects as go
import pytest

from d2lcore.grid import GridResults, grid_configs
from d2lcore.sliders import format_value, readout, slider_figure, trace_slider_figure
from d2lcore.train import History, RunResult

from .browser_helpers import (
    diverged_marks,
    drag_slider,
    figure_state,
    move_slider,
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


def _script_spec(html: str) -> dict:
    start = html.index("var S = ") + len("var S = ")
    return json.JSONDecoder().raw_decode(html, start)[0]


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
    spec = _script_spec(html)
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
    assert sf.spec["perConfig"] == 2 and sf.spec["divergedAnnotations"] == []
    # Each readout names its configuration (what the book's browser test checks) first.
    assert sf.spec["readouts"][shown] == "<b>depth 5, initialization normal</b><br>case 4"
    assert fig.layout.annotations[sf.spec["readoutAnnotation"]].text == sf.spec["readouts"][shown]
    assert len(set(sf.spec["readouts"])) == 6


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
    with serve_page(tmp_path, sf.to_html()) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        wait_for_plots(page)
        configs = grid_configs(TRACE_AXES)
        for depth_step, init_step in [(0, 2), (1, 2), (1, 0)]:
            move_slider(page, sf.fig_id, 0, depth_step)
            move_slider(page, sf.fig_id, 1, init_step)
            k = depth_step * 3 + init_step
            state = figure_state(page, sf.fig_id)
            assert [t["index"] for t in state["visible"]] == [2 * k, 2 * k + 1]
            assert state["visible"][0]["y"] == [k + 1.0] * configs[k]["depth"]
            assert page_readout(page, sf.fig_id).endswith(f"case {k}")
        assert state["hash"] == f"#{sf.fig_id}:depth=5,init=zeros"
        assert errors == []
