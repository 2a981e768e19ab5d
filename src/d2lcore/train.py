"""The training loop: one, written out plainly, for one model (:func:`fit`, returning
its :class:`History`) or a stack of models with a leading model axis
(:func:`fit_stack`, one history per model); and :class:`RunResult`, what every trainer
of the package returns."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from d2lcore.device import get_device, keep_freed_memory
from d2lcore.metrics import Batch, LossFn
from d2lcore.metrics import evaluate as evaluate_batches
from d2lcore.step import TrainStep


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
    capture: bool | None = None,
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
        capture: replay the training step as a CUDA graph (:class:`~d2lcore.step.TrainStep`);
            ``None`` does where the device is a GPU and the step allows it.

    A loss or an evaluated number that stops being finite (a learning rate too
    large) ends the run and marks the history diverged; it never raises.
    """
    device = device or get_device()
    model.to(device)

    def measure(model: nn.Module) -> dict[str, list[float]]:
        numbers: dict[str, float] = {}
        if val_batches is not None:
            val = evaluate_batches(model, val_batches, loss_fn, device=device)
            numbers["val_loss"] = val.loss
            if val.accuracy is not None:
                numbers["val_acc"] = val.accuracy
        extra = {name: float(value) for name, value in _evaluated(model, evaluate).items()}
        if set(extra) & set(numbers):
            raise ValueError(f"evaluate reported {sorted(set(extra) & set(numbers))}, "
                             "which fit measures itself")  # fmt: skip
        return {name: [value] for name, value in {**numbers, **extra}.items()}

    def hook(epoch: int, histories: list[History]) -> None:
        if on_epoch_end is not None:
            on_epoch_end(epoch, histories[0])

    (history,) = _loop(model, None, train_batches, loss_fn=loss_fn, optimizer=optimizer,
                       num_epochs=num_epochs, measure=measure, device=device,
                       on_epoch_end=hook, scheduler=scheduler, capture=capture)  # fmt: skip
    return history


class Optimizer(Protocol):
    """What the loop needs of an optimizer: a ``torch.optim`` one, or
    :class:`~d2lcore.batched.StackedOptimizer` for a stack."""

    def zero_grad(self) -> None: ...
    def step(self) -> object: ...


class Stack(Protocol):
    """What :func:`fit_stack` needs of a stack of models (:mod:`d2lcore.stacks` makes
    them): a module whose parameters hold K models with a leading model axis, whose
    ``forward`` gives every model's outputs ``(K, b, ...)``, and which can drop models.

    Whatever else holds per-model state for the run (the optimizer, the batches) follows
    ``rows``, which of the models given the stack still trains."""

    rows: list[int]

    def __call__(self, X: torch.Tensor) -> torch.Tensor: ...
    def train(self, mode: bool = True) -> Any: ...
    def keep_rows(self, rows: list[int]) -> None:
        """Go on with only the models at these positions (of the current rows)."""


#: ``evaluate(stack) -> {name: one number per model}``, run by :func:`fit_stack`.
StackEvalFn = Callable[[Any], Mapping[str, Sequence[float]]]
StackEpochHook = Callable[[int, list[History]], None]


def fit_stack(
    stack: Stack,
    train_batches: Iterable[Batch],
    *,
    loss_fn: LossFn,
    optimizer: Optimizer,
    num_epochs: int,
    evaluate: StackEvalFn | None = None,
    device: torch.device | None = None,
    on_epoch_end: StackEpochHook | None = None,
    capture: bool | None = None,
) -> list[History]:
    """Train every model of ``stack`` for ``num_epochs`` in the loop of :func:`fit`;
    return one :class:`History` per model, in the order the stack was given them.

    ``loss_fn(outputs, y)`` gives each model's mean loss ``(K,)``; the targets ``y`` of
    every batch carry the model axis, ``(K, b, ...)``. ``evaluate(stack)`` reports one
    number per model still training, by name, as :func:`fit`'s evaluate does; and
    ``on_epoch_end(epoch, histories)`` sees every model's history. A model whose numbers
    stop being finite is marked diverged, as :func:`fit` marks a run, and leaves the
    stack (:meth:`Stack.keep_rows`): it can neither poison nor slow down the others.
    Each history's ``seconds`` is the model's share of the epoch's time; ``capture`` is
    :func:`fit`'s.
    """
    device = device or get_device()

    def measure(stack: Stack) -> dict[str, list[float]]:
        numbers = {name: [float(v) for v in values]
                   for name, values in _evaluated(stack, evaluate).items()}  # fmt: skip
        if any(len(values) != len(stack.rows) for values in numbers.values()):
            raise ValueError(f"evaluate must report one number per model of the stack, "
                             f"{len(stack.rows)} of them")  # fmt: skip
        return numbers

    return _loop(stack, stack, train_batches, loss_fn=loss_fn, optimizer=optimizer,
                 num_epochs=num_epochs, measure=measure, device=device,
                 on_epoch_end=on_epoch_end, scheduler=None, capture=capture)  # fmt: skip


