import pytest
import torch
from torch import nn

from d2lcore.data import TensorLoader
from d2lcore.metrics import accuracy, evaluate


def test_accuracy_matches_d2l_reference():
    d2l = pytest.importorskip("d2l.torch")
    y_hat = torch.randn(50, 10)
    y = torch.randint(0, 10, (50,))
    clf = d2l.Classifier()
    assert accuracy(y_hat, y) == pytest.approx(float(clf.accuracy(y_hat, y)))


def test_accuracy_simple_case():
    y_hat = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(y_hat, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)


def test_evaluate_averages_over_uneven_batches_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    X, y = torch.randn(37, 4), torch.randint(0, 3, (37,))
    loss_fn = nn.CrossEntropyLoss()
    result = evaluate(model, TensorLoader(X, y, batch_size=10, shuffle=False), loss_fn)
    model.eval()
    with torch.no_grad():
        full = model(X)
    model.train()
    assert result.loss == pytest.approx(loss_fn(full, y).item(), rel=1e-5)
    assert result.accuracy == pytest.approx(accuracy(full, y))
    assert model.training


def test_evaluate_regression_has_no_accuracy():
    model = nn.Linear(2, 1)
    X, y = torch.randn(10, 2), torch.randn(10, 1)
    result = evaluate(model, [(X, y)], nn.MSELoss())
    assert result.accuracy is None
    assert result.loss == pytest.approx(nn.MSELoss()(model(X), y).item(), rel=1e-5)
