"""The blocks of d2lcore.modern_cnn against torchvision's (same layers: weights copied
by position, then equal outputs and parameter counts), and the depth experiment."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import vgg11
from torchvision.models.densenet import _DenseBlock, _DenseLayer, _Transition
from torchvision.models.googlenet import Inception as TvInception
from torchvision.models.resnet import BasicBlock

from d2lcore.conv import Residual
from d2lcore.data import Splits
from d2lcore.modern_cnn import (
    VGG,
    DenseBlock,
    DenseLayer,
    DepthConfig,
    Inception,
    NiN,
    conv_grad_norms,
    conv_layers,
    copy_weights,
    depth_net,
    nin_block,
    train_depth,
    transition_block,
    vgg_block,
)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial batch-norm affine parameters and running statistics, so that
    evaluation mode checks them too."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(generator=generator)
                m.running_mean.normal_(generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)


def same_outputs(ours: nn.Module, theirs: nn.Module, X: torch.Tensor) -> None:
    for mode in ("eval", "train"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        torch.testing.assert_close(ours(X), theirs(X))


def test_vgg11_is_torchvisions() -> None:
    torch.manual_seed(0)
    theirs, ours = vgg11(), VGG()
    assert count(ours) == count(theirs) == 132_863_336
    copy_weights(theirs, ours)
    X = torch.randn(2, 3, 32, 32)
    ours.eval(), theirs.eval()  # dropout off
    torch.testing.assert_close(ours(X), theirs(X))
    torch.testing.assert_close(ours.features(X), theirs.features(X))


def test_vgg_block_shapes() -> None:
    block = vgg_block(2, 3, 16)
    assert block(torch.zeros(1, 3, 14, 14)).shape == (1, 16, 7, 7)
    assert sum(isinstance(m, nn.Conv2d) for m in block) == 2
    small = VGG(((1, 8), (1, 16)), num_classes=10, in_channels=1, hidden=32, pool_size=1)
    assert small(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_inception_is_torchvisions() -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    theirs = TvInception(192, 64, 96, 128, 16, 32, 32)
    ours = Inception(192, 64, (96, 128), (16, 32), 32, wide_kernel=3, batch_norm=True)
    assert count(ours) == count(theirs)
    randomize_bn(theirs, gen)
    copy_weights(theirs, ours)
    X = torch.randn(2, 192, 8, 8, generator=gen)
    same_outputs(ours, theirs, X)
    assert ours(X).shape == (2, 256, 8, 8)


def test_inception_of_the_paper() -> None:
    block = Inception(192, 64, (96, 128), (16, 32), 32)
    assert block(torch.zeros(1, 192, 7, 7)).shape == (1, 256, 7, 7)
    assert block.branch3[1][0].kernel_size == (5, 5)
    # 1x1 reductions: the wide path costs far less than a 5x5 on all 192 channels
    assert count(block.branch3) < count(nn.Conv2d(192, 32, 5)) / 5


def test_residual_is_torchvisions_basic_block() -> None:
    """conv.Residual has biases on its convolutions (torchvision's have none) and a bare
    1x1 convolution on a reshaping shortcut: with zero biases and that shortcut
    given to BasicBlock, the two compute the same."""
    gen = torch.Generator().manual_seed(1)
    for c_in, c_out, stride in [(16, 16, 1), (16, 32, 2)]:
        torch.manual_seed(0)
        ours = Residual(c_in, c_out, stride)
        down = None if ours.conv3 is None else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        theirs = BasicBlock(c_in, c_out, stride, downsample=down)
        biases = 2 * c_out + (c_out if down is not None else 0)
        assert count(ours) == count(theirs) + biases
        randomize_bn(theirs, gen)
        theirs_sd = theirs.state_dict()
        with torch.no_grad():
            for conv in (ours.conv1, ours.conv2, ours.conv3):
                if conv is not None:
                    conv.bias.zero_()
        names = {"conv1.weight": "conv1.weight", "conv2.weight": "conv2.weight",
                 "conv3.weight": "downsample.weight"}
        for ours_name, theirs_name in names.items():
            if theirs_name in theirs_sd:
                ours.state_dict()[ours_name].copy_(theirs_sd[theirs_name])
        for bn in ("bn1", "bn2"):
            getattr(ours, bn).load_state_dict(getattr(theirs, bn).state_dict())
        X = torch.randn(2, c_in, 8, 8, generator=gen)
        same_outputs(ours, theirs, X)


def test_dense_layer_block_and_transition_are_torchvisions() -> None:
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(2, 8, 6, 6, generator=gen)
    pairs = [(DenseLayer(8, 4, bn_size=4), _DenseLayer(8, 4, 4, 0.0)),
             (DenseBlock(3, 8, 4, bn_size=4), _DenseBlock(3, 8, 4, 4, 0.0)),
             (transition_block(8, 4), _Transition(8, 4))]
    for ours, theirs in pairs:
        assert count(ours) == count(theirs)
        randomize_bn(theirs, gen)
        copy_weights(theirs, ours)
        if isinstance(theirs, _DenseLayer):
            for mode in ("eval", "train"):
                getattr(ours, mode)(), getattr(theirs, mode)()
                torch.testing.assert_close(ours(X), theirs([X]))  # it takes a list
        else:
            same_outputs(ours, theirs, X)
    assert DenseBlock(3, 8, 4)(X).shape == (2, 8 + 3 * 4, 6, 6)
    assert transition_block(8, 4)(X).shape == (2, 4, 3, 3)


def test_copy_weights_refuses_other_layers() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        copy_weights(nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 5))
    with pytest.raises(ValueError, match="tensors"):
        copy_weights(nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3, bias=False))


def test_nin_is_a_per_pixel_mlp() -> None:
    block = nin_block(3, 4, kernel_size=1)
    X = torch.randn(2, 3, 5, 5)
    # Each pixel's channel vector goes through the same three-layer MLP.
    mlp = nn.Sequential(*[nn.Linear(c.in_channels, c.out_channels) if isinstance(c, nn.Conv2d)
                          else nn.ReLU() for c in block])
    with torch.no_grad():
        for lin, conv in zip(mlp, block, strict=True):
            if isinstance(conv, nn.Conv2d):
                lin.weight.copy_(conv.weight[:, :, 0, 0])
                lin.bias.copy_(conv.bias)
    by_mlp = mlp(X.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(block(X), by_mlp)
    net = NiN(8)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert not any(isinstance(m, nn.Linear) for m in net.modules())


def test_depth_net_layers() -> None:
    for depth in (3, 9):
        for residual in (False, True):
            net = depth_net(DepthConfig(depth, residual, batch_norm=False, width=4))
            assert len(conv_layers(net)) == depth
            assert net(torch.zeros(2, 1, 14, 14)).shape == (2, 10)
    with pytest.raises(ValueError, match="odd"):
        DepthConfig(4, True, False)
    a = depth_net(DepthConfig(5, True, True, seed=3))
    b = depth_net(DepthConfig(5, True, True, seed=3))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_grad_norms_vanish_in_a_deep_plain_net() -> None:
    torch.manual_seed(0)
    X, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    plain = conv_grad_norms(depth_net(DepthConfig(21, False, False, width=4)), X, y)
    skips = conv_grad_norms(depth_net(DepthConfig(21, True, False, width=4)), X, y)
    assert len(plain) == len(skips) == 21
    assert plain[0] < 1e-6 * plain[-1]
    assert skips[0] > 1e-2 * skips[-1]


def test_grad_norms_leave_the_model_alone() -> None:
    net = depth_net(DepthConfig(3, True, True))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    conv_grad_norms(net, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_train_depth_lowers_the_loss_and_keeps_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(128, 1, 8, 8, generator=gen)
    y = (X.mean(dim=(1, 2, 3)) > 0).long()  # a learnable rule
    data = Splits(train=(X, y), val=(X[:32], y[:32]), test=(X[:32], y[:32]))
    config = DepthConfig(5, True, True, width=4, lr=0.05, num_epochs=4, batch_size=32)
    run = train_depth(config, data, device="cpu")
    h = run.history
    assert h.train_loss[-1] < h.train_loss[0]
    assert len(run.extras["grad_start"]) == len(run.extras["grad_end"]) == 5
    assert run.test_acc is not None
    again = train_depth(config, data, device="cpu")
    assert again.history.train_loss == h.train_loss  # repeatable from the seed
