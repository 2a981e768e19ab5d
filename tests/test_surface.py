"""The least-squares loss surface and gradient descent on it, checked against torch:
autograd's Hessian and gradients, ``torch.optim.SGD`` on ``nn.MSELoss``, the closed form
``theta_k - theta* = (I - lr H)^k (theta_0 - theta*)``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d2lcore.surface import (
    clip_to_box,
    distances,
    gradient_descent,
    least_squares,
    mse_hessian,
    mse_on_grid,
    steps_to_tolerance,
)


def _data(n: int = 50, d: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    X = 2 * torch.randn(n, d, generator=gen, dtype=torch.float64) + 1.5
    noise = 0.1 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    y = X.sum(dim=1, keepdim=True) - 0.7 + noise
    return X, y


def _mse(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((X @ theta[:-1] + theta[-1] - y.flatten()) ** 2).mean()


def test_hessian_and_optimum_match_autograd_and_the_normal_equations():
    X, y = _data(d=2)
    theta = torch.zeros(3, dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda t: _mse(t, X, y), theta)
    torch.testing.assert_close(mse_hessian(X), H)
    star = least_squares(X, y)
    grad = torch.func.grad(lambda t: _mse(t, X, y))(star)
    torch.testing.assert_close(grad, torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)


def test_descent_matches_torch_sgd_on_mse_loss():
    X, y = _data(d=2)
    start = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    path = gradient_descent(X, y, lr=0.01, num_steps=7, start=start)
    model = nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(start[:2].reshape(1, 2))
        model.bias.copy_(start[2:])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    expected = [start]
    for _ in range(7):
        opt.zero_grad()
        nn.MSELoss()(model(X), y).backward()
        opt.step()
        expected.append(torch.cat([model.weight.detach().flatten(), model.bias.detach()]))
    torch.testing.assert_close(path, torch.stack(expected))


@pytest.mark.parametrize("multiple", [0.5, 0.95, 1.05])
def test_descent_follows_the_closed_form_and_the_two_over_lambda_bound(multiple):
    X, y = _data()
    H = mse_hessian(X)
    lr = multiple * 2 / torch.linalg.eigvalsh(H).max().item()
    path = gradient_descent(X, y, lr=lr, num_steps=30)
    star = least_squares(X, y)
    step = torch.eye(2, dtype=torch.float64) - lr * H
    for k in (0, 1, 10, 30):
        expected = star + torch.linalg.matrix_power(step, k) @ (path[0] - star)
        torch.testing.assert_close(path[k], expected)
    dist = distances(path, star)
    assert (dist[-1] > dist[0]) == (multiple > 1)


def test_loss_on_a_grid_is_the_mse_at_each_point():
    X, y = _data()
    w, b = torch.tensor([-1.0, 0.0, 2.5]), torch.tensor([0.5, 1.0])
    Z = mse_on_grid(X, y, w, b)
    assert Z.shape == (2, 3)
    for i, bi in enumerate(b.tolist()):
        for j, wj in enumerate(w.tolist()):
            expected = nn.MSELoss()(X * wj + bi, y)
            torch.testing.assert_close(Z[i, j], expected)
    with pytest.raises(ValueError, match="one feature"):
        mse_on_grid(torch.ones(5, 2), torch.ones(5), w, b)


def test_steps_to_tolerance_counts_the_first_step_that_stays_inside():
    star = torch.zeros(1, dtype=torch.float64)
    path = torch.tensor([[1.0], [0.05], [0.2], [0.01], [0.001]], dtype=torch.float64)
    assert steps_to_tolerance(path, star, 0.1) == 3  # step 1 is inside, step 2 leaves again
    assert steps_to_tolerance(path, star, 0.5) == 1
    assert steps_to_tolerance(path, star, 1e-4) is None


def test_clip_cuts_a_path_where_it_leaves_the_box():
    path = torch.tensor([[0.0, 0.0], [0.5, 0.5], [3.0, 0.5], [9.0, 9.0]], dtype=torch.float64)
    drawn, cut = clip_to_box(path, (-1.0, 1.0), (-1.0, 1.0))
    assert cut
    torch.testing.assert_close(drawn, torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 0.5]],
                                                   dtype=torch.float64))  # fmt: skip
    inside, cut = clip_to_box(path[:2], (-1.0, 1.0), (-1.0, 1.0))
    assert not cut and torch.equal(inside, path[:2])
    blown = torch.tensor([[0.0, 0.0], [float("inf"), 0.0]], dtype=torch.float64)
    assert clip_to_box(blown, (-1.0, 1.0), (-1.0, 1.0))[0].shape == (1, 2)
    with pytest.raises(ValueError, match="starts outside"):
        clip_to_box(path[2:], (-1.0, 1.0), (-1.0, 1.0))


def test_bad_input_is_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="lr"):
        gradient_descent(X, y, lr=0.0, num_steps=3)
    with pytest.raises(ValueError, match="start"):
        gradient_descent(X, y, lr=0.1, num_steps=3, start=torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        least_squares(X, y[:-1])
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        mse_hessian(torch.ones(4))
