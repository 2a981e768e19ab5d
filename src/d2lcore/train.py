"""The training loop: one, written out plainly, returning a :class:`History`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from d2lcore.device import get_device
from d2lcore.metrics import LossFn, evaluate


@dataclass
class History:
    """What happened in a run, one entry per finished epoch.

    ``val_acc`` stays empty for regression. When the loss stopped being a finite
    number the run ended early: ``diverged`` is true and ``diverged_epoch`` is the
    (1-based) epoch where it happened; that epoch's numbers are not recorded.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    diverged: bool = False
    diverged_epoch: int | None = None

    @property
    def num_epochs(self) -> int:
        return len(self.train_loss)

    def final(self) -> dict[str, float | None]:
        """The last epoch's numbers (``None`` where there are none)."""

        def last(xs: list[float]) -> float | None:
            return xs[-1] if xs else None

        return {
            "train_loss": last(self.train_loss),
            "val_loss": last(self.val_loss),
            "val_acc": last(self.val_acc),
            "seconds": sum(self.seconds),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**d)


EpochHook = Callable[[int, History], None]


@dataclass
class RunResult:
    """What every trainer returns: the configuration it ran, its :class:`History`, the
    final numbers measured after training, and ``extras``, arrays a figure needs (a
    fitted curve, an attention map, a decision boundary, learned filters).

    ``test_acc`` is the accuracy on held-out test data (``None`` for regression, a
    diverged run, or no test split); ``metrics`` holds any other final numbers by name.
    ``model`` is the trained module when the trainer keeps it; it is never cached.
    """

    config: dict[str, Any]
    history: History
    test_acc: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def diverged(self) -> bool:
        return self.history.diverged

    def to_dict(self) -> dict[str, Any]:
        """JSON-like (the model is left out; arrays in ``extras`` must already be lists
        or :func:`d2lcore.grid.encode_extras` output)."""
        return {"config": self.config, "history": self.history.to_dict(),
                "test_acc": self.test_acc, "metrics": self.metrics,
                "extras": self.extras}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        return cls(config=dict(d["config"]), history=History.from_dict(d["history"]),
                   test_acc=d.get("test_acc"), metrics=dict(d.get("metrics") or {}),
                   extras=dict(d.get("extras") or {}))  # fmt: skip


def fit(
    model: nn.Module,
    train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    num_epochs: int,
    val_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    device: torch.device | None = None,
    on_epoch_end: EpochHook | None = None,
) -> History:
    """Train ``model`` for ``num_epochs`` and return its :class:`History`.

    Args:
        model: any module; it is moved to ``device``.
        train_batches: an iterable of ``(X, y)`` minibatches, iterated once per epoch
            (a :class:`~d2lcore.data.TensorLoader` or a ``DataLoader``).
        loss_fn: a loss that averages over the batch, e.g. ``nn.CrossEntropyLoss()``.
        optimizer: built over ``model.parameters()``.
        num_epochs: passes over the training data.
        val_batches: evaluated after every epoch (loss, and accuracy for classes).
        device: where to train; defaults to :func:`~d2lcore.device.get_device`.
        on_epoch_end: called as ``on_epoch_end(epoch, history)`` after each epoch
            (progress bars, live plots); the only hook.

    A loss that stops being finite (a learning rate too large) ends the run and
    marks the history diverged; it never raises.
    """
    device = device or get_device()
    model.to(device)
    history = History()
    for epoch in range(1, num_epochs + 1):
        start = time.perf_counter()
        model.train()
        # Summed on the device and read once per epoch: a .item() per step would
        # make the CPU wait for the GPU after every batch.
        loss_sum = torch.zeros((), device=device)
        n = 0
        for X, y in train_batches:
            X, y = X.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            n += len(y)
        train_loss = float(loss_sum) / max(n, 1)
        val = (
            evaluate(model, val_batches, loss_fn, device=device)
            if val_batches is not None
            else None
        )
        if not math.isfinite(train_loss) or (val is not None and not math.isfinite(val.loss)):
            history.diverged = True
            history.diverged_epoch = epoch
            break
        history.train_loss.append(train_loss)
        if val is not None:
            history.val_loss.append(val.loss)
            if val.accuracy is not None:
                history.val_acc.append(val.accuracy)
        history.seconds.append(time.perf_counter() - start)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history
