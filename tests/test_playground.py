"""The MLP playground: its data sets, its grid, its stacked training against each model
trained alone with torch.optim, and its figure's boundary, computed in the browser from
the stored weights, against the torch model's predictions."""

from __future__ import annotations

import base64
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from d2lcore.playground import (
    around_default,
    build_mlp,
    flat_weights,
    load_flat_weights,
    predict_proba,
    train_stacked,
)
from d2lcore.playground_data import DATASETS, make_dataset, playground_data
from d2lcore.playground_figure import (
    BOUNDARY_COLORSCALE,
    EXTENT,
    PLAYGROUND_JS,
    live_playground,
    plane,
    playground_figure,
    playground_program,
)

from .browser_helpers import move_slider, redraw_times

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = {"width": 4, "depth": 2, "activation": "relu", "lr": 0.03, "dropout": 0.0,
           "init": "kaiming_normal"}  # fmt: skip


# --- Data sets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_data_sets_are_seeded_and_balanced(name):
    X, y = make_dataset(name, 100, seed=3)
    X2, y2 = make_dataset(name, 100, seed=3)
    assert torch.equal(X, X2) and torch.equal(y, y2), "the same seed should give the same points"
    assert not torch.equal(X, make_dataset(name, 100, seed=4)[0])
    assert X.shape == (100, 2) and X.dtype == torch.float32
    assert torch.bincount(y).tolist() == [50, 50]
    assert X.abs().max() < 1.6, "the points should lie in the plane the figure shows"


def test_the_data_sets_are_what_their_names_say():
    X, y = make_dataset("xor", 400, noise=0.0)
    assert torch.equal((X[:, 0] * X[:, 1] > 0), y == 0), "XOR: class 0 where the signs agree"
    X, y = make_dataset("circles", 400, noise=0.0)
    r = X.norm(dim=1)
    assert r[y == 0].max() <= 0.5 < 0.7 <= r[y == 1].min(), "circles: a disk inside a ring"
    X, y = make_dataset("spiral", 400, noise=0.0)
    # Two arms half a turn apart: at radius r, arm y is at the angle 3 pi r + pi y.
    r = X.norm(dim=1)
    a = 3 * math.pi * r + math.pi * y
    torch.testing.assert_close(X, torch.stack([r * a.cos(), r * a.sin()], dim=1), atol=1e-5,
                               rtol=0)  # fmt: skip
    d = playground_data("moons", num_train=20, num_test=30, seed=1)
    assert len(d.train[1]) == 20 and len(d.test[1]) == 30
    assert not torch.equal(d.train[0][:20], d.test[0][:20]), "test points are drawn apart"


def test_bad_data_set_requests_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown data set"):
        make_dataset("swiss roll", 10)
    with pytest.raises(ValueError, match="even"):
        make_dataset("xor", 7)


# --- The grid -------------------------------------------------------------------------


def test_around_default_varies_each_axis_alone_and_crosses_the_pairs():
    axes = {"width": [2, 4, 8], "lr": [0.1, 1.0], "dropout": [0.0, 0.5]}
    default = {"width": 4, "lr": 0.1, "dropout": 0.0}
    configs = around_default(default, axes, [("width", "dropout")])
    assert configs[0] == default
    assert len(configs) == len({tuple(c.values()) for c in configs}), "each configuration once"
    # Everything the sliders can reach: each value alone, width x dropout in full...
    for name, values in axes.items():
        for v in values:
            assert {**default, name: v} in configs
    for w in axes["width"]:
        for p in axes["dropout"]:
            assert {**default, "width": w, "dropout": p} in configs
    # ...and nothing else: 3 widths x 2 dropouts, plus the other learning rate.
    assert len(configs) == 3 * 2 + 1
    with pytest.raises(ValueError, match="not among"):
        around_default({**default, "lr": 0.5}, axes)
    with pytest.raises(ValueError, match="crossed pair"):
        around_default(default, axes, [("width", "depth")])


# --- Stacked training equals training alone -------------------------------------------


