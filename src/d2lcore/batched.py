"""Training K models of one architecture at once, with stacked weights.

The models of a grid differ only in their numbers (learning rate, weight decay, dropout
rate, initial weights, random streams), so their parameters can live in stacked tensors
with a leading model axis ``K`` and every step can be one batched computation instead of
K small ones. The stack is built from the real modules, never from a guess of their
architecture:

- :class:`FuncStack`, for any module: ``torch.func.stack_module_state`` stacks the
  parameters and buffers, and ``vmap`` over ``functional_call`` runs the module's own
  ``forward`` for every model (convolutions become grouped convolutions);
- :class:`SequentialStack`, the fast path for the plain models of
  :mod:`d2lcore.models` (:func:`~d2lcore.models.as_sequential`: Linear, activation,
  Dropout, Flatten layers): the same layers as batched matmuls, measured faster on the
  CPU than ``vmap`` (``benchmarks/bench_grid.py``). When every model sees the same batch
  its first layer is one ``(b, in) @ (in, K*out)`` GEMM. It takes only modules it can
  reproduce exactly, layer by layer; anything else goes to :class:`FuncStack`.

Each model's result equals training it alone (same seed) up to float rounding, because
each model keeps its own:

- initial weights: the caller initializes each model alone, and we stack them;
- shuffling order: one stream per seed, drawn like :class:`~d2lcore.data.TensorLoader`;
- dropout masks: one stream per seed, drawn outside ``vmap`` like
  :class:`~d2lcore.models.Dropout` draws them (same shapes, same layer order) and handed
  to each model, which compares them with its own rate (a buffer of the module);
- optimizer: SGD (with momentum) and Adam written out as ``torch.optim`` does them,
  with per-model hyperparameters as ``(K,)`` tensors and per-model schedules.

A model whose loss stops being finite is recorded as diverged, as :func:`fit` does, and
dropped from the stacks: it can neither poison nor slow down the others.

When training ends, each model's trained parameters and buffers (batch-norm statistics)
are written back into the ``nn.Module`` it was given, as :func:`fit` leaves a model: a
diverged one as it was at the end of the epoch that diverged (its numbers not finite;
its history says so).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from d2lcore.config import TrainConfig
from d2lcore.data import Split
from d2lcore.device import make_generator
from d2lcore.models import ACTIVATIONS, Dropout, as_sequential
from d2lcore.train import History

#: Offset between a config's seed and the seed of its dropout stream, so the masks do
#: not reuse the numbers of the shuffling and initialization streams.
DROPOUT_STREAM = 1 << 32
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


def dropout_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator dropout masks of a run with ``seed`` come from, on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + DROPOUT_STREAM)
    return gen


# ----------------------------------------------------------------------------------
# What can stack, and the dropout draws


def dropout_calls(model: nn.Module, example: torch.Tensor) -> list[tuple[str, torch.Size]]:
    """The :class:`~d2lcore.models.Dropout` layers ``model`` calls in one forward pass,
    in order: each one's name and the shape of one example's input. Found by running
    ``example`` (one input, with its batch axis) in evaluation mode."""
    names: dict[nn.Module, str] = {
        m: name for name, m in model.named_modules() if isinstance(m, Dropout)
    }
    calls: list[tuple[str, torch.Size]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        calls.append((names[module], args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(record) for m in names]
    was_training = model.training
    tensors = [*model.parameters(), *model.buffers()]
    if tensors:  # run where the model is
        example = example.to(tensors[0].device)
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return calls


def structure(model: nn.Module) -> tuple[object, ...]:
    """What must be equal for models to stack: every module's type and settings (its
    ``extra_repr``: strides, paddings, an activation's variant; a Dropout's rate may
    differ), and the names, shapes and dtypes of the parameters and buffers."""
    return (
        tuple(
            (name, type(m), "" if isinstance(m, Dropout) else m.extra_repr())
            for name, m in model.named_modules()
        ),
        tuple((n, t.shape, t.dtype) for n, t in model.named_parameters()),
        tuple((n, t.shape, t.dtype) for n, t in model.named_buffers()),
    )


def why_not_stacked(models: Sequence[nn.Module], example: torch.Tensor) -> str | None:
    """Why ``models`` cannot train stacked (``None`` if they can)."""
    first = structure(models[0])
    if any(structure(m) != first for m in models[1:]):
        return "the models differ in their layers or parameter shapes"
    names = [name for name, _ in dropout_calls(models[0], example)]
    if len(set(names)) < len(names):
        return "a Dropout layer is called more than once per forward pass"
    return None


class DropoutDraws:
    """The uniform draws of every model's Dropout layers, made as each model alone
    would make them: one generator per seed (shared by the models with that seed and the
    same layers drawing), one ``rand`` per drawing layer in call order."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        configs: Sequence[TrainConfig],
        calls: Sequence[tuple[str, torch.Size]],
        device: torch.device,
    ) -> None:
        self.shapes = [shape for _, shape in calls]
        self.device = device
        modules = [dict(m.named_modules()) for m in models]
        rates = [[float(mods[name].p) for name, _ in calls] for mods in modules]
        # A stream: a seed and which layers draw from it (a layer of rate 0 does not).
        keys = [(c.seed, tuple(p > 0 for p in r)) for c, r in zip(configs, rates, strict=True)]
        self.streams = sorted({k for k in keys if any(k[1])})
        self.generators = [dropout_generator(seed, device) for seed, _ in self.streams]
        # Row of each model in the draws; a model that draws nothing reads a row of
        # zeros (u = 0 >= rate 0 keeps every unit).
        none = len(self.streams)
        self.stream_of = torch.tensor(
            [self.streams.index(k) if k in self.streams else none for k in keys], device=device
        )
        self.shared = len(self.streams) == 1 and bool((self.stream_of == 0).all())

    @property
    def any(self) -> bool:
        return bool(self.shapes)

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.stream_of = self.stream_of[rows]
        self.shared = len(self.streams) == 1 and bool((self.stream_of == 0).all())

    def draw(self, b: int) -> list[torch.Tensor]:
        """Per Dropout call, the uniforms of a batch of ``b``: ``(1, b, *shape)`` when
        every model reads one stream, else ``(K, b, *shape)``."""
        out = []
        for i, shape in enumerate(self.shapes):
            u = torch.zeros(len(self.streams) + 1, b, *shape, device=self.device)
            for s, (_, draws) in enumerate(self.streams):
                if draws[i]:
                    u[s] = torch.rand(b, *shape, generator=self.generators[s], device=self.device)
            out.append(u[:1] if self.shared else u[self.stream_of])
        return out


