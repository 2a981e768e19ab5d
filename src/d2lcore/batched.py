"""Training K models of one architecture at once, with stacked weights.

The models of a grid differ only in their numbers (learning rate, weight decay, dropout
rate, initial weights, random streams), so their parameters can live in stacked tensors
with a leading model axis ``K`` and every step can be a few batched matmuls instead of K
small ones. Each model's result equals training it alone (same seed) up to float
rounding, because each model keeps its own:

- initial weights: the caller initializes each model alone, and we stack them;
- shuffling order: one stream per seed, drawn like :class:`~d2lcore.data.TensorLoader`;
- dropout masks: one stream per seed, drawn like :class:`~d2lcore.models.Dropout`;
- optimizer: SGD and Adam written out as ``torch.optim`` does them, with per-model
  hyperparameters as ``(K,)`` tensors.

Models that share a seed draw identical random numbers in both streams, so they share
one permutation (one input batch for all, and the first layer becomes a single GEMM)
and one uniform draw per dropout layer (compared against each model's own rate).

A model whose loss stops being finite is recorded as diverged, as :func:`fit` does, and
dropped from the stacks: it can neither poison nor slow down the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from d2lcore.device import make_generator
from d2lcore.models import ACTIVATIONS
from d2lcore.train import History

if TYPE_CHECKING:
    from d2lcore.data import Splits
    from d2lcore.sweep import TrainConfig

#: Offset between a config's seed and the seed of its dropout stream, so the masks do
#: not reuse the numbers of the shuffling and initialization streams.
DROPOUT_STREAM = 1 << 32
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
ADAM_EPS = 1e-8


def dropout_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator dropout masks of a run with ``seed`` come from, on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + DROPOUT_STREAM)
    return gen


class Stack:
    """The parameters of K same-shaped MLPs (with no hidden layer: linear models), stacked.

    Layer i has a weight ``(K, in, out)`` (transposed from ``nn.Linear``'s, so a batch
    goes through it as ``h @ W``) and a bias ``(K, out)``. With ``shared_input`` (every
    model sees the same batch) the first weight is kept as ``(in, K, out)`` instead:
    then that layer, the costly one, is a single ``(b, in) @ (in, K*out)`` GEMM for all
    models, forward and backward, with no copies.
    """

    def __init__(
        self, models: Sequence[nn.Module], device: torch.device, *, shared_input: bool
    ) -> None:
        per_model = [[m for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
        self.params: list[torch.Tensor] = []
        self.model_dims: list[int] = []  # the axis of each parameter that indexes models
        for i, layers in enumerate(zip(*per_model, strict=True)):
            dim = 1 if i == 0 and shared_input else 0
            W = torch.stack([layer.weight.detach().T for layer in layers], dim=dim)
            b = torch.stack([layer.bias.detach() for layer in layers])
            self.params += [
                W.to(device).contiguous().requires_grad_(),
                b.to(device).requires_grad_(),
            ]
            self.model_dims += [dim, 0]

    @property
    def num_models(self) -> int:
        return self.params[1].shape[0]

    @property
    def hidden_sizes(self) -> list[int]:
        return [b.shape[1] for b in self.params[1:-2:2]]

    def broadcast(self, values: torch.Tensor, i: int) -> torch.Tensor:
        """Per-model ``values`` ``(K,)`` shaped to broadcast against parameter ``i``."""
        shape = [1] * self.params[i].dim()
        shape[self.model_dims[i]] = -1
        return values.view(shape)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the models ``rows`` (indices along the model axis)."""
        self.params = [
            p.detach().index_select(dim, rows).requires_grad_()
            for p, dim in zip(self.params, self.model_dims, strict=True)
        ]

    def forward(
        self, X: torch.Tensor, act: nn.Module, scales: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Outputs ``(K, b, out)`` for a batch ``X`` ``(b, in)`` shared by every model or
        ``(K, b, in)``. ``scales`` (training only) multiply each hidden layer's
        activations: inverted-dropout masks, ``(b, K, hidden)`` for a shared first
        layer, else broadcastable to ``(K, b, hidden)``."""
        h, K = X, self.num_models
        num_layers = len(self.params) // 2
        for i in range(num_layers):
            W, bias = self.params[2 * i], self.params[2 * i + 1]
            if self.model_dims[2 * i] == 1:  # shared input, W: (in, K, out)
                # One GEMM for all models; addmm adds the bias as nn.Linear does.
                h = torch.addmm(bias.view(-1), h, W.view(W.shape[0], -1)).view(len(h), K, -1)
            else:  # W: (K, in, out)
                h = torch.baddbmm(bias[:, None, :], h.expand(K, *h.shape[-2:]), W)
            if i < num_layers - 1:
                h = act(h)
                if scales is not None:
                    h = h * scales[i]
            if h.shape[0] != K:  # (b, K, out) -> (K, b, out), a view
                h = h.transpose(0, 1)
        return h


def losses(out: torch.Tensor, y: torch.Tensor, regression: bool) -> torch.Tensor:
    """Mean loss of each model, ``(K,)``: MSE, or cross-entropy over class logits."""
    if y.dim() == out.dim() - (1 if regression else 2):  # targets shared by every model
        y = y.expand(out.shape[0], *y.shape)
    if regression:
        return ((out - y) ** 2).mean(dim=(1, 2))
    # -log softmax(out)[y] = logsumexp(out) - out[y]; with 10 classes this is ~3x
    # faster on the CPU than log_softmax, whose kernel is slow on short rows.
    picked = out.gather(-1, y[..., None]).squeeze(-1)  # (K, b)
    return (out.logsumexp(dim=-1) - picked).mean(dim=1)


@torch.no_grad()
def evaluate(
    stack: Stack,
    X: torch.Tensor,
    y: torch.Tensor,
    act: nn.Module,
    *,
    batch_size: int,
    regression: bool,
) -> tuple[list[float], list[float] | None]:
    """Mean loss of each model over ``(X, y)`` and, for classes, its accuracy."""
    loss_sum = torch.zeros(stack.num_models, device=X.device)
    correct = torch.zeros(stack.num_models, dtype=torch.long, device=X.device)
    n = len(y)
    for start in range(0, n, batch_size):
        Xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        out = stack.forward(Xb, act)
        loss_sum += losses(out, yb, regression) * len(yb)
        if not regression:
            correct += (out.argmax(dim=-1) == yb).sum(dim=1)
    loss = [float(v) / n for v in loss_sum.cpu()]
    return loss, None if regression else [int(c) / n for c in correct.cpu()]


class StackedOptimizer:
    """SGD or Adam over a :class:`Stack`, each model with its own ``lr`` and
    ``weight_decay`` (``(K,)`` tensors), computed as ``torch.optim`` does it."""

    def __init__(
        self, stack: Stack, kind: str, lr: torch.Tensor, weight_decay: torch.Tensor
    ) -> None:
        if kind not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {kind!r}; choose 'sgd' or 'adam'")
        self.stack, self.kind, self.lr, self.weight_decay = stack, kind, lr, weight_decay
        self.decay = bool((weight_decay != 0).any())  # read once: no GPU sync per step
        self.state: list[tuple[torch.Tensor, torch.Tensor]] = []
        if kind == "adam":
            self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in stack.params]
        self.steps = 0

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the models ``rows``, in the stack and here."""
        self.stack.keep_rows(rows)
        dims = self.stack.model_dims[: len(self.state)]
        self.state = [
            (m.index_select(d, rows), v.index_select(d, rows))
            for (m, v), d in zip(self.state, dims, strict=True)
        ]
        self.lr, self.weight_decay = self.lr[rows], self.weight_decay[rows]

    def zero_grad(self) -> None:
        for p in self.stack.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = ADAM_BETAS
        for i, p in enumerate(self.stack.params):
            lr, g = self.stack.broadcast(self.lr, i), p.grad
            assert g is not None
            if self.decay:
                g = torch.addcmul(g, p, self.stack.broadcast(self.weight_decay, i))  # g + wd p
            if self.kind == "sgd":
                p.addcmul_(g, lr, value=-1.0)  # p - lr g, in place
                continue
            m, v = self.state[i]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(ADAM_EPS)
            p.sub_(lr / (1 - beta1**self.steps) * m / denom)


def fit_stacked(
    models: Sequence[nn.Module],
    configs: Sequence[TrainConfig],
    data: Splits,
    *,
    activation: str,
    regression: bool,
    device: torch.device,
) -> list[tuple[History, float | None]]:
    """Train K initialized models of one architecture together; return each one's
    history and test accuracy (``None`` for regression, a diverged model, or no test
    split).

    ``configs[k]`` holds model k's hyperparameters; ``batch_size``, ``num_epochs`` and
    ``optimizer`` must be the same for all. Each history's ``seconds`` is the model's
    share of the epoch's time.
    """
    first = configs[0]
    if len({(c.batch_size, c.num_epochs, c.optimizer) for c in configs}) > 1:
        raise ValueError("models trained together need one batch_size, num_epochs and optimizer")
    act = ACTIVATIONS[activation]()
    seeds = sorted({c.seed for c in configs})
    stack = Stack(models, device, shared_input=len(seeds) == 1)

    def per_model(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    opt = StackedOptimizer(
        stack,
        first.optimizer,
        per_model([c.lr for c in configs]),
        per_model([c.weight_decay for c in configs]),
    )
    p_drop = per_model([c.dropout for c in configs])
    inv_keep = per_model([1.0 / (1.0 - c.dropout) for c in configs])
    seed_of = torch.tensor([seeds.index(c.seed) for c in configs], device=device)
    shufflers = [make_generator(s) for s in seeds]  # on the CPU, like TensorLoader
    droppers = [dropout_generator(s, device) for s in seeds]

    X_train, y_train = data.train[0].to(device).flatten(1), data.train[1].to(device)
    val = None if data.val is None else (data.val[0].to(device).flatten(1), data.val[1].to(device))
    n, bs = len(y_train), first.batch_size
    alive = list(range(len(configs)))  # the config behind each row of the stacks
    histories = [History() for _ in configs]
    for epoch in range(1, first.num_epochs + 1):
        start_time = time.perf_counter()
        orders = torch.stack([torch.randperm(n, generator=g) for g in shufflers]).to(device)
        # The seeds whose dropout stream some living model reads.
        drawing = sorted({seeds.index(configs[k].seed) for k in alive if configs[k].dropout > 0})
        loss_sum = torch.zeros(len(alive), device=device)
        for start in range(0, n, bs):
            idx = orders[:, start : start + bs]  # (S, b)
            b = idx.shape[1]
            rows = idx[0] if len(seeds) == 1 else idx[seed_of]  # (b,) or (K, b)
            X, y = X_train[rows], y_train[rows]
            scales = None
            if drawing:
                scales = [
                    dropout_scales(stack, i, b, droppers, drawing, seed_of, p_drop, inv_keep)
                    for i in range(len(stack.hidden_sizes))
                ]
            loss = losses(stack.forward(X, act, scales), y, regression)  # (K,)
            opt.zero_grad()
            loss.sum().backward()  # the models are independent: each gets its own gradient
            opt.step()
            loss_sum += loss.detach() * b
        train_loss = [float(v) / n for v in loss_sum.cpu()]
        val_loss: list[float] | None = None
        val_acc: list[float] | None = None
        if val is not None:
            val_loss, val_acc = evaluate(
                stack, *val, act, batch_size=data.eval_batch_size, regression=regression
            )
        seconds = (time.perf_counter() - start_time) / len(alive)
        kept = record_epoch(
            [histories[k] for k in alive], epoch, train_loss, val_loss, val_acc, seconds
        )
        if len(kept) < len(alive):  # drop the diverged models from the stacks
            if not kept:
                return [(h, None) for h in histories]
            index = torch.tensor(kept, dtype=torch.long, device=device)
            opt.keep_rows(index)
            p_drop, inv_keep, seed_of = p_drop[index], inv_keep[index], seed_of[index]
            alive = [alive[r] for r in kept]

    test_acc: list[float | None] = [None] * len(configs)
    if data.test is not None and not regression:
        X_test, y_test = data.test[0].to(device).flatten(1), data.test[1].to(device)
        _, acc = evaluate(
            stack, X_test, y_test, act, batch_size=data.eval_batch_size, regression=regression
        )
        for row, k in enumerate(alive):
            test_acc[k] = acc[row] if acc is not None else None
    return list(zip(histories, test_acc, strict=True))


def record_epoch(
    histories: Sequence[History],
    epoch: int,
    train_loss: list[float],
    val_loss: list[float] | None,
    val_acc: list[float] | None,
    seconds: float,
) -> list[int]:
    """Append one epoch to each model's history as :func:`~d2lcore.train.fit` does:
    a model whose losses are not finite is marked diverged instead. Returns the
    indices of the models that go on."""
    kept = []
    for i, h in enumerate(histories):
        if not math.isfinite(train_loss[i]) or (
            val_loss is not None and not math.isfinite(val_loss[i])
        ):
            h.diverged, h.diverged_epoch = True, epoch  # and it stops recording
            continue
        kept.append(i)
        h.train_loss.append(train_loss[i])
        if val_loss is not None:
            h.val_loss.append(val_loss[i])
            if val_acc is not None:
                h.val_acc.append(val_acc[i])
        h.seconds.append(seconds)
    return kept


def dropout_scales(
    stack: Stack,
    layer: int,
    b: int,
    generators: Sequence[torch.Generator],
    drawing: Sequence[int],
    seed_of: torch.Tensor,
    p: torch.Tensor,
    inv_keep: torch.Tensor,
) -> torch.Tensor:
    """Inverted-dropout multipliers (0 or ``1 / (1 - p)``) of one hidden layer for a
    batch of ``b``: one uniform draw per seed in ``drawing`` (the draw
    :class:`~d2lcore.models.Dropout` makes), compared with each model's own rate."""
    width = stack.hidden_sizes[layer]
    device = p.device
    if len(generators) == 1:  # every model reads the one stream
        u = torch.rand(b, width, generator=generators[0], device=device)[None]  # (1, b, width)
    else:
        u = torch.zeros(len(generators), b, width, device=device)  # 0 keeps every unit
        for s in drawing:
            u[s] = torch.rand(b, width, generator=generators[s], device=device)
        u = u[seed_of]  # (K, b, width)
    if stack.model_dims[2 * layer] == 1:  # the shared first layer works in (b, K, width)
        return torch.where(u.transpose(0, 1) >= p.view(1, -1, 1), inv_keep.view(1, -1, 1), 0.0)
    return torch.where(u >= p.view(-1, 1, 1), inv_keep.view(-1, 1, 1), 0.0)