def train_alone(config, data, num_epochs, seed=0):
    """The MLP of ``config`` trained by itself, full batch, with torch.optim.Adam; its
    weights after each epoch and its loss at each step."""
    model = build_mlp(config, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    X, y = data.train
    weights, step_losses = [flat_weights(model)], []
    for _ in range(num_epochs):
        model.train()
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        weights.append(flat_weights(model))
        step_losses.append(loss.item())
    return model.eval(), weights, step_losses


MIXED = [
    DEFAULT,
    {**DEFAULT, "width": 3, "depth": 3, "activation": "tanh", "dropout": 0.3},
    {**DEFAULT, "depth": 1, "activation": "sigmoid", "init": "normal", "lr": 0.1},
    {**DEFAULT, "dropout": 0.5},  # the same shape as the default, another rate
    {**DEFAULT, "activation": "tanh", "lr": 0.003},
    {**DEFAULT, "init": "zeros"},
]


def test_stacked_training_equals_training_each_configuration_alone():
    data = [playground_data(DATASETS[k % 4], num_train=40, num_test=20, seed=k)
            for k in range(len(MIXED))]  # fmt: skip
    epochs = 12
    runs = train_stacked(MIXED, data, num_epochs=epochs, snapshot_epochs=[0, 5, 12],
                         eval_every=3)  # fmt: skip
    for config, d, run in zip(MIXED, data, runs, strict=True):
        model, weights, step_losses = train_alone(config, d, epochs)
        for row, epoch in enumerate([0, 5, 12]):
            np.testing.assert_allclose(run.extras["weights"][row], weights[epoch], atol=2e-6,
                                       err_msg=f"{config} at epoch {epoch}")  # fmt: skip
        np.testing.assert_allclose(run.history.train_loss, step_losses, rtol=1e-5)
        # The evaluations: without dropout, on the training and the test points.
        with torch.no_grad():
            out, out_test = model(d.train[0]), model(d.test[0])
        expected = [epochs, nn.functional.cross_entropy(out, d.train[1]).item(),
                    nn.functional.cross_entropy(out_test, d.test[1]).item(),
                    (out.argmax(1) == d.train[1]).float().mean().item(),
                    (out_test.argmax(1) == d.test[1]).float().mean().item()]  # fmt: skip
        np.testing.assert_allclose(run.extras["curves"][-1], expected, rtol=1e-5, atol=1e-6)
        assert run.extras["curves"][:, 0].tolist() == [3, 6, 9, 12]
        np.testing.assert_allclose(run.extras["snapshots"][-1], expected, rtol=1e-5, atol=1e-6)
        assert run.test_acc == pytest.approx(expected[4])


def test_training_restores_the_thread_count_and_checks_its_inputs():
    threads = torch.get_num_threads()
    d = playground_data("xor", num_train=10, num_test=10)
    train_stacked([DEFAULT], [d], num_epochs=1, snapshot_epochs=[1])
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="configurations for"):
        train_stacked([DEFAULT, DEFAULT], [d], num_epochs=1, snapshot_epochs=[1])
    with pytest.raises(ValueError, match="snapshot epochs"):
        train_stacked([DEFAULT], [d], num_epochs=1, snapshot_epochs=[2])


def test_weights_flatten_as_the_page_reads_them():
    model = build_mlp({**DEFAULT, "width": 3, "depth": 2})
    flat = flat_weights(model)
    assert len(flat) == sum(p.numel() for p in model.parameters()) == (2 * 3 + 3) + (
        3 * 3 + 3) + (3 * 2 + 2)  # fmt: skip
    copy = load_flat_weights(build_mlp({**DEFAULT, "width": 3}, seed=5), flat)
    X = torch.randn(7, 2)
    torch.testing.assert_close(copy(X), model(X))
    with pytest.raises(ValueError, match="weights for a model"):
        load_flat_weights(build_mlp(DEFAULT), flat)


# --- The figure -------------------------------------------------------------------------

AXES = {"width": [2, 4], "depth": [1, 2], "activation": ["relu", "tanh"], "lr": [0.03, 0.3],
        "dropout": [0.0, 0.5], "init": ["zeros", "kaiming_normal"]}  # fmt: skip
CROSSED = [("width", "dropout")]
SNAPS = [0, 4, 8]


def small_playground():
    configs = around_default(DEFAULT, AXES, CROSSED)
    data = {name: playground_data(name, num_train=30, num_test=20) for name in ("moons", "xor")}
    runs = {name: train_stacked(configs, [d] * len(configs), num_epochs=SNAPS[-1],
                                snapshot_epochs=SNAPS, eval_every=2)
            for name, d in data.items()}  # fmt: skip
    fig = playground_figure(runs, data, axes=AXES, default=DEFAULT, crossed=CROSSED,
                            snapshot_epochs=SNAPS, title="Playground", resolution=21)  # fmt: skip
    return configs, data, runs, fig


