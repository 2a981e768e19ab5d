"""What a run is made of: its hyperparameters (:class:`TrainConfig`), its architecture
(:class:`ModelSpec`) and the registry of model kinds (:data:`KINDS`).

Each kind says, in one entry, how to build its model, which loss trains it and which
options it takes. Adding a kind is one entry.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from d2lcore.conv import POOLS, LeNet, SmallResNet
from d2lcore.init import INIT_SCHEMES
from d2lcore.models import MLP, LinearRegression, SoftmaxRegression, check_activation

__all__ = ["KINDS", "ModelKind", "ModelSpec", "TrainConfig"]

OPTIMIZERS = ("sgd", "adam")
#: Learning-rate schedules of :class:`TrainConfig` (each after its linear warm-up).
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run. A grid's axes are names of these fields.

    ``seed`` seeds the run's three random streams: initialization (PyTorch's default
    init and :func:`~d2lcore.init.init_weights`), shuffling (as a
    :class:`~d2lcore.data.TensorLoader` with that seed) and dropout masks.

    ``momentum`` is SGD's (``torch.optim.SGD``'s heavy ball; Adam has its own, and takes
    none here). The learning rate of step ``t`` is ``lr`` times
    :meth:`lr_factors`: a linear warm-up over ``warmup_epochs``, then ``schedule``,
    ``"constant"`` or ``"cosine"`` (half a cosine from 1 down to 0 at the last step).
    """

    lr: float
    num_epochs: int
    batch_size: int = 256
    weight_decay: float = 0.0
    dropout: float = 0.0
    init: str = "default"
    init_std: float = 0.01
    seed: int = 0
    optimizer: str = "sgd"
    momentum: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        # Every field is checked here, once, whatever path trains the run (stacked or
        # alone): a wrong value fails now, with its name, not deep inside training. Numbers
        # of other types (NumPy scalars, fractions) are stored as Python's int and float,
        # which every later step takes; every range has an upper bound.
        number = functools.partial(_set_number, self)
        number("num_epochs", integer=True, low=1, high=MAX_EPOCHS)
        number("batch_size", integer=True, low=1, high=MAX_SIZE)
        number("seed", integer=True, low=0, high=MAX_SEED)  # torch's seeds are 64-bit
        # lr > 0: a negative one is gradient ascent (torch.optim refuses it, a stack would not).
        number("lr", low=0.0, low_open=True, high=MAX_LR)
        number("weight_decay", low=0.0, high=MAX_LR)
        number("dropout", low=0.0, high=1.0, high_open=True)
        number("init_std", low=0.0, high=MAX_INIT_STD)  # 0: zero initialization
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if not isinstance(self.init, str) or self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown init scheme {self.init!r}; choose from {INIT_SCHEMES}")
        number("momentum", low=0.0, high=1.0, high_open=True)
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum is SGD's; {self.optimizer!r} takes momentum=0")
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {SCHEDULES}")
        number("warmup_epochs", integer=True, low=0, high=MAX_EPOCHS)
        if self.warmup_epochs and self.warmup_epochs >= self.num_epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} leaves no epoch after the "
                             f"warm-up of num_epochs={self.num_epochs}")  # fmt: skip

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes during training."""
        return self.schedule != "constant" or self.warmup_epochs > 0

    def lr_factors(self, steps_per_epoch: int) -> list[float]:
        """The factor of ``lr`` at every step of training (``num_epochs *
        steps_per_epoch`` of them): ``(t + 1) / W`` during the warm-up's ``W`` steps,
        then 1 (``"constant"``) or ``(1 + cos(pi (t - W) / (T - W))) / 2`` (``"cosine"``)."""
        _check_number("steps_per_epoch", steps_per_epoch, integer=True, low=1, high=MAX_SIZE)
        total, warm = self.num_epochs * steps_per_epoch, self.warmup_epochs * steps_per_epoch
        factors = []
        for t in range(total):
            if t < warm:
                factors.append((t + 1) / warm)
            elif self.schedule == "cosine":
                factors.append(0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm))))
            else:
                factors.append(1.0)
        return factors


#: Upper bounds of the sizes and rates a configuration may ask for: far above what a
#: page trains, low enough that a typo fails at once instead of training until killed
#: or overflowing inside torch.
MAX_EPOCHS = 10_000
MAX_SIZE = 1 << 20  # batch sizes, widths, inputs and outputs
MAX_SEED = (1 << 63) - 1
#: Rates up to 1e36 train, and the ones that are too large diverge (a run that says
#: so); past float32's range (3.4e38) torch's optimizers raise instead.
MAX_LR = 1e36  # also weight decay
MAX_INIT_STD = 1e3


def _check_number(name: str, value: object, *, integer: bool = False, low: float,
                  low_open: bool = False, high: float | None = None,
                  high_open: bool = False) -> int | float:  # fmt: skip
    """``value`` as Python's ``int`` (where ``integer``) or ``float``; a ``ValueError``
    naming ``name``, ``value`` and the allowed range unless it is a finite number (a whole
    one where ``integer``: ``int``, NumPy's integers) in that range."""
    kind = "a whole number" if integer else "a number"
    if high is None:
        allowed = f"{'>' if low_open else '>='} {_bound(low)}"
    else:
        allowed = (f"in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}"
                   f"{')' if high_open else ']'}")  # fmt: skip
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, bool | np.bool_) or not ok_type:
        raise ValueError(f"{name} must be {kind} {allowed}, not {value!r} "
                         f"({type(value).__name__})")  # fmt: skip
    try:
        x = float(value)  # type: ignore[arg-type]  # a Real, checked above
    except OverflowError:  # an int too large for a float
        x = math.inf
    if not math.isfinite(x) or x < low or (low_open and x == low) or (
            high is not None and (x > high or (high_open and x == high))):  # fmt: skip
        raise ValueError(f"{name} must be {kind} {allowed}, not {value!r}")
    return int(value) if integer else x  # type: ignore[call-overload]


