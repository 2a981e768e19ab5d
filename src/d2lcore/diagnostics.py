"""Diagnostics: how large activations and gradients are, layer by layer.

A deep network trains only if the signal keeps its scale on the way forward (the
activations) and on the way back (the gradients). :func:`layer_statistics` runs one
batch forward and backward and reports, for every layer with weights, the standard
deviation of what goes in, what comes out and the gradients, so vanishing (values
shrinking towards zero with depth) and exploding (values growing without bound) can
be read off as numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

#: The layers :func:`layer_statistics` reports on by default: those with a weight.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerStats:
    """One layer's numbers for one batch (standard deviations over every entry).

    ``input_std`` is the std of the layer's input: for the layer after a hidden layer,
    the std of that hidden layer's activations (after its nonlinearity).
    ``output_std`` is the std of its output (before any nonlinearity that follows).
    ``weight_grad_std`` is the std of the loss's gradient with respect to the weight,
    what an optimizer's update is made of, and ``output_grad_std`` that with respect
    to the output, the signal backpropagation hands to the layers below.
    A value that overflowed is ``inf`` or ``nan``.
    """

    name: str
    input_std: float
    output_std: float
    weight_grad_std: float
    output_grad_std: float


def _std(t: torch.Tensor) -> float:
    # Population std over every entry, in float64 so a tiny or huge value does not
    # underflow or overflow in the square.
    return float(t.detach().double().std(unbiased=False))


def layer_statistics(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS,
) -> list[LayerStats]:
    """Run ``model`` on one batch forward and backward and return, for each of its
    layers of ``layer_types`` in the order they run, a :class:`LayerStats`.

    The model's parameters' ``.grad`` are left as this batch made them (earlier
    gradients are cleared first); the model's training mode is not changed.

    Args:
        model: any module; layers are found with ``model.modules()``.
        X: a batch of inputs, on the model's device.
        y: the batch's targets.
        loss_fn: e.g. ``nn.CrossEntropyLoss()``.
        layer_types: which modules count as layers (they must have a ``weight``).
    """
    names = {module: name for name, module in model.named_modules()}
    records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        output.retain_grad()  # a non-leaf tensor keeps its .grad only when asked to
        records.append((module, inputs[0].detach(), output))

    layers = [m for m in model.modules() if isinstance(m, layer_types)]
    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(X), y)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    stats = []
    for module, inp, out in records:  # in the order the layers ran
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        w_grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
        o_grad = out.grad if out.grad is not None else torch.zeros_like(out)
        stats.append(
            LayerStats(
                name=names[module],
                input_std=_std(inp),
                output_std=_std(out),
                weight_grad_std=_std(w_grad),
                output_grad_std=_std(o_grad),
            )
        )
    return stats
