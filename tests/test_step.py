"""The training step that replays as a CUDA graph (d2lcore.step), rehearsed on the CPU:
the fixed input tensors, the short last batch run eagerly, the summed losses and a stack
that drops a model give what the plain loop gives, bit for bit; what cannot be replayed
says why."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from d2lcore.batched import StackedOptimizer, fit_stacked, make_stack
from d2lcore.config import ModelSpec, TrainConfig
from d2lcore.data import Splits, TensorLoader
from d2lcore.device import make_generator
from d2lcore.models import MLP
from d2lcore.step import TrainStep, graph_safe, graphs_wanted, settings
from d2lcore.sweep import build_model, train_grid
from d2lcore.train import fit

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def data(n: int = 90, classes: int = 3) -> Splits:
    gen = make_generator(0)
    y = torch.randint(0, classes, (n,), generator=gen)
    X = torch.rand(n, 1, 6, 6, generator=gen)
    X[:, 0, :2, :2] += y[:, None, None].float()
    return Splits((X[:60], y[:60]), (X[60:75], y[60:75]), (X[75:], y[75:]), eval_batch_size=8)


def train_mlp(capture: bool, momentum: float) -> tuple[MLP, list[float]]:
    splits = data()
    torch.manual_seed(0)
    model = MLP(36, (16,), 3, dropout=0.3, generator=make_generator(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=momentum, weight_decay=1e-3)
    # 60 examples in batches of 16: three full batches and a short one of 12 an epoch.
    loader = TensorLoader(*splits.train, batch_size=16, seed=1, device="cpu")
    history = fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=opt, num_epochs=3,
                  val_batches=splits.loader("val"), device=CPU, capture=capture)  # fmt: skip
    return model, history.train_loss + history.val_loss + history.val_acc


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rehearsed_step_equals_the_plain_loop(momentum: float) -> None:
    # (Adam with capturable=True, the other optimizer a graph replays, runs on GPUs only.)
    plain, plain_numbers = train_mlp(capture=False, momentum=momentum)
    rehearsed, numbers = train_mlp(capture=True, momentum=momentum)
    assert numbers == plain_numbers  # bit for bit: the same operations on the same values
    for (name, p), q in zip(plain.state_dict().items(), rehearsed.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(p, q), name


def test_short_batches_run_eagerly_and_the_fixed_inputs_keep_the_first_shape() -> None:
    model = MLP(4, (), 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, nn.CrossEntropyLoss(), opt, stacked=False, device=CPU, capture=True)
    step.new_epoch(None)
    X, y = torch.randn(10, 4), torch.tensor([0, 1] * 5)
    assert step(X[:8], y[:8]) == 8
    assert step(X[8:], y[8:]) == 2  # a short batch: eagerly, the fixed tensors stay
    assert step.static is not None and step.static[0].shape == (8, 4)
    assert step.loss_sum is not None and float(step.loss_sum) > 0
    step.new_epoch(None)  # summed again from zero, in the same tensor
    assert float(step.loss_sum) == 0.0
    with torch.no_grad():
        want = 8 * float(nn.CrossEntropyLoss()(model(X[:8]), y[:8]))  # before the update
    assert step(X[:8], y[:8]) == 8
    assert float(step.loss_sum) == pytest.approx(want, rel=1e-6)


def test_a_learning_rate_changed_between_epochs_starts_the_step_over() -> None:
    # A graph bakes in the rate it was recorded with: a hook that changes the rate must
    # make the step record again, and training must follow the new rate.
    def train(capture: bool) -> list[float]:
        splits = data()
        torch.manual_seed(0)
        model = MLP(36, (16,), 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
        loader = TensorLoader(*splits.train, batch_size=16, seed=1, device="cpu")

        def lower(epoch: int, history: object) -> None:
            for group in opt.param_groups:
                group["lr"] /= 10

        history = fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
                      num_epochs=3, device=CPU, capture=capture, on_epoch_end=lower)  # fmt: skip
        return history.train_loss

    assert train(True) == train(False)
    model = MLP(4, (), 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = TrainStep(model, nn.CrossEntropyLoss(), opt, stacked=False, device=CPU, capture=True)
    step.new_epoch(None)
    X, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    step(X, y)
    first = step.static
    step(X, y)
    assert step.static is first and step.restarts == 0
    opt.param_groups[0]["momentum"] = 0.5
    step(X, y)
    assert step.static is not first and step.restarts == 1
    assert ("lr", 0.1) in settings(opt)[0] and ("momentum", 0.5) in settings(opt)[0]
    adam = torch.optim.Adam(model.parameters(), betas=(0.9, 0.99))
    assert ("betas", (0.9, 0.99)) in settings(adam)[0]


def test_a_stack_that_drops_a_diverged_model_equals_the_plain_loop(monkeypatch) -> None:
    spec = ModelSpec("mlp", 36, 3, hidden_sizes=(16,))
    base = TrainConfig(lr=0.1, num_epochs=3, batch_size=16, dropout=0.2, momentum=0.9)
    configs = [replace(base, lr=lr, seed=s) for lr in (0.1, 1e30, 0.3) for s in (0, 1)]

    def run(mode: str) -> list[tuple[object, float | None]]:
        monkeypatch.setenv("D2L_CUDA_GRAPHS", mode)
        models = [build_model(spec, c, CPU) for c in configs]
        return fit_stacked(models, configs, data(), regression=False, device=CPU)

    plain, rehearsed = run("off"), run("rehearse")
    for (h1, acc1), (h2, acc2) in zip(plain, rehearsed, strict=True):
        assert h1.to_dict() | {"seconds": []} == h2.to_dict() | {"seconds": []}  # type: ignore[attr-defined]
        assert acc1 == acc2
    assert sum(h.diverged for h, _ in plain) == 2  # type: ignore[attr-defined]


def test_a_rehearsed_grid_equals_the_plain_grid(monkeypatch) -> None:
    spec = ModelSpec("mlp", 36, 3, hidden_sizes=(8,))
    base = TrainConfig(lr=0.1, num_epochs=2, batch_size=16)
    axes = {"lr": [0.05, 0.2], "dropout": [0.0, 0.3]}
    grids = {}
    for mode in ("off", "rehearse"):
        monkeypatch.setenv("D2L_CUDA_GRAPHS", mode)
        grids[mode] = train_grid(spec, axes, base, data(), device=CPU, cache=False)
    for a, b in zip(grids["off"], grids["rehearse"], strict=True):
        assert a.history.train_loss == b.history.train_loss
        assert a.history.val_acc == b.history.val_acc


def test_what_cannot_be_replayed_says_why() -> None:
    model = nn.Linear(3, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert graph_safe(sgd, None) is None
    schedule = torch.optim.lr_scheduler.LinearLR(sgd, 0.5, total_iters=3)
    assert "scheduler" in str(graph_safe(sgd, schedule))
    assert "capturable" in str(graph_safe(torch.optim.Adam(model.parameters()), None))
    assert graph_safe(torch.optim.Adam(model.parameters(), capturable=True), None) is None
    with pytest.raises(ValueError, match="scheduler"):
        TrainStep(model, nn.MSELoss(), sgd, scheduler=schedule, stacked=False, device=CPU,
                  capture=True)  # fmt: skip
    # d2lcore's stacked Adam counts its steps in Python, as does a stacked schedule.
    models = [build_model(ModelSpec("softmax", 36, 3), TrainConfig(0.1, 1, seed=s), CPU)
              for s in (0, 1)]  # fmt: skip
    stack = make_stack(models, [0, 1], data().train[0][:1], CPU, shared_input=False)
    assert graph_safe(StackedOptimizer(stack, "sgd", [0.1, 0.2], momentum=[0.9, 0.9]), None) is None
    assert "StackedOptimizer" in str(graph_safe(StackedOptimizer(stack, "adam", [0.1, 0.2]), None))
    scheduled = StackedOptimizer(stack, "sgd", [0.1, 0.2], lr_factors=[[1.0, 0.5]] * 2)
    assert "StackedOptimizer" in str(graph_safe(scheduled, None))


def test_the_mode_comes_from_the_environment(monkeypatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.delenv("D2L_CUDA_GRAPHS", raising=False)
    assert graphs_wanted(cuda) and not graphs_wanted(CPU)
    monkeypatch.setenv("D2L_CUDA_GRAPHS", "off")
    assert not graphs_wanted(cuda)
    monkeypatch.setenv("D2L_CUDA_GRAPHS", "rehearse")
    assert graphs_wanted(CPU)
    monkeypatch.setenv("D2L_CUDA_GRAPHS", "yes")
    with pytest.raises(ValueError, match="D2L_CUDA_GRAPHS='yes' is not one of auto, off"):
        graphs_wanted(CPU)
