"""The MLP playground's figure (:func:`~d2lcore.playground_figure.playground_figure`, the
"playground" kind of :mod:`d2lcore.figure_page`): its controls, readout, colour bar and
stored weights, the book's serving of its page script, and (marked ``browser``)
``playground.js`` in headless Chromium: the boundary it computes from the stored weights
against the torch model's predictions, the images it draws, the probe under the pointer
or a tap, and a phone's width."""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from d2lcore.figure_page import FIGURE_JS, KIND_SCRIPTS, json_loads_data, program
from d2lcore.playground import predict_proba
from d2lcore.playground_figure import (
    BOUNDARY_COLORSCALE,
    EXTENT,
    plane,
    playground_figure,
    to_precision,
)

from .browser_helpers import bring_into_view, figure_state, move_slider, press_key, redraw_times
from .test_playground import AXES, CROSSED, DEFAULT, SNAPS, small_playground
from .test_sliders import (
    FakeApp,
    check_fits,
    figure_page,
    load_offline_assets,
    serve_page,
    start_tags,
    text_of,
)

ROOT = Path(__file__).resolve().parents[1]
PLAYGROUND_JS = KIND_SCRIPTS["playground"][0]
NAMES = ["dataset", *AXES, "epoch"]


@pytest.fixture(scope="module")
def playground():
    """:func:`small_playground`, trained once for this module's tests: its
    configurations, data, runs and figure."""
    return small_playground()


def test_the_figure_stores_every_models_weights_as_float16(playground):
    configs, data, runs, fig = playground
    spec = fig.spec
    # One text per model (data set by data set, configuration by configuration), so
    # that the page decodes only those it shows.
    assert len(spec["weights"]) == len(data) * len(configs)
    k = 0
    for name in data:
        for c, run in enumerate(runs[name]):
            stored = np.frombuffer(base64.b64decode(spec["weights"][k]), dtype="<f2")
            part = stored.astype(np.float32).reshape(len(SNAPS), -1)
            np.testing.assert_allclose(part, run.extras["weights"], rtol=1e-3, atol=1e-4)
            assert spec["layers"][c] == [2] + [configs[c]["width"]] * configs[c]["depth"] + [2]
            k += 1
    assert [len(c.values) for c in fig.controls] == [2, 2, 2, 2, 2, 2, 2, 3]
    assert spec["default"] == [1, 1, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="two values or more"):
        playground_figure(runs, data, axes={**AXES, "depth": [2]}, default=DEFAULT,
                          crossed=CROSSED, snapshot_epochs=SNAPS, title="Playground")
    assert spec["crossed"] == [[0, 4]]
    html = fig.to_html()
    assert 'data-d2l-kind="playground"' in html and "cdn" not in html.lower()
    assert json_loads_data(html, fig.fig_id)["weights"] == spec["weights"]


