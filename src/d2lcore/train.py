"""The training loop: one, written out plainly, returning a :class:`History`; and
:class:`RunResult`, what every trainer of the package returns."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from d2lcore.device import get_device
from d2lcore.metrics import Batch, LossFn, evaluate


@dataclass
class History:
    """What happened in a run, one entry per finished epoch.

    ``val_acc`` stays empty for regression. ``metrics`` holds the other numbers an
    evaluation function measured after each epoch, by name. When the loss (or any
    evaluated number) stopped being a finite number the run ended early: ``diverged``
    is true and ``diverged_epoch`` is the (1-based) epoch where it happened; that
    epoch's numbers are not recorded.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    diverged: bool = False
    diverged_epoch: int | None = None
    metrics: dict[str, list[float]] = field(default_factory=dict)

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
            **{name: last(xs) for name, xs in self.metrics.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """The inverse of :meth:`to_dict`; fields an older dict lacks get their defaults."""
        d = dict(d)
        d["metrics"] = {str(k): list(v) for k, v in (d.get("metrics") or {}).items()}
        return cls(**d)


EpochHook = Callable[[int, History], None]
#: ``evaluate(model) -> {name: number}``, run by :func:`fit` after every epoch.
EvalFn = Callable[[nn.Module], Mapping[str, float]]
#: Numbers an evaluation function may not report: :func:`fit` measures them itself.
RESERVED_METRICS = ("train_loss", "seconds")


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
    train_batches: Iterable[Batch],
    *,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    num_epochs: int,
    val_batches: Iterable[Batch] | None = None,
    evaluate: EvalFn | None = None,
    device: torch.device | None = None,
    on_epoch_end: EpochHook | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
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
        evaluate: ``evaluate(model) -> {name: number}``, run after every epoch in
            evaluation mode without gradients (a per-token accuracy, a test metric).
            ``"val_loss"`` and ``"val_acc"`` go to the history's own lists (so give
            them either here or by ``val_batches``), other names to
            ``History.metrics``.
        device: where to train; defaults to :func:`~d2lcore.device.get_device`.
        on_epoch_end: called as ``on_epoch_end(epoch, history)`` after each epoch
            (progress bars, live plots); the only hook.
        scheduler: a learning-rate schedule of ``optimizer``, stepped after every
            optimizer step (so its factors count steps, not epochs).

    A loss or an evaluated number that stops being finite (a learning rate too
    large) ends the run and marks the history diverged; it never raises.
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
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach() * len(y)
            n += len(y)
        train_loss = float(loss_sum) / max(n, 1)
        numbers = _evaluate_epoch(model, val_batches, evaluate, loss_fn, device)
        if not all(math.isfinite(x) for x in (train_loss, *numbers.values())):
            history.diverged = True
            history.diverged_epoch = epoch
            break
        history.train_loss.append(train_loss)
        for name, value in numbers.items():
            if name in ("val_loss", "val_acc"):
                getattr(history, name).append(value)
            else:
                history.metrics.setdefault(name, []).append(value)
        history.seconds.append(time.perf_counter() - start)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history


def _evaluate_epoch(
    model: nn.Module,
    val_batches: Iterable[Batch] | None,
    evaluate_fn: EvalFn | None,
    loss_fn: LossFn,
    device: torch.device,
) -> dict[str, float]:
    """The numbers measured after an epoch: ``val_batches``' loss and accuracy, then
    ``evaluate_fn``'s (in evaluation mode, without gradients)."""
    numbers: dict[str, float] = {}
    if val_batches is not None:
        val = evaluate(model, val_batches, loss_fn, device=device)
        numbers["val_loss"] = val.loss
        if val.accuracy is not None:
            numbers["val_acc"] = val.accuracy
    if evaluate_fn is not None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            extra = {str(k): float(v) for k, v in evaluate_fn(model).items()}
        model.train(was_training)
        clash = set(extra) & (set(numbers) | set(RESERVED_METRICS))
        if clash:
            raise ValueError(f"evaluate reported {sorted(clash)}, which fit measures itself")
        numbers.update(extra)
    return numbers


def _all_cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generators (CPU and every GPU) seeded from
    ``seed``, and put them back as they were afterwards: code that draws from the
    global stream (``nn.Dropout``, PyTorch's default init, torchvision's transforms)
    becomes repeatable without changing what the caller draws next."""
    with torch.random.fork_rng(devices=_all_cuda_devices()):
        torch.manual_seed(seed)
        yield
