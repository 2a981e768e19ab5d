"""Tests of d2lcore.batched, d2lcore.stacks and d2lcore.sequential_stack: K models
trained stacked each equal the same model trained alone with train_one
(d2lcore.train.fit, same seed), through torch.func (FuncStack) for any module and
through the batched-matmul fast path (SequentialStack) for plain ones; and the stacked
optimizer equals torch.optim."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from d2lcore import stacks
from d2lcore.batched import StackedOptimizer, fit_stacked, make_stack
from d2lcore.config import ModelSpec, TrainConfig
from d2lcore.conv import Residual
from d2lcore.data import Splits, TensorLoader
from d2lcore.device import make_generator
from d2lcore.models import MLP, Dropout
from d2lcore.sequential_stack import SequentialStack
from d2lcore.stacks import FuncStack, why_not_stacked
from d2lcore.sweep import RunResult, build_model, train_one
from d2lcore.train import fit

RTOL = 1e-4
CPU = torch.device("cpu")
EXAMPLE = torch.rand(1, 1, 12, 12)  # one input of images()
pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 80, size: int = 12, classes: int = 3) -> Splits:
    """Tiny images whose class brightens a corner: train 48, val 16, test 16."""
    gen = make_generator(0)
    y = torch.randint(0, classes, (n,), generator=gen)
    X = torch.rand(n, 1, size, size, generator=gen)
    X[:, 0, :3, :3] += y[:, None, None].float()
    a, b = n * 3 // 5, n * 4 // 5
    return Splits((X[:a], y[:a]), (X[a:b], y[a:b]), (X[b:], y[b:]), eval_batch_size=16)


def assert_equals_alone(
    spec: ModelSpec, configs: list[TrainConfig], data: Splits, *, fast: bool = True
) -> list[tuple[object, float | None]]:
    """Train ``configs`` stacked and each alone; every epoch's numbers must agree, and
    so must the trained weights and buffers written back into the stacked models."""
    models = [build_model(spec, c, CPU) for c in configs]
    stacked = fit_stacked(models, configs, data, regression=spec.regression, device=CPU, fast=fast)
    for config, model, (history, test_acc) in zip(configs, models, stacked, strict=True):
        alone: RunResult = train_one(spec, config, data)
        assert alone.model is not None
        assert_same_state(model, alone.model, diverged=alone.diverged)
        want = alone.history
        assert (history.diverged, history.diverged_epoch) == (want.diverged, want.diverged_epoch)
        for name in ("train_loss", "val_loss", "val_acc"):
            got = getattr(history, name)
            assert got == pytest.approx(getattr(want, name), rel=RTOL), (config, name)
        if alone.test_acc is None:
            assert test_acc is None
        else:
            assert test_acc == pytest.approx(alone.test_acc, abs=1e-9)
    return stacked


def assert_same_state(got: nn.Module, want: nn.Module, *, diverged: bool = False) -> None:
    """``got`` holds ``want``'s parameters and buffers (1e-4), and is in training mode
    as ``want`` is; for a diverged run, both hold numbers that are not finite."""
    assert got.training == want.training
    a, b = got.state_dict(), want.state_dict()
    assert list(a) == list(b)
    changed = False
    for name in a:
        if diverged:
            continue
        torch.testing.assert_close(a[name], b[name], rtol=RTOL, atol=1e-6, msg=name)
        changed = True
    if diverged:
        assert not all(torch.isfinite(t).all() for t in a.values() if t.is_floating_point())
        assert not all(torch.isfinite(t).all() for t in b.values() if t.is_floating_point())
    assert changed or diverged


def grid(base: TrainConfig, **axes: list[object]) -> list[TrainConfig]:
    configs = [base]
    for name, values in axes.items():
        configs = [replace(c, **{name: v}) for c in configs for v in values]
    return configs


# ----------------------------------------------------------------------------------
# MLP, both paths


@pytest.mark.parametrize("fast", [True, False], ids=["matmuls", "torch.func"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_with_dropout_equals_alone(fast: bool, optimizer: str) -> None:
    spec = ModelSpec("mlp", 144, 3, hidden_sizes=(16, 8))
    lr = 0.3 if optimizer == "sgd" else 0.01
    base = TrainConfig(lr=lr, num_epochs=2, batch_size=16, optimizer=optimizer, init_std=0.1)
    configs = grid(base, lr=[lr, lr / 3], weight_decay=[0.0, 0.01], dropout=[0.2, 0.5],
                   seed=[0, 3])  # fmt: skip
    configs[1] = replace(configs[1], init="normal")  # and one initialization of its own
    data = images()
    models = [build_model(spec, c, CPU) for c in configs]
    stack = make_stack(models, [0] * len(models), EXAMPLE, CPU, shared_input=False, fast=fast)
    assert isinstance(stack, SequentialStack if fast else FuncStack)
    stacked = assert_equals_alone(spec, configs, data, fast=fast)
    # The dropout rate reached each model: same config but the rate, different runs.
    assert stacked[0][0].train_loss != stacked[2][0].train_loss  # type: ignore[attr-defined]


@pytest.mark.parametrize("fast", [True, False], ids=["matmuls", "torch.func"])
def test_softmax_weights_are_written_back(fast: bool) -> None:
    """The linear model: each module given to fit_stacked ends with the weights
    train_one gives it (checked in assert_equals_alone), on both paths."""
    spec = ModelSpec("softmax", 144, 3)
    base = TrainConfig(lr=0.5, num_epochs=2, batch_size=16)
    configs = grid(base, lr=[0.1, 0.5], init=["zeros", "normal"], seed=[0, 1])
    models = [build_model(spec, c, CPU) for c in configs]
    initial = [m.state_dict()["linear.weight"].clone() for m in models]
    stack = make_stack(models, [0] * len(models), EXAMPLE, CPU, shared_input=False, fast=fast)
    assert isinstance(stack, SequentialStack if fast else FuncStack)
    assert_equals_alone(spec, configs, images(), fast=fast)
    fit_stacked(models, configs, images(), regression=False, device=CPU, fast=fast)
    for model, before in zip(models, initial, strict=True):
        assert not torch.equal(model.state_dict()["linear.weight"], before)


def test_shared_seed_mlp_on_torch_func() -> None:
    """One seed: one batch for all, passed to vmap unbatched (in_dims None)."""
    spec = ModelSpec("mlp", 144, 3, hidden_sizes=(16,), activation="tanh")
    base = TrainConfig(lr=0.2, num_epochs=2, batch_size=16, dropout=0.3)
    assert_equals_alone(spec, grid(base, lr=[0.05, 0.2], dropout=[0.1, 0.4]), images(),
                        fast=False)  # fmt: skip


# ----------------------------------------------------------------------------------
# Convolutional networks: torch.func only


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "sigmoid", "pool": "avg"},  # the classic LeNet
        {"activation": "relu", "pool": "max"},  # the modern one
    ],
    ids=["classic", "modern"],
)
def test_lenet_with_dropout_equals_alone(options: dict[str, str]) -> None:
    spec = ModelSpec("lenet", 1, 3, **options)
    base = TrainConfig(lr=0.1, num_epochs=2, batch_size=16, dropout=0.3)
    configs = grid(base, lr=[0.05, 0.3], dropout=[0.2, 0.5], seed=[0, 1])
    configs[0] = replace(configs[0], init="kaiming_normal")
    assert_equals_alone(spec, configs, images(n=60, size=28))


# With batch norm, Adam is left out: the convolution biases before a batch norm get
# gradients that are zero up to rounding, which Adam scales up to steps of size lr, so
# their drift (seen only by the running means, hence the validation loss) differs at
# 1e-3 between any two orders of summation: train_one alone, on 1 and on 2 threads,
# gives validation losses 4e-4 apart with identical training losses. SGD leaves them be.
@pytest.mark.parametrize(
    ("batch_norm", "optimizer", "lr"),
    [(False, "adam", 0.003), (True, "sgd", 0.05)],
    ids=["plain-adam", "batch-norm-sgd"],
)
def test_resnet_equals_alone(batch_norm: bool, optimizer: str, lr: float) -> None:
    spec = ModelSpec("resnet", 1, 3, hidden_sizes=(4, 8), batch_norm=batch_norm)
    base = TrainConfig(lr=lr, num_epochs=2, batch_size=16, dropout=0.25, optimizer=optimizer)
    configs = grid(base, lr=[lr, 3 * lr], weight_decay=[0.0, 0.01], seed=[0, 2])
    assert_equals_alone(spec, configs, images(size=8))


def test_residual_blocks_equal_alone_with_sgd() -> None:
    """Any module stacks: a bare Sequential around residual blocks, no ModelSpec."""
    data = images(size=8)

    def model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(Residual(1, 4, batch_norm=False), Residual(4, 4, stride=2),
                             nn.Flatten(), nn.Linear(64, 3))  # fmt: skip

    configs = [TrainConfig(lr=lr, num_epochs=2, batch_size=16, seed=s)
               for lr in (0.02, 0.1) for s in (0, 1)]  # fmt: skip
    stacked = fit_stacked([model(c.seed) for c in configs], configs, data, regression=False,
                          device=CPU)  # fmt: skip
    for c, (history, _) in zip(configs, stacked, strict=True):
        m = model(c.seed)
        opt = torch.optim.SGD(m.parameters(), lr=c.lr)
        want = fit(m, TensorLoader(*data.train, batch_size=16, seed=c.seed),
                   loss_fn=nn.CrossEntropyLoss(), optimizer=opt, num_epochs=2,
                   val_batches=TensorLoader(*data.val, batch_size=16, shuffle=False))  # fmt: skip
        assert history.train_loss == pytest.approx(want.train_loss, rel=RTOL)
        assert history.val_acc == pytest.approx(want.val_acc, abs=1e-9)


# ----------------------------------------------------------------------------------
# Divergence, and what cannot stack


@pytest.mark.parametrize("fast", [True, False], ids=["matmuls", "torch.func"])
def test_diverged_models_are_dropped(fast: bool) -> None:
    spec = ModelSpec("mlp", 144, 3, hidden_sizes=(16,))
    base = TrainConfig(lr=0.1, num_epochs=3, batch_size=16, dropout=0.2)
    configs = grid(base, lr=[0.1, 1e30, 0.3], seed=[0, 1])
    stacked = assert_equals_alone(spec, configs, images(), fast=fast)
    for (history, test_acc), c in zip(stacked, configs, strict=True):
        assert history.diverged == (c.lr == 1e30)  # type: ignore[attr-defined]
        assert (test_acc is None) == (c.lr == 1e30)


def test_lenet_divergence_does_not_disturb_the_others() -> None:
    spec = ModelSpec("lenet", 1, 3, activation="relu", pool="max")
    base = TrainConfig(lr=0.1, num_epochs=2, batch_size=16, dropout=0.5)
    assert_equals_alone(spec, grid(base, lr=[0.05, 1e30]), images(n=40, size=28))


def test_what_cannot_stack_says_why() -> None:
    example = torch.rand(1, 1, 12, 12)
    mlps = [MLP(144, (8,), 3), MLP(144, (9,), 3)]
    assert "differ" in str(why_not_stacked(mlps, example))
    strides = [nn.Sequential(nn.Conv2d(1, 2, 3, stride=s), nn.Flatten()) for s in (1, 2)]
    assert "differ" in str(why_not_stacked(strides, example))  # same weights, other layer
    drop = Dropout(0.5)
    twice = nn.Sequential(nn.Flatten(), nn.Linear(144, 8), drop, drop, nn.Linear(8, 3))
    assert "more than once" in str(why_not_stacked([twice, twice], example))
    configs = [TrainConfig(lr=0.1, num_epochs=1)] * 2
    with pytest.raises(ValueError, match="cannot be stacked"):
        fit_stacked(mlps, configs, images(), regression=False, device=CPU)
    assert why_not_stacked([MLP(144, (8,), 3), MLP(144, (8,), 3)], example) is None


def test_fast_path_takes_only_what_it_reproduces() -> None:
    plain = [MLP(144, (8,), 3, dropout=0.5) for _ in range(2)]
    assert isinstance(make_stack(plain, [0, 0], EXAMPLE, CPU, shared_input=True), SequentialStack)

    class Doubled(MLP):
        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(X)

    odd = [nn.Sequential(nn.Flatten(), nn.Linear(144, 3, bias=False)) for _ in range(2)]
    for models in ([Doubled(144, (8,), 3) for _ in range(2)], odd):
        assert isinstance(make_stack(models, [0, 0], EXAMPLE, CPU, shared_input=True), FuncStack)


def test_dropout_calls_and_the_stacks_draws() -> None:
    """Each model of a stack compares its own draws with its own rate; the foundation's
    Dropout carries nothing for stacking."""
    assert list(Dropout(0.25).state_dict()) == [] and list(Dropout(0.25).buffers()) == []
    h = torch.ones(4, 6)
    assert stacks.dropout_calls(MLP(6, (5, 4), 2, dropout=0.1), h[:1]) == [
        ("net.3", torch.Size([5])),
        ("net.6", torch.Size([4])),
    ]
    draws = stacks.StackDropout([[0.2], [0.6], [0.0]], [torch.Size([5])], [0, 0, 0], CPU)
    assert draws.rates[0].tolist() == pytest.approx([0.2, 0.6, 0.0])
    (u,) = draws.draw(4)
    assert u.shape == (3, 4, 5)  # one stream, and a model that draws nothing: zeros
    alone = torch.rand(4, 5, generator=stacks.dropout_generator(0, CPU))
    assert torch.equal(u[0], alone) and torch.equal(u[1], alone) and not u[2].any()
    (shared,) = stacks.StackDropout([[0.2], [0.6]], [torch.Size([5])], [0, 0], CPU).draw(4)
    assert shared.shape == (1, 4, 5) and torch.equal(shared[0], alone)


def test_fast_path_stacks_other_activations_and_missing_dropout() -> None:
    """The playground's models: one width and depth, each its own activation and
    dropout rate (none, too); each computes what it computes alone."""
    torch.manual_seed(0)
    kinds = [("relu", 0.0), ("relu", 0.3), ("tanh", 0.5), ("sigmoid", 0.0)]
    models = [MLP(2, (6, 6), 2, activation=a, dropout=p, generator=stacks.dropout_generator(0, CPU))
              for a, p in kinds]  # fmt: skip
    stack = make_stack(models, [0] * 4, torch.rand(1, 2), CPU, shared_input=False)
    assert isinstance(stack, SequentialStack) and len(stack.runs[0]) == 3
    X = torch.rand(4, 10, 2)
    out = stack(X)  # training: dropout
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(X[k]))
    stack.eval()
    alone = [m.eval()(x) for m, x in zip(models, X, strict=True)]
    torch.testing.assert_close(stack(X), torch.stack(alone))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stacked_optimizer_equals_torch_optim(optimizer: str) -> None:
    """Each model's slice of the stack moves as torch.optim moves that model alone:
    per-model lr, weight decay, momentum and schedule, on the same gradients."""
    K, steps = 3, 5
    lrs, decays, momenta = [0.1, 0.03, 0.5], [0.0, 0.01, 0.1], [0.0, 0.9, 0.5]
    if optimizer == "adam":
        momenta = [0.0] * K
    factors = [[(t + 1) / steps * (k + 1) for t in range(steps)] for k in range(K)]
    models = [nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)) for _ in range(K)]
    alone = [nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)) for _ in range(K)]
    for a, m in zip(alone, models, strict=True):
        a.load_state_dict(m.state_dict())
    stack = make_stack(models, [0] * K, torch.rand(1, 4), CPU, shared_input=True)
    opt = StackedOptimizer(stack, optimizer, lrs, weight_decay=decays, momentum=momenta,
                           lr_factors=factors)  # fmt: skip
    torch_opts = []
    for k, model in enumerate(alone):
        kwargs = {"momentum": momenta[k]} if optimizer == "sgd" else {}
        make = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        o = make(model.parameters(), lr=lrs[k], weight_decay=decays[k], **kwargs)
        def factor(t: int, k: int = k) -> float:
            return factors[k][min(t, steps - 1)]

        torch_opts.append((o, torch.optim.lr_scheduler.LambdaLR(o, factor)))
    gen = make_generator(0)
    for _ in range(steps):
        X, y = torch.randn(8, 4, generator=gen), torch.randint(0, 2, (8,), generator=gen)
        opt.zero_grad()
        stacks.losses(stack(X), y, False).sum().backward()
        opt.step()
        for model, (o, schedule) in zip(alone, torch_opts, strict=True):
            o.zero_grad()
            nn.functional.cross_entropy(model(X), y).backward()
            o.step()
            schedule.step()
    stack.write_back()
    for model, want in zip(models, alone, strict=True):
        for (name, a), b in zip(model.state_dict().items(), want.state_dict().values(),
                                strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="momentum is SGD's"):
        StackedOptimizer(stack, "adam", lrs, momentum=[0.9] * K)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_lenet_grid_stacks_on_cuda_and_equals_alone() -> None:
    from d2lcore.sweep import train_grid

    spec = ModelSpec("lenet", 1, 3, activation="relu", pool="max", batch_norm=True)
    base = TrainConfig(lr=0.05, num_epochs=2, batch_size=16)
    data = images(n=60, size=28)
    axes = {"lr": [0.05, 0.2], "dropout": [0.0, 0.3], "seed": [0, 1]}
    grid = train_grid(spec, axes, base, data, device="cuda", cache=False, batched=True)
    assert grid.meta["batched"] is True and "unstacked_reason" not in grid.meta
    for run in grid:
        alone = train_one(spec, replace(base, **run.config), data, device="cuda")
        assert run.history.train_loss == pytest.approx(alone.history.train_loss, rel=RTOL)
        assert run.history.val_loss == pytest.approx(alone.history.val_loss, rel=RTOL)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_models_built_on_the_cpu_stack_on_the_device_with_torch_func(device: str) -> None:
    """build_model leaves the models on the CPU; torch.func's stack moves them all to
    the training device (on a GPU, stacking the first there and the rest on the CPU
    once failed), and each model ends there holding its trained weights."""
    on = torch.device(device)
    spec = ModelSpec("mlp", 144, 3, hidden_sizes=(16, 8))
    base = TrainConfig(lr=0.1, num_epochs=1, batch_size=16)
    configs = grid(base, lr=[0.1, 0.3], dropout=[0.2, 0.5])
    models = [build_model(spec, c, on) for c in configs]
    initial = [m.state_dict()["net.1.weight"].clone() for m in models]
    results = fit_stacked(models, configs, images(), regression=False, device=on, fast=False)
    assert all(p.device.type == device for m in models for p in m.parameters())
    assert len(results) == 4 and all(h.train_loss and h.train_loss[-1] < 10 for h, _ in results)
    for model, before in zip(models, initial, strict=True):
        assert not torch.equal(model.state_dict()["net.1.weight"].cpu(), before)
