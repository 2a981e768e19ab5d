"""Tests of d2lcore.sweep and d2lcore.batched: every configuration of a batched grid
equals training it alone with train_one (which is d2lcore.train.fit); the disk cache
hits, invalidates and recovers."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from d2lcore import batched, cache, sweep
from d2lcore.data import Splits, TensorLoader
from d2lcore.device import make_generator
from d2lcore.grid import CacheWarning
from d2lcore.models import MLP, Dropout
from d2lcore.sweep import (
    GridResults,
    ModelSpec,
    RunResult,
    TrainConfig,
    grid_configs,
    train_grid,
    train_one,
)

RTOL = 1e-4
pytestmark = pytest.mark.usefixtures("one_thread")


def fake_images(n: int = 300, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Small "images" (n, 1, 6, 6) whose class shifts the mean of a few pixels."""
    gen = make_generator(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    X = torch.rand(n, 1, 6, 6, generator=gen)
    X[:, 0, 0, :classes] += 0.8 * nn.functional.one_hot(y, classes)
    return X, y


def image_data(n_train: int = 200, batch: int = 64) -> Splits:
    X, y = fake_images(n_train + 100)
    val, test = slice(n_train, n_train + 50), slice(n_train + 50, None)
    return Splits(
        (X[:n_train], y[:n_train]), (X[val], y[val]), (X[test], y[test]), eval_batch_size=batch
    )


def regression_data() -> Splits:
    gen = make_generator(3)
    X = torch.randn(150, 3, generator=gen)
    y = X @ torch.tensor([[2.0], [-3.4], [1.0]]) + 4.2 + 0.01 * torch.randn(150, 1, generator=gen)
    return Splits((X[:100], y[:100]), (X[100:], y[100:]))


def assert_runs_close(got: RunResult, want: RunResult) -> None:
    g, w = got.history, want.history
    assert (g.diverged, g.diverged_epoch) == (w.diverged, w.diverged_epoch), got.config
    for name in ("train_loss", "val_loss", "val_acc"):
        a, b = getattr(g, name), getattr(w, name)
        assert len(a) == len(b), (got.config, name)
        assert a == pytest.approx(b, rel=RTOL), (got.config, name)
    assert (got.test_acc is None) == (want.test_acc is None)
    if want.test_acc is not None:
        assert got.test_acc == pytest.approx(want.test_acc, abs=1e-9), got.config


def assert_matches_train_one(
    grid: GridResults, spec: ModelSpec, base: TrainConfig, data: Splits
) -> None:
    assert grid.meta["batched"] is True
    for run in grid.runs:
        alone = train_one(spec, replace(base, **run.config), data)
        assert_runs_close(run, alone)


# ----------------------------------------------------------------------------------
# Batched == one at a time


def test_softmax_grid_equals_train_one() -> None:
    spec = ModelSpec("softmax", 36, 4)
    base = TrainConfig(lr=0.5, num_epochs=3, batch_size=32)
    data = image_data()
    axes = {"lr": [0.1, 1.0], "init": ["default", "normal", "xavier_uniform"], "seed": [0, 1]}
    grid = train_grid(spec, axes, base, data, cache=False, batched=True)
    assert [r.config for r in grid.runs] == grid_configs(axes)
    assert_matches_train_one(grid, spec, base, data)
    # Training did something, and different configs gave different runs.
    assert all(r.history.train_loss[-1] < r.history.train_loss[0] for r in grid.runs)
    assert len({r.history.train_loss[-1] for r in grid.runs}) == len(grid)


@pytest.mark.parametrize("seeds", [[0], [0, 5]], ids=["shared-seed", "own-seeds"])
def test_mlp_dropout_grid_equals_train_one(seeds: list[int]) -> None:
    spec = ModelSpec("mlp", 36, 4, hidden_sizes=(16, 8))
    base = TrainConfig(lr=0.3, num_epochs=3, batch_size=32, weight_decay=1e-3, init_std=0.1)
    data = image_data()
    axes = {
        "lr": [0.1, 0.5],
        "dropout": [0.0, 0.2, 0.6],
        "init": ["default", "normal", "kaiming_normal"],
        "seed": seeds,
    }
    grid = train_grid(spec, axes, base, data, cache=False, batched=True)
    assert_matches_train_one(grid, spec, base, data)
    # Dropout changed the runs (the masks are really drawn).
    run = grid.get(lr=0.5, dropout=0.0, init="normal", seed=0)
    dropped = grid.get(lr=0.5, dropout=0.6, init="normal", seed=0)
    assert run.history.train_loss != pytest.approx(dropped.history.train_loss, rel=1e-3)


def test_mlp_adam_grid_equals_train_one() -> None:
    spec = ModelSpec("mlp", 36, 4, hidden_sizes=(16,), activation="tanh")
    base = TrainConfig(lr=0.01, num_epochs=2, batch_size=50, optimizer="adam", dropout=0.3)
    data = image_data()
    grid = train_grid(
        spec, {"lr": [1e-3, 1e-2], "weight_decay": [0.0, 0.01]}, base, data, cache=False,
        batched=True,
    )
    assert_matches_train_one(grid, spec, base, data)


def test_linear_regression_grid_with_divergence() -> None:
    spec = ModelSpec("linear", 3, 1)
    base = TrainConfig(lr=0.03, num_epochs=6, batch_size=10)
    data = regression_data()
    # lr=1.6 blows up over a few epochs: the loss overflows mid-run, not at once.
    axes = {"lr": [0.01, 0.1, 1.6], "weight_decay": [0.0, 0.1]}
    grid = train_grid(spec, axes, base, data, cache=False, batched=True)
    assert_matches_train_one(grid, spec, base, data)
    for wd in (0.0, 0.1):
        bad = grid.get(lr=1.6, weight_decay=wd).history
        assert bad.diverged and 1 < bad.diverged_epoch <= 6
        assert len(bad.train_loss) == bad.diverged_epoch - 1
        assert all(math.isfinite(v) for v in bad.train_loss)
    good = grid.get(lr=0.1, weight_decay=0.0)
    assert not good.diverged and good.history.num_epochs == 6
    assert good.history.val_loss[-1] < 1e-3 and good.history.val_acc == []
    assert good.test_acc is None


def test_diverged_config_does_not_poison_the_others() -> None:
    spec = ModelSpec("mlp", 36, 4, hidden_sizes=(16,))
    base = TrainConfig(lr=0.5, num_epochs=3, batch_size=32, dropout=0.25)
    data = image_data()
    with_bad = train_grid(spec, {"lr": [0.1, 1e30, 0.5]}, base, data, cache=False)
    without = train_grid(spec, {"lr": [0.1, 0.5]}, base, data, cache=False)
    bad = with_bad.get(lr=1e30)
    assert bad.diverged and bad.history.diverged_epoch == 1 and bad.test_acc is None
    assert_runs_close(bad, train_one(spec, replace(base, lr=1e30), data))
    for lr in (0.1, 0.5):
        assert not with_bad.get(lr=lr).diverged
        assert_runs_close(with_bad.get(lr=lr), without.get(lr=lr))


def test_fallback_gives_the_same_results_and_api() -> None:
    spec = ModelSpec("mlp", 36, 4, hidden_sizes=(8,))
    base = TrainConfig(lr=0.3, num_epochs=2, batch_size=40)
    data = image_data()
    axes = {"dropout": [0.0, 0.5], "batch_size": [40, 64]}
    one_by_one = train_grid(spec, axes, base, data, cache=False, batched=False)
    together = train_grid(spec, axes, base, data, cache=False, batched=True)
    assert one_by_one.meta["batched"] is False and together.meta["batched"] is True
    assert one_by_one.axes == together.axes and len(one_by_one) == 4
    for a, b in zip(one_by_one, together, strict=True):
        assert a.config == b.config
        assert_runs_close(b, a)
    assert one_by_one.summary().shape[0] == 4
    assert (
        GridResults.from_dict(json.loads(json.dumps(one_by_one.to_dict()))).runs[0].config
        == one_by_one.runs[0].config
    )


def test_splits_with_their_own_batch_sizes_are_accepted() -> None:
    X, y = fake_images(200)
    data = Splits((X[:120], y[:120]), (X[120:160], y[120:160]), (X[160:], y[160:]),
                  batch_size=16, eval_batch_size=20, seed=3)  # fmt: skip
    spec = ModelSpec("softmax", 36, 4)
    base = TrainConfig(lr=0.5, num_epochs=2, batch_size=32)
    grid = train_grid(spec, {"lr": [0.1, 0.5]}, base, data, cache=False, batched=True)
    assert_matches_train_one(grid, spec, base, data)
    assert all(r.test_acc is not None for r in grid)


def test_train_one_returns_the_model_and_leaves_the_global_random_state_alone() -> None:
    spec = ModelSpec("mlp", 36, 4, hidden_sizes=(8,))
    config = TrainConfig(lr=0.2, num_epochs=2, batch_size=25, dropout=0.3, seed=3)
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    first = train_one(spec, config, image_data())
    assert torch.equal(torch.random.get_rng_state(), before)
    assert isinstance(first, RunResult) and isinstance(first.model, nn.Module)
    torch.rand(7)  # whatever the caller drew, the run is the same
    assert train_one(spec, config, image_data()).history.train_loss == first.history.train_loss


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_momentum_and_schedules_grid_equals_train_one(optimizer: str) -> None:
    """Per-model momentum and schedules, stacked, equal torch.optim with LambdaLR."""
    spec = ModelSpec("mlp", 36, 4, hidden_sizes=(16,))
    base = TrainConfig(lr=0.1 if optimizer == "sgd" else 0.01, num_epochs=3, batch_size=64,
                       optimizer=optimizer)  # fmt: skip
    data = image_data()  # 200 examples: 4 steps an epoch, the last one short
    axes: dict[str, list[sweep.AxisValue]] = {"schedule": ["constant", "cosine"],
                                              "warmup_epochs": [0, 1]}  # fmt: skip
    if optimizer == "sgd":
        axes["momentum"] = [0.0, 0.9]
    grid = train_grid(spec, axes, base, data, cache=False, batched=True)
    assert_matches_train_one(grid, spec, base, data)
    finals = {r.history.train_loss[-1] for r in grid.runs}
    assert len(finals) == len(grid), "momentum and the schedules should change the runs"


def test_train_one_follows_the_schedule_of_lambda_lr() -> None:
    """The learning rate of every step, seen by the optimizer, is lr times lr_factors."""
    spec = ModelSpec("softmax", 36, 4)
    config = TrainConfig(lr=0.2, num_epochs=3, batch_size=50, schedule="cosine",
                         warmup_epochs=1, momentum=0.5)  # fmt: skip
    seen: list[float] = []
    original = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        seen.append(self.param_groups[0]["lr"])
        assert self.param_groups[0]["momentum"] == 0.5
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", spy)
        train_one(spec, config, image_data())
    factors = config.lr_factors(4)
    assert seen == pytest.approx([0.2 * f for f in factors])
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[4] == 1.0 and 0 < factors[-1] < 0.1


def test_train_one_is_the_plain_fit() -> None:
    """train_one is fit with a seeded init and loader: check it against a hand loop."""
    spec = ModelSpec("softmax", 36, 4)
    config = TrainConfig(
        lr=0.2, num_epochs=2, batch_size=25, weight_decay=0.01, init="normal", init_std=0.05, seed=7
    )
    data = image_data()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    run = train_one(spec, config, data)
    assert torch.equal(torch.random.get_rng_state(), before)  # no global side effects
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    nn.init.normal_(model[1].weight, 0.0, 0.05, generator=make_generator(7))
    nn.init.zeros_(model[1].bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, weight_decay=0.01)
    loader = TensorLoader(*data.train, batch_size=25, seed=7)
    for epoch in range(2):
        total = 0.0
        for X, y in loader:
            loss = nn.functional.cross_entropy(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
        assert run.history.train_loss[epoch] == pytest.approx(total / 200, rel=1e-5)
    assert run.config == asdict(config)


def test_dropout_generator_repeats_masks() -> None:
    h = torch.ones(4, 50)
    a = Dropout(0.5, generator=make_generator(1))(h)
    b = Dropout(0.5, generator=make_generator(1))(h)
    assert torch.equal(a, b) and not torch.equal(a, Dropout(0.5, generator=make_generator(2))(h))
    assert set(a.unique().tolist()) == {0.0, 2.0}
    mlp = MLP(10, (8, 8), 2, dropout=0.5, generator=make_generator(0))
    assert all(m.generator is not None for m in mlp.modules() if isinstance(m, Dropout))


def test_bad_grids_raise() -> None:
    data = image_data()
    base = TrainConfig(lr=0.1, num_epochs=1)
    with pytest.raises(ValueError, match="unknown axis"):
        train_grid(ModelSpec("softmax", 36, 4), {"learning_rate": [0.1]}, base, data, cache=False)
    with pytest.raises(ValueError, match="distinct"):
        train_grid(ModelSpec("softmax", 36, 4), {"lr": [0.1, 0.1]}, base, data, cache=False)
    with pytest.raises(ValueError, match="no hidden layer"):
        train_grid(ModelSpec("softmax", 36, 4), {"dropout": [0.0, 0.5]}, base, data, cache=False)
    with pytest.raises(ValueError, match="init"):
        TrainConfig(lr=0.1, num_epochs=1, init="glorot")


# ----------------------------------------------------------------------------------
# The disk cache


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the models trained, batched or alone."""
    calls: list[int] = []
    real_stacked, real_one = sweep.fit_stacked, sweep.train_one

    def fit_stacked(models, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(models))
        return real_stacked(models, *args, **kwargs)

    def train_one(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_one(*args, **kwargs)

    monkeypatch.setattr(sweep, "fit_stacked", fit_stacked)
    monkeypatch.setattr(sweep, "train_one", train_one)
    return calls


SPEC = ModelSpec("softmax", 36, 4)
BASE = TrainConfig(lr=0.5, num_epochs=2, batch_size=50)
AXES = {"lr": [0.1, 0.5], "init": ["default", "zeros"]}


def test_cache_hit_does_no_training(
    tmp_path: Path, counted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    data = image_data()
    first = train_grid(SPEC, AXES, BASE, data)
    assert counted == [4] and first.meta["from_cache"] is False
    assert list(tmp_path.glob("*.json")) == [Path(first.meta["path"])]
    second = train_grid(SPEC, AXES, BASE, data)
    assert counted == [4] and second.meta["from_cache"] is True
    assert second.meta["key"] == first.meta["key"]
    assert [r.to_dict() for r in second] == [r.to_dict() for r in first]
    assert list(tmp_path.iterdir()) == [Path(first.meta["path"])]  # no temp files


def test_cache_invalidation(
    tmp_path: Path, counted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = image_data()
    key = train_grid(SPEC, AXES, BASE, data, cache=tmp_path).meta["key"]
    keys = {key}

    def again(**changes: object) -> None:
        before = len(counted)
        grid = train_grid(
            changes.get("spec", SPEC),
            changes.get("axes", AXES),  # type: ignore[arg-type]
            changes.get("base", BASE),
            changes.get("data", data),  # type: ignore[arg-type]
            cache=tmp_path,
        )
        assert len(counted) > before and grid.meta["from_cache"] is False
        keys.add(grid.meta["key"])

    X, y = data.train
    X2 = X.clone()
    X2[0, 0, 0, 0] += 1e-3
    again(data=Splits((X2, y), data.val, data.test, eval_batch_size=data.eval_batch_size))
    again(base=TrainConfig(lr=0.5, num_epochs=3, batch_size=50))
    again(axes={"lr": [0.1, 0.3], "init": ["default", "zeros"]})
    again(axes={"init": ["default", "zeros"], "lr": [0.1, 0.5]})  # axis order is grid order
    again(spec=ModelSpec("softmax", 36, 4, activation="tanh"))
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "edited d2lcore")
    again()
    assert len(keys) == 7
    assert len(list(tmp_path.glob("*.json"))) == 7


@pytest.mark.parametrize(
    "garbage", ["{not json", "", '{"key": "x", "grid": {"axes": {}}}', "[1, 2, 3]", "TRUNCATE"]
)
def test_corrupt_entry_is_recomputed(tmp_path: Path, counted: list[int], garbage: str) -> None:
    data = image_data()
    first = train_grid(SPEC, AXES, BASE, data, cache=tmp_path)
    entry = Path(first.meta["path"])
    text = entry.read_text()
    entry.write_text(text[: len(text) // 2] if garbage == "TRUNCATE" else garbage)
    again = train_grid(SPEC, AXES, BASE, data, cache=tmp_path)
    assert counted == [4, 4] and again.meta["from_cache"] is False
    assert [r.to_dict()["history"]["train_loss"] for r in again] == [
        r.to_dict()["history"]["train_loss"] for r in first
    ]
    assert train_grid(SPEC, AXES, BASE, data, cache=tmp_path).meta["from_cache"] is True
    assert counted == [4, 4]


def test_entry_with_wrong_shape_is_recomputed(tmp_path: Path, counted: list[int]) -> None:
    data = image_data()
    first = train_grid(SPEC, AXES, BASE, data, cache=tmp_path)
    entry = Path(first.meta["path"])
    stored = json.loads(entry.read_text())
    stored["grid"]["axes"]["lr"] = [0.1, 0.2]  # a different grid under this key
    entry.write_text(json.dumps(stored))
    assert train_grid(SPEC, AXES, BASE, data, cache=tmp_path).meta["from_cache"] is False
    assert counted == [4, 4]


def test_unwritable_cache_does_not_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(CacheWarning, match="could not be stored in the cache folder"):
        grid = train_grid(SPEC, AXES, BASE, image_data(), cache=blocker / "grids")
    assert len(grid) == 4 and "cache_error" in grid.meta


def test_data_fingerprint_sees_dtype_shape_and_bytes() -> None:
    data = image_data()
    X, y = data.train
    fp = sweep.data_fingerprint
    def same_but(train, test=data.test):
        return Splits(train, data.val, test, eval_batch_size=64)

    assert fp(data) == fp(same_but((X.clone(), y.clone())))
    assert fp(data) != fp(same_but((X.double(), y)))
    assert fp(data) != fp(same_but((X.reshape(len(X), -1), y)))
    assert fp(data) != fp(same_but((X, y), test=None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mlp_grid_equals_train_one_on_cuda() -> None:
    spec = ModelSpec("mlp", 36, 4, hidden_sizes=(32,))
    base = TrainConfig(lr=0.3, num_epochs=3, batch_size=32)
    data = image_data()
    axes = {"lr": [0.1, 0.5, 1e30], "dropout": [0.0, 0.5], "seed": [0, 1]}
    grid = train_grid(spec, axes, base, data, cache=False, device="cuda")
    assert grid.meta["device"] == "cuda"
    for run in grid.runs:
        config = replace(base, **run.config)
        assert_runs_close(run, train_one(spec, config, data, device="cuda"))


def test_batched_module_rejects_mixed_groups() -> None:
    spec = ModelSpec("softmax", 36, 4)
    configs = [TrainConfig(lr=0.1, num_epochs=1), TrainConfig(lr=0.1, num_epochs=2)]
    models = [sweep.build_model(spec, c, torch.device("cpu")) for c in configs]
    with pytest.raises(ValueError, match="one batch_size"):
        batched.fit_stacked(
            models,
            configs,
            image_data(),
            regression=False,
            device=torch.device("cpu"),
        )


# ----------------------------------------------------------------------------------
# What the models learned: the trained modules and extras


def first_weights(model: nn.Module, config: TrainConfig) -> dict[str, object]:
    """The first Linear layer's weights, and whether the model is in evaluation mode."""
    layer = next(m for m in model.modules() if isinstance(m, nn.Linear))
    return {"weight": layer.weight.clone(), "norm": float(layer.weight.norm()),
            "eval": not model.training, "lr": config.lr}  # fmt: skip


@pytest.mark.parametrize("batched_", [True, False], ids=["stacked", "one-at-a-time"])
@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_grid_keeps_the_trained_models_and_their_extras(
    tmp_path: Path, counted: list[int], batched_: bool, kind: str
) -> None:
    spec = ModelSpec(kind, 36, 4, hidden_sizes=(8,) if kind == "mlp" else ())
    base = TrainConfig(lr=0.3, num_epochs=2, batch_size=32, dropout=0.3 if kind == "mlp" else 0)
    data = image_data()
    axes = {"lr": [0.1, 0.5], "seed": [0, 1]}
    grid = train_grid(spec, axes, base, data, cache=tmp_path, batched=batched_,
                      extras=first_weights)  # fmt: skip
    assert grid.meta["batched"] is batched_ and len(counted) == (1 if batched_ else 4)
    for run in grid.runs:
        alone = train_one(spec, replace(base, **run.config), data)
        assert run.model is not None and alone.model is not None
        for a, b in zip(run.model.state_dict().values(), alone.model.state_dict().values(),
                        strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, rtol=RTOL, atol=1e-6)
        with torch.no_grad():
            want = first_weights(alone.model, replace(base, **run.config))
        # NumPy arrays, as they come back from the cache; evaluated in evaluation mode.
        assert isinstance(run.extras["weight"], np.ndarray)
        np.testing.assert_allclose(run.extras["weight"], want["weight"].numpy(), rtol=RTOL,
                                   atol=1e-6)  # fmt: skip
        assert run.extras["eval"] is True and run.extras["lr"] == run.config["lr"]
        assert run.model.training  # its mode put back after the extras
    again = train_grid(spec, axes, base, data, cache=tmp_path, batched=batched_,
                       extras=first_weights)  # fmt: skip
    assert again.meta["from_cache"] is True and len(counted) == (1 if batched_ else 4)
    for cached, fresh in zip(again.runs, grid.runs, strict=True):
        assert cached.model is None
        assert cached.extras.keys() == fresh.extras.keys()
        np.testing.assert_array_equal(cached.extras["weight"], fresh.extras["weight"])
        assert cached.extras["weight"].dtype == np.float32
        assert cached.extras["norm"] == fresh.extras["norm"]


def test_changing_the_extras_function_trains_again(tmp_path: Path, counted: list[int]) -> None:
    data = image_data()

    def norm(model: nn.Module, config: TrainConfig) -> dict[str, float]:
        return {"norm": float(next(model.parameters()).norm())}

    plain = train_grid(SPEC, AXES, BASE, data, cache=tmp_path)
    assert plain.runs[0].extras == {} and counted == [4]
    with_norm = train_grid(SPEC, AXES, BASE, data, cache=tmp_path, extras=norm)
    assert with_norm.meta["from_cache"] is False and counted == [4, 4]
    assert train_grid(SPEC, AXES, BASE, data, cache=tmp_path, extras=norm).meta["from_cache"]

    def norm(model: nn.Module, config: TrainConfig) -> dict[str, float]:  # type: ignore[no-redef]  # noqa: F811
        return {"norm": 2 * float(next(model.parameters()).norm())}

    doubled = train_grid(SPEC, AXES, BASE, data, cache=tmp_path, extras=norm)
    assert doubled.meta["from_cache"] is False and counted == [4, 4, 4]
    for a, b in zip(with_norm.runs, doubled.runs, strict=True):
        assert b.extras["norm"] == pytest.approx(2 * a.extras["norm"])


def test_what_the_extras_function_reads_is_in_the_key(tmp_path: Path,
                                                     counted: list[int]) -> None:  # fmt: skip
    data = image_data()
    scale = torch.ones(1)  # captured by the extras function, as a page's tensor would be

    def scaled_norm(model: nn.Module, config: TrainConfig) -> dict[str, float]:
        return {"norm": float(next(model.parameters()).norm() * scale)}

    first = train_grid(SPEC, AXES, BASE, data, cache=tmp_path, extras=scaled_norm)
    assert train_grid(SPEC, AXES, BASE, data, cache=tmp_path, extras=scaled_norm).meta[
        "from_cache"] and counted == [4]  # fmt: skip
    scale[0] = 2.0
    again = train_grid(SPEC, AXES, BASE, data, cache=tmp_path, extras=scaled_norm)
    assert again.meta["from_cache"] is False and counted == [4, 4]
    assert again.runs[0].extras["norm"] == pytest.approx(2 * first.runs[0].extras["norm"])


def test_extras_must_be_a_dict(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dict of arrays"):
        train_grid(SPEC, AXES, BASE, image_data(), cache=False,
                   extras=lambda model, config: [1, 2])  # type: ignore[arg-type,return-value]  # fmt: skip
