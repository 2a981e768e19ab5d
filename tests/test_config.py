"""d2lcore.config: one validation for every path. A configuration is checked once, when
it is made, with a message naming the field, the value and the allowed range, so the
stacked and the one-at-a-time paths can never disagree about a bad value."""

from __future__ import annotations

import numpy as np
import pytest

from d2lcore.config import ModelSpec, TrainConfig
from d2lcore.data import Splits
from d2lcore.sweep import train_grid

BAD = [
    ({"lr": -0.1}, "lr must be a number > 0, not -0.1"),
    ({"lr": 0.0}, "lr must be a number > 0"),
    ({"lr": "0.1"}, r"lr must be a number > 0, not '0.1' \(str\)"),
    ({"lr": float("nan")}, "lr must be a number > 0, not nan"),
    ({"lr": float("inf")}, "lr must be"),
    ({"weight_decay": -1e-4}, "weight_decay must be a number >= 0"),
    ({"batch_size": 32.5}, r"batch_size must be a whole number >= 1, not 32.5 \(float\)"),
    ({"batch_size": 0}, "batch_size must be a whole number >= 1, not 0"),
    ({"num_epochs": 1.5}, "num_epochs must be a whole number >= 1, not 1.5"),
    ({"num_epochs": True}, "num_epochs must be a whole number"),
    ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), not 1.0"),
    ({"dropout": -0.1}, "dropout must be"),
    ({"init_std": -0.01}, "init_std must be a number >= 0"),
    ({"seed": -1}, "seed must be a whole number >= 0"),
    ({"optimizer": "adamw"}, "unknown optimizer"),
    ({"init": "glorot"}, "unknown init scheme"),
    ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
    ({"momentum": 0.9, "optimizer": "adam"}, "momentum is SGD's"),
    ({"schedule": "step"}, "unknown schedule"),
    ({"warmup_epochs": -1}, "warmup_epochs must be a whole number >= 0"),
    ({"warmup_epochs": 1}, "leaves no epoch after the warm-up"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[str(c) for c, _ in BAD])
def test_bad_values_are_refused_with_their_name(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"lr": 0.1, "num_epochs": 1, **change})


@pytest.mark.parametrize("batched", [True, False])
def test_a_bad_axis_value_fails_the_same_on_both_paths(batched: bool) -> None:
    """A negative learning rate in a grid: gradient ascent on the stacked path and
    refused by torch alone, before; now both refuse it before any training."""
    X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    import torch

    data = Splits((torch.from_numpy(X), torch.zeros(20, dtype=torch.long)))
    with pytest.raises(ValueError, match="lr must be a number > 0, not -0.1"):
        train_grid(ModelSpec("softmax", 4, 2), {"lr": [0.1, -0.1]},
                   TrainConfig(lr=0.1, num_epochs=1), data, cache=False,
                   batched=batched)  # fmt: skip


def test_numpy_numbers_are_accepted() -> None:
    config = TrainConfig(lr=np.float64(0.1), num_epochs=np.int64(2), batch_size=np.int32(8))
    assert config.num_epochs == 2 and config.batch_size == 8


@pytest.mark.parametrize(("field", "value"), [("num_inputs", 0), ("num_outputs", 2.5)])
def test_model_sizes_are_checked(field: str, value: object) -> None:
    kwargs = {"num_inputs": 4, "num_outputs": 2, field: value}
    with pytest.raises(ValueError, match=field):
        ModelSpec("softmax", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden_sizes"):
        ModelSpec("mlp", 4, 2, hidden_sizes=(8, 0))
