"""Tests of d2lcore.conv against torch and the d2l 1.0.3 reference: cross-correlation,
the output-size formula, LeNet (the same network as ``d2l.LeNet``), the residual block
(the same as ``d2l.Residual``) and the small ResNet."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2lcore.conv import (
    AvgPool2d,
    BatchGradConv2d,
    LeNet,
    Residual,
    SmallResNet,
    conv_output_size,
    corr2d,
)
from d2lcore.models import Dropout

d2l = pytest.importorskip("d2l.torch")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_corr2d_matches_d2l_and_conv2d() -> None:
    X, K = torch.randn(7, 9), torch.randn(3, 2)
    Y = corr2d(X, K)
    assert Y.shape == (5, 8)
    torch.testing.assert_close(Y, d2l.corr2d(X, K))
    torch.testing.assert_close(Y, F.conv2d(X[None, None], K[None, None])[0, 0])


def test_corr2d_small_example() -> None:
    # The d2l book's example: [[0,1,2],[3,4,5],[6,7,8]] with [[0,1],[2,3]].
    X = torch.arange(9.0).reshape(3, 3)
    K = torch.arange(4.0).reshape(2, 2)
    assert corr2d(X, K).tolist() == [[19.0, 25.0], [37.0, 43.0]]


def test_conv_output_size_matches_conv2d() -> None:
    for n, k, p, s in itertools.product((5, 8, 11), (1, 2, 3, 5), (0, 1, 2), (1, 2, 3)):
        if n + 2 * p < k:
            continue
        out = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), padding=p, stride=s)
        assert out.shape[-1] == conv_output_size(n, k, p, s), (n, k, p, s)


def test_conv_output_size_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        conv_output_size(3, 5)
    with pytest.raises(ValueError):
        conv_output_size(8, 3, stride=0)


def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy parameters in registration order (the two models name them differently)."""
    src, dst = list(source.parameters()), list(target.parameters())
    assert [p.shape for p in src] == [p.shape for p in dst]
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.copy_(s)


def test_classic_lenet_equals_d2l_lenet() -> None:
    X = torch.randn(4, 1, 28, 28)
    theirs = d2l.LeNet()
    theirs(X)  # materialize the lazy layers
    ours = LeNet()
    copy_parameters(theirs, ours)
    kinds = lambda m: [type(layer).__name__ for layer in m.net]  # noqa: E731
    # The second convolution is an nn.Conv2d with another weight gradient (tested below).
    assert isinstance(ours.net[3], BatchGradConv2d) and isinstance(ours.net[3], nn.Conv2d)
    assert [k.replace("BatchGrad", "") for k in kinds(ours)] == \
        [k.replace("Lazy", "") for k in kinds(theirs)]  # fmt: skip
    torch.testing.assert_close(ours(X), theirs(X))
    # Trained one step each with SGD, they stay the same network.
    for model in (ours, theirs):
        F.cross_entropy(model(X), torch.arange(4)).backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
    torch.testing.assert_close(ours(X), theirs(X))


def test_modern_lenet_layers_and_shapes() -> None:
    model = LeNet.modern(dropout=0.3)
    layers = [type(layer) for layer in model.net]
    assert nn.Sigmoid not in layers and nn.AvgPool2d not in layers
    assert layers.count(nn.ReLU) == 4 and layers.count(nn.MaxPool2d) == 2
    assert layers.count(nn.BatchNorm2d) == 2 and layers.count(nn.BatchNorm1d) == 2
    assert layers.count(Dropout) == 2
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert isinstance(model.first_conv(), nn.Conv2d)
    assert model.first_conv().weight.shape == (6, 1, 5, 5)
    no_bn = LeNet.modern(batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())


