"""The playground's data: four seeded, balanced 2-D data sets (circles, moons, XOR, a
two-arm spiral) drawn in torch (:func:`make_dataset`), and a data set's training and
test points (:func:`playground_data`). The MLPs of :mod:`d2lcore.playground` learn to
tell their two classes apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from d2lcore.data import Split
from d2lcore.device import make_generator

DATASETS = ("circles", "moons", "xor", "spiral")


def make_dataset(name: str, num_points: int, *, noise: float = 0.1,
                 seed: int = 0) -> Split:  # fmt: skip
    """``num_points`` points ``X`` ``(n, 2)`` of data set ``name`` with labels ``y``
    ``(n,)``: the first half class 0, the rest class 1, Gaussian ``noise`` added to the
    coordinates, which lie within about [-1.2, 1.2]. Drawn from a generator of its own
    seeded with ``seed``."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")
    if num_points < 2 or num_points % 2:
        raise ValueError(f"num_points must be even and at least 2, not {num_points}")
    g = make_generator(seed)
    half = num_points // 2
    y = torch.cat([torch.zeros(half), torch.ones(half)]).long()

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    if name == "circles":  # a disk inside a ring
        r = torch.cat([0.5 * uniform(half), 0.7 + 0.3 * uniform(half)])
        a = 2 * math.pi * uniform(num_points)
        X = torch.stack([r * a.cos(), r * a.sin()], dim=1)
    elif name == "moons":  # two interleaving half circles
        t = math.pi * uniform(num_points)
        upper = torch.stack([t[:half].cos(), t[:half].sin()], dim=1)
        lower = torch.stack([1 - t[half:].cos(), 0.5 - t[half:].sin()], dim=1)
        X = (torch.cat([upper, lower]) - torch.tensor([0.5, 0.25])) / 1.2
    elif name == "xor":  # class 0 where x1 and x2 have the same sign
        X = 2 * uniform(num_points, 2) - 1
        X = (X + 0.1 * X.sign()) / 1.1  # a margin along the axes
        same = X[:, 0] * X[:, 1] > 0
        X[:, 0] = torch.where(same == (y == 0), X[:, 0], -X[:, 0])
    else:  # spiral: two arms, half a turn apart
        r = 0.15 + 0.85 * uniform(num_points)
        a = 3 * math.pi * r + math.pi * y
        X = torch.stack([r * a.cos(), r * a.sin()], dim=1)
    return X + noise * torch.randn(num_points, 2, generator=g), y


@dataclass(frozen=True)
class PlaygroundData:
    """One data set's training and test points."""

    name: str
    train: Split
    test: Split


def playground_data(name: str, *, num_train: int = 200, num_test: int = 200,
                    noise: float = 0.1, seed: int = 0) -> PlaygroundData:  # fmt: skip
    """Training points of ``name`` drawn with ``seed`` and test points with ``seed + 1``."""
    return PlaygroundData(name, make_dataset(name, num_train, noise=noise, seed=seed),
                          make_dataset(name, num_test, noise=noise, seed=seed + 1))

