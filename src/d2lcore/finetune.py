"""Fine-tuning: reuse a network trained on a source task for a target task.

The four steps: pretrain on the source data (:func:`pretrain_source`, cached on disk as a
checkpoint, :mod:`d2lcore.checkpoint`), copy the network without its output layer and add
a new one (:func:`~d2lcore.heads.replace_head`), then train on the target with the new
layer learning from scratch and the rest gently (:func:`~d2lcore.heads.param_groups`,
:func:`fine_tune`). :func:`~d2lcore.checkpoint.load_pretrained` reads the book's
checkpoints and plain ``state_dict`` files such as torchvision's. What the pages import
from here of :mod:`d2lcore.heads` and :mod:`d2lcore.checkpoint` is re-exported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d2lcore import cache
from d2lcore.checkpoint import CHECKPOINT_FORMAT
from d2lcore.checkpoint import CheckpointError as CheckpointError
from d2lcore.checkpoint import load_pretrained as load_pretrained
from d2lcore.checkpoint import save_checkpoint as save_checkpoint
from d2lcore.conv import SmallResNet
from d2lcore.data import Split, Splits
from d2lcore.device import get_device, make_generator
from d2lcore.grid import valid_run
from d2lcore.heads import HEAD_INITS as HEAD_INITS
from d2lcore.heads import freeze_body as freeze_body
from d2lcore.heads import frozen_norm as frozen_norm
from d2lcore.heads import get_head as get_head
from d2lcore.heads import head_name as head_name
from d2lcore.heads import param_groups as param_groups
from d2lcore.heads import replace_head as replace_head
from d2lcore.metrics import Batch, evaluate
from d2lcore.train import EpochHook, History, RunResult, fit, seeded

# ----------------------------------------------------------------------------------
# Source and target tasks


def class_subset(X: torch.Tensor, y: torch.Tensor, classes: Sequence[int]) -> Split:
    """The examples of ``classes``, relabelled ``0 .. len(classes) - 1`` in that order."""
    index = torch.full((int(y.max()) + 1,), -1, dtype=torch.long, device=y.device)
    index[torch.as_tensor(list(classes), device=y.device)] = torch.arange(
        len(classes), device=y.device
    )
    new = index[y]
    keep = new >= 0
    return X[keep], new[keep]


def few_labels(X: torch.Tensor, y: torch.Tensor, n: int, *, seed: int = 0) -> Split:
    """``n`` examples drawn at random, the same number from every class (``n`` must be a
    multiple of the number of classes)."""
    classes, counts = torch.unique(y, return_counts=True)
    k = len(classes)
    if n <= 0 or n % k:
        raise ValueError(f"{n} labelled examples cannot be split evenly over {k} classes; "
                         f"choose a positive multiple of {k}, e.g. {max(k, n // k * k)}")
    if n // k > int(counts.min()):
        raise ValueError(f"{n} labelled examples need {n // k} per class, but the smallest "
                         f"class has only {int(counts.min())}; choose at most "
                         f"{int(counts.min()) * k}")
    gen = make_generator(seed)
    picks = []
    for c in classes:
        idx = (y == c).nonzero().flatten().cpu()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[: n // len(classes)]])
    order = torch.cat(picks)
    order = order[torch.randperm(len(order), generator=gen)].to(y.device)
    return X[order], y[order]


def book_cnn(num_classes: int, *, seed: int | None = None) -> nn.Module:
    """The book's source network: a narrow :class:`~d2lcore.conv.SmallResNet`. Its
    globally pooled convolutional features transfer to new classes far better than
    LeNet's dense layers, which specialize to the source classes.

    With a ``seed`` its initial weights come from that seed alone (the caller's random
    state is left as it was); without one, from torch's global generator."""
    if seed is None:
        return SmallResNet((8, 16, 32), num_classes=num_classes)
    with seeded(seed):
        return SmallResNet((8, 16, 32), num_classes=num_classes)


@dataclass(frozen=True)
class SourceConfig:
    """How the source network is pretrained (Adam, cross-entropy)."""

    classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    num_epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 128
    seed: int = 0


