"""The learning-rate range test (Smith, "Cyclical learning rates", 2017): train a fresh
model for a few hundred steps while the rate grows geometrically, record the loss of
every step, and read a learning rate off the curve.

:func:`lr_range_test` runs it with ``torch.optim.SGD``; :func:`suggest_lr` applies one of
two common rules to its smoothed loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["RangeTest", "lr_range_test", "suggest_lr"]

RULES = ("min", "min/10", "steepest")


@dataclass
class RangeTest:
    """One range test: the rate, loss and smoothed loss of every step taken."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]


def lr_range_test(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    lr_start: float = 1e-5,
    lr_end: float = 10.0,
    num_steps: int = 300,
    beta: float = 0.9,
    stop_factor: float = 4.0,
    momentum: float = 0.0,
) -> RangeTest:
    """Train ``model`` with SGD for ``num_steps`` minibatches of ``batches`` (passed over
    again as often as needed), the rate of step ``t`` being
    ``lr_start * (lr_end / lr_start) ** (t / (num_steps - 1))``.

    ``smoothed`` is the bias-corrected exponential moving average of the loss with
    factor ``beta`` (it lags about ``beta / (1 - beta)`` steps). The test stops early
    once the smoothed loss exceeds ``stop_factor`` times its smallest value, or the loss
    is no longer finite: the rate has passed the point of divergence.
    """
    if not 0 < lr_start < lr_end:
        raise ValueError(f"need 0 < lr_start < lr_end, not {lr_start} and {lr_end}")
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2, not {num_steps}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1), not {beta}")
    ratio = (lr_end / lr_start) ** (1 / (num_steps - 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_start, momentum=momentum)
    out = RangeTest([], [], [])
    average, best = 0.0, math.inf
    model.train()
    while len(out.lrs) < num_steps:
        for X, y in batches:
            t = len(out.lrs)
            lr = lr_start * ratio**t
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                return out
            average = beta * average + (1 - beta) * value
            smooth = average / (1 - beta ** (t + 1))  # bias correction, as in Adam
            out.lrs.append(lr)
            out.losses.append(value)
            out.smoothed.append(smooth)
            best = min(best, smooth)
            if smooth > stop_factor * best or len(out.lrs) == num_steps:
                return out
    return out


def suggest_lr(test: RangeTest, rule: str = "min/10") -> float:
    """A learning rate read off ``test``'s smoothed loss.

    ``"min"``: the rate where the smoothed loss is smallest, past which training starts
    to fail; ``"min/10"``: a tenth of that, a rate safely below the edge; ``"steepest"``:
    the rate, below the minimum, where the smoothed loss falls fastest against
    ``log(lr)`` (central differences).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
    if len(test.lrs) < 3:
        raise ValueError("the range test took fewer than 3 steps")
    s = test.smoothed
    low = min(range(len(s)), key=s.__getitem__)
    if rule != "steepest":
        return test.lrs[low] / (10 if rule == "min/10" else 1)
    logs = [math.log(lr) for lr in test.lrs]
    inner = range(1, max(low, 2))  # up to the minimum: past it the curve is noise and blow-up
    slopes = {i: (s[i + 1] - s[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in inner}
    return test.lrs[min(slopes, key=slopes.__getitem__)]