def test_the_controls_are_the_data_set_each_hyperparameter_and_the_epoch(playground):
    configs, data, runs, fig = playground
    assert fig.kind == "playground"
    assert [c.name for c in fig.controls] == NAMES
    assert [c.label for c in fig.controls] == ["data set", "width", "depth", "activation",
                                               "learning rate", "dropout rate",
                                               "initialization", "epoch"]  # fmt: skip
    assert [c.values for c in fig.controls] == [["moons", "xor"], ["2", "4"], ["1", "2"],
                                                ["relu", "tanh"], ["0.03", "0.3"],
                                                ["0", "0.5"], ["zeros", "kaiming_normal"],
                                                ["0", "4", "8"]]  # fmt: skip
    # First the first data set, the default configuration, the last epoch.
    assert [c.active for c in fig.controls] == [0, 1, 1, 0, 0, 0, 1, 2]
    html = fig.to_html()
    inputs = start_tags(html, "input")
    assert [i["name"] for i in inputs] == NAMES
    assert all(i["type"] == "range" and "disabled" in i for i in inputs)
    assert [i["aria-valuetext"] for i in inputs] == ["moons", "4", "2", "relu", "0.03", "0",
                                                     "kaiming_normal", "8"]  # fmt: skip
    # The readout of the model shown first, before any script runs.
    stats = runs["moons"][0].extras["snapshots"][-1]
    text = text_of(fig.readout)
    assert text.startswith("moons: width 4, depth 2, activation relu, learning rate 0.03, "
                           "dropout rate 0, initialization kaiming_normal")  # fmt: skip
    # Numbers as the page script writes them (JavaScript's toPrecision(3)).
    assert f"epoch 8: training loss {to_precision(stats[1])}, test loss " \
           f"{to_precision(stats[2])}" in text
    assert f"test accuracy {100 * stats[4]:.1f}%" in text
    assert f">{fig.readout}</div>" in html
    # The colour scale is HTML beside the controls (it stays put as the panels stack).
    (bar,) = [d for d in start_tags(html, "div") if d.get("class") == "d2l-colorbar"]
    assert bar["role"] == "img"
    assert bar["aria-label"] == "colour scale of P(class 1), from 0 to 1"
    assert '<span class="d2l-colorbar-title">P(class 1)</span>' in html
    assert "<span>0</span><span>0.5</span><span>1</span>" in html
    stops = ", ".join(f"{c} {100 * s:g}%" for s, c in BOUNDARY_COLORSCALE)
    assert f"linear-gradient(to right, {stops})" in html
    assert not any(getattr(t, "showscale", False) for t in fig.figure.data)
    # The caption says what the figure shows; caption= replaces it.
    assert fig.caption.startswith("Left: the plane coloured by the model's probability")
    assert f"{sum(len(r) for r in runs.values())} models were trained" in fig.caption
    mine = playground_figure(runs, data, axes=AXES, default=DEFAULT, crossed=CROSSED,
                             snapshot_epochs=SNAPS, title="Playground", resolution=21,
                             caption="Mine.")  # fmt: skip
    assert mine.caption == "Mine." and ">Mine.</p>" in mine.to_html()


def test_the_book_serves_the_page_script_once_beside_plotly(playground):
    assets = load_offline_assets()
    assert assets.PLAYGROUND_JS.resolve() == PLAYGROUND_JS.resolve()
    assert "playground.js" in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["d2lcore"]  # fmt: skip
    script = program(PLAYGROUND_JS)
    assert "</script" not in script.lower() and "d2lFigures.register" in script
    *_, fig = playground
    context = {"body": fig.to_html()}
    # For pages that do not load the files: the page script and the kind's, once each.
    assert context["body"].count(script) == 1
    assert context["body"].count(program(FIGURE_JS)) == 1
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", context, None)
    assert app.js_files == [("vendor/plotly.min.js", 200), ("vendor/d2l-figure.js", 201),
                            ("vendor/d2l-playground.js", 202)]  # fmt: skip
    body = context["body"]
    assert script not in body and program(FIGURE_JS) not in body
    assert "window.d2lFigures && window.d2lFigures.attach(" in body
    # A page with slider figures only does not load the playground's script.
    from .test_sliders import make_grid, slider_figure

    app = FakeApp()
    assets._add_plotly(app, "page", "page.html",
                       {"body": slider_figure(make_grid(), title="MLP").to_html()}, None)
    assert "vendor/d2l-playground.js" not in [f for f, _ in app.js_files]


# --- The figure in a real browser -------------------------------------------------------


def _shown(page: Any, fig_id: str) -> dict:
    """What the playground shows: the controls' steps and values in words, the state the
    page script drew (``gd.d2lShown``), the readout as rendered and the sources of its
    three images."""
    return page.evaluate(
        """(id) => { const gd = document.getElementById(id), s = gd.d2lShown;
             const el = document.getElementById(id + '-figure');
             const inputs = Array.from(el.querySelectorAll('input.d2l-control-input'));
             return {actives: inputs.map(i => Number(i.value)),
                     valuetexts: inputs.map(i => i.getAttribute('aria-valuetext')),
                     shown: s.actives, z: s.z, points: s.points, loss_x: s.loss_epochs,
                     loss_y: Array.from(s.losses[0]),
                     readout: el.querySelector('.d2l-readout').textContent,
                     sources: gd.layout.images.map(im => im.source)}; }""",
        fig_id,
    )


