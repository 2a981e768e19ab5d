"""Tests of d2lcore.grid: the one configuration order, and run_grid's cache with extras."""

from __future__ import annotations

import itertools
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from d2lcore.grid import CacheWarning, Grid, GridResults, run_grid
from d2lcore.keys import UnkeyableError
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


# ----------------------------------------------------------------------------------
# The key reads what the function reads

PAGE_X = torch.arange(6.0)  # a page's data, read by the function as a global
PAGE_OFFSET = torch.zeros(2)  # read only by a helper the function calls


def page_helper() -> float:
    return float(PAGE_OFFSET.sum())


def test_editing_captured_data_trains_again(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """No depends_on: a global tensor, a closure tensor and a global that a called helper
    reads are all in the key. An edit of one element trains again; an unchanged rerun is
    served from the cache."""
    page = sys.modules[__name__]
    monkeypatch.setattr(page, "PAGE_X", PAGE_X.clone())  # edited in place below
    monkeypatch.setattr(page, "PAGE_OFFSET", PAGE_OFFSET.clone())
    scale = torch.ones(3)  # a closure variable
    calls: list[dict] = []  # only collected into: the run's output, not in the key

    def fn(config: dict) -> RunResult:
        calls.append(config)
        run = fake_run(config)
        run.metrics["data"] = float(PAGE_X.sum() * scale.sum()) + page_helper()
        return run

    axes = {"lr": [0.1, 1.0]}
    keys = []

    def grid(trains: bool) -> GridResults:
        before = len(calls)
        out = run_grid(axes, fn, cache=tmp_path, name="captured")
        assert out.meta["from_cache"] is not trains
        assert len(calls) == before + (2 if trains else 0)
        keys.append(out.meta["key"])
        return out

    first = grid(trains=True)
    assert grid(trains=False).runs[0].metrics == first.runs[0].metrics
    PAGE_X[3] += 1  # the global tensor
    assert grid(trains=True).runs[0].metrics["data"] == first.runs[0].metrics["data"] + 3
    grid(trains=False)
    scale[0] = 5.0  # the closure tensor
    grid(trains=True)
    grid(trains=False)
    PAGE_OFFSET[1] = 2.0  # read by page_helper only
    assert grid(trains=True).runs[0].metrics["data"] == float(PAGE_X.sum() * scale.sum()) + 2
    grid(trains=False)
    assert len(set(keys)) == 4 and keys[0] == keys[1] and keys[-1] == keys[-2]


def test_the_batch_function_is_in_the_key(tmp_path: Path) -> None:
    weights = torch.ones(2)

    def batch(configs: list[dict]) -> list[RunResult]:
        return [fake_run({**c, "lr": c["lr"] * float(weights.sum())}) for c in configs]

    def never(config: dict) -> RunResult:
        raise AssertionError("batch should have run them")

    first = run_grid(AXES, never, batch=batch, cache=tmp_path)
    assert run_grid(AXES, never, batch=batch, cache=tmp_path).meta["from_cache"] is True
    weights[1] = 3.0
    again = run_grid(AXES, never, batch=batch, cache=tmp_path)
    assert again.meta["from_cache"] is False and again.meta["key"] != first.meta["key"]


def test_an_unkeyable_capture_is_refused_by_name(tmp_path: Path) -> None:
    lock = threading.Lock()

    def fn(config: dict) -> RunResult:
        with lock:
            return fake_run(config)

    message = r"fn's closure variable lock is a _thread.lock, which the key cannot read"
    with pytest.raises(UnkeyableError, match=message) as err:
        run_grid(AXES, fn, cache=tmp_path)
    assert "cache=False" in str(err.value) and "depends_on=" in str(err.value)
    assert not list(tmp_path.iterdir())
    assert len(run_grid(AXES, fn, cache=False)) == 12  # nothing is keyed without a cache


# ----------------------------------------------------------------------------------
# Hostile names and damaged entries


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "a\0b", "..", ".hidden", "",
                                  "x" * 81, "spaces in it", 3])  # fmt: skip
def test_a_name_that_could_steer_the_cache_file_is_refused_before_training(tmp_path, name):
    calls = []

    def fn(config):
        calls.append(config)
        return fake_run(config)

    with pytest.raises(ValueError, match="a grid's name becomes part of its cache file"):
        run_grid({"lr": [0.1]}, fn, cache=tmp_path / "cache", name=name)
    assert calls == [] and not (tmp_path / "cache").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("damage", ["deep nesting", "huge numbers", "wrong types"])
def test_a_damaged_entry_of_any_shape_is_trained_again(tmp_path, damage):
    """An entry that holds the right key but cannot be read back (a JSON nested too deep
    for the parser, numbers out of range, values of the wrong type) is trained again,
    never raised out of run_grid."""
    calls = []

    def fn(config):
        calls.append(config)
        return fake_run(config)

    axes = {"lr": [0.1, 1.0]}
    first = run_grid(axes, fn, cache=tmp_path, name="damaged")
    entry = Path(first.meta["path"])
    stored = json.loads(entry.read_text())

    def overflow(value):
        if isinstance(value, dict):
            return {k: overflow(v) for k, v in value.items()}
        if isinstance(value, list):
            return [overflow(v) for v in value]
        return 10**400 if isinstance(value, int | float) and not isinstance(value, bool) else value

    if damage == "deep nesting":
        entry.write_text(f'{{"key": "{stored["key"]}", "grid": {_nested(200_000)}}}')
    elif damage == "huge numbers":
        entry.write_text(json.dumps({"key": stored["key"], "grid": overflow(stored["grid"])}))
    else:
        stored["grid"]["runs"] = [{"config": 1, "history": "x"}] * 2
        entry.write_text(json.dumps(stored))
    again = run_grid(axes, fn, cache=tmp_path, name="damaged")
    assert again.meta["from_cache"] is False and len(calls) == 4
    assert [r.metrics["score"] for r in again] == [0.1, 1.0]
    assert run_grid(axes, fn, cache=tmp_path, name="damaged").meta["from_cache"] is True


def test_a_cache_folder_that_cannot_be_written_is_warned_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for lr in (0.1, 0.2, 0.3):
            grid = run_grid({"lr": [lr]}, fake_run, cache=blocker / "grids", name="unwritable")
            assert "cache_error" in grid.meta
    ours = [w for w in seen if issubclass(w.category, CacheWarning)]
    assert len(ours) == 1, [str(w.message) for w in seen]
    assert "could not be stored in the cache folder" in str(ours[0].message)
    assert "D2L_CACHE_DIR" in str(ours[0].message)