def _loop(
    model: nn.Module | Stack,
    stack: Stack | None,
    train_batches: Iterable[Batch],
    *,
    loss_fn: LossFn,
    optimizer: Optimizer,
    num_epochs: int,
    measure: Callable[[Any], Mapping[str, list[float]]],
    device: torch.device,
    on_epoch_end: StackEpochHook | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    capture: bool | None,
) -> list[History]:
    """The epochs of :func:`fit` (``stack`` ``None``: one model) and :func:`fit_stack`
    (``model`` is ``stack``): one history per model."""
    histories = [History() for _ in (stack.rows if stack is not None else [0])]
    alive = list(range(len(histories)))  # the history of each model still training
    if device.type == "cpu":
        keep_freed_memory()  # no fresh pages from the kernel at every step
    step = TrainStep(model, loss_fn, optimizer, scheduler=scheduler, stacked=stack is not None,
                     device=device, capture=capture)  # fmt: skip
    for epoch in range(1, num_epochs + 1):
        start = time.perf_counter()
        model.train()
        # Summed on the device and read once per epoch: a .item() per step would
        # make the CPU wait for the GPU after every batch.
        step.new_epoch(None if stack is None else len(alive))
        n = 0
        for X, y in train_batches:
            n += step(X.to(device), y.to(device))
        assert step.loss_sum is not None
        train_loss = [v / max(n, 1) for v in step.loss_sum.reshape(-1).tolist()]
        numbers = measure(model)
        seconds = (time.perf_counter() - start) / len(alive)
        kept = [row for row, k in enumerate(alive)
                if _record(histories[k], epoch, train_loss[row],
                           {name: values[row] for name, values in numbers.items()},
                           seconds)]  # fmt: skip
        if not kept:
            break
        if stack is not None and len(kept) < len(alive):
            stack.keep_rows(kept)
            step.forget()  # the stack's parameters are new tensors
            alive = [alive[row] for row in kept]
        if on_epoch_end is not None:
            on_epoch_end(epoch, histories)
    return histories


def _record(history: History, epoch: int, train_loss: float, numbers: Mapping[str, float],
            seconds: float) -> bool:  # fmt: skip
    """Append one epoch's numbers to ``history``; or, the one rule of divergence, when
    one of them is not finite, mark it diverged at ``epoch`` and return ``False`` (that
    epoch's numbers are not recorded)."""
    if not all(math.isfinite(x) for x in (train_loss, *numbers.values())):
        history.diverged, history.diverged_epoch = True, epoch
        return False
    history.train_loss.append(train_loss)
    for name, value in numbers.items():
        if name in ("val_loss", "val_acc"):
            getattr(history, name).append(value)
        else:
            history.metrics.setdefault(name, []).append(value)
    history.seconds.append(seconds)
    return True


def _evaluated(model: Any, evaluate_fn: Callable[[Any], Mapping[str, Any]] | None
               ) -> dict[str, Any]:  # fmt: skip
    """``evaluate_fn(model)``'s numbers by name, measured in evaluation mode without
    gradients (the mode is put back); none without a function."""
    if evaluate_fn is None:
        return {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        numbers = {str(name): value for name, value in evaluate_fn(model).items()}
    model.train(was_training)
    reserved = set(numbers) & set(RESERVED_METRICS)
    if reserved:
        raise ValueError(f"evaluate reported {sorted(reserved)}, which fit measures itself")
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
