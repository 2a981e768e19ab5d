"""Modern convolutional networks: the blocks of VGG, NiN, GoogLeNet (Inception) and
DenseNet, and the plain-versus-residual experiment that motivated ResNet.

Each block is a plain ``nn.Module`` with the layers of its torchvision counterpart
where one exists (``tests/test_modern_cnn.py`` loads one's weights into the other and
compares outputs); the residual block itself is :class:`d2lcore.conv.Residual`.
:func:`train_depth` trains one network of :func:`depth_net` with
:func:`~d2lcore.train.fit` and keeps the gradient norm of every convolution, before
training and after.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from d2lcore.conv import SmallResNet
from d2lcore.data import Splits
from d2lcore.device import get_device
from d2lcore.metrics import evaluate
from d2lcore.train import EpochHook, RunResult, fit, seeded

# ----------------------------------------------------------------------------------
# VGG: blocks of 3x3 convolutions, then a 2x2 max pooling

#: VGG-11's blocks as (convolutions, channels): torchvision's ``vgg11`` configuration "A".
VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """``num_convs`` 3x3 convolutions (padding 1: the size stays), each with a ReLU,
    then a 2x2 max pooling with stride 2 (halves height and width)."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                   nn.ReLU(inplace=True)]  # fmt: skip
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG: :func:`vgg_block` s, an adaptive average pooling to ``pool_size`` squared,
    and three dense layers (two hidden of ``hidden`` units with dropout 0.5).

    With ``arch=VGG11`` and the defaults it has the layers, in order, of
    ``torchvision.models.vgg11()`` (132,863,336 parameters).

    Args:
        arch: one ``(num_convs, out_channels)`` per block.
        num_classes: output units.
        in_channels: channels of the input images.
        hidden: units of the two hidden dense layers.
        pool_size: side of the feature map the classifier reads (7 for 224x224 images).
    """

    def __init__(
        self,
        arch: Sequence[tuple[int, int]] = VGG11,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        hidden: int = 4096,
        pool_size: int = 7,
    ) -> None:
        super().__init__()
        blocks, width = [], in_channels
        for num_convs, out in arch:
            blocks.append(vgg_block(num_convs, width, out))
            width = out
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * pool_size * pool_size, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(X)))  # (n, num_classes)


# ----------------------------------------------------------------------------------
# NiN: a convolution followed by two 1x1 convolutions, a per-pixel MLP


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
              padding: int = 0) -> nn.Sequential:  # fmt: skip
    """A convolution and two 1x1 convolutions (a two-layer MLP applied at every pixel),
    each followed by a ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )  # fmt: skip


class NiN(nn.Module):
    """Network in network for small gray images: NiN blocks and max pooling, and no
    dense layer: the last block has one channel per class, averaged over all positions
    (global average pooling) into the logits.

    Args:
        channels: the width of the first block; the second has twice as many, the
            last one per class.
        num_classes: output units.
        in_channels: channels of the input images.
    """

    def __init__(self, channels: int = 32, *, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nin_block(in_channels, channels, kernel_size=3, padding=1),      # (n, c, h, w)
            nn.MaxPool2d(2),                                                 # (n, c, h/2, w/2)
            nin_block(channels, 2 * channels, kernel_size=3, padding=1),
            nn.MaxPool2d(2),                                                 # (n, 2c, h/4, w/4)
            nin_block(2 * channels, num_classes, kernel_size=3, padding=1),  # one map a class
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),                           # (n, num_classes)
        )  # fmt: skip

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)


# ----------------------------------------------------------------------------------
# GoogLeNet's Inception block: four parallel paths, concatenated along the channels


def conv_relu(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, *,
              batch_norm: bool = False) -> nn.Sequential:  # fmt: skip
    """A convolution and a ReLU; with ``batch_norm`` the convolution has no bias and is
    followed by batch normalization (``eps=1e-3``), as torchvision's ``BasicConv2d``."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size,
                                         padding=padding, bias=not batch_norm)]  # fmt: skip
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels, eps=1e-3))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Inception(nn.Module):
    """The Inception block: a 1x1 convolution; a 1x1 then a 3x3; a 1x1 then a "5x5"
    (``wide_kernel``); a 3x3 max pooling then a 1x1, each path keeping height and width,
    their outputs concatenated: ``c1 + c2[1] + c3[1] + c4`` channels.

    torchvision's ``googlenet`` uses a 3x3 kernel on the third path (a bug it keeps for
    its pretrained weights) and batch normalization: ``Inception(..., wide_kernel=3,
    batch_norm=True)`` has its layers in order.

    Args:
        in_channels: channels of the input.
        c1: channels of the 1x1 path.
        c2: ``(reduce, out)`` channels of the 3x3 path.
        c3: ``(reduce, out)`` channels of the wide path.
        c4: channels of the pooling path's 1x1 convolution.
        wide_kernel: kernel size of the wide path (5 in the paper).
        batch_norm: batch normalization after every convolution.
    """

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int],
                 c4: int, *, wide_kernel: int = 5, batch_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        bn = {"batch_norm": batch_norm}
        self.branch1 = conv_relu(in_channels, c1, 1, **bn)
        self.branch2 = nn.Sequential(conv_relu(in_channels, c2[0], 1, **bn),
                                     conv_relu(c2[0], c2[1], 3, padding=1, **bn))  # fmt: skip
        self.branch3 = nn.Sequential(
            conv_relu(in_channels, c3[0], 1, **bn),
            conv_relu(c3[0], c3[1], wide_kernel, padding=wide_kernel // 2, **bn))  # fmt: skip
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     conv_relu(in_channels, c4, 1, **bn))  # fmt: skip

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        paths = [self.branch1(X), self.branch2(X), self.branch3(X), self.branch4(X)]
        return torch.cat(paths, dim=1)  # (n, c1 + c2[1] + c3[1] + c4, h, w)


# ----------------------------------------------------------------------------------
# DenseNet: every layer sees the concatenation of all earlier outputs


class DenseLayer(nn.Module):
    """Batch norm, ReLU and a convolution, twice: a 1x1 to ``bn_size * growth_rate``
    channels (the bottleneck), then a 3x3 to ``growth_rate``: the layers of
    torchvision's ``_DenseLayer`` (no dropout). Returns only the new channels."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int = 4) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.net = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, growth_rate, kernel_size=3, padding=1, bias=False),
        )  # fmt: skip

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)  # (n, growth_rate, h, w)