# ----------------------------------------------------------------------------------
# Two ways to stack


class FuncStack:
    """K modules of one architecture, stacked with ``torch.func``: the parameters and
    buffers gain a leading model axis and ``vmap`` runs the first module's ``forward``
    over them with ``functional_call``.

    Dropout rates come from each module's ``rate`` buffer and the draws are handed in
    through its ``uniforms`` buffer (see :class:`~d2lcore.models.Dropout`), so nothing
    random happens inside ``vmap``. Batch norm keeps per-model running statistics (its
    buffers are stacked too) and normalizes each model's batch alone, as in a run alone.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        calls: Sequence[tuple[str, torch.Size]],
        device: torch.device,
    ) -> None:
        self.device = device
        models = [m.to(device) for m in models]  # stack_module_state needs one device
        self.base = models[0]  # its forward runs; its tensors are swapped out
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.params = [params[n].detach().requires_grad_() for n in self.names]
        self.model_dims = [0] * len(self.params)
        self.buffers = dict(buffers)
        self.uniform_names = [f"{name}.uniforms" for name, _ in calls]

    @property
    def num_models(self) -> int:
        return len(self.params[0])

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the models ``rows`` (indices along the model axis)."""
        self.params = [p.detach()[rows].requires_grad_() for p in self.params]
        self.buffers = {n: b[rows] for n, b in self.buffers.items()}

    @torch.no_grad()
    def write_back(self, rows: Sequence[int], models: Sequence[nn.Module]) -> None:
        """Copy the parameters and buffers of the models at ``rows`` into ``models``
        (one module per row, moved to the stack's device)."""
        for row, model in zip(rows, models, strict=True):
            model.to(self.device)
            params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
            for name, p in zip(self.names, self.params, strict=True):
                params[name].copy_(p[row])
            for name, b in self.buffers.items():
                buffers[name].copy_(b[row])

    def forward(
        self, X: torch.Tensor, uniforms: Sequence[torch.Tensor] | None, *, shared: bool
    ) -> torch.Tensor:
        """Outputs ``(K, b, ...)`` for a batch ``X`` ``(b, ...)`` shared by every model
        (``shared``) or ``(K, b, ...)``, with the Dropout draws of
        :meth:`DropoutDraws.draw` in training (``None`` in evaluation)."""
        K = self.num_models
        buffers = dict(self.buffers)
        if uniforms is not None:
            for name, u in zip(self.uniform_names, uniforms, strict=True):
                buffers[name] = u.expand(K, *u.shape[1:])
        params = dict(zip(self.names, self.params, strict=True))

        def run(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                x: torch.Tensor) -> torch.Tensor:  # fmt: skip
            return functional_call(self.base, (params, buffers), (x,))

        # A shared batch is not copied K times: vmap's batching rules keep it whole
        # (a convolution with stacked weights becomes one convolution with K times
        # the output channels, a linear layer one GEMM).
        return vmap(run, in_dims=(0, 0, None if shared else 0))(params, buffers, X)

    def train(self, mode: bool) -> None:
        self.base.train(mode)


