"""The output layer of a network: find it (:func:`head_name`), replace it by a new one
for other classes (:func:`replace_head`), freeze everything else (:func:`freeze_body`,
:func:`frozen_norm`), and give it its own learning rate (:func:`param_groups`): what
fine-tuning (:mod:`d2lcore.finetune`) does to a pretrained network.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from d2lcore.train import seeded

HEAD_INITS = ("default", "zero")


def head_name(model: nn.Module) -> str:
    """The qualified name of the output layer: the last ``nn.Linear`` registered in
    ``model`` (``"net.9"`` for :class:`~d2lcore.conv.LeNet`, ``"fc"`` for torchvision's
    ResNets, ``"head.2"`` for :class:`~d2lcore.conv.SmallResNet`)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer to replace")
    return names[-1]


def get_head(model: nn.Module) -> nn.Linear:
    """The output layer (see :func:`head_name`)."""
    head = model.get_submodule(head_name(model))
    assert isinstance(head, nn.Linear)
    return head


def replace_head(
    model: nn.Module,
    num_classes: int,
    *,
    init: str = "default",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Replace the output layer in place by a new ``nn.Linear`` with ``num_classes``
    outputs and the same inputs; return ``model``.

    Args:
        init: ``"default"`` (PyTorch's uniform initialization, drawn from ``generator``)
            or ``"zero"`` (all weights and biases 0: every class starts equally likely).
    """
    if init not in HEAD_INITS:
        raise ValueError(f"unknown head init {init!r}; choose from {HEAD_INITS}")
    name = head_name(model)
    old = get_head(model)
    with seeded(0):  # its own init is overwritten below: keep the caller's random stream
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device)
    with torch.no_grad():
        if init == "zero":
            new.weight.zero_()
            new.bias.zero_()
        else:  # nn.Linear's own rule, from a seeded stream
            bound = 1 / math.sqrt(old.in_features)
            new.weight.copy_(_uniform(new.weight.shape, bound, generator))
            new.bias.copy_(_uniform(new.bias.shape, bound, generator))
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def freeze_body(model: nn.Module) -> nn.Module:
    """Stop gradients to every parameter but the output layer's; return ``model``.

    Only parameters are frozen: batch-normalization layers in training mode would still
    normalize with batch statistics and update their running ones. :func:`frozen_norm`
    freezes those too (:func:`fine_tune` uses it for a linear probe)."""
    head = {id(p) for p in get_head(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    return model


@contextmanager
def frozen_norm(model: nn.Module) -> Iterator[nn.Module]:
    """Keep every batch-normalization layer of ``model`` in evaluation mode inside the
    block, even when training calls ``model.train()``: it normalizes with its stored
    running statistics and never updates them. A frozen body stays the function it was
    pretrained as, normalization included."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks = [m.register_forward_pre_hook(_to_eval) for m in norms]
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()


def _to_eval(module: nn.Module, args: Any) -> None:
    module.train(False)


def param_groups(model: nn.Module, lr: float, body_lr_mult: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the output layer at ``lr``, the rest (the pretrained
    body) at ``lr * body_lr_mult``. Frozen parameters and a multiplier of 0 leave the
    body out."""
    head = {id(p) for p in get_head(model).parameters()}
    head_params = [p for p in model.parameters() if id(p) in head]
    body = [p for p in model.parameters() if id(p) not in head and p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": head_params, "lr": lr, "name": "head"}]
    if body and body_lr_mult > 0:
        groups.append({"params": body, "lr": lr * body_lr_mult, "name": "body"})
    return groups