def _pixels(page: Any, source: str, where: np.ndarray | None = None) -> np.ndarray:
    """The RGBA pixels of the image ``source``, decoded in the page: all of them
    ``(height, width, 4)``, or those at ``where`` ``(n, 2)`` (fractions of the width
    and the height from the top left corner) ``(n, 4)``."""
    size, values = page.evaluate(
        """async ([src, where]) => {
             const img = new Image(); img.src = src; await img.decode();
             const c = document.createElement('canvas');
             const w = c.width = img.naturalWidth, h = c.height = img.naturalHeight;
             const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
             const data = ctx.getImageData(0, 0, w, h).data;
             if (!where) { return [[h, w], Array.from(data)]; }
             return [[where.length, 1], where.flatMap(([fx, fy]) => {
               const o = 4 * (Math.min(h - 1, Math.floor(fy * h)) * w +
                              Math.min(w - 1, Math.floor(fx * w)));
               return Array.from(data.slice(o, o + 4)); })]; }""",
        [source, None if where is None else np.asarray(where, float).tolist()],
    )
    return np.array(values, dtype=float).reshape(*size, 4).squeeze(1 if where is not None else ())


def _rgb(p: np.ndarray) -> np.ndarray:
    """The colour of P(class 1) on the boundary's colour scale (RGB 0-255)."""
    stops = np.array([s for s, _ in BOUNDARY_COLORSCALE])
    colours = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for _, c in BOUNDARY_COLORSCALE])
    return np.stack([np.interp(p, stops, colours[:, k]) for k in range(3)], axis=-1)


def _check_images(page: Any, shown: dict, expected_z: np.ndarray, split: Any,
                  spec: dict) -> None:  # fmt: skip
    """The boundary's image has one pixel per grid point, its top row the largest x2,
    each of the colour of its probability; the points' image is opaque at every
    training point and clear in a corner no point reaches; the loss image is opaque at
    every point of the training loss curve (epoch linear, loss on the log axis)."""
    boundary, points, curves = shown["sources"]
    drawn = _pixels(page, boundary)
    assert drawn.shape == (*expected_z.shape, 4)
    np.testing.assert_allclose(drawn[::-1, :, :3], _rgb(expected_z), atol=2.5)
    assert (drawn[:, :, 3] == 255).all()
    X = split[0].numpy()
    at = np.stack([(X[:, 0] + EXTENT) / (2 * EXTENT), (EXTENT - X[:, 1]) / (2 * EXTENT)], 1)
    alpha = _pixels(page, points, np.vstack([at.clip(0, 1), [[0.001, 0.001]]]))[:, 3]
    assert (alpha[:-1] > 0).all(), "a training point is missing from the image"
    assert alpha[-1] == 0, "the corner of the plane holds no point"
    lo, hi = spec["loss_range"]
    x, y = np.array(shown["loss_x"], float), np.array(shown["loss_y"], float)
    if len(x) > 1:  # a single point draws no line
        at = np.stack([x / spec["snapshots"][-1], (hi - np.log10(y)) / (hi - lo)], 1)
        alpha = _pixels(page, curves, at.clip(0, 1))[:, 3]
        assert (alpha > 0).all(), "the training loss is not drawn where it belongs"


def _expected_config(actives: list[int]) -> dict:
    """The trained configuration the control steps select (what the page snaps to)."""
    return {name: AXES[name][actives[1 + i]] for i, name in enumerate(AXES)}


def _plane_box(page: Any, fig_id: str) -> list[float]:
    """The plane's left, top, width and height in the viewport (scrolled into view)."""
    return page.evaluate(
        """(id) => { const gd = document.getElementById(id);
             gd.scrollIntoView();
             const L = gd._fullLayout, r = gd.getBoundingClientRect();
             return [r.left + L.xaxis._offset, r.top + L.yaxis._offset, L.xaxis._length,
                     L.yaxis._length]; }""",
        fig_id,
    )


