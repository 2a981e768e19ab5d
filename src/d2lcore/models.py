"""Models: plain ``nn.Module`` s, with no plotting, printing or trainer state."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: Activations by name, so a configuration can name one.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def check_activation(name: str) -> str:
    """``name`` if it is in :data:`ACTIVATIONS`, else a ``ValueError`` listing them."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return name


class LinearRegression(nn.Module):
    """``y_hat = X w + b``: one fully connected layer."""

    def __init__(self, num_inputs: int, num_outputs: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(num_inputs, num_outputs)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.linear(X)  # (n, num_outputs)


class SoftmaxRegression(nn.Module):
    """Flatten, then one linear layer giving class logits (softmax lives in the loss)."""

    def __init__(self, num_inputs: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(num_inputs, num_classes)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.linear(X.flatten(1))  # (n, num_classes) logits


class Dropout(nn.Module):
    """Inverted dropout: zero each unit with probability ``p`` in training and scale
    the kept ones by ``1 / (1 - p)``, so evaluation needs no rescaling.

    Same contract as ``nn.Dropout``; the mask comes from ``rand(h.shape) >= p``,
    which is cheaper on the CPU than ``nn.Dropout``'s ``bernoulli_``.

    Args:
        p: probability of zeroing a unit.
        generator: a stream of its own for the masks (on the model's device), so a
            run can be repeated whatever else draws random numbers; ``None`` draws
            from torch's global generator.
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), not {p}")
        self.p = float(p)
        self.generator = generator

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return h
        if self.generator is None:
            u = torch.rand_like(h)
        else:
            u = torch.rand(h.shape, generator=self.generator, dtype=h.dtype, device=h.device)
        mask = u >= self.p
        return h * mask / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """A multilayer perceptron: flatten, then ``Linear -> activation -> Dropout`` per
    hidden layer, then a linear output layer.

    Args:
        num_inputs: input features (images are flattened).
        hidden_sizes: width of each hidden layer, e.g. ``(256,)`` or ``(256, 128)``.
        num_outputs: output units (classes).
        activation: a name from :data:`ACTIVATIONS`.
        dropout: one rate for every hidden layer, or one rate per hidden layer.
        generator: the stream every :class:`Dropout` layer draws its masks from
            (``None``: torch's global one).
    """

    def __init__(
        self,
        num_inputs: int = 784,
        hidden_sizes: Sequence[int] = (256,),
        num_outputs: int = 10,
        *,
        activation: str = "relu",
        dropout: float | Sequence[float] = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_activation(activation)
        rates = (
            [float(dropout)] * len(hidden_sizes)
            if isinstance(dropout, (int, float))
            else list(dropout)
        )
        if len(rates) != len(hidden_sizes):
            raise ValueError(
                f"got {len(rates)} dropout rates for {len(hidden_sizes)} hidden layers; "
                "give one rate, or one per hidden layer"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = num_inputs
        for size, p in zip(hidden_sizes, rates, strict=True):
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            if p > 0:
                layers.append(Dropout(p, generator=generator))
            width = size
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)  # (n, num_outputs)


def as_sequential(model: nn.Module) -> nn.Sequential | None:
    """The layers ``model`` applies one after the other, as an ``nn.Sequential`` sharing
    its parameters, for an ``nn.Sequential`` and the plain models of this module (not
    their subclasses, which may change ``forward``); ``None`` for any other model.

    Stacked training reads a model through this to run it as batched matmuls
    (:mod:`d2lcore.stacks`); keep it beside the ``forward`` methods it restates."""
    if type(model) is nn.Sequential:
        return model
    if type(model) is MLP:
        return model.net
    if type(model) is SoftmaxRegression:
        return nn.Sequential(nn.Flatten(), model.linear)
    if type(model) is LinearRegression:
        return nn.Sequential(model.linear)
    return None
