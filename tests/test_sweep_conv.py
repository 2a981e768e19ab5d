"""Convolutional kinds in d2lcore.sweep: a ModelSpec builds them, and train_grid trains
their configurations one at a time with train_one (they cannot be stacked)."""

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
    assert isinstance(model, LeNet) and not lenet.batchable
    assert sum(isinstance(m, Dropout) for m in model.modules()) == 2
    assert isinstance(model.net[1], nn.Sigmoid) and isinstance(model.net[2], nn.AvgPool2d)
    resnet = ModelSpec("resnet", num_inputs=1, num_outputs=3, hidden_sizes=(4, 8), batch_norm=True)
    assert isinstance(resnet.build(), SmallResNet) and not resnet.batchable
    assert ModelSpec("mlp", 784, 10, hidden_sizes=(8,)).batchable


def test_spec_rejects_bad_conv_options() -> None:
    with pytest.raises(ValueError):
        ModelSpec("resnet", num_inputs=1, num_outputs=3)  # no stage widths
    with pytest.raises(ValueError):
        ModelSpec("lenet", num_inputs=1, num_outputs=3, pool="median")
    with pytest.raises(ValueError):
        ModelSpec("mlp", 784, 10, hidden_sizes=(8,), batch_norm=True)


@pytest.mark.parametrize("batched", [None, True])
def test_train_grid_trains_conv_kinds_one_at_a_time(
    batched: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_stacking(*args: object, **kwargs: object) -> None:
        raise AssertionError("a convolutional grid must not be stacked")

    monkeypatch.setattr(sweep, "fit_stacked", no_stacking)
    spec = ModelSpec("lenet", num_inputs=1, num_outputs=3, batch_norm=True)
    base = TrainConfig(lr=0.05, num_epochs=2, batch_size=16)
    axes = {"lr": [0.05, 0.2], "init": ["default", "kaiming_normal"], "dropout": [0.0, 0.3]}
    data = tiny_images()
    grid = train_grid(spec, axes, base, data, batched=batched, cache=False)
    assert grid.meta["batched"] is False and len(grid) == 8
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