class SequentialStack:
    """The parameters of K plain sequential models (Linear, activation,
    :class:`~d2lcore.models.Dropout`, a leading Flatten), stacked for batched matmuls.

    Linear layer i has a weight ``(K, in, out)`` (transposed from ``nn.Linear``'s, so a
    batch goes through it as ``h @ W``) and a bias ``(K, out)``. With ``shared_input``
    (every model sees the same batch) the first weight is kept as ``(in, K, out)``
    instead: then that layer, the costly one, is a single ``(b, in) @ (in, K*out)`` GEMM
    for all models, forward and backward, with no copies.

    Build it with :meth:`from_models`, which returns ``None`` when a model is anything
    it cannot reproduce exactly.
    """

    def __init__(self, layers: list[list[nn.Module]], device: torch.device,
                 *, shared_input: bool) -> None:  # fmt: skip
        # A module to apply, the index of a Linear's weight, "flatten", or the index of
        # a Dropout's (K,) rates.
        self.device = device
        self.ops: list[nn.Module | int | str | tuple[int]] = []
        self.params: list[torch.Tensor] = []
        self.model_dims: list[int] = []  # the axis of each parameter that indexes models
        self.rates: list[torch.Tensor] = []
        for column in zip(*layers, strict=True):
            first = column[0]
            if isinstance(first, nn.Linear):
                dim = 1 if shared_input and not self.params else 0
                W = torch.stack([layer.weight.detach().T for layer in column], dim=dim)
                b = torch.stack([layer.bias.detach() for layer in column])
                self.ops.append(len(self.params))
                self.params += [
                    W.to(device).contiguous().requires_grad_(),
                    b.to(device).requires_grad_(),
                ]
                self.model_dims += [dim, 0]
            elif isinstance(first, Dropout):
                self.ops.append((len(self.rates),))
                self.rates.append(torch.stack([m.rate for m in column]).to(device))
            elif isinstance(first, nn.Flatten):
                self.ops.append("flatten")
            else:  # an activation: elementwise, the same for every model
                self.ops.append(first)

    @staticmethod
    def from_models(
        models: Sequence[nn.Module], device: torch.device, *, shared_input: bool
    ) -> SequentialStack | None:
        """A stack of ``models`` if each is a plain sequence of layers this class
        reproduces exactly: a Flatten first, Linear layers with biases, activations of
        :data:`~d2lcore.models.ACTIVATIONS`, Dropout layers; else ``None``."""
        layers: list[list[nn.Module]] = []
        activations = tuple(ACTIVATIONS.values())
        for model in models:
            seq = as_sequential(model)
            if seq is None:
                return None
            mods = list(seq)
            for i, m in enumerate(mods):
                ok = (
                    (type(m) is nn.Linear and m.bias is not None)
                    or type(m) is Dropout
                    or type(m) in activations
                    or (i == 0 and type(m) is nn.Flatten and (m.start_dim, m.end_dim) == (1, -1))
                )
                if not ok:
                    return None
            if not mods or type(mods[-1]) is not nn.Linear:
                return None
            layers.append(mods)
        return SequentialStack(layers, device, shared_input=shared_input)

    @property
    def num_models(self) -> int:
        return self.params[1].shape[0]

    def train(self, mode: bool) -> None:
        pass  # dropout acts when draws are handed in, in training only

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the models ``rows`` (indices along the model axis)."""
        self.params = [
            p.detach().index_select(dim, rows).requires_grad_()
            for p, dim in zip(self.params, self.model_dims, strict=True)
        ]
        self.rates = [r[rows] for r in self.rates]

    @torch.no_grad()
    def write_back(self, rows: Sequence[int], models: Sequence[nn.Module]) -> None:
        """Copy the weights and biases of the models at ``rows`` into the Linear layers
        of ``models`` (one module per row, moved to the stack's device)."""
        weights = [op for op in self.ops if isinstance(op, int)]
        for row, model in zip(rows, models, strict=True):
            model.to(self.device)
            seq = as_sequential(model)
            assert seq is not None  # from_models took only such models
            linears = [m for m in seq if isinstance(m, nn.Linear)]
            for layer, i in zip(linears, weights, strict=True):
                W = self.params[i].select(self.model_dims[i], row)  # (in, out)
                layer.weight.copy_(W.T)
                layer.bias.copy_(self.params[i + 1][row])

    def forward(
        self, X: torch.Tensor, uniforms: Sequence[torch.Tensor] | None, *, shared: bool
    ) -> torch.Tensor:
        """Outputs ``(K, b, out)`` for a batch ``X`` ``(b, ...)`` shared by every model
        (``shared``) or ``(K, b, ...)``, with the Dropout draws of
        :meth:`DropoutDraws.draw` in training (``None`` in evaluation)."""
        h, K = X, self.num_models
        for op in self.ops:
            if isinstance(op, int):
                W, bias = self.params[op], self.params[op + 1]
                if self.model_dims[op] == 1:  # shared input, W: (in, K, out)
                    # One GEMM for all models; addmm adds the bias as nn.Linear does.
                    h = torch.addmm(bias.view(-1), h, W.view(W.shape[0], -1))
                    h = h.view(len(h), K, -1).transpose(0, 1)  # (K, b, out), a view
                else:  # W: (K, in, out)
                    h = torch.baddbmm(bias[:, None, :], h.expand(K, *h.shape[-2:]), W)
            elif op == "flatten":  # only first: (b, ...) or (K, b, ...)
                h = h.flatten(1 if shared else 2)
            elif isinstance(op, tuple):  # Dropout, as models.Dropout computes it
                if uniforms is not None:
                    p = self.rates[op[0]].view(-1, 1, 1)
                    h = h * (uniforms[op[0]] >= p) / (1.0 - p)
            else:
                assert isinstance(op, nn.Module)
                h = op(h)  # an activation
        return h


Stack = FuncStack | SequentialStack


# ----------------------------------------------------------------------------------
# Loss, evaluation, optimizer


def losses(out: torch.Tensor, y: torch.Tensor, regression: bool) -> torch.Tensor:
    """Mean loss of each model, ``(K,)``: MSE, or cross-entropy over class logits."""
    if y.dim() == out.dim() - (1 if regression else 2):  # targets shared by every model
        y = y.expand(out.shape[0], *y.shape)
    if regression:
        return ((out - y) ** 2).flatten(1).mean(dim=1)
    # -log softmax(out)[y] = logsumexp(out) - out[y]; with 10 classes this is ~3x
    # faster on the CPU than log_softmax, whose kernel is slow on short rows.
    picked = out.gather(-1, y[..., None]).squeeze(-1)  # (K, b)
    return (out.logsumexp(dim=-1) - picked).mean(dim=1)


@torch.no_grad()
def evaluate(
    stack: Stack,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    regression: bool,
) -> tuple[list[float], list[float] | None]:
    """Mean loss of each model over ``(X, y)`` (one set shared by all) and, for
    classes, its accuracy."""
    stack.train(False)
    loss_sum = torch.zeros(stack.num_models, device=X.device)
    correct = torch.zeros(stack.num_models, dtype=torch.long, device=X.device)
    n = len(y)
    for start in range(0, n, batch_size):
        Xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        out = stack.forward(Xb, None, shared=True)
        loss_sum += losses(out, yb, regression) * len(yb)
        if not regression:
            correct += (out.argmax(dim=-1) == yb).sum(dim=1)
    loss = [float(v) / n for v in loss_sum.cpu()]
    return loss, None if regression else [int(c) / n for c in correct.cpu()]


class StackedOptimizer:
    """SGD or Adam over stacked parameters, each model with its own ``lr``,
    ``weight_decay`` and (SGD's) ``momentum`` (``(K,)`` tensors), computed as
    ``torch.optim`` does it. ``lr_factors`` ``(K, T)``, where given, scales each model's
    ``lr`` at step ``t`` (a schedule, as ``LambdaLR`` stepped after every step).
    ``model_dims[i]`` is the axis of ``params[i]`` that indexes the models."""

    def __init__(
        self,
        kind: str,
        params: Sequence[torch.Tensor],
        model_dims: Sequence[int],
        lr: torch.Tensor,
        weight_decay: torch.Tensor,
        *,
        momentum: torch.Tensor | None = None,
        lr_factors: torch.Tensor | None = None,
    ) -> None:
        if kind not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {kind!r}; choose 'sgd' or 'adam'")
        self.kind, self.lr, self.weight_decay = kind, lr, weight_decay
        self.model_dims = list(model_dims)
        self.decay = bool((weight_decay != 0).any())  # read once: no GPU sync per step
        self.state: list[tuple[torch.Tensor, torch.Tensor]] = []
        if kind == "adam":
            self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        # SGD's momentum (K,) and its buffers; a zero buffer gives torch's first step
        # (buffer = gradient) too.
        self.momentum = momentum if momentum is not None and bool((momentum != 0).any()) else None
        if self.momentum is not None and kind != "sgd":
            raise ValueError("momentum is SGD's; Adam takes none")
        self.buffers = [torch.zeros_like(p) for p in params] if self.momentum is not None else []
        self.lr_factors = lr_factors  # (K, total steps): each model's schedule, or None
        self.steps = 0

    def broadcast(self, values: torch.Tensor, p: torch.Tensor, i: int) -> torch.Tensor:
        """Per-model ``values`` ``(K,)`` shaped to broadcast against parameter ``i``."""
        shape = [1] * p.dim()
        shape[self.model_dims[i]] = -1
        return values.view(shape)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the models ``rows``."""
        if self.state:  # Adam's moments
            self.state = [
                (m.index_select(d, rows), v.index_select(d, rows))
                for (m, v), d in zip(self.state, self.model_dims, strict=True)
            ]
        self.lr, self.weight_decay = self.lr[rows], self.weight_decay[rows]
        if self.momentum is not None:
            self.momentum = self.momentum[rows]
            self.buffers = [
                b.index_select(d, rows) for b, d in zip(self.buffers, self.model_dims, strict=True)
            ]
        if self.lr_factors is not None:
            self.lr_factors = self.lr_factors[rows]

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor]) -> None:
        """Update ``params`` in place from their ``.grad``."""
        self.steps += 1
        beta1, beta2 = ADAM_BETAS
        rate = self.lr
        if self.lr_factors is not None:  # the schedule's factor of this step, per model
            rate = self.lr * self.lr_factors[:, min(self.steps, self.lr_factors.shape[1]) - 1]
        for i, p in enumerate(params):
            lr, g = self.broadcast(rate, p, i), p.grad
            assert g is not None
            if self.decay:
                g = torch.addcmul(g, p, self.broadcast(self.weight_decay, p, i))  # g + wd p
            if self.kind == "sgd":
                if self.momentum is not None:  # buffer = momentum buffer + g
                    buf = self.buffers[i]
                    buf.mul_(self.broadcast(self.momentum, p, i)).add_(g)
                    g = buf
                p.addcmul_(g, lr, value=-1.0)  # p - lr g, in place
                continue
            m, v = self.state[i]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(ADAM_EPS)
            p.sub_(lr / (1 - beta1**self.steps) * m / denom)


# ----------------------------------------------------------------------------------
# The loop


def make_stack(
    models: Sequence[nn.Module],
    calls: Sequence[tuple[str, torch.Size]],
    device: torch.device,
    *,
    shared_input: bool,
    fast: bool = True,
) -> Stack:
    """The :class:`SequentialStack` of ``models`` where it reproduces them (and
    ``fast``), else their :class:`FuncStack`."""
    stack = SequentialStack.from_models(models, device, shared_input=shared_input) if fast else None
    return stack if stack is not None else FuncStack(models, calls, device)


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
    dropout rates are read from the models. Each history's
    ``seconds`` is the model's share of the epoch's time. ``fast=False`` always stacks
    with ``torch.func`` (:class:`FuncStack`). Raises ``ValueError`` when the models
    cannot stack (:func:`why_not_stacked`).
    """
    first = configs[0]
    if len({(c.batch_size, c.num_epochs, c.optimizer) for c in configs}) > 1:
        raise ValueError("models trained together need one batch_size, num_epochs and optimizer")
    X_train, y_train = data.train[0].to(device), data.train[1].to(device)
    example = X_train[:1]
    reason = why_not_stacked(models, example)
    if reason is not None:
        raise ValueError(f"these models cannot be stacked: {reason}")
    calls = dropout_calls(models[0], example)
    seeds = sorted({c.seed for c in configs})
    stack = make_stack(models, calls, device, shared_input=len(seeds) == 1, fast=fast)
    draws = DropoutDraws(models, configs, calls, device)

    def per_model(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    n, bs = len(y_train), first.batch_size
    steps_per_epoch = math.ceil(n / bs)
    opt = StackedOptimizer(
        first.optimizer,
        stack.params,
        stack.model_dims,
        per_model([c.lr for c in configs]),
        per_model([c.weight_decay for c in configs]),
        momentum=per_model([c.momentum for c in configs]),
        lr_factors=(torch.tensor([c.lr_factors(steps_per_epoch) for c in configs],
                                 dtype=torch.float32, device=device)
                    if any(c.scheduled for c in configs) else None),
    )  # fmt: skip
    seed_of = torch.tensor([seeds.index(c.seed) for c in configs], device=device)
    shufflers = [make_generator(s) for s in seeds]  # on the CPU, like TensorLoader
    val = None if data.val is None else (data.val[0].to(device), data.val[1].to(device))
    alive = list(range(len(configs)))  # the config behind each row of the stacks
    histories = [History() for _ in configs]
    for epoch in range(1, first.num_epochs + 1):
        start_time = time.perf_counter()
        stack.train(True)
        orders = torch.stack([torch.randperm(n, generator=g) for g in shufflers]).to(device)
        loss_sum = torch.zeros(len(alive), device=device)
        for start in range(0, n, bs):
            idx = orders[:, start : start + bs]  # (S, b)
            b = idx.shape[1]
            shared = len(seeds) == 1
            rows = idx[0] if shared else idx[seed_of]  # (b,) or (K, b)
            X, y = X_train[rows], y_train[rows]
            uniforms = draws.draw(b) if draws.any else None
            loss = losses(stack.forward(X, uniforms, shared=shared), y, regression)  # (K,)
            for p in stack.params:
                p.grad = None
            loss.sum().backward()  # the models are independent: each gets its own gradient
            opt.step(stack.params)
            loss_sum += loss.detach() * b
        train_loss = [float(v) / n for v in loss_sum.cpu()]
        val_loss: list[float] | None = None
        val_acc: list[float] | None = None
        if val is not None:
            val_loss, val_acc = evaluate(
                stack, *val, batch_size=data.eval_batch_size, regression=regression
            )
        seconds = (time.perf_counter() - start_time) / len(alive)
        kept = record_epoch(
            [histories[k] for k in alive], epoch, train_loss, val_loss, val_acc, seconds
        )
        if len(kept) < len(alive):  # drop the diverged models from the stacks
            dropped = [r for r in range(len(alive)) if r not in kept]
            stack.write_back(dropped, [models[alive[r]] for r in dropped])
            if not kept:
                finish(models)
                return [(h, None) for h in histories]
            index = torch.tensor(kept, dtype=torch.long, device=device)
            stack.keep_rows(index)
            opt.keep_rows(index)
            draws.keep_rows(index)
            seed_of = seed_of[index]
            alive = [alive[r] for r in kept]

    test_acc: list[float | None] = [None] * len(configs)
    if data.test is not None and not regression:
        X_test, y_test = data.test[0].to(device), data.test[1].to(device)
        _, acc = evaluate(
            stack, X_test, y_test, batch_size=data.eval_batch_size, regression=regression
        )
        for row, k in enumerate(alive):
            test_acc[k] = acc[row] if acc is not None else None
    stack.write_back(range(len(alive)), [models[k] for k in alive])
    finish(models)
    return list(zip(histories, test_acc, strict=True))


def finish(models: Sequence[nn.Module]) -> None:
    """Leave every model in training mode, as :func:`~d2lcore.train.fit` does (the
    stack's evaluations switched the one whose ``forward`` ran)."""
    for model in models:
        model.train(True)


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