def test_the_figure_stores_every_models_weights_as_float16():
    configs, data, runs, fig = small_playground()
    spec = fig.spec
    stored = np.frombuffer(base64.b64decode(spec["weights"]), dtype="<f2").astype(np.float32)
    k = 0
    for name in data:
        for c, run in enumerate(runs[name]):
            part = stored[spec["offsets"][k]:spec["offsets"][k + 1]].reshape(len(SNAPS), -1)
            np.testing.assert_allclose(part, run.extras["weights"], rtol=1e-3, atol=1e-4)
            assert spec["layers"][c] == [2] + [configs[c]["width"]] * configs[c]["depth"] + [2]
            k += 1
    assert [len(s["steps"]) for s in fig.figure.layout.sliders] == [2, 2, 2, 2, 2, 2, 2, 3]
    assert spec["default"] == [1, 1, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="two values or more"):
        playground_figure(runs, data, axes={**AXES, "depth": [2]}, default=DEFAULT,
                          crossed=CROSSED, snapshot_epochs=SNAPS, title="Playground")
    assert spec["crossed"] == [[0, 4]]
    html = fig.to_html()
    assert "window.d2lPlayground.attach(" in html and "cdn" not in html.lower()


def test_the_book_serves_the_page_script_once_beside_plotly(tmp_path):
    from .test_sliders import FakeApp, load_offline_assets

    assets = load_offline_assets()
    assert assets.PLAYGROUND_JS.resolve() == PLAYGROUND_JS.resolve()
    assert "playground.js" in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["d2lcore"]  # fmt: skip
    program = playground_program()
    assert "</script" not in program.lower() and "{plot_id}" not in program
    *_, fig = small_playground()
    context = {"body": fig.to_html()}
    assert context["body"].count(program) == 1  # for pages that do not load the file
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", context, None)
    assert app.js_files == [("vendor/plotly.min.js", 200), ("vendor/d2l-playground.js", 202)]
    assert program not in context["body"] and "window.d2lPlayground.attach(" in context["body"]


def test_float16_weights_change_the_boundary_by_less_than_a_percent():
    configs, data, runs, _ = small_playground()
    _, points = plane(21)
    for c, run in zip(configs, runs["xor"], strict=True):
        full = predict_proba(c, run.extras["weights"][-1], points)
        half = run.extras["weights"][-1].astype(np.float16).astype(np.float32)
        assert (predict_proba(c, half, points) - full).abs().max() < 0.01


def test_live_controls_train_one_configuration_and_draw_its_boundary():
    data = {"xor": playground_data("xor", num_train=30, num_test=20)}
    panel = live_playground(data, AXES, default=DEFAULT, num_epochs=20, draw_every=10)
    drawn = []
    panel.output.observe(lambda change: drawn.append(change), names="outputs")
    result = panel.train()
    assert result is not None and result.history.num_epochs == 20
    assert result.config["dataset"] == "xor"
    # Drawn at epochs 0, 10 and 20 while training, then the finished run.
    assert len(drawn) >= 3
    (output,) = panel.output.outputs
    assert "application/vnd.plotly.v1+json" in output["data"]


# --- The figure in a real browser -------------------------------------------------------


def _shown(page, fig_id):
    """What the playground shows: the slider positions, the state the page script drew
    (``gd.d2lShown``), the readout as rendered and the sources of its three images."""
    return page.evaluate(
        """(id) => { const gd = document.getElementById(id), s = gd.d2lShown;
             return {actives: gd.layout.sliders.map(s => s.active || 0), z: s.z,
                     points: s.points, loss_x: s.loss_epochs, loss_y: Array.from(s.losses[0]),
                     readout: gd.parentNode.querySelector('.d2l-playground-readout')
                       .textContent,
                     sources: gd.layout.images.map(im => im.source)}; }""",
        fig_id,
    )


def _pixels(page, source: str, where: np.ndarray | None = None) -> np.ndarray:
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


def _check_images(page, shown, expected_z, split, spec) -> None:
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