def _bound(x: float) -> str:
    """A range's end as a reader writes it: 1,048,576 rather than 1.04858e+06."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e19 else f"{x:g}"


def _set_number(obj: object, name: str, **limits: Any) -> None:
    """Check the field ``name`` of the frozen dataclass ``obj`` (:func:`_check_number`)
    and store it as Python's number."""
    object.__setattr__(obj, name, _check_number(name, getattr(obj, name), **limits))


@dataclass(frozen=True)
class ModelKind:
    """One model kind: how to build it and train it.

    Attributes:
        build: ``build(spec, dropout, generator)``, a fresh model with PyTorch's default
            init from the global generator; ``generator`` is the dropout masks' stream.
        regression: MSE loss on real targets, else cross-entropy on class logits.
        hidden: whether it needs ``hidden_sizes`` (and only then takes them).
        conv: ``num_inputs`` counts input channels; takes ``batch_norm``.
        dropout: whether it has a place for dropout.

    Whether :func:`~d2lcore.sweep.train_grid` stacks configurations of a kind is measured
    on the device (:mod:`d2lcore.stack_choice`), not written here.
    """

    build: Callable[[ModelSpec, float, torch.Generator | None], nn.Module]
    regression: bool = False
    hidden: bool = False
    conv: bool = False
    dropout: bool = True

    def loss(self) -> nn.Module:
        """The loss that trains this kind (averaged over the batch)."""
        return nn.MSELoss() if self.regression else nn.CrossEntropyLoss()


def _lenet(spec: ModelSpec, dropout: float, generator: torch.Generator | None) -> nn.Module:
    return LeNet(spec.num_outputs, activation=spec.activation, pool=spec.pool,
                 batch_norm=spec.batch_norm, dropout=dropout, generator=generator,
                 in_channels=spec.num_inputs)  # fmt: skip


def _resnet(spec: ModelSpec, dropout: float, generator: torch.Generator | None) -> nn.Module:
    return SmallResNet(spec.hidden_sizes, num_classes=spec.num_outputs,
                       in_channels=spec.num_inputs, batch_norm=spec.batch_norm,
                       dropout=dropout, generator=generator)  # fmt: skip


