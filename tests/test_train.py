import pytest
import torch
from torch import nn

from d2lcore.data import TensorLoader, synthetic_linear_data, train_val_split
from d2lcore.models import MLP, LinearRegression
from d2lcore.train import History, fit


def _linreg_loaders(seed=0):
    X, y = synthetic_linear_data([2.0, -3.4], 4.2, 1000, noise=0.01, seed=seed, device="cpu")
    (Xt, yt), (Xv, yv) = train_val_split(X, y, val_size=200, seed=seed)
    return (
        TensorLoader(Xt, yt, batch_size=10, seed=seed, device="cpu"),
        TensorLoader(Xv, yv, batch_size=200, shuffle=False, device="cpu"),
    )


def _fit_linreg(lr: float) -> tuple[LinearRegression, History]:
    train, val = _linreg_loaders()
    model = LinearRegression(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = fit(model, train, loss_fn=nn.MSELoss(), optimizer=optimizer, num_epochs=5,
                  val_batches=val, device=torch.device("cpu"))  # fmt: skip
    return model, history


def test_fit_recovers_true_linear_weights():
    model, history = _fit_linreg(lr=0.03)
    w, b = model.linear.weight.detach().flatten(), model.linear.bias.item()
    assert torch.allclose(w, torch.tensor([2.0, -3.4]), atol=0.01)
    assert b == pytest.approx(4.2, abs=0.01)
    assert history.num_epochs == 5 and not history.diverged
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_acc == []  # regression: no accuracy
    assert len(history.seconds) == 5


def test_diverging_learning_rate_is_marked_not_raised():
    _, history = _fit_linreg(lr=1e3)
    assert history.diverged and history.diverged_epoch == 1
    assert history.num_epochs == 0
    assert history.final()["train_loss"] is None


def test_fit_is_repeatable_and_classifies():
    def run():
        torch.manual_seed(0)
        X = torch.randn(300, 1, 4, 4)
        y = (X.flatten(1).sum(1) > 0).long()
        loader = TensorLoader(X, y, batch_size=32, seed=1, device="cpu")
        model = MLP(16, (8,), 2, dropout=0.1)
        seen = []
        h = fit(
            model,
            loader,
            loss_fn=nn.CrossEntropyLoss(),
            num_epochs=4,
            val_batches=loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
            device=torch.device("cpu"),
            on_epoch_end=lambda e, hist: seen.append((e, hist.num_epochs)),
        )
        return h, seen

    h1, seen = run()
    h2, _ = run()
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert h1.val_acc[-1] > 0.8


def test_history_round_trips_through_a_dict():
    h = History([1.0, 0.5], [1.1, 0.6], [0.3, 0.7], [0.1, 0.1], diverged=True, diverged_epoch=3)
    assert History.from_dict(h.to_dict()) == h
    assert h.final() == {
        "train_loss": 0.5,
        "val_loss": 0.6,
        "val_acc": 0.7,
        "seconds": pytest.approx(0.2),
    }
