"""Grids of runs: every combination of a few named axes, and the cached runner that
fills one with the results of any per-configuration function.

- :class:`Grid` is the one definition of a grid's order (the last axis varies fastest,
  as ``itertools.product``): configuration at an index, index of a configuration, and
  the strides the page script uses to find a configuration from slider positions.
- :class:`GridResults` holds one :class:`~d2lcore.train.RunResult` per configuration.
- :func:`run_grid` runs ``fn(config)`` for every configuration (or a ``batch`` of them
  at once), keeps each result's history, final numbers and ``extras`` (the arrays a
  figure needs), and caches the whole grid on disk (:mod:`d2lcore.cache`), keyed by
  what ``fn`` reads (:class:`~d2lcore.keys.Describer`).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from d2lcore import cache as cache_mod
from d2lcore.device import get_device
from d2lcore.keys import Describer
from d2lcore.train import RunResult

AxisValue = float | int | str | bool
Config = dict[str, AxisValue]


def plain(value: Any) -> AxisValue:
    """A NumPy or torch scalar as the Python number it holds; other values as they are."""
    value = value.item() if hasattr(value, "item") else value
    if not isinstance(value, (bool, int, float, str)):
        raise TypeError(f"axis values are numbers, strings or booleans, not {value!r}")
    if isinstance(value, float) and math.isnan(value):
        # NaN != NaN: such a configuration could never be found again, in the grid or
        # in the cache.
        raise ValueError("an axis value is NaN; give a number")
    return value


@dataclass(frozen=True)
class Grid:
    """Named axes and every combination of their values, in one fixed order: the last
    axis varies fastest (``itertools.product`` order). Nothing else in the package or
    the page script computes this order on its own."""

    axes: dict[str, tuple[AxisValue, ...]]

    def __init__(self, axes: Mapping[str, Sequence[AxisValue]]) -> None:
        plain_axes = {str(name): tuple(plain(v) for v in values) for name, values in axes.items()}
        for name, values in plain_axes.items():
            if not values:
                raise ValueError(f"axis {name!r} has no values")
            if len(set(values)) != len(values):
                raise ValueError(f"axis {name!r} needs distinct values, got {list(values)}")
        object.__setattr__(self, "axes", plain_axes)

    @property
    def names(self) -> list[str]:
        return list(self.axes)

    @property
    def sizes(self) -> list[int]:
        return [len(v) for v in self.axes.values()]

    @property
    def strides(self) -> list[int]:
        """How far the flat index moves for one step of each axis."""
        strides, step = [], 1
        for size in reversed(self.sizes):
            strides.append(step)
            step *= size
        return strides[::-1]

    def __len__(self) -> int:
        return math.prod(self.sizes)

    def __iter__(self) -> Iterator[Config]:
        return (self.config_at(k) for k in range(len(self)))

    def configs(self) -> list[Config]:
        return list(self)

    def steps(self, config: Mapping[str, AxisValue]) -> list[int]:
        """The position of each of ``config``'s values on its axis."""
        if set(config) != set(self.axes):
            raise KeyError(f"give one value for each axis {self.names}, got {list(config)}")
        steps = []
        for name, values in self.axes.items():
            if config[name] not in values:
                raise KeyError(f"{name}={config[name]!r} is not in the grid; values: "
                               f"{list(values)}")  # fmt: skip
            steps.append(values.index(config[name]))
        return steps

    def index_of_steps(self, steps: Sequence[int]) -> int:
        """The flat index of the configuration at these positions along the axes."""
        return sum(s * stride for s, stride in zip(steps, self.strides, strict=True))

    def index(self, config: Mapping[str, AxisValue]) -> int:
        """The flat index of ``config`` (one value for each axis)."""
        return self.index_of_steps(self.steps(config))

    def config_at(self, k: int) -> Config:
        if not 0 <= k < len(self):
            raise IndexError(f"configuration {k} of a grid of {len(self)}")
        return {name: values[(k // stride) % len(values)]
                for (name, values), stride in zip(self.axes.items(), self.strides,
                                                  strict=True)}  # fmt: skip


def grid_configs(axes: Mapping[str, Sequence[AxisValue]]) -> list[Config]:
    """Every combination of the axes' values, in :class:`Grid` order."""
    return Grid(axes).configs()


@dataclass
class GridResults:
    """Results of a grid: ``axes`` maps each axis name to its values (in order), and
    ``runs`` holds one :class:`~d2lcore.train.RunResult` per combination, in
    :class:`Grid` order."""

    axes: dict[str, list[AxisValue]]
    runs: list[RunResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = {name: list(values) for name, values in self.grid.axes.items()}
        if len(self.runs) != len(self.grid):
            raise ValueError(f"{len(self.runs)} runs for a grid of {len(self.grid)} "
                             "configurations")  # fmt: skip

    @property
    def grid(self) -> Grid:
        return Grid(self.axes)

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[RunResult]:
        return iter(self.runs)

    def get(self, **config: AxisValue) -> RunResult:
        """The run with exactly these axis values, e.g. ``grid.get(lr=0.1, dropout=0.5)``."""
        return self.runs[self.grid.index(config)]

    def summary(self) -> Any:
        """A ``pandas.DataFrame`` with one row per configuration: final numbers."""
        import pandas as pd

        return pd.DataFrame([
            {**run.config, **run.history.final(), "test_acc": run.test_acc, **run.metrics,
             "diverged": run.diverged}
            for run in self.runs
        ])  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"axes": self.axes, "meta": self.meta,
                "runs": [{**r.to_dict(), "extras": encode_extras(r.extras)}
                         for r in self.runs]}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GridResults:
        runs = []
        for r in d["runs"]:
            run = RunResult.from_dict(r)
            run.extras = decode_extras(run.extras)
            runs.append(run)
        return cls(axes={k: list(v) for k, v in d["axes"].items()}, runs=runs,
                   meta=dict(d.get("meta", {})))  # fmt: skip


# ----------------------------------------------------------------------------------
# Extras: arrays by name, stored as JSON


def encode_extras(extras: Mapping[str, Any]) -> dict[str, Any]:
    """``extras`` as JSON-like values: arrays and tensors become
    ``{"array": nested lists, "dtype": ...}``; numbers, strings and lists stay."""
    out: dict[str, Any] = {}
    for name, value in extras.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            out[name] = {"array": value.tolist(), "dtype": str(value.dtype)}
        else:
            out[name] = value
    return out


def decode_extras(extras: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`encode_extras`: arrays come back as NumPy arrays."""
    out: dict[str, Any] = {}
    for name, value in extras.items():
        if isinstance(value, dict) and set(value) == {"array", "dtype"}:
            out[name] = np.asarray(value["array"], dtype=value["dtype"])
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------------
# The runner

RunFn = Callable[[Config], RunResult]
BatchFn = Callable[[list[Config]], list[RunResult]]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def valid_run(run: RunResult) -> bool:
    """Whether a run read from the cache has the shape a fresh one has: lists of finite
    numbers, one per recorded epoch, a divergence flag that agrees with them, and
    finite final numbers; as many epochs as the configuration's ``num_epochs`` unless it
    diverged. A cache entry that fails is trained again, never served."""
    h = run.history
    lists = (h.train_loss, h.val_loss, h.val_acc, h.seconds, *h.metrics.values())
    if not all(isinstance(xs, list) for xs in lists) or not isinstance(h.metrics, dict):
        return False
    n = h.num_epochs
    if len(h.seconds) != n or any(len(xs) not in (0, n) for xs in lists):
        return False
    if not all(_finite(x) for xs in lists for x in xs):
        return False
    if not isinstance(h.diverged, bool) or (h.diverged_epoch is None) == h.diverged:
        return False
    if h.diverged_epoch is not None and not (isinstance(h.diverged_epoch, int)
                                             and h.diverged_epoch > n):  # fmt: skip
        return False
    epochs = run.config.get("num_epochs")
    if isinstance(epochs, int) and not h.diverged and n != epochs:
        return False
    if run.test_acc is not None and not _finite(run.test_acc):
        return False
    return isinstance(run.metrics, dict) and all(_finite(v) for v in run.metrics.values())


#: What a grid's ``name`` may hold: it becomes part of its cache file's name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


class CacheWarning(UserWarning):
    """Results that could not be stored in the cache: they will be trained again."""


#: The cache folders a write already failed in (warned once each per process).
_WARNED: set[str] = set()


def check_name(name: str | None) -> None:
    """Refuse a grid ``name`` that could steer its cache file out of its folder (``/``,
    ``..``, an absolute path) or that no file system takes (a NUL): before anything trains.

    Raises:
        ValueError: naming the name and what it may hold.
    """
    if name is None:
        return
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"name={name!r}: a grid's name becomes part of its cache file's name, so it may "
            "hold only letters, digits, '.', '_' and '-', start with a letter or digit, and "
            "have at most 80 characters (e.g. name='layer-norm')"
        )


def _warn_once(folder: Any, error: str) -> None:
    if str(folder) in _WARNED:
        return
    _WARNED.add(str(folder))
    warnings.warn(
        f"the results could not be stored in the cache folder {folder} ({error}): they are "
        "shown, and trained again next time. Set D2L_CACHE_DIR to a folder you can write to.",
        CacheWarning, stacklevel=3,
    )  # fmt: skip


def load_grid(path: Any, key: str, grid: Grid) -> GridResults | None:
    """The cached results at ``path`` if they are whole, hold ``key`` and match
    ``grid``; ``None`` otherwise (missing, corrupt, another grid): train again."""
    entry = cache_mod.read_json(path)
    try:
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        results = GridResults.from_dict(entry["grid"])
        if results.grid != grid or [r.config for r in results.runs] != grid.configs():
            return None
        if not all(valid_run(r) for r in results.runs):
            return None
        return results
    except Exception:  # any shape a damaged entry has (deep nesting, huge numbers, ...)
        return None


def run_grid(
    axes: Mapping[str, Sequence[AxisValue]],
    fn: RunFn,
    *,
    depends_on: Any = None,
    batch: BatchFn | None = None,
    cache: bool | str | Any = True,
    device: torch.device | str | None = None,
    name: str | None = None,
) -> GridResults:
    """Run ``fn(config)`` for every configuration of ``axes`` and collect the results.

    Args:
        axes: each axis' values, e.g. ``{"lr": [0.01, 0.1], "init": ["xavier", "he"]}``.
        fn: trains (or computes) one configuration and returns a
            :class:`~d2lcore.train.RunResult` whose ``config`` may hold more than the
            axes (the grid stores the axes' values). Its ``extras`` are kept with the
            results: arrays come back from the cache as NumPy arrays.
        depends_on: what the results depend on that ``fn`` and ``batch`` do not hold
            (a file they read); any value :class:`~d2lcore.keys.Describer` reads. The
            data and settings they capture need no mention: the key reads them.
        batch: optional; runs a list of configurations at once (stacked training) and
            returns their results in order. Used for the configurations not cached
            when there are two or more.
        cache: ``True`` keeps results in :func:`~d2lcore.cache.default_cache_dir`, a
            path keeps them there, ``False`` always runs. The key covers ``axes``,
            ``name``, what ``fn`` and ``batch`` read (their code, defaults, closure
            variables and the globals they read, recursively: tensors by digest, see
            :class:`~d2lcore.keys.Describer`), ``depends_on``, the training code,
            ``device``'s type and torch's version.
        device: the device the results were computed on (part of the key).
        name: a short name of what the grid computes, for the key and the file name:
            letters, digits, ``.``, ``_`` and ``-`` (checked before anything trains).

    ``meta`` records ``key``, ``path`` (the cache file), ``from_cache``, ``seconds``
    (this call), ``device`` and, when written, ``cache_error`` (why the results could
    not be stored, also warned once per folder as a :class:`CacheWarning`). An entry
    that cannot be read or does not validate, whatever its shape, is trained again.

    Raises:
        ~d2lcore.keys.UnkeyableError: ``fn`` or ``batch`` reads a value the key
            cannot read (the message names it); with ``cache=False`` nothing is keyed.
    """
    start = time.perf_counter()
    check_name(name)
    grid = Grid(axes)
    device = get_device(device)
    key = path = None
    folder = cache_mod.cache_dir(cache)
    if folder is not None:
        reader = Describer()  # one reader: a tensor both functions read, digested once
        payload = {"axes": [[n, list(v)] for n, v in grid.axes.items()],  # order matters
                   "name": name, "fn": reader.describe(fn, "fn"),
                   "batch": reader.describe(batch, "batch"),
                   "depends_on": reader.describe(depends_on, "depends_on")}  # fmt: skip
        key = cache_mod.key(payload, device=device)
        path = folder / f"{(name + '-') if name else ''}{key}.json"
        cached = load_grid(path, key, grid)
        if cached is not None:
            cached.meta.update(from_cache=True, seconds=time.perf_counter() - start)
            return cached

    configs = grid.configs()
    results = batch(configs) if batch is not None and len(configs) > 1 else [
        fn(c) for c in configs]  # fmt: skip
    if len(results) != len(configs):
        raise ValueError(f"{len(results)} results for {len(configs)} configurations")
    runs = []
    for config, result in zip(configs, results, strict=True):
        runs.append(RunResult(config=dict(config), history=result.history,
                              test_acc=result.test_acc, metrics=dict(result.metrics),
                              extras=decode_extras(encode_extras(result.extras)),
                              model=result.model))  # fmt: skip
    seconds = time.perf_counter() - start
    meta: dict[str, Any] = {"key": key, "path": str(path) if path else None,
                            "from_cache": False, "seconds": seconds,
                            "train_seconds": seconds, "device": device.type}  # fmt: skip
    out = GridResults(axes={n: list(v) for n, v in grid.axes.items()}, runs=runs, meta=meta)
    if path is not None and key is not None:
        error = cache_mod.write_json(path, {"key": key, "grid": out.to_dict()})
        if error is not None:
            out.meta["cache_error"] = error
            _warn_once(path.parent, error)
    return out