def _probe(page: Any) -> tuple[float, float, float]:
    """x1, x2 and P(class 1) as the probe's label gives them."""
    label = page.locator(".d2l-probe").text_content()
    x1, x2, p = (float(v) for v in re.findall(r"-?\d+\.\d+", label))
    return x1, x2, p


@pytest.mark.browser
def test_every_control_moves_the_boundary_to_what_torch_predicts(tmp_path, browser, playground):
    configs, data, runs, fig = playground
    names = list(data)
    _, points = plane(21)
    with figure_page(tmp_path, browser, fig.to_html()) as (page, errors):
        first = _shown(page, fig.fig_id)
        assert first["actives"] == first["shown"] == [c.active for c in fig.controls]
        assert page.locator(".d2l-colorbar").is_visible()
        seen, sources = set(), {}
        sizes = [len(c.values) for c in fig.controls]
        for i, size in enumerate(sizes):
            for j in [*range(size), 0 if i else 1]:  # every position, then back
                move_slider(page, fig.fig_id, i, j)
                shown = _shown(page, fig.fig_id)
                a = shown["actives"]
                assert a[i] == j, "the moved control stays where the reader put it"
                assert shown["shown"] == a, "the figure shows what the controls say"
                assert shown["valuetexts"] == [c.values[s] for c, s in zip(fig.controls, a,
                                                                           strict=True)]
                config = _expected_config(a)
                assert config in configs, f"the controls show an untrained {config}"
                name, epoch_step = names[a[0]], a[-1]
                run = runs[name][configs.index(config)]
                half = run.extras["weights"][epoch_step].astype(np.float16).astype(np.float32)
                expected = predict_proba(config, half, points).numpy().reshape(21, 21)
                np.testing.assert_allclose(np.array(shown["z"]), expected, atol=2e-3,
                                           err_msg=f"boundary of {name} {config} epoch step "
                                                   f"{epoch_step}")  # fmt: skip
                np.testing.assert_allclose(shown["points"][0][0],
                                           data[name].train[0][:, 0].numpy(), atol=1e-3)
                _check_images(page, shown, expected, data[name].train, fig.spec)
                sources[(name, tuple(config.values()), epoch_step)] = shown["sources"]
                curves = run.extras["curves"]
                upto = curves[curves[:, 0] <= SNAPS[epoch_step]]
                assert shown["loss_x"] == upto[:, 0].tolist()
                np.testing.assert_allclose(shown["loss_y"], upto[:, 1], rtol=1e-3, atol=1e-4)
                assert f"epoch {SNAPS[epoch_step]}:" in shown["readout"]
                assert f"{name}: " in shown["readout"]
                seen.add((name, tuple(config.values()), epoch_step))
        # A value trained only around the default puts the other axes back there, and
        # the controls show it: the learning rate 0.3 with width 2 selected sets the
        # width to its default, 4.
        move_slider(page, fig.fig_id, 1, 0)  # width 2
        move_slider(page, fig.fig_id, 4, 1)  # learning rate 0.3
        shown = _shown(page, fig.fig_id)
        assert shown["actives"][1:5] == [1, 1, 0, 1] and shown["shown"][1:5] == [1, 1, 0, 1]
        assert shown["valuetexts"][1] == "4"
        assert "width 4, depth 2, activation relu, learning rate 0.3" in shown["readout"]
        # Crossed axes keep each other: width 2 (the learning rate back to its default),
        # then dropout 0.5.
        move_slider(page, fig.fig_id, 1, 0)
        move_slider(page, fig.fig_id, 5, 1)
        assert _shown(page, fig.fig_id)["actives"][1:6] == [0, 1, 0, 0, 1]
        # The address holds the selection, snapped.
        assert figure_state(page, fig.fig_id)["hash"] == (
            f"#{fig.fig_id}:dataset=xor,width=2,depth=2,activation=relu,lr=0.03,dropout=0.5,"
            "init=kaiming_normal,epoch=0")
        # The keyboard moves the controls too: the epoch, to its last step.
        before = _shown(page, fig.fig_id)
        press_key(page, fig.fig_id, 7, "End")
        after = _shown(page, fig.fig_id)
        assert after["actives"][7] == 2 and after["valuetexts"][7] == "8"
        assert "epoch 8:" in after["readout"] and after["readout"] != before["readout"]
        assert after["sources"][0] != before["sources"][0]
        # Under the pointer, the label gives what torch predicts there.
        shown = _shown(page, fig.fig_id)
        config = _expected_config(shown["actives"])
        run = runs[names[shown["actives"][0]]][configs.index(config)]
        half = run.extras["weights"][shown["actives"][-1]].astype(np.float16).astype(np.float32)

        def predicted(fx: float, fy: float) -> tuple[float, float, float]:
            x1, x2 = -EXTENT + 2 * EXTENT * fx, EXTENT - 2 * EXTENT * fy
            return x1, x2, predict_proba(config, half, torch.tensor([[x1, x2]])).item()

        box = _plane_box(page, fig.fig_id)
        for fx, fy in [(0.3, 0.2), (0.75, 0.6)]:
            page.mouse.move(box[0] + fx * box[2], box[1] + fy * box[3])
            assert _probe(page) == pytest.approx(predicted(fx, fy), abs=0.02)
        page.mouse.move(1, 1)
        assert not page.locator(".d2l-probe").is_visible()
        # A tap (a pointer going down, as a finger does, with no pointer moving over the
        # plane before) shows it too.
        fx, fy = 0.6, 0.35
        page.evaluate(
            """([id, x, y]) => document.getElementById(id).dispatchEvent(new PointerEvent(
                 'pointerdown', {clientX: x, clientY: y, pointerType: 'touch',
                                 bubbles: true}))""",
            [fig.fig_id, box[0] + fx * box[2], box[1] + fy * box[3]],
        )  # fmt: skip
        assert page.locator(".d2l-probe").is_visible()
        assert _probe(page) == pytest.approx(predicted(fx, fy), abs=0.02)
        # A redraw, timed in the page around the change as the reader's click makes it,
        # against plotly's own redraw of the figure (the floor on this machine).
        times = redraw_times(page, fig.fig_id, 7, 9)
    assert not errors, errors
    # Every data set, every epoch and every configuration one control reaches was shown.
    assert {s[0] for s in seen} == set(names) and {s[2] for s in seen} == {0, 1, 2}
    assert len({s[1] for s in seen}) == len(configs) - 1  # all but width 2 x dropout 0.5
    # Each view drew its own boundary; each data set its own points.
    assert len({s[0] for s in sources.values()}) == len(sources)
    assert len({s[1] for s in sources.values()}) == len(names)
    # The budget is 100 ms; on a busy machine plotly's own redraw of the heat map takes
    # longer, and the control's redraw may not cost much more than that.
    redraw, floor = times
    assert redraw < max(100, 1.5 * floor + 20), (
        f"a control's move took {redraw:.0f} ms (median); plotly's redraw of the map {floor:.0f}")


