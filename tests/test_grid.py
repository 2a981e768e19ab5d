"""Tests of d2lcore.grid: the one configuration order, and run_grid's cache with extras."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from d2lcore.grid import Grid, GridResults, run_grid
from d2lcore.train import History, RunResult

AXES = {"lr": [0.01, 0.1, 1.0], "dropout": [0.0, 0.5], "init": ["normal", "xavier"]}


def test_grid_order_is_itertools_product() -> None:
    grid = Grid(AXES)
    expected = [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*AXES.values())]
    assert grid.configs() == expected and len(grid) == 12
    assert grid.strides == [4, 2, 1]
    for k, config in enumerate(expected):
        assert grid.index(config) == k
        assert grid.config_at(k) == config
        assert grid.index_of_steps(grid.steps(config)) == k


def test_grid_rejects_bad_axes() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Grid({"lr": [0.1, 0.1]})
    with pytest.raises(ValueError, match="no values"):
        Grid({"lr": []})
    with pytest.raises(KeyError, match="not in the grid"):
        Grid(AXES).index({"lr": 0.5, "dropout": 0.0, "init": "normal"})
    with pytest.raises(KeyError, match="one value for each axis"):
        Grid(AXES).index({"lr": 0.1})
    with pytest.raises(IndexError):
        Grid(AXES).config_at(12)


def test_grid_takes_numpy_and_torch_scalars() -> None:
    grid = Grid({"lr": np.array([0.1, 1.0]), "seed": [torch.tensor(3)]})
    assert grid.axes == {"lr": (0.1, 1.0), "seed": (3,)}
    assert type(grid.axes["lr"][0]) is float


def fake_run(config: dict) -> RunResult:
    """A deterministic 'training' whose numbers and extras depend on the config."""
    lr = float(config["lr"])
    losses = [1.0 / (1 + lr * e) for e in range(3)]
    history = History(train_loss=losses, val_loss=[x + 0.1 for x in losses],
                      seconds=[0.01] * 3)  # fmt: skip
    curve = torch.linspace(0, 1, 5) * lr
    return RunResult(config=dict(config), history=history, metrics={"score": lr},
                     extras={"curve": curve, "label": f"lr={lr}"})  # fmt: skip


def test_run_grid_collects_in_grid_order_with_extras(tmp_path: Path) -> None:
    out = run_grid(AXES, fake_run, cache=False)
    assert [r.config for r in out] == Grid(AXES).configs()
    run = out.get(lr=1.0, dropout=0.5, init="xavier")
    assert run.metrics == {"score": 1.0}
    assert isinstance(run.extras["curve"], np.ndarray)
    np.testing.assert_allclose(run.extras["curve"], np.linspace(0, 1, 5), rtol=1e-6)
    assert run.extras["label"] == "lr=1.0"


def test_run_grid_cache_serves_without_running(tmp_path: Path) -> None:
    calls: list[dict] = []

    def fn(config: dict) -> RunResult:
        calls.append(config)
        return fake_run(config)

    first = run_grid(AXES, fn, depends_on={"data": "abc"}, cache=tmp_path, name="fake")
    assert len(calls) == 12 and first.meta["from_cache"] is False
    assert Path(first.meta["path"]).name.startswith("fake-")
    second = run_grid(AXES, fn, depends_on={"data": "abc"}, cache=tmp_path, name="fake")
    assert len(calls) == 12 and second.meta["from_cache"] is True
    for a, b in zip(first, second, strict=True):
        assert a.to_dict()["history"] == b.to_dict()["history"] and a.metrics == b.metrics
        np.testing.assert_array_equal(a.extras["curve"], b.extras["curve"])
        assert a.extras["curve"].dtype == b.extras["curve"].dtype
    # What the results depend on is part of the key.
    run_grid(AXES, fn, depends_on={"data": "changed"}, cache=tmp_path, name="fake")
    assert len(calls) == 24


def test_run_grid_uses_batch_for_many(tmp_path: Path) -> None:
    batches: list[int] = []

    def batch(configs: list[dict]) -> list[RunResult]:
        batches.append(len(configs))
        return [fake_run(c) for c in configs]

    def never(config: dict) -> RunResult:
        raise AssertionError("batch should have run them")

    out = run_grid(AXES, never, batch=batch, cache=False)
    assert batches == [12] and len(out) == 12


DAMAGE_AXES = {"lr": [0.1, 1.0], "num_epochs": [3]}  # fake_run records 3 epochs


@pytest.mark.parametrize("damage", ["nan", "infinity", "lengths", "missing", "config", "string",
                                    "diverged", "epochs", "test_acc", "metric", "extra_epoch"])
def test_run_grid_retrains_damaged_entries(tmp_path: Path, damage: str) -> None:
    calls: list[int] = []

    def fn(config: dict) -> RunResult:
        calls.append(1)
        return fake_run(config)

    first = run_grid(DAMAGE_AXES, fn, cache=tmp_path)
    path = Path(first.meta["path"])
    entry = json.loads(path.read_text())
    run = entry["grid"]["runs"][0]
    if damage == "nan":
        run["history"]["train_loss"][1] = float("nan")
    elif damage == "infinity":
        run["history"]["val_loss"][0] = float("inf")
    elif damage == "string":
        run["history"]["train_loss"][0] = "0.5"
    elif damage == "diverged":
        run["history"]["diverged"] = "no"
    elif damage == "epochs":
        run["history"]["diverged_epoch"] = 2  # says diverged at 2, flag says not
    elif damage == "test_acc":
        run["test_acc"] = float("nan")
    elif damage == "metric":
        run["metrics"] = {"score": None}
    elif damage == "extra_epoch":
        for name in ("train_loss", "val_loss", "seconds"):
            run["history"][name].append(0.1)
    elif damage == "lengths":
        run["history"]["val_loss"].append(0.5)
    elif damage == "missing":
        del run["history"]
    else:
        run["config"]["lr"] = 0.2
    path.write_text(json.dumps(entry))
    again = run_grid(DAMAGE_AXES, fn, cache=tmp_path)
    assert again.meta["from_cache"] is False and len(calls) == 4
    assert run_grid(DAMAGE_AXES, fn, cache=tmp_path).meta["from_cache"] is True


def test_grid_results_round_trip_through_json() -> None:
    out = run_grid({"lr": [0.1, 1.0]}, fake_run, cache=False)
    back = GridResults.from_dict(json.loads(json.dumps(out.to_dict())))
    assert back.axes == out.axes
    np.testing.assert_array_equal(back.runs[1].extras["curve"], out.runs[1].extras["curve"])


def test_nan_axis_value_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Grid({"lr": [0.1, float("nan")]})
    with pytest.raises(TypeError, match="numbers, strings or booleans"):
        Grid({"lr": [[0.1]]})
