"""The learning-rate range test: its schedule of rates, early stop and rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from d2lcore.lr_range import RangeTest, lr_range_test, suggest_lr


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=gen)
    y = (X[:, 0] > 0).long()
    return [(X[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def test_rates_grow_geometrically_and_loss_is_recorded() -> None:
    torch.manual_seed(0)
    test = lr_range_test(nn.Linear(5, 2), batches(), nn.functional.cross_entropy,
                         lr_start=1e-4, lr_end=1e-2, num_steps=9, stop_factor=1e9)
    assert len(test.lrs) == len(test.losses) == len(test.smoothed) == 9
    assert test.lrs[0] == pytest.approx(1e-4) and test.lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in zip(test.lrs[:-1], test.lrs[1:], strict=True)]
    assert max(ratios) == pytest.approx(min(ratios))
    assert test.smoothed[0] == pytest.approx(test.losses[0])  # bias-corrected average


def test_stops_once_the_loss_blows_up() -> None:
    torch.manual_seed(0)
    test = lr_range_test(nn.Linear(5, 2), batches(), nn.functional.cross_entropy,
                         lr_start=1e-3, lr_end=1e6, num_steps=200)
    assert len(test.lrs) < 200
    assert all(math.isfinite(v) for v in test.losses)


def test_rules() -> None:
    lrs = [10.0 ** (k / 4) for k in range(-12, 5)]  # 1e-3 ... 10
    # A loss that falls fastest at lr = 0.01, is lowest at lr = 1 and rises after.
    smoothed = [2 - math.tanh(2 * (math.log10(lr) + 2)) + max(0.0, math.log10(lr)) ** 2 * 9
                for lr in lrs]
    smoothed = [v - 0.01 * math.log10(lr) * (lr <= 1) for v, lr in zip(smoothed, lrs, strict=True)]
    test = RangeTest(lrs, smoothed, smoothed)
    assert suggest_lr(test, "min") == pytest.approx(1.0)
    assert suggest_lr(test, "min/10") == pytest.approx(0.1)
    assert suggest_lr(test, "steepest") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown rule"):
        suggest_lr(test, "valley")
