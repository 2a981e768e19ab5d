"""Convolutional kinds in d2lcore.sweep: a ModelSpec builds them, and train_grid trains
their configurations one at a time with train_one on the CPU (stacked convolutions are
slower there) and stacked where the kind's entry allows it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from d2lcore import sweep
from d2lcore.conv import LeNet, SmallResNet
from d2lcore.data import Splits
from d2lcore.device import make_generator
from d2lcore.models import Dropout
from d2lcore.sweep import ModelSpec, TrainConfig, train_grid, train_one

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_images(n: int = 96, size: int = 28) -> Splits:
    gen = make_generator(0)
    y = torch.randint(0, 3, (n,), generator=gen)
    X = torch.rand(n, 1, size, size, generator=gen)
    X[:, 0, :4, :4] += y[:, None, None].float()  # the class brightens a corner
    return Splits((X[:64], y[:64]), (X[64:80], y[64:80]), (X[80:], y[80:]), eval_batch_size=32)


def test_spec_builds_conv_models() -> None:
    lenet = ModelSpec("lenet", num_inputs=1, num_outputs=3, activation="sigmoid", pool="avg")
    model = lenet.build(dropout=0.2)
    assert isinstance(model, LeNet)
    assert sum(isinstance(m, Dropout) for m in model.modules()) == 2
    assert isinstance(model.net[1], nn.Sigmoid) and isinstance(model.net[2], nn.AvgPool2d)
    resnet = ModelSpec("resnet", num_inputs=1, num_outputs=3, hidden_sizes=(4, 8), batch_norm=True)
    assert isinstance(resnet.build(), SmallResNet)


def test_spec_rejects_bad_conv_options() -> None:
    with pytest.raises(ValueError):
        ModelSpec("resnet", num_inputs=1, num_outputs=3)  # no stage widths
    with pytest.raises(ValueError):
        ModelSpec("lenet", num_inputs=1, num_outputs=3, pool="median")
    with pytest.raises(ValueError):
        ModelSpec("mlp", 784, 10, hidden_sizes=(8,), batch_norm=True)


def test_train_grid_trains_conv_kinds_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_stacking(*args: object, **kwargs: object) -> None:
        raise AssertionError("batched=False must not stack")

    monkeypatch.setattr(sweep, "fit_stacked", no_stacking)
    spec = ModelSpec("lenet", num_inputs=1, num_outputs=3, batch_norm=True)
    base = TrainConfig(lr=0.05, num_epochs=2, batch_size=16)
    axes = {"lr": [0.05, 0.2], "init": ["default", "kaiming_normal"], "dropout": [0.0, 0.3]}
    data = tiny_images()
    grid = train_grid(spec, axes, base, data, batched=False, cache=False)
    assert grid.meta["batched"] is False and len(grid) == 8
    assert grid.meta["unstacked_reason"] == "batched=False"
    for run in grid:
        alone = train_one(spec, replace(base, **run.config), data)
        assert run.history.train_loss == pytest.approx(alone.history.train_loss, rel=1e-6)
        assert run.history.val_acc == alone.history.val_acc
        assert run.test_acc == alone.test_acc
    # The configurations really differ (the axes reach the model).
    assert len({tuple(r.history.train_loss) for r in grid}) == 8


def test_conv_grid_is_cached(tmp_path: object) -> None:
    spec = ModelSpec("resnet", num_inputs=1, num_outputs=3, hidden_sizes=(4,), batch_norm=True)
    base = TrainConfig(lr=0.05, num_epochs=1, batch_size=32)
    data = tiny_images(size=8)
    first = train_grid(spec, {"lr": [0.05, 0.1]}, base, data, cache=str(tmp_path))
    again = train_grid(spec, {"lr": [0.05, 0.1]}, base, data, cache=str(tmp_path))
    assert not first.meta["from_cache"] and again.meta["from_cache"]
    assert [r.history.train_loss for r in again] == [r.history.train_loss for r in first]


@pytest.mark.parametrize("kind", ["lenet", "resnet"])
def test_train_grid_stacks_conv_kinds(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stacked (the dropout-free and the dropout configurations in two stacks), a
    convolutional grid equals train_one."""
    stacked: list[int] = []
    real = sweep.fit_stacked

    def counting(models, *args, **kwargs):  # type: ignore[no-untyped-def]
        stacked.append(len(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(sweep, "fit_stacked", counting)
    if kind == "lenet":
        spec = ModelSpec("lenet", num_inputs=1, num_outputs=3, activation="relu", pool="max")
        data = tiny_images()
    else:
        spec = ModelSpec("resnet", num_inputs=1, num_outputs=3, hidden_sizes=(4,),
                         batch_norm=True)  # fmt: skip
        data = tiny_images(size=8)
    base = TrainConfig(lr=0.05, num_epochs=2, batch_size=16)
    axes = {"lr": [0.05, 0.2], "dropout": [0.0, 0.3], "seed": [0, 1]}
    grid = train_grid(spec, axes, base, data, cache=False, batched=True)
    assert grid.meta["batched"] is True and sorted(stacked) == [4, 4]
    for run in grid:
        alone = train_one(spec, replace(base, **run.config), data)
        assert run.history.train_loss == pytest.approx(alone.history.train_loss, rel=1e-4)
        assert run.history.val_acc == pytest.approx(alone.history.val_acc, abs=1e-9)
        assert run.test_acc == pytest.approx(alone.test_acc, abs=1e-9)
