"""The loss surface of linear least squares, and full-batch gradient descent on it.

The mean squared error of a linear model with a bias, ``L(theta) = mean((X~ theta - y)**2)``
with ``X~ = [X, 1]``, is a quadratic in ``theta = (w, b)`` with Hessian
``H = 2 X~^T X~ / n``. Gradient descent on it converges for ``lr < 2 / lambda_max(H)``
and diverges beyond; the ratio ``lambda_max / lambda_min`` (the condition number) sets
how slowly it crawls along the flattest direction. With one feature the parameters are
two numbers, and the surface and the path can be drawn. Everything is computed in
float64 on the CPU: these are small problems, and the figures compare exact numbers.
"""

from __future__ import annotations

import torch


def design_matrix(X: torch.Tensor) -> torch.Tensor:
    """``X`` of shape ``(n, d)`` with a column of ones appended for the bias: ``(n, d + 1)``,
    float64 on the CPU."""
    if X.dim() != 2 or len(X) == 0:
        raise ValueError(f"X must have shape (n, d) with n > 0, got {tuple(X.shape)}")
    X = X.detach().to("cpu", torch.float64)
    return torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], dim=1)


def _labels(y: torch.Tensor, n: int) -> torch.Tensor:
    y = y.detach().to("cpu", torch.float64).reshape(-1, 1)  # (n, 1)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} examples")
    return y


def mse_hessian(X: torch.Tensor) -> torch.Tensor:
    """The Hessian ``2 X~^T X~ / n`` of the mean squared error in ``(w, b)``: ``(d + 1, d + 1)``."""
    X1 = design_matrix(X)
    return 2 * X1.T @ X1 / len(X1)


def least_squares(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The minimizer ``(w, b)`` of the mean squared error, shape ``(d + 1,)``, by
    ``torch.linalg.lstsq``."""
    X1 = design_matrix(X)
    return torch.linalg.lstsq(X1, _labels(y, len(X1))).solution.flatten()


def mse_on_grid(
    X: torch.Tensor, y: torch.Tensor, w_values: torch.Tensor, b_values: torch.Tensor
) -> torch.Tensor:
    """The mean squared error of ``w x + b`` (one feature) at every ``(w, b)`` of a grid:
    shape ``(len(b_values), len(w_values))``, rows along ``b`` as a contour plot wants."""
    X1 = design_matrix(X)
    if X1.shape[1] != 2:
        raise ValueError(f"a surface needs one feature, got {X1.shape[1] - 1}")
    y = _labels(y, len(X1))
    w = torch.as_tensor(w_values, dtype=torch.float64).flatten()
    b = torch.as_tensor(b_values, dtype=torch.float64).flatten()
    B, W = torch.meshgrid(b, w, indexing="ij")  # (nb, nw) each
    thetas = torch.stack([W.flatten(), B.flatten()])  # (2, nb * nw)
    residuals = X1 @ thetas - y  # (n, nb * nw)
    return (residuals**2).mean(dim=0).reshape(len(b), len(w))


def gradient_descent(
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    num_steps: int,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full-batch gradient descent on the mean squared error of a linear model with a bias.

    Args:
        X, y: features ``(n, d)`` and labels ``(n,)`` or ``(n, 1)``.
        lr: the learning rate.
        num_steps: how many steps.
        start: the first ``(w, b)``, shape ``(d + 1,)``; zeros by default.

    Returns:
        The path, shape ``(num_steps + 1, d + 1)``: the start, then the parameters after
        each step. A diverging path may reach ``inf``; nothing is raised.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    X1 = design_matrix(X)
    y = _labels(y, len(X1))
    theta = (torch.zeros(X1.shape[1], dtype=torch.float64) if start is None
             else torch.as_tensor(start, dtype=torch.float64).flatten().clone())  # fmt: skip
    if theta.shape != (X1.shape[1],):
        raise ValueError(f"start must have {X1.shape[1]} values, got {tuple(theta.shape)}")
    path = [theta.clone()]
    for _ in range(num_steps):
        grad = 2 * X1.T @ (X1 @ theta.reshape(-1, 1) - y) / len(X1)  # (d + 1, 1)
        theta = theta - lr * grad.flatten()
        path.append(theta.clone())
    return torch.stack(path)


def distances(path: torch.Tensor, theta_star: torch.Tensor) -> torch.Tensor:
    """The Euclidean distance of every point of ``path`` ``(k, p)`` from ``theta_star``:
    shape ``(k,)``."""
    star = torch.as_tensor(theta_star, dtype=path.dtype).flatten()
    return torch.linalg.vector_norm(path - star, dim=1)


def steps_to_tolerance(path: torch.Tensor, theta_star: torch.Tensor, tol: float) -> int | None:
    """The first step after which the distance from ``theta_star`` stays below ``tol`` times
    the starting distance; ``None`` if the path never gets (and stays) there."""
    dist = distances(path, theta_star)
    inside = dist <= tol * dist[0]
    if not bool(inside[-1]):
        return None
    outside = torch.nonzero(~inside).flatten()
    return 0 if len(outside) == 0 else int(outside[-1]) + 1


def clip_to_box(
    path: torch.Tensor, x_range: tuple[float, float], y_range: tuple[float, float]
) -> tuple[torch.Tensor, bool]:
    """A 2-D path ``(k, 2)`` up to where it first leaves the box, ending on the box's edge.

    Returns the clipped path and whether it was clipped. A diverging path would
    otherwise stretch a figure's axes to its last, astronomically large point.
    """
    if path.dim() != 2 or path.shape[1] != 2:
        raise ValueError(f"path must have shape (k, 2), got {tuple(path.shape)}")
    (x0, x1), (y0, y1) = x_range, y_range

    def inside(p: torch.Tensor) -> bool:
        return bool(torch.isfinite(p).all()) and bool(x0 <= p[0] <= x1 and y0 <= p[1] <= y1)

    if not inside(path[0]):
        raise ValueError(f"the path starts outside the box: {path[0].tolist()}")
    for k in range(1, len(path)):
        if inside(path[k]):
            continue
        a, b = path[k - 1], path[k]
        if not bool(torch.isfinite(b).all()):
            return path[:k], True  # no direction to follow to the edge
        # The largest t in [0, 1] with a + t (b - a) still in the box (a is inside).
        t = 1.0
        for lo, hi, start, end in ((x0, x1, a[0], b[0]), (y0, y1, a[1], b[1])):
            step = float(end - start)
            if step > 0:
                t = min(t, (hi - float(start)) / step)
            elif step < 0:
                t = min(t, (lo - float(start)) / step)
        edge = a + t * (b - a)
        return torch.cat([path[:k], edge.reshape(1, 2)]), True
    return path, False
