"""Convolutional layers, blocks and models: cross-correlation, LeNet, residual blocks.

The from-scratch versions of cross-correlation, pooling and batch normalization are
written in the convolutional-networks page and checked against these and torch; the
models here use torch's layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from d2lcore.models import ACTIVATIONS, Dropout, check_activation


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d``, faster on the CPU for LeNet's 2 x 2 windows with stride 2.

    torch's CPU kernel walks each window of an NCHW map on its own, and with LeNet's few
    channels it took a quarter of a classic LeNet step; adding neighbouring rows and then
    neighbouring columns as whole tensors does the same sums about three times faster,
    backward included. The sum is the same up to float rounding (two pairs instead of
    four terms in a row); other windows, padding or odd sizes use torch's kernel."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h, w = X.shape[-2:]
        window = (self.kernel_size, self.stride, self.padding)
        if window in ((2, 2, 0), ((2, 2), (2, 2), 0)) and not (h % 2 or w % 2 or self.ceil_mode) \
                and self.divisor_override is None:  # fmt: skip
            return _Pool2x2.apply(X)
        return super().forward(X)


class _Pool2x2(torch.autograd.Function):
    """The mean of each 2 x 2 window of the last two axes (even sizes); its gradient
    spreads a quarter of each output's gradient over its window, in one copy."""

    generate_vmap_rule = True  # so torch.func stacks (vmap) can call it

    @staticmethod
    def forward(X: torch.Tensor) -> torch.Tensor:
        h, w = X.shape[-2:]
        rows = X.unflatten(-2, (h // 2, 2))  # (..., h/2, 2, w)
        X = rows[..., 0, :] + rows[..., 1, :]  # neighbouring rows, (..., h/2, w)
        cols = X.unflatten(-1, (w // 2, 2))  # (..., h/2, w/2, 2)
        return (cols[..., 0] + cols[..., 1]) * 0.25

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        *lead, h, w = grad.shape
        # Columns, then rows: each copy's innermost axis stays contiguous (one step with
        # a (h, 2, w, 2) view took twice as long).
        cols = (grad * 0.25).unsqueeze(-1).expand(*lead, h, w, 2).reshape(*lead, h, 2 * w)
        return cols.unsqueeze(-2).expand(*lead, h, 2, 2 * w).reshape(*lead, 2 * h, 2 * w)


class BatchGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight gradient on the CPU is itself a forward convolution,
    with the batch as channels: ``dW[o, i] = sum_b X[b, i] * dY[b, o]`` is the
    cross-correlation of the input's channels (the batch axis read as channels) with the
    gradient's (read as filters).

    For LeNet's second convolution (6 -> 16 channels, 5 x 5 on 14 x 14, no padding) this
    took about 1.1 ms at a batch of 256 against 1.8-1.9 ms for torch's own weight
    gradient (oneDNN, one thread, ``benchmarks/bench_conv.py``); for the first (one
    input channel) and for the 3 x 3 and 1 x 1 convolutions of the modern networks it
    measured 1.5 to 8 times *slower*, so only LeNet's second convolution uses it. The
    input's gradient and the forward pass are torch's. Same parameters, initialization
    and ``state_dict`` as ``nn.Conv2d``; the gradient equals torch's up to float
    rounding. On a GPU, with strides, dilation, groups or padding other than zeros,
    torch's own backward runs."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        plain = self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
        if plain and self.padding_mode == "zeros" and not isinstance(self.padding, str) \
                and input.device.type == "cpu" and input.dim() == 4:  # fmt: skip
            return _BatchGradConv.apply(input, weight, bias, tuple(self.padding))
        return super()._conv_forward(input, weight, bias)


class _BatchGradConv(torch.autograd.Function):
    """``F.conv2d(X, W, b, padding=padding)`` (stride 1, four axes), its weight gradient
    computed as a convolution over the batch (:class:`BatchGradConv2d`)."""

    generate_vmap_rule = True  # so torch.func stacks (vmap) can call it

    @staticmethod
    def forward(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                padding: tuple[int, int]) -> torch.Tensor:  # fmt: skip
        return F.conv2d(X, W, b, padding=padding)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        X, W, _, padding = inputs
        ctx.save_for_backward(X, W)
        ctx.padding = padding

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        X, W = ctx.saved_tensors
        need_X, need_W, need_b, _ = ctx.needs_input_grad
        dX = F.conv_transpose2d(grad, W, padding=ctx.padding) if need_X else None
        dW = None
        if need_W:
            # (C_in, N, H, W) cross-correlated with (C_out, N, h, w): (C_in, C_out, kh, kw).
            dW = F.conv2d(X.transpose(0, 1), grad.transpose(0, 1), padding=ctx.padding)
            dW = dW.transpose(0, 1).contiguous()
        db = grad.sum((0, 2, 3)) if need_b else None
        return dX, dW, db, None


#: Pooling layers by name, so a configuration can name one.
POOLS = {"avg": AvgPool2d, "max": nn.MaxPool2d}


def conv_output_size(n: int, kernel_size: int, padding: int = 0, stride: int = 1) -> int:
    """Length of a convolution's output along one axis of length ``n``:
    ``floor((n - kernel_size + 2 * padding) / stride) + 1``."""
    if kernel_size < 1 or stride < 1 or padding < 0:
        raise ValueError("kernel_size and stride must be >= 1 and padding >= 0")
    if n + 2 * padding < kernel_size:
        raise ValueError(f"a kernel of {kernel_size} does not fit {n} + 2 x {padding} padding")
    return (n - kernel_size + 2 * padding) // stride + 1


def corr2d(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """2-D cross-correlation of one image ``X`` (h, w) with a kernel ``K`` (kh, kw),
    no padding, stride 1: ``Y[i, j] = sum(X[i:i+kh, j:j+kw] * K)``.

    Vectorized: every window is a view of ``X`` (no copy), and one contraction sums
    them all."""
    kh, kw = K.shape
    windows = X.unfold(0, kh, 1).unfold(1, kw, 1)  # (h - kh + 1, w - kw + 1, kh, kw)
    return torch.einsum("ijkl,kl->ij", windows, K)


def _pooled(n: int) -> int:
    return conv_output_size(n, kernel_size=2, stride=2)


class LeNet(nn.Module):
    """LeNet-5 for ``image_size`` x ``image_size`` images (28 for Fashion-MNIST).

    Two convolutional blocks (5x5 convolutions with 6 and 16 channels, the first padded
    by 2, each followed by the activation and 2x2 pooling), then dense layers of 120 and
    84 units and the output layer. The defaults are the classic network (sigmoid,
    average pooling), the same layers as ``d2l.LeNet``; :meth:`modern` gives ReLU, max
    pooling and batch normalization.

    Args:
        num_classes: output units.
        activation: a name from :data:`~d2lcore.models.ACTIVATIONS`.
        pool: ``"avg"`` or ``"max"``.
        batch_norm: a batch-normalization layer after every convolution and hidden dense
            layer, before the activation.
        dropout: rate of a :class:`~d2lcore.models.Dropout` after each hidden dense layer.
        generator: the stream of the dropout masks (``None``: torch's global one).
        in_channels: channels of the input images.
        image_size: height (= width) of the input images.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        activation: str = "sigmoid",
        pool: str = "avg",
        batch_norm: bool = False,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        check_activation(activation)
        if pool not in POOLS:
            raise ValueError(f"unknown pooling {pool!r}; choose from {sorted(POOLS)}")
        act, pool_cls = ACTIVATIONS[activation], POOLS[pool]

        def norm(kind: type[nn.Module], width: int) -> list[nn.Module]:
            return [kind(width)] if batch_norm else []

        side = _pooled(conv_output_size(_pooled(conv_output_size(image_size, 5, 2)), 5))
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), *norm(nn.BatchNorm2d, 6),
            act(), pool_cls(kernel_size=2, stride=2),
            BatchGradConv2d(6, 16, kernel_size=5), *norm(nn.BatchNorm2d, 16),
            act(), pool_cls(kernel_size=2, stride=2),
            nn.Flatten(),
        ]  # fmt: skip
        width = 16 * side * side  # 400 for 28x28 images
        for size in (120, 84):
            layers += [nn.Linear(width, size), *norm(nn.BatchNorm1d, size), act()]
            if dropout > 0:
                layers.append(Dropout(dropout, generator=generator))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    @classmethod
    def modern(
        cls,
        num_classes: int = 10,
        *,
        batch_norm: bool = True,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> LeNet:
        """LeNet with ReLU, max pooling and (by default) batch normalization."""
        return cls(num_classes, activation="relu", pool="max", batch_norm=batch_norm,
                   dropout=dropout, generator=generator)  # fmt: skip

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)  # (n, num_classes) logits

    def first_conv(self) -> nn.Conv2d:
        """The first convolutional layer (its weights are the filters applied to pixels)."""
        conv = self.net[0]
        assert isinstance(conv, nn.Conv2d)
        return conv


class Residual(nn.Module):
    """A residual block: ``relu(bn2(conv2(relu(bn1(conv1(X))))) + shortcut(X))``.

    Both convolutions are 3x3 with padding 1; the first has stride ``stride``. When the
    shape changes (``stride > 1`` or a different number of channels) the shortcut is a
    1x1 convolution with the same stride (``conv3``), else the identity. Same layers and
    attribute names as ``d2l.Residual``, so one's ``state_dict`` loads into the other.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (2 halves height and width).
        skip: ``False`` drops the shortcut: a plain two-convolution block, to see what
            the skip connection changes.
        batch_norm: ``False`` replaces the batch normalizations by the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        skip: bool = True,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        reshape = stride != 1 or in_channels != out_channels
        self.conv3 = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride)
            if skip and reshape
            else None
        )
        self.bn1: nn.Module = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.bn2: nn.Module = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if not self.skip:
            return F.relu(Y)
        shortcut = X if self.conv3 is None else self.conv3(X)
        return F.relu(Y + shortcut)


class SmallResNet(nn.Module):
    """A small ResNet: a 3x3 stem convolution, residual stages, global average pooling
    and a linear classifier.

    Args:
        channels: the width of each stage; every stage after the first starts with a
            stride-2 block (halving height and width), e.g. ``(16, 32, 64)``.
        blocks_per_stage: residual blocks in each stage.
        num_classes: output units.
        in_channels: channels of the input images.
        skip: ``False`` builds the same network without shortcuts (a plain deep CNN).
        batch_norm: batch normalization in the stem and in every block.
        dropout: rate of a :class:`~d2lcore.models.Dropout` before the classifier.
        generator: the stream of the dropout masks.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64),
        *,
        blocks_per_stage: int = 1,
        num_classes: int = 10,
        in_channels: int = 1,
        skip: bool = True,
        batch_norm: bool = True,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not channels or blocks_per_stage < 1:
            raise ValueError("a SmallResNet needs at least one stage of at least one block")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1),
            nn.BatchNorm2d(channels[0]) if batch_norm else nn.Identity(),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        width = channels[0]
        for stage, out in enumerate(channels):
            for b in range(blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(Residual(width, out, stride, skip=skip, batch_norm=batch_norm))
                width = out
        self.blocks = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            head.append(Dropout(dropout, generator=generator))
        head.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(X)))  # (n, num_classes) logits
