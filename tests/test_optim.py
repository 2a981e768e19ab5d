"""Optimizers on a 2-D quadratic, checked against ``torch.optim`` run on the same
quadratic through autograd, and against the closed forms of gradient descent."""

from __future__ import annotations

import math

import pytest
import torch

from d2lcore.optim import QUADRATIC_OPTIMIZERS, quadratic_hessians, quadratic_paths
from d2lcore.surface import steps_to_tolerance


def _torch_path(optimizer: str, H: torch.Tensor, lr: float, momentum: float,
                start: tuple[float, float], num_steps: int) -> torch.Tensor:  # fmt: skip
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    make = {
        "sgd": lambda: torch.optim.SGD([w], lr=lr, momentum=momentum),
        "nesterov": lambda: torch.optim.SGD([w], lr=lr, momentum=momentum, nesterov=True),
        "rmsprop": lambda: torch.optim.RMSprop([w], lr=lr, momentum=momentum),
        "adam": lambda: torch.optim.Adam([w], lr=lr, betas=(momentum, 0.999)),
    }
    opt = make[optimizer]()
    path = [w.detach().clone()]
    for _ in range(num_steps):
        opt.zero_grad()
        (0.5 * w @ H @ w).backward()
        opt.step()
        path.append(w.detach().clone())
    return torch.stack(path)


@pytest.mark.parametrize("optimizer", QUADRATIC_OPTIMIZERS)
def test_every_path_matches_torch_optim(optimizer):
    kappas = torch.tensor([1.0, 10.0, 100.0])
    lrs = torch.tensor([0.3, 0.05, 1.5])
    moms = torch.tensor([0.1 if optimizer == "nesterov" else 0.0, 0.5, 0.9])
    H = quadratic_hessians(kappas, angle=0.4)
    paths = quadratic_paths(optimizer, H, lr=lrs, momentum=moms, num_steps=30)
    assert paths.shape == (3, 31, 2)
    for b in range(3):
        expected = _torch_path(optimizer, H[b], float(lrs[b]), float(moms[b]), (-4.0, 2.0), 30)
        torch.testing.assert_close(paths[b], expected, rtol=1e-10, atol=1e-12,
                                   msg=lambda m, b=b: f"{optimizer}, row {b}: {m}")  # noqa: B023


def test_momentum_zero_is_gradient_descent_for_every_optimizer_with_momentum():
    """A row of momentum 0 in a batch with momentum is plain gradient descent for the
    heavy ball and Nesterov (torch.optim's SGD checks Nesterov's momentum only once)."""
    H = quadratic_hessians(torch.tensor([10.0, 10.0]))
    plain = quadratic_paths("sgd", H[:1], lr=0.3, num_steps=20)
    for name in ("sgd", "nesterov"):
        paths = quadratic_paths(name, H, lr=0.3, momentum=torch.tensor([0.0, 0.5]),
                                num_steps=20)  # fmt: skip
        torch.testing.assert_close(paths[0], plain[0], rtol=0, atol=0)
        assert not torch.equal(paths[1], plain[0])


def test_hessians_have_the_asked_curvatures():
    H = quadratic_hessians(torch.tensor([4.0, 50.0]), angle=0.7)
    for h, kappa in zip(H, (4.0, 50.0), strict=True):
        torch.testing.assert_close(torch.linalg.eigvalsh(h),
                                   torch.tensor([1 / kappa, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=">= 1"):
        quadratic_hessians(torch.tensor([0.5]))


def test_gradient_descent_follows_the_closed_form_and_diverges_past_two():
    H = quadratic_hessians(torch.tensor([20.0, 20.0, 20.0]))
    lrs = torch.tensor([1.0, 1.9, 2.1], dtype=torch.float64)
    paths = quadratic_paths("sgd", H, lr=lrs, num_steps=50)
    # Along each axis: w_k = (1 - lr lambda)^k w_0.
    for b, lr in enumerate((1.0, 1.9, 2.1)):
        factors = torch.tensor([1 - lr / 20, 1 - lr], dtype=torch.float64)
        expected = torch.tensor([-4.0, 2.0], dtype=torch.float64) * factors**50
        torch.testing.assert_close(paths[b, -1], expected)
    dist = paths.norm(dim=-1)
    assert dist[0, -1] < dist[0, 0] and dist[1, -1] < dist[1, 0] and dist[2, -1] > 10 * dist[2, 0]


def test_momentum_beats_gradient_descent_on_an_ill_conditioned_quadratic():
    H = quadratic_hessians(torch.tensor([100.0]))
    lrs = [0.1 * k for k in range(1, 20)]
    star = torch.zeros(2, dtype=torch.float64)

    def best(momentum: float) -> int:
        steps = [steps_to_tolerance(quadratic_paths("sgd", H, lr=lr, momentum=momentum,
                                                    num_steps=1000)[0], star, 1e-3)
                 for lr in lrs]  # fmt: skip
        return min(s for s in steps if s is not None)

    assert 2 * best(0.9) < best(0.0)


def test_adam_ignores_the_curvature_of_each_axis():
    """Adam's update is invariant to rescaling a coordinate's gradient (up to eps)."""
    H = quadratic_hessians(torch.tensor([1.0, 10.0, 1000.0]))
    paths = quadratic_paths("adam", H, lr=0.1, momentum=0.9, num_steps=100)
    assert (paths - paths[:1]).abs().max() < 1e-4
    rotated = quadratic_paths("adam", quadratic_hessians(torch.tensor([1.0, 1000.0]), 0.5),
                              lr=0.1, momentum=0.9, num_steps=100)  # fmt: skip
    assert (rotated[0] - rotated[1]).abs().max() > 0.1


def test_bad_input_is_refused():
    H = quadratic_hessians(torch.tensor([2.0]))
    with pytest.raises(ValueError, match="unknown optimizer"):
        quadratic_paths("lion", H, lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        quadratic_paths("sgd", H, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="lr"):
        quadratic_paths("sgd", H, lr=-0.1)
    with pytest.raises(ValueError, match="shape"):
        quadratic_paths("sgd", torch.eye(2), lr=0.1)
    assert math.isfinite(float(quadratic_paths("sgd", H, lr=0.1, num_steps=0).sum()))
