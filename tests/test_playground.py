"""The MLP playground: its data sets, its grid, its stacked training against each model
trained alone with torch.optim, and the float16 weights its figure stores (the figure
itself: tests/test_playground_figure.py)."""

from __future__ import annotations

import math

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
from d2lcore.playground_figure import live_playground, plane, playground_figure

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