@pytest.mark.parametrize("padding", [0, 2, (1, 0)])
def test_batch_grad_conv_equals_torch(padding: int | tuple[int, int]) -> None:
    torch.manual_seed(0)
    ours = BatchGradConv2d(3, 4, kernel_size=(3, 5), padding=padding).double()
    theirs = nn.Conv2d(3, 4, kernel_size=(3, 5), padding=padding).double()
    theirs.load_state_dict(ours.state_dict())
    X = torch.randn(5, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    out = ours(X)
    torch.testing.assert_close(out, theirs(X))
    grad = torch.randn_like(out)
    for wanted in ((X, ours.weight, ours.bias), (ours.weight,)):  # input gradient or not
        got = torch.autograd.grad(ours(X), wanted, grad)
        ref = [theirs.get_parameter(n) if n else X for n in
               [{id(ours.weight): "weight", id(ours.bias): "bias"}.get(id(t), "") for t in wanted]]
        torch.testing.assert_close(got, torch.autograd.grad(theirs(X), ref, grad))
    # Second derivatives too (a gradient penalty, a Hessian-vector product).
    conv = lambda X, W, b: ours._conv_forward(X, W, b)  # noqa: E731
    args = (X[:2].detach().requires_grad_(), ours.weight, ours.bias)
    assert torch.autograd.gradcheck(conv, args) and torch.autograd.gradgradcheck(conv, args)


def test_batch_grad_conv_without_bias_under_vmap_and_other_convolutions() -> None:
    conv = BatchGradConv2d(2, 3, kernel_size=3, bias=False).double()
    plain = nn.Conv2d(2, 3, kernel_size=3, bias=False).double()
    plain.load_state_dict(conv.state_dict())
    X = torch.randn(4, 2, 6, 6, dtype=torch.float64)

    def weight_grad(layer: nn.Module, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loss = lambda W: torch.func.functional_call(layer, {"weight": W}, (x,)).pow(2).sum()  # noqa: E731
        return torch.func.grad(loss)(W)

    # Stacked models (torch.func): one weight per model, vmapped, equals each alone.
    Ws = torch.randn(3, 3, 2, 3, 3, dtype=torch.float64)
    ours = torch.func.vmap(lambda W: weight_grad(conv, W, X))(Ws)
    torch.testing.assert_close(ours, torch.stack([weight_grad(plain, W, X) for W in Ws]))
    # Strides, groups, dilation and "same" padding are torch's own convolution.
    for kwargs in ({"stride": 2}, {"groups": 2}, {"dilation": 2}, {"padding": "same"}):
        ours_ = BatchGradConv2d(2, 4, 3, **kwargs).double()
        theirs_ = nn.Conv2d(2, 4, 3, **kwargs).double()
        theirs_.load_state_dict(ours_.state_dict())
        torch.testing.assert_close(ours_(X), theirs_(X))


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 16, 10, 10), (2, 3, 7, 8), (5, 2, 6)])
def test_avg_pool_equals_torch_forward_and_backward(shape: tuple[int, ...]) -> None:
    X = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours, theirs = AvgPool2d(kernel_size=2, stride=2)(X), F.avg_pool2d(X, 2)
    grad = torch.randn_like(theirs)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, X, grad)[0],
                               torch.autograd.grad(theirs, X, grad)[0])  # fmt: skip
    assert torch.autograd.gradcheck(AvgPool2d(2, 2), (X[:1, :2].detach().requires_grad_(),))


def test_avg_pool_other_windows_and_under_vmap() -> None:
    X = torch.randn(2, 3, 9, 9)
    for pool in (AvgPool2d(3, stride=2), AvgPool2d(2, stride=1), AvgPool2d(2, padding=1),
                 AvgPool2d(2, ceil_mode=True)):  # fmt: skip
        reference = nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode)
        torch.testing.assert_close(pool(X), reference(X))
    # Stacked models call it under vmap (torch.func), gradients included.
    Xs = torch.randn(4, 2, 3, 8, 8)

    def loss(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return pool(x).pow(2).sum()

    ours = torch.func.vmap(torch.func.grad(lambda x: loss(AvgPool2d(2, 2), x)))(Xs)
    theirs = torch.stack([torch.func.grad(lambda x: loss(nn.AvgPool2d(2, 2), x))(x) for x in Xs])
    torch.testing.assert_close(ours, theirs)


def test_lenet_other_image_size_and_channels() -> None:
    model = LeNet(num_classes=3, in_channels=3, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError):
        LeNet(pool="median")


@pytest.mark.parametrize(("cin", "cout", "stride"), [(8, 8, 1), (3, 6, 1), (4, 8, 2)])
def test_residual_equals_d2l_residual(cin: int, cout: int, stride: int) -> None:
    X = torch.randn(2, cin, 9, 9)
    reshape = stride != 1 or cin != cout
    theirs = d2l.Residual(cout, use_1x1conv=reshape, strides=stride)
    theirs(X)  # materialize the lazy layers
    ours = Residual(cin, cout, stride)
    ours.load_state_dict(theirs.state_dict())  # same names, same shapes
    for mode in (True, False):  # batch statistics, then running statistics
        ours.train(mode)
        theirs.train(mode)
        torch.testing.assert_close(ours(X), theirs(X))
    side = conv_output_size(9, kernel_size=3, padding=1, stride=stride)
    assert ours(X).shape == (2, cout, side, side)


def test_residual_without_skip_is_a_plain_block() -> None:
    block = Residual(4, 4, skip=False, batch_norm=False)
    X = torch.randn(2, 4, 6, 6)
    expected = F.relu(block.conv2(F.relu(block.conv1(X))))
    torch.testing.assert_close(block(X), expected)
    assert block.conv3 is None


def test_small_resnet_shapes_and_learning() -> None:
    model = SmallResNet((4, 8), blocks_per_stage=2, num_classes=3)
    blocks = list(model.blocks)
    assert len(blocks) == 4 and blocks[2].conv1.stride == (2, 2)
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 3)
    # A few steps on a fixed batch lower the loss: it can learn.
    X, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
