"""Grids of training runs: every combination of a few named axes (learning rate,
dropout, initialization scheme, ...), with each configuration's full history.

The results types come first; then what a run is made of (:class:`TrainConfig`,
:class:`ModelSpec`, :class:`TrainData`), :func:`train_one` (the reference: one model,
:func:`~d2lcore.train.fit`), and :func:`train_grid`, which trains the configurations
of a grid together with stacked weights (:mod:`d2lcore.batched`) and caches the
results on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from d2lcore.batched import dropout_generator, fit_stacked
from d2lcore.conv import LeNet, SmallResNet
from d2lcore.data import DataSplits, TensorLoader
from d2lcore.device import get_device, make_generator
from d2lcore.init import INIT_SCHEMES, init_weights
from d2lcore.metrics import evaluate
from d2lcore.models import ACTIVATIONS, MLP, LinearRegression, SoftmaxRegression
from d2lcore.train import EpochHook, History, fit

AxisValue = float | int | str | bool


@dataclass
class RunResult:
    """One configuration of a grid and what training it gave."""

    config: dict[str, AxisValue]
    history: History
    test_acc: float | None = None

    @property
    def diverged(self) -> bool:
        return self.history.diverged

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "history": self.history.to_dict(),
                "test_acc": self.test_acc}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        return cls(config=dict(d["config"]), history=History.from_dict(d["history"]),
                   test_acc=d.get("test_acc"))  # fmt: skip


@dataclass
class GridResults:
    """Results of a grid: ``axes`` maps each axis name to its values (in order), and
    ``runs`` holds one :class:`RunResult` per combination, in the order of
    ``itertools.product`` over the axes (the last axis varies fastest)."""

    axes: dict[str, list[AxisValue]]
    runs: list[RunResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = 1
        for values in self.axes.values():
            expected *= len(values)
        if len(self.runs) != expected:
            raise ValueError(f"{len(self.runs)} runs for a grid of {expected} configurations")

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[RunResult]:
        return iter(self.runs)

    def get(self, **config: AxisValue) -> RunResult:
        """The run with exactly these axis values, e.g. ``grid.get(lr=0.1, dropout=0.5)``."""
        if set(config) != set(self.axes):
            raise KeyError(f"give one value for each axis {list(self.axes)}, got {list(config)}")
        index = 0
        for name, values in self.axes.items():
            if config[name] not in values:
                raise KeyError(f"{name}={config[name]!r} is not in the grid; values: {values}")
            index = index * len(values) + values.index(config[name])
        return self.runs[index]

    def to_frame(self) -> Any:
        """A tidy ``pandas.DataFrame``: one row per configuration and epoch."""
        import pandas as pd

        rows = []
        for run in self.runs:
            h = run.history
            for e in range(h.num_epochs):
                rows.append({
                    **run.config, "epoch": e + 1, "train_loss": h.train_loss[e],
                    "val_loss": h.val_loss[e] if h.val_loss else None,
                    "val_acc": h.val_acc[e] if h.val_acc else None,
                    "diverged": h.diverged,
                })  # fmt: skip
        return pd.DataFrame(rows)

    def summary(self) -> Any:
        """A ``pandas.DataFrame`` with one row per configuration: final numbers."""
        import pandas as pd

        return pd.DataFrame([
            {**run.config, **run.history.final(), "test_acc": run.test_acc,
             "diverged": run.diverged}
            for run in self.runs
        ])  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"axes": self.axes, "runs": [r.to_dict() for r in self.runs], "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GridResults:
        return cls(axes={k: list(v) for k, v in d["axes"].items()},
                   runs=[RunResult.from_dict(r) for r in d["runs"]],
                   meta=dict(d.get("meta", {})))  # fmt: skip


def grid_configs(axes: Mapping[str, Sequence[AxisValue]]) -> list[dict[str, AxisValue]]:
    """Every combination of the axes' values, in :class:`GridResults` order."""
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


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


Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True, eq=False)
class TrainData:
    """The tensors ``(X, y)`` of a training split and optional validation and test
    splits; ``eval_batch_size`` is the batch size for evaluation. Make one from
    :class:`~d2lcore.data.DataSplits` with :meth:`from_splits`."""

    train: Split
    val: Split | None = None
    test: Split | None = None
    eval_batch_size: int = 1024

    @classmethod
    def from_splits(cls, splits: DataSplits) -> TrainData:
        """The tensors behind three loaders (their batch size and seed are not kept:
        those come from each :class:`TrainConfig`)."""

        def pair(loader: TensorLoader) -> Split:
            X, y = loader.tensors
            return X, y

        return cls(
            pair(splits.train),
            pair(splits.val),
            pair(splits.test),
            eval_batch_size=splits.val.batch_size,
        )


