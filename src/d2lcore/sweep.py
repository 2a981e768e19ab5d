"""Grids of training runs: every combination of a few named axes (learning rate,
dropout, initialization scheme, ...), with each configuration's full history.

The results types come first; the functions that train a grid (batched where the
architecture allows, one at a time otherwise) and cache it on disk follow.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from d2lcore.train import History

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
