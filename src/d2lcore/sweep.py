"""Grids of training runs: every combination of a few named axes (learning rate,
dropout, initialization scheme, ...), with each configuration's full history.

What a run is made of (:class:`TrainConfig`, :class:`ModelSpec`, the data as
:class:`~d2lcore.data.Splits`),
:func:`train_one` (the reference: one model, :func:`~d2lcore.train.fit`), and
:func:`train_grid`: :func:`~d2lcore.grid.run_grid` over :func:`train_one`, with the
configurations that can train together stacked (:mod:`d2lcore.batched`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, cast

import torch
from torch import nn

from d2lcore.batched import dropout_generator, fit_stacked
from d2lcore.cache import tensor_digest
from d2lcore.conv import LeNet, SmallResNet
from d2lcore.data import Splits
from d2lcore.device import get_device, make_generator
from d2lcore.grid import AxisValue, Config, Grid, GridResults, grid_configs, run_grid
from d2lcore.init import INIT_SCHEMES, init_weights
from d2lcore.metrics import evaluate
from d2lcore.models import ACTIVATIONS, MLP, LinearRegression, SoftmaxRegression
from d2lcore.train import EpochHook, RunResult, fit, seeded

__all__ = ["AxisValue", "GridResults", "ModelSpec", "RunResult", "Splits", "TrainConfig",
           "build_model", "grid_configs", "train_grid", "train_one"]

# ----------------------------------------------------------------------------------
# What a run is made of

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run. A grid's axes are names of these fields.

    ``seed`` seeds the run's three random streams: initialization (PyTorch's default
    init and :func:`~d2lcore.init.init_weights`), shuffling (as a
    :class:`~d2lcore.data.TensorLoader` with that seed) and dropout masks.
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

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown init scheme {self.init!r}; choose from {INIT_SCHEMES}")
        if self.num_epochs < 1 or self.batch_size < 1:
            raise ValueError("num_epochs and batch_size must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")


#: Model kinds whose configurations :func:`train_grid` can train together with stacked
#: weights; the others (the convolutional ones) train one configuration at a time.
BATCHABLE_KINDS = ("linear", "softmax", "mlp")
#: Convolutional kinds: ``num_inputs`` counts input channels, not features.
CONV_KINDS = ("lenet", "resnet")
POOLS = ("avg", "max")


@dataclass(frozen=True)
class ModelSpec:
    """The architecture: ``"linear"`` regression (MSE loss), ``"softmax"`` regression,
    an ``"mlp"``, a ``"lenet"`` or a ``"resnet"`` (cross-entropy loss).

    For the convolutional kinds ``num_inputs`` is the number of input channels (1 for
    Fashion-MNIST), ``batch_norm`` adds batch normalization, and dropout (a
    :class:`TrainConfig` field) acts in the classifier head. A ``"lenet"``
    (:class:`~d2lcore.conv.LeNet`, 28x28 images) also takes ``activation`` and
    ``pool``; a ``"resnet"`` (:class:`~d2lcore.conv.SmallResNet`) takes its stage
    widths as ``hidden_sizes``.
    """

    kind: Literal["linear", "softmax", "mlp", "lenet", "resnet"]
    num_inputs: int
    num_outputs: int
    hidden_sizes: tuple[int, ...] = ()
    activation: str = "relu"
    pool: str = "max"
    batch_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if self.kind not in (*BATCHABLE_KINDS, *CONV_KINDS):
            raise ValueError(f"unknown model kind {self.kind!r}")
        if (self.kind in ("mlp", "resnet")) != bool(self.hidden_sizes):
            raise ValueError("an 'mlp' and a 'resnet' need hidden_sizes, and only they have them")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")
        if self.pool not in POOLS:
            raise ValueError(f"unknown pooling {self.pool!r}; choose from {POOLS}")
        if self.batch_norm and self.kind not in CONV_KINDS:
            raise ValueError(f"batch_norm is for the convolutional kinds {CONV_KINDS}")

    @property
    def regression(self) -> bool:
        return self.kind == "linear"

    @property
    def batchable(self) -> bool:
        """Whether :func:`train_grid` can train configurations of it together."""
        return self.kind in BATCHABLE_KINDS

    def build(self, *, dropout: float = 0.0, generator: torch.Generator | None = None) -> nn.Module:
        """A fresh model (PyTorch's default init, from the global generator); ``generator``
        is the stream of the dropout masks."""
        if self.kind == "lenet":
            return LeNet(self.num_outputs, activation=self.activation, pool=self.pool,
                         batch_norm=self.batch_norm, dropout=dropout, generator=generator,
                         in_channels=self.num_inputs)  # fmt: skip
        if self.kind == "resnet":
            return SmallResNet(self.hidden_sizes, num_classes=self.num_outputs,
                               in_channels=self.num_inputs, batch_norm=self.batch_norm,
                               dropout=dropout, generator=generator)  # fmt: skip
        if self.kind == "mlp":
            return MLP(self.num_inputs, self.hidden_sizes, self.num_outputs, dropout=dropout,
                       activation=self.activation, generator=generator)  # fmt: skip
        if dropout > 0:
            raise ValueError(f"a {self.kind!r} model has no hidden layer to apply dropout to")
        if self.kind == "softmax":
            return SoftmaxRegression(self.num_inputs, self.num_outputs)
        return LinearRegression(self.num_inputs, self.num_outputs)


def build_model(spec: ModelSpec, config: TrainConfig, device: torch.device) -> nn.Module:
    """``spec``'s model on the CPU, initialized from ``config.seed`` alone, with its
    dropout stream on ``device``."""
    with torch.random.fork_rng(devices=[]):  # default init: seeded, and no side effects
        torch.manual_seed(config.seed)
        model = spec.build(dropout=config.dropout, generator=dropout_generator(config.seed, device))
    return init_weights(
        model, config.init, std=config.init_std, generator=make_generator(config.seed)
    )


def train_one(
    spec: ModelSpec,
    config: TrainConfig,
    data: Splits,
    *,
    device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
) -> RunResult:
    """Train one configuration with :func:`~d2lcore.train.fit`: the reference that
    :func:`train_grid` matches. ``test_acc`` is the test accuracy (classes only,
    ``None`` when diverged or without a test split); ``model`` the trained model."""
    device = get_device(device)
    model = build_model(spec, config, device)
    loss_fn: nn.Module = nn.MSELoss() if spec.regression else nn.CrossEntropyLoss()
    opt_cls = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train = data.loader("train", batch_size=config.batch_size, seed=config.seed, device=device)
    val = None if data.val is None else data.loader("val", device=device)
    with seeded(config.seed):  # a module drawing from the global stream stays repeatable
        history = fit(model, train, loss_fn=loss_fn, optimizer=optimizer,
                      num_epochs=config.num_epochs, val_batches=val, device=device,
                      on_epoch_end=on_epoch_end)  # fmt: skip
    test_acc = None
    if data.test is not None and not spec.regression and not history.diverged:
        test = data.loader("test", device=device)
        test_acc = evaluate(model, test, loss_fn, device=device).accuracy
    return RunResult(config=asdict(config), history=history, test_acc=test_acc, model=model)


# ----------------------------------------------------------------------------------
# Grids, batched and cached


def data_fingerprint(data: Splits) -> str:
    """A hash of every tensor's dtype, shape and bytes (~0.2 s for Fashion-MNIST)."""
    splits = [t for split in (data.train, data.val, data.test) for t in (split or (None, None))]
    return f"eval_batch_size={data.eval_batch_size} " + tensor_digest(*splits)


def train_grid(
    spec: ModelSpec,
    axes: Mapping[str, Sequence[AxisValue]],
    base: TrainConfig,
    data: Splits,
    *,
    device: torch.device | str | None = None,
    batched: bool | None = None,
    cache: bool | str | os.PathLike[str] = True,
) -> GridResults:
    """Train every combination of ``axes`` (names of :class:`TrainConfig` fields; the
    other fields come from ``base``) and return the :class:`GridResults`: that is
    :func:`~d2lcore.grid.run_grid` over :func:`train_one`, plus stacking.

    Configurations sharing ``batch_size``, ``num_epochs`` and ``optimizer`` train
    together with stacked weights (:func:`~d2lcore.batched.fit_stacked`; the kinds in
    :data:`BATCHABLE_KINDS` can); each equals :func:`train_one` with its config up to
    float rounding. The convolutional kinds train one configuration at a time with
    :func:`train_one`, whatever ``batched`` says. A diverged configuration is marked
    in its history and the others go on.

    Args:
        data: the tensors of each split (e.g. :func:`~d2lcore.data.fashion_mnist_splits`);
            batch size and seed come from each configuration.
        batched: ``False`` trains one configuration at a time with :func:`train_one`;
            ``None`` or ``True`` batches where ``spec`` can be batched.
        cache: ``True`` keeps results in :func:`~d2lcore.cache.default_cache_dir`, a
            path keeps them there, ``False`` always trains. The key covers the spec,
            axes, base config, data, the training code, the device type and torch's
            version; a corrupt entry is trained again and overwritten.

    ``meta`` records ``key``, ``from_cache``, ``seconds`` (this call),
    ``train_seconds``, ``device`` and ``batched`` (whether configurations were batched).
    """
    device = get_device(device)
    names = {f.name for f in fields(TrainConfig)}
    grid = Grid(axes)
    for name in grid.names:
        if name not in names:
            raise ValueError(f"unknown axis {name!r}; axes are TrainConfig fields: {sorted(names)}")
    configs = [replace(base, **cast(dict[str, Any], c)) for c in grid]  # validates each
    batched = batched is not False and spec.batchable

    def one(combo: Config) -> RunResult:
        return train_one(spec, configs[grid.index(combo)], data, device=device)

    def together(combos: list[Config]) -> list[RunResult]:
        group_of: dict[tuple[int, int, str], list[int]] = defaultdict(list)
        todo = [configs[grid.index(c)] for c in combos]
        for i, c in enumerate(todo):
            group_of[(c.batch_size, c.num_epochs, c.optimizer)].append(i)
        results: list[RunResult | None] = [None] * len(todo)
        for members in group_of.values():
            if len(members) == 1:
                results[members[0]] = train_one(spec, todo[members[0]], data, device=device)
                continue
            group = [todo[i] for i in members]
            models = [build_model(spec, c, device) for c in group]
            trained = fit_stacked(models, group, data, activation=spec.activation,
                                  regression=spec.regression, device=device)  # fmt: skip
            for i, (history, test_acc) in zip(members, trained, strict=True):
                results[i] = RunResult(config=asdict(todo[i]), history=history,
                                       test_acc=test_acc)  # fmt: skip
        return [r for r in results if r is not None]

    depends_on = {"spec": asdict(spec), "base": asdict(base), "data": data_fingerprint(data)}
    out = run_grid(grid.axes, one, depends_on=depends_on, batch=together if batched else None,
                   cache=cache, device=device, name="train_grid")  # fmt: skip
    out.meta["batched"] = batched
    return out
