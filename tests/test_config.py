"""d2lcore.config: one validation for every path. A configuration is checked once, when
it is made, with a message naming the field, the value and the allowed range, so the
stacked and the one-at-a-time paths can never disagree about a bad value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from d2lcore.config import ModelSpec, TrainConfig
from d2lcore.data import Splits
from d2lcore.sweep import train_grid

BAD = [
    ({"lr": -0.1}, r"lr must be a number in \(0, 1e\+36\], not -0.1"),
    ({"lr": 0.0}, r"lr must be a number in \(0, "),
    ({"lr": "0.1"}, r"lr must be a number in \(0, 1e\+36\], not '0.1' \(str\)"),
    ({"lr": float("nan")}, "lr must be a number in .*, not nan"),
    ({"lr": float("inf")}, "lr must be"),
    ({"lr": 1e308}, r"lr must be a number in \(0, 1e\+36\], not 1e\+308"),
    ({"weight_decay": -1e-4}, r"weight_decay must be a number in \[0, "),
    ({"batch_size": 32.5},
     r"batch_size must be a whole number in \[1, 1,048,576\], not 32.5 \(float\)"),
    ({"batch_size": 0}, r"batch_size must be a whole number in \[1, 1,048,576\], not 0"),
    ({"batch_size": 2**40}, "batch_size must be a whole number in"),
    ({"num_epochs": 1.5}, r"num_epochs must be a whole number in \[1, 10,000\], not 1.5"),
    ({"num_epochs": True}, "num_epochs must be a whole number"),
    ({"num_epochs": 10**30}, r"num_epochs must be a whole number in \[1, 10,000\]"),
    ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), not 1.0"),
    ({"dropout": -0.1}, "dropout must be"),
    ({"init_std": -0.01}, r"init_std must be a number in \[0, 1,000\]"),
    ({"seed": -1}, r"seed must be a whole number in \[0, 9,223,372,036,854,775,807\]"),
    ({"seed": 2**64}, "seed must be a whole number in"),
    ({"seed": np.bool_(True)}, "seed must be a whole number"),
    ({"optimizer": "adamw"}, "unknown optimizer"),
    ({"init": "glorot"}, "unknown init scheme"),
    ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
    ({"momentum": 0.9, "optimizer": "adam"}, "momentum is SGD's"),
    ({"schedule": "step"}, "unknown schedule"),
    ({"warmup_epochs": -1}, r"warmup_epochs must be a whole number in \[0, 10,000\]"),
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
    with pytest.raises(ValueError, match=r"lr must be a number in \(0, 1e\+36\], not -0.1"):
        train_grid(ModelSpec("softmax", 4, 2), {"lr": [0.1, -0.1]},
                   TrainConfig(lr=0.1, num_epochs=1), data, cache=False,
                   batched=batched)  # fmt: skip


def test_numpy_numbers_are_accepted() -> None:
    config = TrainConfig(lr=np.float64(0.1), num_epochs=np.int64(2), batch_size=np.int32(8))
    assert config.num_epochs == 2 and config.batch_size == 8


def test_other_number_types_are_stored_as_python_numbers() -> None:
    """NumPy scalars and fractions were accepted, then failed deep in torch (seed=np.int64
    in the stacked path, a Fraction in the optimizer): they are stored as int and float."""
    from fractions import Fraction

    config = TrainConfig(lr=Fraction(1, 10), num_epochs=np.int64(2), seed=np.int64(2),
                         dropout=np.float32(0.5), momentum=Fraction(9, 10))  # fmt: skip
    for name, kind in (("lr", float), ("num_epochs", int), ("seed", int), ("dropout", float),
                       ("momentum", float), ("batch_size", int)):  # fmt: skip
        assert type(getattr(config, name)) is kind, name
    assert config.lr == 0.1 and config.seed == 2 and config.dropout == 0.5
    spec = ModelSpec("mlp", np.int64(4), np.int16(2), hidden_sizes=[np.int64(8)],
                     batch_norm=False)  # fmt: skip
    assert type(spec.num_inputs) is int and spec.hidden_sizes == (8,)
    assert type(spec.hidden_sizes[0]) is int


SPEC_BAD = [
    ({"hidden_sizes": 8}, r"hidden_sizes must be a sequence of whole numbers, e.g. \(256,\)"),
    ({"hidden_sizes": "8"}, "hidden_sizes must be a sequence"),
    ({"hidden_sizes": (8, 2**30)},
     r"each of hidden_sizes must be a whole number in \[1, 1,048,576\]"),
    ({"num_inputs": 2**40}, r"num_inputs must be a whole number in \[1, 1,048,576\]"),
    ({"kind": "lenet", "hidden_sizes": (), "batch_norm": "no"},
     "batch_norm must be True or False, not 'no'"),
    ({"activation": None}, "activation must be a name"),
    ({"kind": ["mlp"]}, "kind must be a name"),
]


@pytest.mark.parametrize(("change", "message"), SPEC_BAD, ids=[str(c) for c, _ in SPEC_BAD])
def test_bad_model_specs_name_the_field(change: dict, message: str) -> None:
    kwargs = {"kind": "mlp", "num_inputs": 4, "num_outputs": 2, "hidden_sizes": (8,), **change}
    with pytest.raises(ValueError, match=message):
        ModelSpec(**kwargs)


def test_generated_configurations_are_accepted_whole_or_refused_by_name() -> None:
    """Many configurations of wrong types, NumPy scalars, huge and tiny numbers: each is
    either refused with a ValueError that names its field, or accepted with every field a
    Python number in range (what training takes), never another exception."""
    from fractions import Fraction

    rng = np.random.default_rng(0)
    values = [0, 1, -1, 2, 3, 0.5, 1e-300, 1e308, -0.0, 2**64, 10**30, float("nan"),
              float("inf"), np.int64(2), np.float32(0.1), np.bool_(True), True, Fraction(1, 3),
              "1", None, [1], 256, 0.999]  # fmt: skip
    fields = ["lr", "num_epochs", "batch_size", "weight_decay", "dropout", "init_std", "seed",
              "momentum", "warmup_epochs"]  # fmt: skip
    accepted = 0
    for _ in range(800):
        change = {f: values[rng.integers(len(values))] for f in fields if rng.random() < 0.3}
        try:
            config = TrainConfig(**{"lr": 0.1, "num_epochs": 5, **change})
        except ValueError as error:
            assert any(str(error).startswith(f) or f"{f}=" in str(error) or f in str(error)
                       for f in change), (change, str(error))
            continue
        accepted += 1
        for f in fields:
            assert type(getattr(config, f)) in (int, float), (f, change)
            assert math.isfinite(getattr(config, f)), (f, change)
    assert accepted > 50


@pytest.mark.parametrize(("field", "value"), [("num_inputs", 0), ("num_outputs", 2.5)])
def test_model_sizes_are_checked(field: str, value: object) -> None:
    kwargs = {"num_inputs": 4, "num_outputs": 2, field: value}
    with pytest.raises(ValueError, match=field):
        ModelSpec("softmax", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden_sizes"):
        ModelSpec("mlp", 4, 2, hidden_sizes=(8, 0))