def _expected_config(actives):
    """The trained configuration the slider positions select (what the page snaps to)."""
    return {name: AXES[name][actives[1 + i]] for i, name in enumerate(AXES)}


@pytest.mark.browser
def test_every_control_moves_the_boundary_to_what_torch_predicts(tmp_path, browser):
    from .test_sliders import figure_page

    configs, data, runs, fig = small_playground()
    names = list(data)
    _, points = plane(21)
    with figure_page(tmp_path, browser, fig.to_html()) as (page, errors):
        seen, sources = set(), {}
        sizes = [len(s["steps"]) for s in fig.figure.layout.sliders]
        for i, size in enumerate(sizes):
            for j in [*range(size), 0 if i else 1]:  # every position, then back
                move_slider(page, fig.fig_id, i, j)
                shown = _shown(page, fig.fig_id)
                a = shown["actives"]
                assert a[i] == j, "the moved slider stays where the reader put it"
                config = _expected_config(a)
                assert config in configs, f"the sliders show an untrained {config}"
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
                seen.add((name, tuple(config.values()), epoch_step))
        # A value trained only around the default puts the other axes back there: the
        # learning rate 0.3 with width 2 selected sets the width to its default, 4.
        move_slider(page, fig.fig_id, 1, 0)  # width 2
        move_slider(page, fig.fig_id, 4, 1)  # learning rate 0.3
        assert _shown(page, fig.fig_id)["actives"][1:5] == [1, 1, 0, 1]
        # Crossed axes keep each other: width 2 (the learning rate back to its default),
        # then dropout 0.5.
        move_slider(page, fig.fig_id, 1, 0)
        move_slider(page, fig.fig_id, 5, 1)
        assert _shown(page, fig.fig_id)["actives"][1:6] == [0, 1, 0, 0, 1]
        # Under the pointer, the label gives what torch predicts there.
        shown = _shown(page, fig.fig_id)
        config = _expected_config(shown["actives"])
        run = runs[names[shown["actives"][0]]][configs.index(config)]
        half = run.extras["weights"][shown["actives"][-1]].astype(np.float16).astype(np.float32)
        box = page.evaluate("""(id) => { const gd = document.getElementById(id);
            gd.scrollIntoView();
            const L = gd._fullLayout, r = gd.getBoundingClientRect();
            return [r.left + L.xaxis._offset, r.top + L.yaxis._offset, L.xaxis._length,
                    L.yaxis._length]; }""", fig.fig_id)  # fmt: skip
        for fx, fy in [(0.3, 0.2), (0.75, 0.6)]:
            page.mouse.move(box[0] + fx * box[2], box[1] + fy * box[3])
            label = page.locator(".d2l-playground-probe").text_content()
            x1, x2, p = (float(v) for v in re.findall(r"-?\d+\.\d+", label))
            assert (x1, x2) == pytest.approx((-EXTENT + 2 * EXTENT * fx,
                                              EXTENT - 2 * EXTENT * fy), abs=0.02)
            at = torch.tensor([[-EXTENT + 2 * EXTENT * fx, EXTENT - 2 * EXTENT * fy]])
            assert p == pytest.approx(predict_proba(config, half, at).item(), abs=0.01), label
        page.mouse.move(1, 1)
        assert not page.locator(".d2l-playground-probe").is_visible()
        # A redraw, timed in the page around the change as the reader's click makes it,
        # against plotly's own redraw of the figure (the floor on this machine).
        times = redraw_times(page, fig.fig_id, 7, 9)
    assert not errors, errors
    # Every data set, every epoch and every configuration one slider reaches was shown.
    assert {s[0] for s in seen} == set(names) and {s[2] for s in seen} == {0, 1, 2}
    assert len({s[1] for s in seen}) == len(configs) - 1  # all but width 2 x dropout 0.5
    # Each view drew its own boundary; each data set its own points.
    assert len({s[0] for s in sources.values()}) == len(sources)
    assert len({s[1] for s in sources.values()}) == len(names)
    # The budget is 100 ms; on a busy machine plotly's own redraw of the heat map takes
    # longer, and the slider's redraw may not cost much more than that.
    redraw, floor = times
    assert redraw < max(100, 1.5 * floor + 20), (
        f"a slider move took {redraw:.0f} ms (median); plotly's redraw of the map {floor:.0f}")
