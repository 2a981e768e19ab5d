"""Optimizers on a two-dimensional quadratic, for figures: many runs in one batched
computation.

The quadratic ``f(w) = 1/2 w^T H w`` with ``H = R diag(1/kappa, 1) R^T`` (``R`` a
rotation by ``angle``) has its minimum at 0, largest curvature ``lambda_max = 1`` and
condition number ``kappa``: gradient descent converges for ``lr < 2`` whatever
``kappa``, and crawls along the flat direction (curvature ``1/kappa``) when ``kappa`` is
large. :func:`quadratic_paths` runs one optimizer from one start for a batch of
configurations (one learning rate, momentum and ``kappa`` per row) and returns every
path: ``torch.optim``'s own optimizers, one parameter group per row, with every row's
gradient computed in one batched product. Everything is float64 on the CPU.
"""

from __future__ import annotations

import math

import torch

__all__ = ["QUADRATIC_OPTIMIZERS", "quadratic_hessians", "quadratic_paths"]

#: The optimizers :func:`quadratic_paths` runs. ``momentum`` is the heavy-ball
#: coefficient of ``"sgd"``, ``"nesterov"`` and ``"rmsprop"`` (``torch.optim``'s
#: ``momentum``) and Adam's ``beta1``.
QUADRATIC_OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adam")
ADAM_BETA2 = 0.999  # torch.optim.Adam's default


def quadratic_hessians(kappa: torch.Tensor, angle: float = 0.0) -> torch.Tensor:
    """``R diag(1/kappa, 1) R^T`` for each condition number of ``kappa`` ``(B,)``, with
    ``R`` the rotation by ``angle`` (radians): shape ``(B, 2, 2)``, float64."""
    kappa = torch.as_tensor(kappa, dtype=torch.float64).flatten()
    if not bool((kappa >= 1).all()):
        raise ValueError(f"condition numbers must be >= 1, got {kappa.tolist()}")
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    D = torch.diag_embed(torch.stack([1 / kappa, torch.ones_like(kappa)], dim=1))  # (B, 2, 2)
    return R @ D @ R.T


def quadratic_paths(
    optimizer: str,
    hessians: torch.Tensor,
    *,
    lr: torch.Tensor | float,
    momentum: torch.Tensor | float = 0.0,
    start: tuple[float, float] = (-4.0, 2.0),
    num_steps: int = 100,
) -> torch.Tensor:
    """Run ``optimizer`` on ``f(w) = 1/2 w^T H w`` for every ``H`` of ``hessians``
    ``(B, 2, 2)`` at once, from ``start``.

    Args:
        optimizer: one of :data:`QUADRATIC_OPTIMIZERS`, each as ``torch.optim`` computes
            it (``SGD``, ``SGD(nesterov=True)``, ``RMSprop``, ``Adam``) with its default
            ``alpha``, ``betas[1]`` and ``eps``.
        lr, momentum: one number for every row, or one per row ``(B,)``. ``momentum`` is
            Adam's ``beta1``.
        num_steps: how many updates.

    Returns:
        The paths, shape ``(B, num_steps + 1, 2)``: the start, then ``w`` after each
        step. A diverging path may reach ``inf`` or ``nan``; nothing is raised.
    """
    if optimizer not in QUADRATIC_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {QUADRATIC_OPTIMIZERS}")
    if hessians.dim() != 3 or hessians.shape[1:] != (2, 2):
        raise ValueError(f"hessians must have shape (B, 2, 2), got {tuple(hessians.shape)}")
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    H = hessians.to(torch.float64)
    B = len(H)

    def per_row(name: str, value: torch.Tensor | float, low: float, high: float) -> torch.Tensor:
        v = torch.as_tensor(value, dtype=torch.float64).flatten()
        v = v.expand(B).reshape(B, 1) if v.numel() == 1 else v.reshape(B, 1)
        if not bool(((v >= low) & (v < high)).all()):
            raise ValueError(f"{name} must lie in [{low:g}, {high:g}), got {v.flatten().tolist()}")
        return v

    lr_, mu = per_row("lr", lr, 0.0, math.inf), per_row("momentum", momentum, 0.0, 1.0)
    rows = [torch.tensor(start, dtype=torch.float64, requires_grad=True) for _ in range(B)]
    opt = _optimizer(optimizer, rows, lr_.flatten().tolist(), mu.flatten().tolist())
    path = [torch.stack(rows).detach()]
    for _ in range(num_steps):
        with torch.no_grad():
            w = torch.stack(rows)  # (B, 2)
            for p, g in zip(rows, (H @ w.unsqueeze(-1)).squeeze(-1), strict=True):
                p.grad = g  # the gradient H w of each row
        opt.step()
        path.append(torch.stack(rows).detach())
    return torch.stack(path, dim=1)


def _optimizer(name: str, rows: list[torch.Tensor], lr: list[float],
               momentum: list[float]) -> torch.optim.Optimizer:  # fmt: skip
    """``torch.optim``'s ``name`` over ``rows``, each its own group with its own ``lr``
    and ``momentum`` (Adam's ``beta1``)."""
    if name == "adam":
        return torch.optim.Adam([{"params": [p], "lr": r, "betas": (m, ADAM_BETA2)}
                                 for p, r, m in zip(rows, lr, momentum, strict=True)])  # fmt: skip
    groups = [{"params": [p], "lr": r, "momentum": m}
              for p, r, m in zip(rows, lr, momentum, strict=True)]  # fmt: skip
    if name == "rmsprop":
        return torch.optim.RMSprop(groups)
    # Nesterov's check reads the default momentum; a group of momentum 0 is plain SGD.
    return torch.optim.SGD(groups, momentum=0.5, nesterov=name == "nesterov")