@pytest.mark.browser
def test_the_page_script_writes_the_readout_the_page_was_served_with(tmp_path, browser,
                                                                     playground):  # fmt: skip
    """Attached, the page script rewrites the readout (a live region) for the model shown
    first: in the same words and numbers as the HTML without JavaScript, so nothing
    changes and a screen reader has nothing to announce."""
    *_, fig = playground
    with figure_page(tmp_path, browser, fig.to_html()) as (page, errors):
        assert _shown(page, fig.fig_id)["readout"] == text_of(fig.readout)
    assert not errors, errors


@pytest.mark.browser
def test_the_page_decodes_only_the_models_it_shows_and_keeps_them(tmp_path, browser,
                                                                  playground):  # fmt: skip
    """The first draw decodes one model (the one shown), not every model of the page; a
    control that shows another model decodes that one, and one shown again is not
    decoded again. A link with a configuration decodes that configuration's model."""
    configs, data, runs, fig = playground
    n = len(configs)

    def decoded(page: Any) -> list[int]:
        return page.evaluate(
            "(id) => Object.keys(document.getElementById(id).d2lDecoded).map(Number)"
            ".sort((a, b) => a - b)", fig.fig_id)  # fmt: skip

    default = fig.spec["steps"].index(fig.spec["default"])
    with figure_page(tmp_path, browser, fig.to_html()) as (page, errors):
        assert decoded(page) == [default]
        move_slider(page, fig.fig_id, 7, 0)  # another epoch of the same model
        assert decoded(page) == [default]
        move_slider(page, fig.fig_id, 0, 1)  # the second data set
        assert decoded(page) == [default, n + default]
        first = f"document.getElementById('{fig.fig_id}').d2lDecoded[{default}]"
        page.evaluate(f"() => {{ window.kept = {first}; }}")
        move_slider(page, fig.fig_id, 0, 0)  # back: kept, not decoded again
        assert decoded(page) == [default, n + default]
        assert page.evaluate(f"() => {first} === window.kept")
        url = page.url.split("#")[0]
        page.goto(f"{url}#{fig.fig_id}:dataset=xor,lr=0.3")
        page.reload()
        page.wait_for_function("(id) => document.getElementById(id).d2lShown", arg=fig.fig_id)
        lr = fig.spec["steps"].index([1, 1, 0, 1, 0, 1])  # lr 0.3, the rest at the default
        assert decoded(page) == [n + lr]
        assert _shown(page, fig.fig_id)["readout"].startswith(
            "xor: width 4, depth 2, activation relu, learning rate 0.3")
    assert not errors, errors


