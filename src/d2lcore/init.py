"""Named weight-initialization schemes, applied to any model.

Each scheme sets the weights of every ``nn.Linear`` and ``nn.Conv*`` layer and zeros
their biases. :func:`weight_variance` states the variance each scheme promises, so a
test (and a reader) can check it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: The schemes :func:`init_weights` knows. ``"default"`` keeps PyTorch's own.
INIT_SCHEMES = (
    "default", "zeros", "normal", "xavier_uniform", "xavier_normal",
    "kaiming_uniform", "kaiming_normal",
)  # fmt: skip

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight: inputs and outputs each unit connects to."""
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def weight_variance(scheme: str, fan_in: int, fan_out: int, *, std: float = 0.01) -> float:
    """The variance of each weight that ``scheme`` promises.

    Xavier (Glorot) keeps ``2 / (fan_in + fan_out)`` so activations and gradients keep
    their scale in both directions; Kaiming (He) keeps ``2 / fan_in``, compensating
    for ReLU zeroing half its inputs.
    """
    if scheme == "zeros":
        return 0.0
    if scheme == "normal":
        return std**2
    if scheme in ("xavier_uniform", "xavier_normal"):
        return 2.0 / (fan_in + fan_out)
    if scheme in ("kaiming_uniform", "kaiming_normal"):
        return 2.0 / fan_in
    if scheme == "default":  # PyTorch: kaiming_uniform_ with a=sqrt(5) -> 1 / (3 fan_in)
        return 1.0 / (3.0 * fan_in)
    raise ValueError(f"unknown init scheme {scheme!r}; choose from {INIT_SCHEMES}")


def init_weights(
    model: nn.Module,
    scheme: str,
    *,
    std: float = 0.01,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Initialize every linear and convolutional layer of ``model`` in place.

    Args:
        scheme: one of :data:`INIT_SCHEMES`.
        std: standard deviation for ``"normal"``.
        generator: a generator to draw from (for a stream independent of the
            global one); ``None`` uses torch's global generator. The weights are drawn
            on the generator's device and copied to the model's, so one seed gives one
            model on any device.
    Returns:
        the model, for chaining.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose from {INIT_SCHEMES}")
    if scheme == "normal" and not (std >= 0 and math.isfinite(std)):
        raise ValueError(f"std must be a finite number >= 0, not {std}")
    if scheme == "default":
        return model
    for layer in model.modules():
        if not isinstance(layer, _LAYERS):
            continue
        with torch.no_grad():
            # Drawn where the generator lives, then copied: a CPU generator initializes a
            # model on a GPU too, with the same weights as on the CPU.
            on = layer.weight.device if generator is None else generator.device
            w = layer.weight if layer.weight.device == on else torch.empty_like(
                layer.weight, device=on)  # fmt: skip
            if scheme == "zeros":
                nn.init.zeros_(w)
            elif scheme == "normal":
                nn.init.normal_(w, 0.0, std, generator=generator)
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(w, generator=generator)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(w, generator=generator)
            elif scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=generator)
            else:
                nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
            if w is not layer.weight:
                layer.weight.copy_(w)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model