class DenseBlock(nn.Module):
    """``num_layers`` :class:`DenseLayer` s, each reading the block's input and every
    earlier layer's output, concatenated: ``in_channels + num_layers * growth_rate``
    channels out. torchvision's ``_DenseBlock`` has the same layers in order."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int,
                 bn_size: int = 4) -> None:  # fmt: skip
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size)
            for i in range(num_layers))  # fmt: skip

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        features = [X]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)  # (n, in_channels + num_layers * growth, h, w)


def transition_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Between dense blocks: batch norm, ReLU, a 1x1 convolution to fewer channels and a
    2x2 average pooling (torchvision's ``_Transition``)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.AvgPool2d(kernel_size=2, stride=2),
    )  # fmt: skip


# ----------------------------------------------------------------------------------
# Plain against residual: the degradation experiment


@dataclass(frozen=True)
class DepthConfig:
    """One network of the depth experiment and how it trains.

    ``depth`` counts the convolutional layers: a 3x3 stem and ``(depth - 1) / 2``
    two-convolution blocks (so ``depth`` is odd), all ``width`` channels wide, then
    global average pooling and a linear classifier. Trained with SGD (``lr``,
    ``momentum``) for ``num_epochs`` of minibatches of ``batch_size``, from ``seed``.
    """

    depth: int
    residual: bool
    batch_norm: bool
    width: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    num_epochs: int = 5
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.depth < 3 or self.depth % 2 == 0:
            raise ValueError(f"depth={self.depth}: a stem and whole two-convolution blocks "
                             "give an odd number of layers, at least 3")  # fmt: skip


def depth_net(config: DepthConfig, in_channels: int = 1, num_classes: int = 10) -> SmallResNet:
    """The network of ``config``: a one-stage :class:`~d2lcore.conv.SmallResNet`, with
    or without skip connections and batch normalization, PyTorch's default init from
    ``config.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return SmallResNet((config.width,), blocks_per_stage=(config.depth - 1) // 2,
                           num_classes=num_classes, in_channels=in_channels,
                           skip=config.residual, batch_norm=config.batch_norm)  # fmt: skip


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """The model's convolutions in the order they were registered (input to output for
    :func:`depth_net`, whose shortcuts are identities)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def conv_grad_norms(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The norm of the loss gradient with respect to each convolution's weight, on one
    batch, in training mode (a copy of ``model``: its parameters, gradients and batch
    statistics stay as they were)."""
    probe = copy.deepcopy(model).train()
    loss = nn.functional.cross_entropy(probe(X), y)
    grads = torch.autograd.grad(loss, [c.weight for c in conv_layers(probe)])
    return [float(g.norm()) for g in grads]


def train_depth(config: DepthConfig, data: Splits, *, device: torch.device | str | None = None,
                on_epoch_end: EpochHook | None = None) -> RunResult:  # fmt: skip
    """Train :func:`depth_net` of ``config`` with :func:`~d2lcore.train.fit` (SGD with
    momentum, cross-entropy). ``extras`` holds ``grad_start`` and ``grad_end``, the
    gradient norm of every convolution's weight (stem first) on the first training batch
    before and after training; ``test_acc`` is measured on ``data``'s test split (when
    it has one); ``on_epoch_end`` is :func:`~d2lcore.train.fit`'s hook."""
    device = get_device(device)
    model = depth_net(config, in_channels=data.train[0].shape[1]).to(device)
    probe_X, probe_y = (t[: config.batch_size].to(device) for t in data.train)
    grad_start = conv_grad_norms(model, probe_X, probe_y)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    train = data.loader("train", batch_size=config.batch_size, seed=config.seed, device=device)
    val = None if data.val is None else data.loader("val", device=device)
    with seeded(config.seed):
        history = fit(model, train, loss_fn=loss_fn, optimizer=optimizer,
                      num_epochs=config.num_epochs, val_batches=val, device=device,
                      on_epoch_end=on_epoch_end)  # fmt: skip
    test_acc = None
    if data.test is not None and not history.diverged:
        test_acc = evaluate(model, data.loader("test", device=device), loss_fn,
                            device=device).accuracy  # fmt: skip
    grad_end = conv_grad_norms(model, probe_X, probe_y)
    return RunResult(config=asdict(config), history=history, test_acc=test_acc,
                     extras={"grad_start": grad_start, "grad_end": grad_end},
                     model=model)  # fmt: skip


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Load ``source``'s parameters and buffers into ``target`` by position (the two
    ``state_dict`` s list the same tensors in the same order, under other names): how
    a block is checked against its torchvision counterpart."""
    src, dst = source.state_dict(), target.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} tensors in the source, {len(dst)} in the target")
    mapped = {}
    for (s_name, s), (d_name, d) in zip(src.items(), dst.items(), strict=True):
        if s.shape != d.shape:
            raise ValueError(f"{s_name} {tuple(s.shape)} does not fit {d_name} {tuple(d.shape)}")
        mapped[d_name] = s
    target.load_state_dict(mapped)