def as_train_data(data: TrainData | DataSplits) -> TrainData:
    """``data`` as :class:`TrainData`."""
    return data if isinstance(data, TrainData) else TrainData.from_splits(data)


def build_model(spec: ModelSpec, config: TrainConfig, device: torch.device) -> nn.Module:
    """``spec``'s model on the CPU, initialized from ``config.seed`` alone, with its
    dropout stream on ``device``."""
    with torch.random.fork_rng(devices=[]):  # default init: seeded, and no side effects
        torch.manual_seed(config.seed)
        model = spec.build(dropout=config.dropout, generator=dropout_generator(config.seed, device))
    return init_weights(
        model, config.init, std=config.init_std, generator=make_generator(config.seed)
    )


def _loader(split: Split, batch_size: int, device: torch.device, *,
            seed: int | None = None) -> Iterable[Split]:  # fmt: skip
    """Training batches shuffled from ``seed``, or evaluation batches (``seed=None``)."""
    loader = TensorLoader(*split, batch_size=batch_size, shuffle=seed is not None,
                          seed=seed or 0, device=device)  # fmt: skip
    return cast(Iterable[Split], loader)  # it yields (X, y) pairs


def train_one(
    spec: ModelSpec,
    config: TrainConfig,
    data: TrainData | DataSplits,
    *,
    device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
) -> RunResult:
    """Train one configuration with :func:`~d2lcore.train.fit`: the reference that
    :func:`train_grid` matches. ``test_acc`` is the test accuracy (classes only,
    ``None`` when diverged or without a test split)."""
    device = get_device(str(device) if device is not None else None)
    data = as_train_data(data)
    model = build_model(spec, config, device)
    loss_fn: nn.Module = nn.MSELoss() if spec.regression else nn.CrossEntropyLoss()
    opt_cls = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train = _loader(data.train, config.batch_size, device, seed=config.seed)
    val = None if data.val is None else _loader(data.val, data.eval_batch_size, device)
    history = fit(model, train, loss_fn=loss_fn, optimizer=optimizer,
                  num_epochs=config.num_epochs, val_batches=val, device=device,
                  on_epoch_end=on_epoch_end)  # fmt: skip
    test_acc = None
    if data.test is not None and not spec.regression and not history.diverged:
        test = _loader(data.test, data.eval_batch_size, device)
        test_acc = evaluate(model, test, loss_fn, device=device).accuracy
    return RunResult(config=asdict(config), history=history, test_acc=test_acc)


# ----------------------------------------------------------------------------------
# Grids, batched and cached

#: Environment variable naming the folder of cached grids.
CACHE_ENV = "D2L_CACHE_DIR"
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$D2L_CACHE_DIR``, else ``~/.cache/d2lcore/grids``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "d2lcore" / "grids")


