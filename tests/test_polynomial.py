"""Polynomial regression data: features by hand, labels from the cubic, splits."""

from __future__ import annotations

import math

import pytest
import torch

from d2lcore.polynomial import TRUE_WEIGHTS, polynomial_data, polynomial_features


def test_features_are_scaled_powers():
    x = torch.tensor([-1.5, 0.0, 2.0])
    F = polynomial_features(x, 6)
    assert F.shape == (3, 6)
    for r, xv in enumerate(x.tolist()):
        for i in range(6):
            assert F[r, i].item() == pytest.approx(xv**i / math.factorial(i), rel=1e-6)


def test_labels_are_the_cubic_plus_noise_of_the_given_size():
    (X, y), (Xv, yv) = polynomial_data(200, 300, max_degree=20, noise=0.1, seed=3, device="cpu")
    assert X.shape == (200, 20) and y.shape == (200, 1)
    assert Xv.shape == (300, 20) and yv.shape == (300, 1)
    # The second feature is x itself; the first four weights make the label.
    x = torch.cat([X[:, 1], Xv[:, 1]])
    torch.testing.assert_close(torch.cat([X, Xv]), polynomial_features(x, 20))
    cubic = sum(w * x**i / math.factorial(i) for i, w in enumerate(TRUE_WEIGHTS))
    residual = torch.cat([y, yv]).flatten() - cubic
    assert residual.std().item() == pytest.approx(0.1, rel=0.15)
    assert abs(residual.mean().item()) < 0.03
    # Least squares on the four true features recovers the weights.
    w = torch.linalg.lstsq(X[:, :4].double(), y.double()).solution.flatten()
    torch.testing.assert_close(w, torch.tensor(TRUE_WEIGHTS, dtype=torch.float64),
                               atol=0.1, rtol=0)  # fmt: skip


def test_same_seed_same_data_and_checks():
    a = polynomial_data(10, 5, seed=1, device="cpu")
    b = polynomial_data(10, 5, seed=1, device="cpu")
    torch.testing.assert_close(a, b)
    c = polynomial_data(10, 5, seed=2, device="cpu")
    assert not torch.equal(a[0][0], c[0][0])
    with pytest.raises(ValueError, match="max_degree"):
        polynomial_data(10, 5, max_degree=3)
