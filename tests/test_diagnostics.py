"""Layer statistics, checked against the gradients worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from d2lcore.diagnostics import LayerStats, layer_statistics
from d2lcore.models import MLP


def pstd(t: torch.Tensor) -> float:
    return float(t.double().std(unbiased=False))


def test_matches_a_hand_computed_two_layer_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    X, y = torch.randn(5, 3), torch.randn(5, 2)
    stats = layer_statistics(model, X, y, nn.MSELoss())

    # The same network, forward and backward, by hand.
    W1, b1 = model[0].weight.detach(), model[0].bias.detach()
    W2, b2 = model[2].weight.detach(), model[2].bias.detach()
    h1 = X @ W1.T + b1  # (5, 4) pre-activation
    a1 = h1.clamp(min=0)  # (5, 4)
    out = a1 @ W2.T + b2  # (5, 2)
    d_out = 2 * (out - y) / out.numel()  # d mean((out - y)^2) / d out
    dW2 = d_out.T @ a1  # (2, 4)
    d_h1 = (d_out @ W2) * (h1 > 0)  # back through the ReLU
    dW1 = d_h1.T @ X  # (4, 3)

    assert [s.name for s in stats] == ["0", "2"]
    expected = [
        LayerStats("0", pstd(X), pstd(h1), pstd(dW1), pstd(d_h1)),
        LayerStats("2", pstd(a1), pstd(out), pstd(dW2), pstd(d_out)),
    ]
    for got, want in zip(stats, expected, strict=True):
        for field in ("input_std", "output_std", "weight_grad_std", "output_grad_std"):
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-5), field
    # The gradients stay on the parameters, as one backward pass made them.
    torch.testing.assert_close(model[0].weight.grad, dW1)


def test_zero_weights_give_zero_gradients_below_the_output_layer():
    model = MLP(8, (16, 16), 3)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    X, y = torch.randn(10, 8), torch.randint(0, 3, (10,))
    stats = layer_statistics(model, X, y, nn.CrossEntropyLoss())
    assert len(stats) == 3
    assert [s.weight_grad_std for s in stats[:2]] == [0.0, 0.0]
    assert stats[1].input_std == 0.0  # every hidden unit outputs relu(0) = 0
    assert stats[2].output_grad_std > 0  # the loss still reaches the logits


def test_relu_activations_explode_with_a_large_init_and_vanish_with_a_small_one():
    torch.manual_seed(0)
    X, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    ratios = {}
    for std in (0.01, 1.0):
        model = MLP(32, (128,) * 6, 10)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, std)
                nn.init.zeros_(m.bias)
        stats = layer_statistics(model, X, y, nn.CrossEntropyLoss())
        ratios[std] = stats[-1].input_std / stats[1].input_std
    # Each ReLU layer multiplies the scale by about std * sqrt(128 / 2): 0.08 or 8, and
    # five layers lie between the first hidden layer and the last.
    assert ratios[0.01] < 1e-4 < 1e4 < ratios[1.0]


def test_hooks_are_removed_and_training_mode_is_kept():
    model = MLP(4, (8,), 2, dropout=0.5)
    model.eval()
    X, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    layer_statistics(model, X, y, nn.CrossEntropyLoss())
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())
    stats = layer_statistics(model, X, y, nn.CrossEntropyLoss())
    assert all(math.isfinite(s.weight_grad_std) for s in stats)
