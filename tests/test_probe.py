"""Linear probes: logistic regression at its optimum, the penalty chosen on validation,
and the features a body computes per layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d2lcore.conv import SmallResNet
from d2lcore.probe import fit_logistic, layer_features, objective, probe_on_val


def _blobs(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k overlapping Gaussian classes in d dimensions (not separable: a finite optimum)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=gen)
    y = torch.randint(0, k, (n,), generator=gen)
    return centres[y] + 1.5 * torch.randn(n, d, generator=gen), y


def test_fit_logistic_reaches_the_optimum_gradient_descent_converges_to() -> None:
    X, y = _blobs(200, 6, 3, seed=0)
    probe = fit_logistic(X, y, l2=1e-2)
    assert probe.grad_norm < 1e-5 and probe.iterations > 1
    # the reference: plain gradient descent on the same convex objective, run long
    Z = ((X.double() - probe.mean.double()) / probe.std.double())
    W = torch.zeros(6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([W, b], lr=0.5)
    for _ in range(5000):
        optimizer.zero_grad()
        objective(Z, y, W, b, 1e-2).backward()
        optimizer.step()
    torch.testing.assert_close(probe.weight.double(), W.detach(), atol=1e-4, rtol=0)
    torch.testing.assert_close(probe.bias.double(), b.detach(), atol=1e-4, rtol=0)
    # and its logits are those of the standardized features
    torch.testing.assert_close(probe.logits(X).double(), (Z @ W + b).detach(), atol=1e-3,
                               rtol=0)  # fmt: skip


def test_a_larger_penalty_gives_smaller_weights_and_accuracy_is_counted() -> None:
    X, y = _blobs(300, 5, 4, seed=1)
    small, large = fit_logistic(X, y, l2=1e-4), fit_logistic(X, y, l2=1.0)
    assert large.weight.norm() < small.weight.norm()
    expected = (small.logits(X).argmax(1) == y).float().mean().item()
    assert small.accuracy(X, y) == expected and 0.5 < expected <= 1


def test_probe_on_val_chooses_the_penalty_with_the_best_validation_accuracy() -> None:
    train, val = _blobs(60, 20, 3, seed=2), _blobs(300, 20, 3, seed=2)
    l2s = (1e-4, 1e-1, 10.0)
    probe, acc = probe_on_val(train, val, l2s=l2s)
    by_l2 = {l2: fit_logistic(*train, l2=l2).accuracy(*val) for l2 in l2s}
    assert acc == max(by_l2.values()) and by_l2[probe.l2] == acc
    assert probe.l2 == next(l2 for l2 in l2s if by_l2[l2] == acc)  # the first of equals
    with pytest.raises(ValueError, match="empty"):
        probe_on_val(train, val, l2s=())


def test_fit_logistic_refuses_bad_input() -> None:
    X, y = _blobs(20, 3, 2, seed=3)
    with pytest.raises(ValueError, match="positive"):
        fit_logistic(X, y, l2=0.0)
    with pytest.raises(ValueError, match="one label each"):
        fit_logistic(X, y[:-1], l2=0.1)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        fit_logistic(X[:, :, None], y, l2=0.1)


def test_layer_features_are_the_pooled_outputs_of_stem_and_blocks() -> None:
    torch.manual_seed(0)
    model = SmallResNet((4, 8), num_classes=3).train()
    X = torch.rand(10, 1, 28, 28)
    feats = layer_features(model, X, pool=2, batch_size=4)
    assert list(feats) == ["stem", "block 1", "block 2"]
    assert model.training  # its mode is given back
    model.eval()
    with torch.no_grad():
        h0 = model.stem(X)
        h1 = model.blocks[0](h0)
        h2 = model.blocks[1](h1)
    for name, h in (("stem", h0), ("block 1", h1), ("block 2", h2)):
        torch.testing.assert_close(feats[name], F.adaptive_avg_pool2d(h, 2).flatten(1))
    assert feats["block 2"].shape == (10, 8 * 4)
    # pooled over the whole image, the last block's features are the head's input
    head_input = layer_features(model, X, pool=1)["block 2"]
    with torch.no_grad():
        torch.testing.assert_close(model.head[-1](head_input), model(X))
