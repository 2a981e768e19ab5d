"""Accuracy and evaluation of a model on a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: A minibatch: ``(X, y)``, as a loader yields it.
Batch = tuple[torch.Tensor, ...]


def num_correct(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of rows whose largest logit is the true class (a 0-d tensor)."""
    return (y_hat.argmax(dim=1) == y).sum()


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``y_hat`` (n, classes) whose argmax equals ``y`` (n,)."""
    return float(num_correct(y_hat, y)) / len(y)


@dataclass
class Evaluation:
    """Mean loss over a data set, and accuracy when the targets are class indices."""

    loss: float
    accuracy: float | None


def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: LossFn,
    *,
    device: torch.device | None = None,
) -> Evaluation:
    """Average ``loss_fn`` (a mean-reducing loss) and accuracy over ``batches``.

    The model is put in evaluation mode (no dropout) and restored afterwards.
    Accuracy is computed only when the targets are integer class indices.
    """
    was_training = model.training
    model.eval()
    total_loss = total_correct = None
    n = 0
    classify = False
    with torch.no_grad():
        for X, y in batches:
            if device is not None:
                X, y = X.to(device), y.to(device)
            y_hat = model(X)
            batch_loss = loss_fn(y_hat, y) * len(y)
            total_loss = batch_loss if total_loss is None else total_loss + batch_loss
            classify = not y.is_floating_point()
            if classify:
                c = num_correct(y_hat, y)
                total_correct = c if total_correct is None else total_correct + c
            n += len(y)
    model.train(was_training)
    if n == 0 or total_loss is None:
        raise ValueError("evaluate got no batches")
    acc = float(total_correct) / n if classify and total_correct is not None else None
    return Evaluation(loss=float(total_loss) / n, accuracy=acc)
