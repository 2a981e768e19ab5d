"""Fine-tuning: reuse a network trained on a source task for a target task.

The four steps: pretrain on the source data (:func:`pretrain_source`, cached on disk as a
checkpoint), copy the network without its output layer and add a new one
(:func:`replace_head`), then train on the target with the new layer learning from scratch
and the rest gently (:func:`param_groups`, :func:`fine_tune`). :func:`load_pretrained`
reads the book's checkpoints and plain ``state_dict`` files such as torchvision's.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d2lcore import cache
from d2lcore.conv import SmallResNet
from d2lcore.data import Split, Splits
from d2lcore.device import get_device, make_generator
from d2lcore.grid import valid_run
from d2lcore.metrics import Batch, evaluate
from d2lcore.train import EpochHook, History, RunResult, fit, seeded

HEAD_INITS = ("default", "zero")
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit the model."""


# ----------------------------------------------------------------------------------
# The output layer: find it, replace it, freeze everything else


def head_name(model: nn.Module) -> str:
    """The qualified name of the output layer: the last ``nn.Linear`` registered in
    ``model`` (``"net.9"`` for :class:`~d2lcore.conv.LeNet`, ``"fc"`` for torchvision's
    ResNets, ``"head.2"`` for :class:`~d2lcore.conv.SmallResNet`)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer to replace")
    return names[-1]


def get_head(model: nn.Module) -> nn.Linear:
    """The output layer (see :func:`head_name`)."""
    head = model.get_submodule(head_name(model))
    assert isinstance(head, nn.Linear)
    return head


def replace_head(
    model: nn.Module,
    num_classes: int,
    *,
    init: str = "default",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Replace the output layer in place by a new ``nn.Linear`` with ``num_classes``
    outputs and the same inputs; return ``model``.

    Args:
        init: ``"default"`` (PyTorch's uniform initialization, drawn from ``generator``)
            or ``"zero"`` (all weights and biases 0: every class starts equally likely).
    """
    if init not in HEAD_INITS:
        raise ValueError(f"unknown head init {init!r}; choose from {HEAD_INITS}")
    name = head_name(model)
    old = get_head(model)
    with seeded(0):  # its own init is overwritten below: keep the caller's random stream
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device)
    with torch.no_grad():
        if init == "zero":
            new.weight.zero_()
            new.bias.zero_()
        else:  # nn.Linear's own rule, from a seeded stream
            bound = 1 / math.sqrt(old.in_features)
            new.weight.copy_(_uniform(new.weight.shape, bound, generator))
            new.bias.copy_(_uniform(new.bias.shape, bound, generator))
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def freeze_body(model: nn.Module) -> nn.Module:
    """Stop gradients to every parameter but the output layer's; return ``model``.

    Only parameters are frozen: batch-normalization layers in training mode would still
    normalize with batch statistics and update their running ones. :func:`frozen_norm`
    freezes those too (:func:`fine_tune` uses it for a linear probe)."""
    head = {id(p) for p in get_head(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    return model


@contextmanager
def frozen_norm(model: nn.Module) -> Iterator[nn.Module]:
    """Keep every batch-normalization layer of ``model`` in evaluation mode inside the
    block, even when training calls ``model.train()``: it normalizes with its stored
    running statistics and never updates them. A frozen body stays the function it was
    pretrained as, normalization included."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks = [m.register_forward_pre_hook(_to_eval) for m in norms]
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()


def _to_eval(module: nn.Module, args: Any) -> None:
    module.train(False)


def param_groups(model: nn.Module, lr: float, body_lr_mult: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the output layer at ``lr``, the rest (the pretrained
    body) at ``lr * body_lr_mult``. Frozen parameters and a multiplier of 0 leave the
    body out."""
    head = {id(p) for p in get_head(model).parameters()}
    head_params = [p for p in model.parameters() if id(p) in head]
    body = [p for p in model.parameters() if id(p) not in head and p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": head_params, "lr": lr, "name": "head"}]
    if body and body_lr_mult > 0:
        groups.append({"params": body, "lr": lr * body_lr_mult, "name": "body"})
    return groups


# ----------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``{"format", "state_dict", "meta"}`` to ``path`` atomically (a reader never
    sees half a file); ``meta`` must be JSON-like (numbers, strings, lists, dicts)."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    entry = {"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": meta or {}}
    error = cache.atomic_write(path, lambda f: torch.save(entry, f))
    if error is not None:
        raise OSError(f"{path}: could not write the checkpoint: {error}")
    return path


def load_pretrained(
    path: str | os.PathLike[str], model: nn.Module, *, skip_head: bool = False
) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` and return the checkpoint's metadata.

    ``path`` is a checkpoint from :func:`save_checkpoint` or a plain ``state_dict`` (as
    torchvision's weight files are). Read with ``weights_only=True``: no code in the file
    runs. ``skip_head`` keeps ``model``'s own output layer (a head of another size).

    Raises:
        CheckpointError: the file is missing, not a checkpoint (garbage, truncated) or
            does not fit ``model`` (other layers or shapes); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file. Check the path, or save "
                              "one first (torch.save(model.state_dict(), path)).")  # fmt: skip
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as err:
        raise CheckpointError(f"{path}: cannot be read: permission denied. The file may be "
                              f"fine: give your user read access (chmod a+r {path}) or copy "
                              "it somewhere of yours.") from err  # fmt: skip
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                  f"({_first_line(err)}). The file is corrupt or incomplete: "
                                  "delete it and save or download it again.") from err  # fmt: skip
        name = found.group(1).removeprefix("builtins.")  # torch 2.4.1 writes builtins.getattr
        raise CheckpointError(
            f"{path}: refused: besides tensors it holds pickled Python objects, which could "
            "run code when loaded, so it is not loaded. If you made it yourself with "
            "torch.save(model, ...), load it once in a session you trust and save "
            "model.state_dict() instead; a file from elsewhere you do not trust should be "
            f"deleted. (It names {name}, which weights-only loading does not allow.)"
        ) from err
    except Exception as err:  # garbage or truncated: unreadable here
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{_first_line(err)}). The file is corrupt or incomplete: delete it and save "
            "or download it again."
        ) from err
    meta: dict[str, Any] = {}
    if isinstance(entry, dict) and "state_dict" in entry:
        state, meta = entry["state_dict"], dict(entry.get("meta") or {})
    else:
        state = entry
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state_dict of tensors. Save one with "
                              "torch.save(model.state_dict(), path).")  # fmt: skip
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise CheckpointError(f"{path}: holds NaN or infinite values in {broken[:5]}: the "
                              "network it was saved from had diverged, or the file is "
                              "damaged. Delete it and train or download it again.")  # fmt: skip
    head_keys = {f"{head_name(model)}.{k}" for k in ("weight", "bias")}
    if skip_head:
        state = {k: v for k, v in state.items() if k not in head_keys}
    try:
        result = model.load_state_dict(state, strict=not skip_head)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: {err}. Build the same "
            "architecture that saved the file (or pass skip_head=True if only the "
            "output layer differs)."
        ) from err
    missing = set(result.missing_keys) - head_keys
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}. Build the same architecture "
            "that saved the file."
        )
    return meta


def _first_line(err: BaseException) -> str:
    """The first line of an error's text, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
) -> RunResult:
    """Train ``model`` (its head already replaced) on the target with Adam over
    :func:`param_groups`; a ``body_lr_mult`` of 0 freezes the body, its batch-norm
    statistics included (:func:`frozen_norm`). ``test_acc`` is the
    accuracy on ``test`` at the end; ``on_epoch_end`` is passed to
    :func:`~d2lcore.train.fit` (live controls show progress with it).

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
    with seeded(config.seed), frozen_norm(model) if probe else nullcontext():
        history = fit(model, batches, loss_fn=loss_fn, optimizer=optimizer,
                      num_epochs=config.num_epochs, val_batches=data.loader("val", device=device),
                      device=device, on_epoch_end=on_epoch_end)  # fmt: skip
    test_acc = None
    if test is not None and not history.diverged:
        test_acc = evaluate(model, data.loader("test", device=device), loss_fn,
                            device=device).accuracy  # fmt: skip
    return RunResult(config=asdict(config), history=history, test_acc=test_acc, model=model)