def code_fingerprint() -> str:
    """A hash of the ``d2lcore`` package's source: editing it invalidates cached grids."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def data_fingerprint(data: TrainData) -> str:
    """A hash of every tensor's dtype, shape and bytes (~0.2 s for Fashion-MNIST)."""
    h = hashlib.sha256(f"eval_batch_size={data.eval_batch_size}".encode())
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        for t in split or ():
            t = t.detach().cpu().contiguous()
            h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def grid_key(
    spec: ModelSpec,
    axes: Mapping[str, Sequence[AxisValue]],
    base: TrainConfig,
    data: TrainData,
    device: torch.device,
) -> str:
    """The cache key of a grid: everything its results depend on."""
    payload = {
        "format": CACHE_FORMAT,
        "spec": asdict(spec),
        "base": asdict(base),
        "axes": [[name, list(values)] for name, values in axes.items()],  # order matters
        "data": data_fingerprint(data),
        "code": code_fingerprint(),
        "device": device.type,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _load(path: Path, key: str, axes: dict[str, list[AxisValue]]) -> GridResults | None:
    try:
        entry = json.loads(path.read_text())
        grid = GridResults.from_dict(entry["grid"])
        if entry["key"] != key or grid.axes != axes:
            return None
        if [run.config for run in grid.runs] != grid_configs(axes):
            return None
        return grid
    except Exception:  # missing, partial or corrupt in any way: train again
        return None


def _store(path: Path, key: str, grid: GridResults) -> str | None:
    """Write atomically (a reader never sees half a file); return the error, if any."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "grid": grid.to_dict()}, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an ordinary file is expected
        os.replace(tmp, path)
        return None
    except OSError as err:  # a read-only or full disk must not break the page
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return str(err)


def _plain(value: Any) -> AxisValue:
    return value.item() if hasattr(value, "item") else value  # NumPy/torch scalars


def train_grid(
    spec: ModelSpec,
    axes: Mapping[str, Sequence[AxisValue]],
    base: TrainConfig,
    data: TrainData | DataSplits,
    *,
    device: torch.device | str | None = None,
    batched: bool | None = None,
    cache: bool | str | os.PathLike[str] = True,
) -> GridResults:
    """Train every combination of ``axes`` (names of :class:`TrainConfig` fields; the
    other fields come from ``base``) and return the :class:`GridResults`.

    Configurations sharing ``batch_size``, ``num_epochs`` and ``optimizer`` train
    together with stacked weights (:func:`~d2lcore.batched.fit_stacked`; the kinds in
    :data:`BATCHABLE_KINDS` can); each equals :func:`train_one` with its config up to
    float rounding. The convolutional kinds train one configuration at a time with
    :func:`train_one`, whatever ``batched`` says. A diverged configuration is marked
    in its history and the others go on.

    Args:
        data: tensors, or the loaders of :func:`~d2lcore.data.fashion_mnist_loaders`.
        batched: ``False`` trains one configuration at a time with :func:`train_one`;
            ``None`` or ``True`` batches where ``spec`` can be batched.
        cache: ``True`` keeps results in :func:`default_cache_dir`, a path keeps them
            there, ``False`` always trains. The key covers the spec, axes, base config,
            data, ``d2lcore``'s source, the device type and torch's version; a corrupt
            entry is trained again and overwritten.

    ``meta`` records ``key``, ``from_cache``, ``seconds`` (this call),
    ``train_seconds``, ``device`` and ``batched`` (whether configurations were batched).
    """
    start = time.perf_counter()
    device = get_device(str(device) if device is not None else None)
    data = as_train_data(data)
    names = {f.name for f in fields(TrainConfig)}
    plain_axes = {name: [_plain(v) for v in values] for name, values in axes.items()}
    for name, values in plain_axes.items():
        if name not in names:
            raise ValueError(f"unknown axis {name!r}; axes are TrainConfig fields: {sorted(names)}")
        if not values or len(set(values)) != len(values):
            raise ValueError(f"axis {name!r} needs distinct values, got {values}")
    combos = grid_configs(plain_axes)
    configs = [replace(base, **cast(dict[str, Any], combo)) for combo in combos]  # validates

    key = path = None
    if cache is not False:
        key = grid_key(spec, plain_axes, base, data, device)
        path = (default_cache_dir() if cache is True else Path(cache)) / f"{key}.json"
        grid = _load(path, key, plain_axes)
        if grid is not None:
            grid.meta.update(from_cache=True, seconds=time.perf_counter() - start)
            return grid

    batched = batched is not False and spec.batchable
    results: list[tuple[History, float | None]] = [(History(), None)] * len(configs)
    groups: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    for i, c in enumerate(configs):
        groups[(c.batch_size, c.num_epochs, c.optimizer)].append(i)
    for members in groups.values():
        if batched and len(members) > 1:
            group = [configs[i] for i in members]
            models = [build_model(spec, c, device) for c in group]
            trained = fit_stacked(models, group, data, activation=spec.activation,
                                  regression=spec.regression, device=device)  # fmt: skip
        else:
            trained = [
                (r.history, r.test_acc)
                for r in (train_one(spec, configs[i], data, device=device) for i in members)
            ]
        for i, result in zip(members, trained, strict=True):
            results[i] = result

    runs = [
        RunResult(config=combo, history=h, test_acc=acc)
        for combo, (h, acc) in zip(combos, results, strict=True)
    ]
    seconds = time.perf_counter() - start
    meta: dict[str, Any] = {"key": key, "from_cache": False, "seconds": seconds,
                            "train_seconds": seconds, "device": device.type,
                            "batched": batched}  # fmt: skip
    grid = GridResults(axes=plain_axes, runs=runs, meta=meta)
    if path is not None and key is not None:
        error = _store(path, key, grid)
        if error is not None:
            grid.meta["cache_error"] = error
    return grid
