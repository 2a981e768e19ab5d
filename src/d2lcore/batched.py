"""Training the models of a grid together, as one stack (:func:`make_stack`, from
:mod:`d2lcore.stacks`) in the one training loop (:func:`~d2lcore.train.fit_stack`).

Each model's result equals training it alone with :func:`~d2lcore.train.fit` (same
seed) up to float rounding, because each model keeps its own:

- initial weights and dropout masks (the stack's, :mod:`d2lcore.stacks`);
- shuffling order: one stream per seed, drawn like :class:`~d2lcore.data.TensorLoader`
  (:class:`StackBatches`);
- optimizer: :class:`StackedOptimizer`, SGD (with momentum) and Adam with per-model
  hyperparameters and schedules, computed as ``torch.optim`` computes them.

A model whose loss stops being finite is recorded as diverged, as :func:`fit` does, and
leaves the stack. When training ends, each model's trained parameters and buffers
(batch-norm statistics) are in the ``nn.Module`` it was given, as :func:`fit` leaves a
model: a diverged one as it was at the end of the epoch that diverged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import nn

from d2lcore.config import TrainConfig
from d2lcore.data import Split
from d2lcore.device import make_generator
from d2lcore.sequential_stack import SequentialStack
from d2lcore.stacks import FuncStack, Stack, losses, why_not_stacked
from d2lcore.train import History, fit_stack

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
ADAM_EPS = 1e-8


class SplitData(Protocol):
    """Training, validation and test tensors (:class:`d2lcore.data.Splits` is one)."""

    @property
    def train(self) -> Split: ...
    @property
    def val(self) -> Split | None: ...
    @property
    def test(self) -> Split | None: ...
    @property
    def eval_batch_size(self) -> int: ...


def make_stack(
    models: Sequence[nn.Module],
    seeds: Sequence[int],
    example: torch.Tensor,
    device: torch.device,
    *,
    shared_input: bool,
    fast: bool = True,
) -> Stack:
    """The :class:`~d2lcore.sequential_stack.SequentialStack` of ``models`` where it
    reproduces them (and ``fast``), else their :class:`~d2lcore.stacks.FuncStack`, on
    ``device``. ``seeds[k]`` seeds model k's dropout stream
    (:func:`~d2lcore.stacks.dropout_generator`); ``example`` is one input with its batch
    axis; ``shared_input``: every model will see the same batches."""
    stack = None
    if fast:
        stack = SequentialStack.from_models(models, seeds, example, device,
                                            shared_input=shared_input)  # fmt: skip
    return stack if stack is not None else FuncStack(models, seeds, example, device)


class StackedOptimizer:
    """SGD or Adam over a stack's parameters, each model with its own ``lr``,
    ``weight_decay``, (SGD's) ``momentum`` and, where ``lr_factors`` ``(K, T)`` is
    given, schedule (its ``lr`` at step ``t`` scaled by ``lr_factors[k, t]``, as
    ``LambdaLR`` stepped after every step does).

    The one optimizer written out here: ``torch.optim`` takes one learning rate per
    parameter tensor, and a stacked tensor holds K models. The update is torch's, step
    for step (``tests/test_batched.py`` compares it with ``torch.optim``). It follows
    the stack's ``rows``: the state of a model that left the stack goes with it."""

    def __init__(
        self,
        stack: Stack,
        kind: str,
        lr: Sequence[float],
        *,
        weight_decay: Sequence[float] | None = None,
        momentum: Sequence[float] | None = None,
        lr_factors: Sequence[Sequence[float]] | None = None,
    ) -> None:
        if kind not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {kind!r}; choose 'sgd' or 'adam'")
        self.stack, self.kind, self.rows = stack, kind, stack.rows
        self.params = list(stack.params)
        self.model_dims = list(stack.model_dims)

        def per_model(values: Sequence[float] | Sequence[Sequence[float]]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=stack.device)

        self.lr = per_model(lr)
        self.weight_decay = per_model(weight_decay or [0.0] * len(lr))
        self.decay = bool((self.weight_decay != 0).any())  # read once: no GPU sync per step
        self.momentum = None if momentum is None or not any(momentum) else per_model(momentum)
        if self.momentum is not None and kind != "sgd":
            raise ValueError("momentum is SGD's; Adam takes none")
        self.lr_factors = None if lr_factors is None else per_model(lr_factors)  # (K, T)
        names = {"adam": ("exp_avg", "exp_avg_sq"),
                 "sgd": ("momentum_buffer",) if self.momentum is not None else ()}  # fmt: skip
        # Per parameter, as torch.optim names it; zeros give torch's first step (a
        # momentum buffer = the gradient) too.
        self.state = [{name: torch.zeros_like(p) for name in names[kind]} for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def broadcast(self, values: torch.Tensor, i: int) -> torch.Tensor:
        """Per-model ``values`` ``(K,)`` shaped to broadcast against parameter ``i``."""
        shape = [1] * self.params[i].dim()
        shape[self.model_dims[i]] = -1
        return values.view(shape)

    def follow_rows(self) -> None:
        """Go on with the stack's new parameters and the state of the models still in
        it."""
        index = torch.tensor([self.rows.index(r) for r in self.stack.rows],
                             dtype=torch.long, device=self.lr.device)  # fmt: skip
        self.params = list(self.stack.params)
        self.state = [{name: t.index_select(dim, index) for name, t in state.items()}
                      for state, dim in zip(self.state, self.model_dims, strict=True)]  # fmt: skip
        self.lr, self.weight_decay = self.lr[index], self.weight_decay[index]
        if self.momentum is not None:
            self.momentum = self.momentum[index]
        if self.lr_factors is not None:
            self.lr_factors = self.lr_factors[index]
        self.rows = self.stack.rows

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter in place from its ``.grad``."""
        if self.rows is not self.stack.rows:
            self.follow_rows()
        self.steps += 1
        beta1, beta2 = ADAM_BETAS
        rate = self.lr
        if self.lr_factors is not None:  # the schedule's factor of this step, per model
            rate = self.lr * self.lr_factors[:, min(self.steps, self.lr_factors.shape[1]) - 1]
        for i, (p, state) in enumerate(zip(self.params, self.state, strict=True)):
            lr, g = self.broadcast(rate, i), p.grad
            assert g is not None
            if self.decay:
                g = torch.addcmul(g, p, self.broadcast(self.weight_decay, i))  # g + wd p
            if self.kind == "sgd":
                if self.momentum is not None:  # buffer = momentum buffer + g
                    buf = state["momentum_buffer"]
                    buf.mul_(self.broadcast(self.momentum, i)).add_(g)
                    g = buf
                p.addcmul_(g, lr, value=-1.0)  # p - lr g, in place
                continue
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(ADAM_EPS)
            p.sub_(lr / (1 - beta1**self.steps) * m / denom)


class StackBatches:
    """Minibatches of ``(X, y)`` for a stack, each model's drawn as a
    :class:`~d2lcore.data.TensorLoader` with its seed draws them: one shuffling stream
    per seed. With one seed every model sees the same inputs ``(b, ...)``; else each its
    own, ``(K, b, ...)``. The targets always carry the model axis, ``(K, b, ...)``."""

    def __init__(self, stack: Stack, X: torch.Tensor, y: torch.Tensor, seeds: Sequence[int],
                 batch_size: int) -> None:  # fmt: skip
        self.stack, self.X, self.y, self.batch_size = stack, X, y, batch_size
        unique = sorted(set(seeds))
        self.shufflers = [make_generator(s) for s in unique]  # on the CPU, like TensorLoader
        self.seed_of = torch.tensor([unique.index(s) for s in seeds], device=X.device)

    def __iter__(self) -> Iterator[Split]:
        n, K = len(self.y), self.stack.num_models
        orders = torch.stack([torch.randperm(n, generator=g) for g in self.shufflers])
        orders = orders.to(self.X.device)
        seed_of = self.stack.select(self.seed_of)
        for start in range(0, n, self.batch_size):
            idx = orders[:, start : start + self.batch_size]  # (seeds, b)
            if len(self.shufflers) == 1:  # one batch for all
                y = self.y[idx[0]]
                yield self.X[idx[0]], y.expand(K, *y.shape)
            else:
                rows = idx[seed_of]  # (K, b)
                yield self.X[rows], self.y[rows]


@torch.no_grad()
def evaluate(stack: Stack, X: torch.Tensor, y: torch.Tensor, *, batch_size: int,
             regression: bool) -> dict[str, list[float]]:  # fmt: skip
    """Each model's mean loss over ``(X, y)`` (one set shared by all), and for classes
    its accuracy: ``{"val_loss": [...], "val_acc": [...]}``."""
    loss_sum = torch.zeros(stack.num_models, device=X.device)
    correct = torch.zeros(stack.num_models, dtype=torch.long, device=X.device)
    n = len(y)
    for start in range(0, n, batch_size):
        Xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        out = stack(Xb)
        loss_sum += losses(out, yb, regression) * len(yb)
        if not regression:
            correct += (out.argmax(dim=-1) == yb).sum(dim=1)
    numbers = {"val_loss": [float(v) / n for v in loss_sum.cpu()]}
    if not regression:
        numbers["val_acc"] = [int(c) / n for c in correct.cpu()]
    return numbers


def fit_stacked(
    models: Sequence[nn.Module],
    configs: Sequence[TrainConfig],
    data: SplitData,
    *,
    regression: bool,
    device: torch.device,
    fast: bool = True,
) -> list[tuple[History, float | None]]:
    """Train K initialized models of one architecture together; return each one's
    history and test accuracy (``None`` for regression, a diverged model, or no test
    split). Each of ``models`` ends on ``device`` holding its trained parameters and
    buffers, in training mode, as :func:`~d2lcore.train.fit` leaves a model; a diverged
    one holds the (not finite) numbers of the epoch where it diverged.

    ``configs[k]`` holds model k's ``lr``, ``weight_decay``, ``momentum``, learning-rate
    schedule, ``seed`` (its shuffling and dropout streams) and ``optimizer``;
    ``batch_size``, ``num_epochs`` and ``optimizer`` must be the same for all. The
    dropout rates are read from the models. Each history's ``seconds`` is the model's
    share of the epoch's time. ``fast=False`` always stacks with ``torch.func``
    (:class:`~d2lcore.stacks.FuncStack`). Raises ``ValueError`` when the models cannot
    stack (:func:`~d2lcore.stacks.why_not_stacked`).
    """
    first = configs[0]
    if len({(c.batch_size, c.num_epochs, c.optimizer) for c in configs}) > 1:
        raise ValueError("models trained together need one batch_size, num_epochs and optimizer")
    X_train, y_train = data.train[0].to(device), data.train[1].to(device)
    reason = why_not_stacked(models, X_train[:1])
    if reason is not None:
        raise ValueError(f"these models cannot be stacked: {reason}")
    seeds = [c.seed for c in configs]
    stack = make_stack(models, seeds, X_train[:1], device, shared_input=len(set(seeds)) == 1,
                       fast=fast)  # fmt: skip
    steps_per_epoch = math.ceil(len(y_train) / first.batch_size)
    optimizer = StackedOptimizer(
        stack, first.optimizer, [c.lr for c in configs],
        weight_decay=[c.weight_decay for c in configs], momentum=[c.momentum for c in configs],
        lr_factors=([c.lr_factors(steps_per_epoch) for c in configs]
                    if any(c.scheduled for c in configs) else None))  # fmt: skip
    val = None if data.val is None else (data.val[0].to(device), data.val[1].to(device))

    def on_val(stack: Stack) -> dict[str, list[float]]:
        assert val is not None
        return evaluate(stack, *val, batch_size=data.eval_batch_size, regression=regression)

    histories = fit_stack(stack, StackBatches(stack, X_train, y_train, seeds, first.batch_size),
                          loss_fn=lambda out, y: losses(out, y, regression), optimizer=optimizer,
                          num_epochs=first.num_epochs, evaluate=None if val is None else on_val,
                          device=device)  # fmt: skip
    test_acc: list[float | None] = [None] * len(configs)
    alive = [k for k in stack.rows if not histories[k].diverged]
    if data.test is not None and not regression and alive:
        stack.eval()
        acc = evaluate(stack, data.test[0].to(device), data.test[1].to(device),
                       batch_size=data.eval_batch_size, regression=False)["val_acc"]  # fmt: skip
        for k, a in zip(stack.rows, acc, strict=True):
            test_acc[k] = a
    stack.write_back()
    for model in models:  # in training mode, as fit leaves a model
        model.train(True)
    return list(zip(histories, test_acc, strict=True))