def _mlp(spec: ModelSpec, dropout: float, generator: torch.Generator | None) -> nn.Module:
    return MLP(spec.num_inputs, spec.hidden_sizes, spec.num_outputs, dropout=dropout,
               activation=spec.activation, generator=generator)  # fmt: skip


#: Every model kind by name. ``ModelSpec(kind, ...)`` accepts exactly these.
KINDS: dict[str, ModelKind] = {
    "linear": ModelKind(
        lambda spec, _, __: LinearRegression(spec.num_inputs, spec.num_outputs),
        regression=True,
        dropout=False,
    ),
    "softmax": ModelKind(
        lambda spec, _, __: SoftmaxRegression(spec.num_inputs, spec.num_outputs),
        dropout=False,
    ),
    "mlp": ModelKind(_mlp, hidden=True),
    "lenet": ModelKind(_lenet, conv=True),
    "resnet": ModelKind(_resnet, hidden=True, conv=True),
}


@dataclass(frozen=True)
class ModelSpec:
    """The architecture: a kind from :data:`KINDS` and its options.

    ``"linear"`` regression (MSE loss), ``"softmax"`` regression, an ``"mlp"``, a
    ``"lenet"`` or a ``"resnet"`` (cross-entropy loss). For the convolutional kinds
    ``num_inputs`` is the number of input channels (1 for Fashion-MNIST),
    ``batch_norm`` adds batch normalization, and dropout (a :class:`TrainConfig` field)
    acts in the classifier head. A ``"lenet"`` (:class:`~d2lcore.conv.LeNet`, 28x28
    images) also takes ``activation`` and ``pool``; an ``"mlp"`` takes its layer widths
    and a ``"resnet"`` (:class:`~d2lcore.conv.SmallResNet`) its stage widths as
    ``hidden_sizes``.
    """

    kind: str
    num_inputs: int
    num_outputs: int
    hidden_sizes: tuple[int, ...] = ()
    activation: str = "relu"
    pool: str = "max"
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, str | bytes) or not isinstance(
                self.hidden_sizes, Sequence):  # fmt: skip
            raise ValueError(f"hidden_sizes must be a sequence of whole numbers, e.g. (256,) "
                             f"or (), not {self.hidden_sizes!r}")  # fmt: skip
        object.__setattr__(self, "hidden_sizes", tuple(
            _check_number("each of hidden_sizes", width, integer=True, low=1, high=MAX_SIZE)
            for width in self.hidden_sizes))  # fmt: skip
        for name in ("num_inputs", "num_outputs"):
            _set_number(self, name, integer=True, low=1, high=MAX_SIZE)
        if not isinstance(self.batch_norm, bool | np.bool_):
            raise ValueError(f"batch_norm must be True or False, not {self.batch_norm!r}")
        object.__setattr__(self, "batch_norm", bool(self.batch_norm))
        for name in ("kind", "activation", "pool"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a name (a str), not {getattr(self, name)!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose from {sorted(KINDS)}")
        kind = KINDS[self.kind]
        if kind.hidden != bool(self.hidden_sizes):
            with_hidden = sorted(k for k, v in KINDS.items() if v.hidden)
            raise ValueError(f"the kinds {with_hidden} need hidden_sizes, and only they have them")
        check_activation(self.activation)
        if self.pool not in POOLS:
            raise ValueError(f"unknown pooling {self.pool!r}; choose from {sorted(POOLS)}")
        if self.batch_norm and not kind.conv:
            conv = sorted(k for k, v in KINDS.items() if v.conv)
            raise ValueError(f"batch_norm is for the convolutional kinds {conv}")

    @property
    def model_kind(self) -> ModelKind:
        return KINDS[self.kind]

    @property
    def regression(self) -> bool:
        return self.model_kind.regression

    def build(self, *, dropout: float = 0.0, generator: torch.Generator | None = None) -> nn.Module:
        """A fresh model (PyTorch's default init, from the global generator); ``generator``
        is the stream of the dropout masks."""
        if dropout > 0 and not self.model_kind.dropout:
            raise ValueError(f"a {self.kind!r} model has no hidden layer to apply dropout to")
        return self.model_kind.build(self, dropout, generator)
