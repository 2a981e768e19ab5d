import pytest
import torch
from torch import nn

from d2lcore.data import TensorLoader, synthetic_linear_data, train_val_split
from d2lcore.models import MLP, LinearRegression
from d2lcore.train import History, RunResult, fit, seeded


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


def test_evaluate_records_its_numbers_each_epoch():
    train, val = _linreg_loaders()
    model = LinearRegression(2)
    modes = []

    def probe(m):
        modes.append((m.training, torch.is_grad_enabled()))
        return {"bias": m.linear.bias.item(), "val_loss": 0.5}

    h = fit(model, train, loss_fn=nn.MSELoss(), num_epochs=3, evaluate=probe,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.03),
            device=torch.device("cpu"))  # fmt: skip
    assert h.val_loss == [0.5, 0.5, 0.5]  # a History field goes to its own list
    assert list(h.metrics) == ["bias"] and len(h.metrics["bias"]) == 3
    assert h.metrics["bias"][-1] == pytest.approx(model.linear.bias.item())
    assert modes == [(False, False)] * 3 and model.training  # eval mode, no grad, restored
    assert h.final()["bias"] == h.metrics["bias"][-1]
    with pytest.raises(ValueError, match="val_loss"):  # measured twice
        fit(model, train, loss_fn=nn.MSELoss(), num_epochs=1, val_batches=val, evaluate=probe,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.03))  # fmt: skip


def test_a_non_finite_evaluated_number_is_divergence():
    train, _ = _linreg_loaders()
    model = LinearRegression(2)
    numbers = iter([1.0, float("nan"), 2.0])
    h = fit(model, train, loss_fn=nn.MSELoss(), num_epochs=3,
            evaluate=lambda m: {"score": next(numbers)},
            optimizer=torch.optim.SGD(model.parameters(), lr=0.03),
            device=torch.device("cpu"))  # fmt: skip
    assert h.diverged and h.diverged_epoch == 2
    assert h.metrics == {"score": [1.0]} and h.num_epochs == 1


def test_history_metrics_round_trip_and_old_dicts_load():
    h = History([1.0], [1.1], [], [0.1], metrics={"token_acc": [0.7]})
    assert History.from_dict(h.to_dict()) == h
    old = {"train_loss": [1.0], "val_loss": [], "val_acc": [], "seconds": [0.1],
           "diverged": False, "diverged_epoch": None}  # fmt: skip
    assert History.from_dict(old).metrics == {}
    run = RunResult({"lr": 0.1}, History.from_dict(old))
    assert RunResult.from_dict(run.to_dict()).history == run.history


def test_seeded_repeats_draws_and_restores_the_global_state():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded(5):
        a = torch.rand(3)
    assert torch.equal(torch.random.get_rng_state(), before)
    with seeded(5):
        assert torch.equal(torch.rand(3), a)
