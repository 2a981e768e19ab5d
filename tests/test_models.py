import pytest
import torch
from torch import nn

from d2lcore.models import MLP, Dropout, LinearRegression, SoftmaxRegression


def test_linear_regression_is_xw_plus_b():
    model = LinearRegression(3)
    X = torch.randn(5, 3)
    expected = X @ model.linear.weight.T + model.linear.bias
    assert torch.allclose(model(X), expected)


def test_softmax_regression_flattens_images_and_matches_d2l():
    d2l = pytest.importorskip("d2l.torch")
    ours = SoftmaxRegression(784, 10)
    ref = d2l.SoftmaxRegression(num_outputs=10, lr=0.1)
    X = torch.rand(4, 1, 28, 28)
    ref(X)  # materialize the lazy layer
    ref_linear = ref.net[1]
    ref_linear.weight.data.copy_(ours.linear.weight.data)
    ref_linear.bias.data.copy_(ours.linear.bias.data)
    assert ours(X).shape == (4, 10)
    assert torch.allclose(ours(X), ref(X), atol=1e-6)


def test_mlp_layers_activation_and_per_layer_dropout():
    model = MLP(784, (256, 128), 10, activation="tanh", dropout=(0.5, 0.2))
    kinds = [type(m).__name__ for m in model.net]
    assert kinds == ["Flatten", "Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert [m.p for m in model.net if isinstance(m, Dropout)] == [0.5, 0.2]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_mlp_equals_the_same_network_written_with_nn_sequential():
    model = MLP(20, (16,), 3, activation="relu", dropout=0.0)
    ref = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    ref.load_state_dict(
        {
            k.replace("net.", "").replace("1.", "0.", 1)
            if k.startswith("net.1.")
            else k.replace("net.3.", "2."): v
            for k, v in model.state_dict().items()
        }
    )
    X = torch.randn(7, 20)
    assert torch.allclose(model(X), ref(X))


def test_mlp_rejects_bad_configuration():
    with pytest.raises(ValueError, match="activation"):
        MLP(4, (3,), 2, activation="swishy")
    with pytest.raises(ValueError, match="dropout rates"):
        MLP(4, (3, 3), 2, dropout=(0.1,))
    with pytest.raises(ValueError, match="dropout probability"):
        MLP(4, (3,), 2, dropout=1.0)


def test_dropout_matches_nn_dropout_in_distribution_and_is_identity_in_eval():
    h = torch.ones(2000, 500)
    ours, ref = Dropout(0.3), nn.Dropout(0.3)
    a, b = ours(h), ref(h)
    # Same contract: kept units scaled by 1/(1-p), zero fraction p, mean preserved.
    assert a.unique().tolist() == pytest.approx(b.unique().tolist())
    assert a.unique().tolist() == pytest.approx([0.0, 1 / 0.7])
    assert (a == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert a.mean().item() == pytest.approx(1.0, abs=0.01)
    ours.eval()
    assert torch.equal(ours(h), h)