def checkpoint_key(config: SourceConfig, train: Split, val: Split) -> str:
    """Everything the source network depends on: the ``d2lcore`` code, ``config``, the
    data, and the torch version."""
    payload = {"format": CHECKPOINT_FORMAT, "config": asdict(config),
               "data": cache.tensor_digest(*train, *val)}  # fmt: skip
    return cache.key(payload)


def pretrain_source(
    config: SourceConfig,
    train: Split,
    val: Split,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
) -> RunResult:
    """The source network trained on ``train`` (labels already ``0 .. k-1``), loaded from
    the cache folder when a checkpoint with the same :func:`checkpoint_key` is there,
    else trained and saved.

    Returns a :class:`~d2lcore.train.RunResult`: the network in ``model``, its history
    (kept in the checkpoint), ``metrics`` ``val_acc`` and ``seconds`` (of the training,
    whenever it happened), and ``extras`` ``cached`` (loaded, not trained now),
    ``path`` (the checkpoint) and ``key``."""
    device = get_device(device)
    folder = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
    key = checkpoint_key(config, train, val)
    path = folder / f"source-{key}.pt"

    def result(model: nn.Module, meta: dict[str, Any], cached: bool) -> RunResult:
        history = History.from_dict(meta.get("history") or {})
        metrics = {"val_acc": float(meta["val_acc"]), "seconds": float(meta["seconds"])}
        return RunResult(config=asdict(config), history=history, metrics=metrics,
                         extras={"cached": cached, "path": str(path), "key": key},
                         model=model.to(device))  # fmt: skip

    if path.is_file():
        model = book_cnn(len(config.classes), seed=config.seed)  # weights replaced on load
        try:
            meta = load_pretrained(path, model)
            run = result(model, meta, cached=True)
            if meta.get("key") == key and valid_run(run):
                return run
        except (CheckpointError, KeyError, TypeError, ValueError, AttributeError):
            pass  # a damaged or older cache entry: train again and overwrite it
    model = book_cnn(len(config.classes), seed=config.seed)
    data = Splits(train, val, batch_size=config.batch_size, seed=config.seed)
    with seeded(config.seed):  # a module drawing from the global stream stays repeatable
        history = fit(model, data.loader(device=device), loss_fn=nn.CrossEntropyLoss(),
                      optimizer=torch.optim.Adam(model.parameters(), lr=config.lr),
                      num_epochs=config.num_epochs,
                      val_batches=data.loader("val", device=device), device=device)  # fmt: skip
    meta = {"key": key, "config": asdict(config), "val_acc": history.val_acc[-1],
            "seconds": sum(history.seconds), "history": history.to_dict()}  # fmt: skip
    try:
        save_checkpoint(path, model, meta)
    except OSError:  # a read-only or full disk must not break the page
        pass
    return result(model, meta, cached=False)


# ----------------------------------------------------------------------------------
# Training on the target


Transform = Callable[[torch.Tensor], torch.Tensor]


class AugmentedLoader:
    """Minibatches ``(X, y)`` of ``loader`` with ``transform`` applied to every image
    separately (each gets its own random crop or shift)."""

    def __init__(self, loader: Iterable[Batch], transform: Transform) -> None:
        self.loader = loader
        self.transform = transform

    def __iter__(self) -> Iterator[Split]:
        for X, y in self.loader:
            yield torch.stack([self.transform(x) for x in X]), y


