"""Stacks: K models of one architecture as one module with a leading model axis.

The models of a grid differ only in their numbers (learning rate, weight decay, dropout
rate, initial weights, random streams), so their parameters can live in stacked tensors
``(K, ...)`` and every step can be one batched computation instead of K small ones. A
stack is a module: given a batch ``(b, ...)`` shared by every model, or one batch per
model ``(K, b, ...)``, it returns every model's outputs ``(K, b, ...)``, and
:func:`~d2lcore.train.fit_stack` trains it in the same loop as one model. It is built
from the real modules, never from a guess of their architecture:

- :class:`FuncStack`, for any module: ``torch.func.stack_module_state`` stacks the
  parameters and buffers, and ``vmap`` over ``functional_call`` runs the module's own
  ``forward`` for every model (convolutions become grouped convolutions);
- :class:`~d2lcore.sequential_stack.SequentialStack`, the fast path for the plain models of
  :mod:`d2lcore.models` (:func:`~d2lcore.models.as_sequential`: Linear, activation,
  Dropout, Flatten layers): the same layers as batched matmuls, measured faster on the
  CPU than ``vmap`` (``benchmarks/bench_grid.py``). When every model sees the same batch
  its first layer is one ``(b, in) @ (in, K*out)`` GEMM. It takes only modules it can
  reproduce exactly, layer by layer; anything else goes to :class:`FuncStack`.

Each model computes what it computes alone: its own weights (each initialized alone,
then stacked), and its own dropout masks (:class:`StackDropout`: drawn outside ``vmap``
as each model's :class:`~d2lcore.models.Dropout` layers draw them alone, and compared
with each model's own rate).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from d2lcore.models import Dropout

#: Offset between a run's seed and the seed of its dropout stream, so the masks do not
#: reuse the numbers of the shuffling and initialization streams.
DROPOUT_STREAM = 1 << 32


def dropout_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator dropout masks of a run with ``seed`` come from, on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + DROPOUT_STREAM)
    return gen


def losses(out: torch.Tensor, y: torch.Tensor, regression: bool) -> torch.Tensor:
    """Mean loss of each model, ``(K,)``, for outputs ``(K, b, ...)`` and targets
    ``(b, ...)`` shared by every model or ``(K, b, ...)``: MSE, or cross-entropy over
    class logits."""
    if y.dim() == out.dim() - (1 if regression else 2):  # targets shared by every model
        y = y.expand(out.shape[0], *y.shape)
    if regression:
        return ((out - y) ** 2).flatten(1).mean(dim=1)
    # -log softmax(out)[y] = logsumexp(out) - out[y]; with 10 classes this is ~3x
    # faster on the CPU than log_softmax, whose kernel is slow on short rows.
    picked = out.gather(-1, y[..., None]).squeeze(-1)  # (K, b)
    return (out.logsumexp(dim=-1) - picked).mean(dim=1)


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


class StackDropout:
    """Every model's dropout: per dropout layer (in call order), each model's rate
    ``(K,)``, and uniform draws made as each model alone would make them: one generator
    per seed (shared by the models with that seed and the same layers drawing), one
    ``rand`` per drawing layer in call order. A model keeps a unit where its draw is
    ``>=`` its rate; a layer of rate 0 (or one the model lacks) draws nothing.

    Args:
        rates: per model, its rate at each dropout layer.
        shapes: per dropout layer, the shape of one example's input.
        seeds: per model, the seed of its stream (:func:`dropout_generator`).
    """

    def __init__(self, rates: Sequence[Sequence[float]], shapes: Sequence[torch.Size],
                 seeds: Sequence[int], device: torch.device) -> None:  # fmt: skip
        self.shapes = list(shapes)
        self.device = device
        self.rates = [torch.tensor(r, device=device) for r in zip(*rates, strict=True)]
        # A stream: a seed and which layers draw from it.
        keys = [(s, tuple(p > 0 for p in r)) for s, r in zip(seeds, rates, strict=True)]
        self.streams = sorted({k for k in keys if any(k[1])})
        self.generators = [dropout_generator(seed, device) for seed, _ in self.streams]
        # Row of each model in the draws; a model that draws nothing reads a row of
        # zeros (u = 0 >= rate 0 keeps every unit).
        none = len(self.streams)
        self.stream_of = torch.tensor(
            [self.streams.index(k) if k in self.streams else none for k in keys], device=device
        )
        self.shared = len(self.streams) == 1 and bool((self.stream_of == 0).all())

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.rates = [r[rows] for r in self.rates]
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


class Stack(nn.Module):
    """K models as one module: ``forward`` maps a batch ``(b, ...)`` shared by every
    model, or ``(K, b, ...)``, to every model's outputs ``(K, b, ...)``, with each
    model's dropout in training mode. ``rows`` says which of the models given are still
    in the stack; :meth:`keep_rows` drops the others, each written back into its module
    (and replaces the parameters: an optimizer follows with the new ones).

    ``model_dims[i]`` is the axis of parameter ``i`` that indexes the models."""

    def __init__(self, models: Sequence[nn.Module], dropout: StackDropout, example_dim: int,
                 device: torch.device) -> None:  # fmt: skip
        super().__init__()
        self.models = list(models)  # not submodules: not trained as such
        self.rows = list(range(len(models)))
        self.example_dim = example_dim  # of a batch shared by every model
        self.device = device
        self.dropout = dropout
        self.params = nn.ParameterList()
        self.model_dims: list[int] = []

    @property
    def num_models(self) -> int:
        return len(self.rows)

    def shared(self, X: torch.Tensor) -> bool:
        """Whether the batch ``X`` is one for every model (no model axis)."""
        return X.dim() == self.example_dim

    def draws(self, X: torch.Tensor) -> list[torch.Tensor] | None:
        """The dropout draws of the batch ``X`` in training (``None`` in evaluation)."""
        if not self.training or not self.dropout.shapes:
            return None
        return self.dropout.draw(X.shape[0 if self.shared(X) else 1])

    def select(self, values: torch.Tensor) -> torch.Tensor:
        """The entries of ``values`` (one per model given, along the first axis) of the
        models still in the stack."""
        if len(self.rows) == len(self.models):
            return values
        return values[torch.tensor(self.rows, device=values.device)]

    @torch.no_grad()
    def keep_rows(self, rows: list[int]) -> None:
        """Go on with only the models at positions ``rows``; each of the others gets its
        parameters and buffers as they are now (a diverged model: its numbers that
        stopped being finite)."""
        self.write_back([r for r in range(self.num_models) if r not in rows])
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        # New tensors: autograd keeps the shape of the old ones.
        for i, dim in enumerate(self.model_dims):
            self.params[i] = nn.Parameter(self.params[i].index_select(dim, index))
        self.keep_buffers(index)
        self.dropout.keep_rows(index)
        self.rows = [self.rows[r] for r in rows]

    def keep_buffers(self, index: torch.Tensor) -> None:
        """Keep the per-model state besides the parameters of the models ``index``."""

    @torch.no_grad()
    def write_back(self, positions: Sequence[int] | None = None) -> None:
        """Copy the parameters and buffers of the models at ``positions`` (all by
        default) into the modules they came from."""
        for pos in range(self.num_models) if positions is None else positions:
            self.write(pos, self.models[self.rows[pos]])

    def write(self, pos: int, model: nn.Module) -> None:
        raise NotImplementedError


class FuncStack(Stack):
    """K modules of one architecture, stacked with ``torch.func``: the parameters and
    buffers gain a leading model axis and ``vmap`` runs a copy of the first module's
    ``forward`` over them with ``functional_call``.

    In that copy each Dropout layer is a :class:`DrawnDropout`, which reads its rate and
    its draws from buffers handed in per model, so nothing random happens inside
    ``vmap``. Batch norm keeps per-model running statistics (its buffers are stacked too)
    and normalizes each model's batch alone, as in a run alone.
    """

    base: nn.Module

    def __init__(self, models: Sequence[nn.Module], seeds: Sequence[int],
                 example: torch.Tensor, device: torch.device) -> None:  # fmt: skip
        models = [m.to(device) for m in models]  # stack_module_state needs one device
        calls = dropout_calls(models[0], example)
        names = [name for name, _ in calls]
        modules = [dict(m.named_modules()) for m in models]
        rates = [[float(mods[name].p) for name in names] for mods in modules]
        dropout = StackDropout(rates, [shape for _, shape in calls], seeds, device)
        super().__init__(models, dropout, example.dim(), device)
        self.dropout_names = names
        # Its forward runs, its tensors swapped out, each Dropout a DrawnDropout. Not a
        # submodule: its parameters are not the stack's.
        drawn = {id(modules[0][name]): DrawnDropout() for name in names}
        object.__setattr__(self, "base", copy.deepcopy(self.models[0], memo=drawn))
        params, buffers = stack_module_state(self.models)
        self.names = list(params)
        self.params.extend(nn.Parameter(params[n].detach()) for n in self.names)
        self.model_dims = [0] * len(self.names)
        self.stacked_buffers = dict(buffers)

    def keep_buffers(self, index: torch.Tensor) -> None:
        self.stacked_buffers = {n: b[index] for n, b in self.stacked_buffers.items()}

    def write(self, pos: int, model: nn.Module) -> None:
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        for name, p in zip(self.names, self.params, strict=True):
            params[name].copy_(p[pos])
        for name, b in self.stacked_buffers.items():
            buffers[name].copy_(b[pos])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        K, shared = self.num_models, self.shared(X)
        buffers = dict(self.stacked_buffers)
        for name, rate in zip(self.dropout_names, self.dropout.rates, strict=True):
            buffers[f"{name}.rate"] = rate
        uniforms = self.draws(X)
        if uniforms is not None:
            for name, u in zip(self.dropout_names, uniforms, strict=True):
                buffers[f"{name}.uniforms"] = u.expand(K, *u.shape[1:])
        params = dict(zip(self.names, self.params, strict=True))

        def run(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                x: torch.Tensor) -> torch.Tensor:  # fmt: skip
            return functional_call(self.base, (params, buffers), (x,))

        # A shared batch is not copied K times: vmap's batching rules keep it whole
        # (a convolution with stacked weights becomes one convolution with K times
        # the output channels, a linear layer one GEMM).
        return vmap(run, in_dims=(0, 0, None if shared else 0))(params, buffers, X)

    def train(self, mode: bool = True) -> FuncStack:
        super().train(mode)
        self.base.train(mode)  # not a submodule
        return self


class DrawnDropout(nn.Module):
    """A :class:`~d2lcore.models.Dropout` inside a :class:`FuncStack`'s ``vmap``: its
    rate and, in training, its uniform draws come in as buffers, one per model."""

    def __init__(self) -> None:
        super().__init__()
        self.rate: torch.Tensor
        self.uniforms: torch.Tensor
        self.register_buffer("rate", torch.zeros(()), persistent=False)
        self.register_buffer("uniforms", torch.zeros(()), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return h
        return h * (self.uniforms >= self.rate) / (1.0 - self.rate)