@pytest.mark.browser
def test_on_a_phone_the_playground_stacks_and_a_finger_reads_the_plane(tmp_path, browser,
                                                                       playground):  # fmt: skip
    """At 390 pixels the loss panel goes below the plane, the loss image with it, nothing
    leaves the screen, and a tap on the touch screen labels the plane."""
    configs, data, runs, fig = playground
    with serve_page(tmp_path, fig.to_html()) as url:
        context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                      is_mobile=True)  # fmt: skip
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function(
            "(id) => { const gd = document.getElementById(id);"
            " return gd.d2lShown && gd.layout.images && gd.layout.images.length === 3; }",
            arg=fig.fig_id, timeout=30_000,
        )  # fmt: skip
        check_fits(page, fig.fig_id, 390)
        loss = page.evaluate(
            """(id) => { const gd = document.getElementById(id), L = gd._fullLayout;
                 const im = gd.layout.images[2];
                 return [im.x, im.y, im.sizex, im.sizey, L.xaxis2.domain, L.yaxis2.domain]; }""",
            fig.fig_id,
        )  # fmt: skip
        x, y, sizex, sizey, xd, yd = loss
        assert (x, x + sizex) == pytest.approx(xd) and (y - sizey, y) == pytest.approx(yd)
        box = _plane_box(page, fig.fig_id)
        page.touchscreen.tap(box[0] + 0.5 * box[2], box[1] + 0.5 * box[3])
        page.wait_for_timeout(100)
        assert page.locator(".d2l-probe").is_visible()
        x1, x2, p = _probe(page)
        assert (x1, x2) == pytest.approx((0.0, 0.0), abs=0.05) and 0 <= p <= 1
        # The controls take a finger too: a tap at the end of the data set's control.
        control = page.locator(f"#{fig.fig_id}-figure input.d2l-control-input").nth(0)
        bring_into_view(control)
        r = control.bounding_box()
        page.touchscreen.tap(r["x"] + r["width"] - 8, r["y"] + r["height"] / 2)
        page.wait_for_timeout(100)
        shown = _shown(page, fig.fig_id)
        assert shown["actives"][0] == 1 and shown["readout"].startswith("xor: ")
        context.close()
    assert not errors, errors