class StepLoader:
    """``steps`` minibatches of ``loader`` per pass, continuing where the last pass
    stopped and starting a new shuffled round of ``loader`` whenever one runs out.

    With a few hundred labels an epoch is a handful of steps; counting "epochs" of a
    fixed number of steps instead gives runs with different numbers of labels the same
    budget and the same points of evaluation."""

    def __init__(self, loader: Iterable[Batch], steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps per epoch must be at least 1, not {steps}")
        self.loader = loader
        self.steps = steps
        self._it: Iterator[Batch] | None = None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            batch = next(self._it, None) if self._it is not None else None
            if batch is None:
                self._it = iter(self.loader)
                batch = next(self._it, None)
                if batch is None:
                    raise ValueError("the training loader yields no minibatches")
            yield batch


@dataclass(frozen=True)
class FineTuneConfig:
    """One way of training on the target: ``body_lr_mult`` scales the learning rate of
    the pretrained layers (0: frozen, a linear probe; 1: the same as the head).
    ``steps_per_epoch`` makes an epoch that many minibatches (see :class:`StepLoader`)
    instead of one pass over the training data."""

    lr: float = 1e-3
    body_lr_mult: float = 0.1
    num_epochs: int = 10
    batch_size: int = 25
    seed: int = 0
    steps_per_epoch: int | None = None


def fine_tune(
    model: nn.Module,
    config: FineTuneConfig,
    train: Split,
    val: Split,
    test: Split | None = None,
    *,
    augment: Transform | None = None,
    device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
    restore_best: bool = False,
) -> RunResult:
    """Train ``model`` (its head already replaced) on the target with Adam over
    :func:`param_groups`; a ``body_lr_mult`` of 0 freezes the body, its batch-norm
    statistics included (:func:`frozen_norm`). ``test_acc`` is the
    accuracy on ``test`` at the end; ``on_epoch_end`` is passed to
    :func:`~d2lcore.train.fit` (live controls show progress with it).

    ``restore_best`` is early stopping chosen on validation: the weights of the epoch
    with the best validation accuracy (the earliest of equals) are restored before the
    test, and ``metrics`` records ``best_epoch`` (1-based) and ``best_val_acc``. The
    history still holds every epoch.

    ``config.seed`` fixes the minibatch order and whatever draws from torch's global
    generator during training (``augment``'s random transforms, dropout), inside
    :func:`~d2lcore.train.seeded`: the caller's random state is left as it was."""
    device = get_device(device)
    probe = config.body_lr_mult == 0
    if probe:  # a linear probe: body parameters and batch-norm statistics frozen
        freeze_body(model)
    optimizer = torch.optim.Adam(param_groups(model, config.lr, config.body_lr_mult))
    data = Splits(train, val, test, batch_size=config.batch_size, seed=config.seed)
    loader: Iterable[Batch] = data.loader(device=device)
    if config.steps_per_epoch is not None:
        loader = StepLoader(loader, config.steps_per_epoch)
    batches = loader if augment is None else AugmentedLoader(loader, augment)
    loss_fn = nn.CrossEntropyLoss()
    best = BestOnVal(model, on_epoch_end)
    hook = best if restore_best else on_epoch_end
    with seeded(config.seed), frozen_norm(model) if probe else nullcontext():
        history = fit(model, batches, loss_fn=loss_fn, optimizer=optimizer,
                      num_epochs=config.num_epochs, val_batches=data.loader("val", device=device),
                      device=device, on_epoch_end=hook)  # fmt: skip
    metrics: dict[str, float] = {}
    if restore_best and best.state is not None:
        model.load_state_dict(best.state)
        metrics = {"best_epoch": float(best.epoch), "best_val_acc": best.val_acc}
    test_acc = None
    if test is not None and not history.diverged:
        test_acc = evaluate(model, data.loader("test", device=device), loss_fn,
                            device=device).accuracy  # fmt: skip
    return RunResult(config=asdict(config), history=history, test_acc=test_acc,
                     metrics=metrics, model=model)  # fmt: skip


class BestOnVal:
    """An epoch hook that keeps a copy of ``model``'s weights whenever its validation
    accuracy is the best so far (then calls ``then``, if given)."""

    def __init__(self, model: nn.Module, then: EpochHook | None = None) -> None:
        self.model, self.then = model, then
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch, self.val_acc = 0, float("-inf")

    def __call__(self, epoch: int, history: History) -> None:
        if history.val_acc and history.val_acc[-1] > self.val_acc:
            self.val_acc, self.epoch = history.val_acc[-1], history.num_epochs
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.then is not None:
            self.then(epoch, history)
