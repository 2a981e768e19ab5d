"""Linear probes: logistic regression trained to convergence on fixed features.

A probe answers "how much of the target task can a linear classifier read off these
features?". That question has an answer only if the classifier is trained to its
optimum: the objective (mean cross-entropy plus an L2 penalty) is convex, so full-batch
L-BFGS reaches the minimum in a few hundred iterations, and :attr:`LinearProbe.grad_norm`
shows that it did. A probe trained for a fixed, small number of SGD steps measures its
step budget as much as its features.

:func:`probe_on_val` chooses the penalty on validation data; :func:`layer_features`
reads the features a convolutional body computes after its stem and after each block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from d2lcore.data import Split

#: The L2 penalties :func:`probe_on_val` tries (on standardized features).
L2_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression on standardized features: the logits of
    features ``h`` are ``((h - mean) / std) @ weight + bias``."""

    weight: torch.Tensor  # (d, k)
    bias: torch.Tensor  # (k,)
    mean: torch.Tensor  # (d,)
    std: torch.Tensor  # (d,)
    l2: float
    #: the gradient norm of the objective where L-BFGS stopped (about 0 at the optimum)
    grad_norm: float
    iterations: int

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.std) @ self.weight + self.bias

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return (self.logits(features).argmax(dim=1) == labels).float().mean().item()


def objective(Z: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
              l2: float) -> torch.Tensor:  # fmt: skip
    """Mean cross-entropy of the logits ``Z @ W + b`` plus ``l2 / 2 * ||W||^2``."""
    return F.cross_entropy(Z @ W + b, y) + l2 / 2 * (W * W).sum()


def fit_logistic(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    l2: float,
    num_classes: int | None = None,
    max_iter: int = 1000,
    tol: float = 1e-5,
) -> LinearProbe:
    """Multinomial logistic regression with an L2 penalty, trained to convergence by
    full-batch L-BFGS on the standardized ``features`` ``(n, d)``.

    L-BFGS stops when the largest gradient entry is below ``tol`` or after ``max_iter``
    iterations; the objective is strictly convex for ``l2 > 0``, so its minimum is
    unique and the weights do not depend on where the optimizer starts."""
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be (n, d) with one label each, got "
                         f"{tuple(features.shape)} and {len(labels)} labels")  # fmt: skip
    if l2 <= 0:
        raise ValueError(f"the L2 penalty must be positive (the optimum is then unique), "
                         f"not {l2}")  # fmt: skip
    X = features.detach().double()
    k = num_classes if num_classes is not None else int(labels.max()) + 1
    mean, std = X.mean(dim=0), X.std(dim=0) + 1e-6
    Z = (X - mean) / std
    W = torch.zeros(X.shape[1], k, dtype=Z.dtype, device=Z.device, requires_grad=True)
    b = torch.zeros(k, dtype=Z.dtype, device=Z.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-12, history_size=20,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective(Z, labels, W, b, l2)
        loss.backward()
        return loss

    optimizer.step(closure)
    closure()
    grads = [p.grad for p in (W, b) if p.grad is not None]
    grad_norm = torch.cat([g.flatten() for g in grads]).norm().item()
    iterations = int(optimizer.state[optimizer._params[0]]["n_iter"])
    f32 = features.dtype if features.is_floating_point() else torch.float32
    return LinearProbe(W.detach().to(f32), b.detach().to(f32), mean.to(f32), std.to(f32),
                       l2, grad_norm, iterations)  # fmt: skip


def probe_on_val(train: Split, val: Split, *, l2s: Sequence[float] = L2_PENALTIES,
                 num_classes: int | None = None) -> tuple[LinearProbe, float]:  # fmt: skip
    """The probe, of one per penalty in ``l2s``, with the best accuracy on ``val``
    (features and labels), and that accuracy. The test split plays no part."""
    best: tuple[LinearProbe, float] | None = None
    for l2 in l2s:
        probe = fit_logistic(*train, l2=l2, num_classes=num_classes)
        acc = probe.accuracy(*val)
        if best is None or acc > best[1]:
            best = (probe, acc)
    if best is None:
        raise ValueError("l2s is empty: give at least one penalty to try")
    return best


def layer_features(model: nn.Module, X: torch.Tensor, *, pool: int = 2,
                   batch_size: int = 1000) -> dict[str, torch.Tensor]:  # fmt: skip
    """What a network with a ``stem`` and ``blocks`` (a
    :class:`~d2lcore.conv.SmallResNet`) computes for images ``X`` after its stem and
    after each block, average-pooled to ``pool`` x ``pool`` and flattened: ``{"stem":
    (n, c * pool**2), "block 1": ..., ...}``. Run in evaluation mode (batch
    normalization with its running statistics), as a frozen body computes them."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stem, blocks = model.stem, model.blocks
    if not (isinstance(stem, nn.Module) and isinstance(blocks, nn.Sequential)):
        raise TypeError(f"{type(model).__name__} has no `stem` module and `blocks` sequence "
                        "to read features from (a SmallResNet has both)")  # fmt: skip
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for chunk in X.split(batch_size):
            with torch.no_grad():
                h = stem(chunk.to(device))
                outputs = [("stem", h)]
                for i, block in enumerate(blocks, start=1):
                    h = block(h)
                    outputs.append((f"block {i}", h))
            for name, out in outputs:
                parts.setdefault(name, []).append(F.adaptive_avg_pool2d(out, pool).flatten(1))
    finally:
        model.train(was_training)
    return {name: torch.cat(chunks) for name, chunks in parts.items()}
