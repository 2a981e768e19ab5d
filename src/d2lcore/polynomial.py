"""Polynomial regression data: the classic setting for under- and overfitting.

The label is a cubic in a scalar ``x`` plus noise; the features are the scaled powers
``x**i / i!`` for ``i < max_degree``. A linear model on the first ``d + 1`` features
is a polynomial of degree ``d``: too few features cannot express the cubic
(underfitting), many more than needed can fit the noise of a small training set
(overfitting). The ``1 / i!`` keeps the large powers of ``x`` from dwarfing the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from d2lcore.data import Split
from d2lcore.device import get_device, make_generator

#: The cubic's coefficients for ``1, x, x**2 / 2!, x**3 / 3!`` (as in d2l).
TRUE_WEIGHTS = (5.0, 1.2, -3.4, 5.6)


def polynomial_features(x: torch.Tensor, max_degree: int) -> torch.Tensor:
    """Columns ``x**i / i!`` for ``i = 0, ..., max_degree - 1``: shape ``(n, max_degree)``."""
    powers = torch.arange(max_degree, dtype=x.dtype, device=x.device)  # (max_degree,)
    factorials = torch.tensor([math.factorial(i) for i in range(max_degree)],
                              dtype=x.dtype, device=x.device)  # fmt: skip
    return x.reshape(-1, 1) ** powers / factorials  # (n, max_degree)


def polynomial_data(
    num_train: int = 100,
    num_val: int = 100,
    *,
    max_degree: int = 20,
    true_w: Sequence[float] = TRUE_WEIGHTS,
    noise: float = 0.1,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[Split, Split]:
    """Training and validation splits of ``y = sum_i w_i x**i / i! + noise``.

    ``x ~ N(0, 1)``; the weights beyond ``true_w`` are zero and the noise is
    ``N(0, noise**2)``.

    Returns:
        ``((X_train, y_train), (X_val, y_val))`` with ``X`` of shape ``(n, max_degree)``
        (the features :func:`polynomial_features` makes) and ``y`` of shape ``(n, 1)``.
    """
    if len(true_w) > max_degree:
        raise ValueError(f"{len(true_w)} true weights need max_degree >= {len(true_w)}")
    gen = make_generator(seed)
    n = num_train + num_val
    x = torch.randn(n, generator=gen)  # (n,)
    X = polynomial_features(x, max_degree)  # (n, max_degree)
    w = torch.zeros(max_degree, 1)
    w[: len(true_w), 0] = torch.tensor([float(v) for v in true_w])
    y = X @ w + noise * torch.randn(n, 1, generator=gen)  # (n, 1)
    device = get_device(device)
    X, y = X.to(device), y.to(device)
    return (X[:num_train], y[:num_train]), (X[num_train:], y[num_train:])
