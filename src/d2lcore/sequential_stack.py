"""The fast path of stacking (:mod:`d2lcore.stacks`): K plain sequential models as
batched matmuls, measured faster on the CPU than ``vmap`` (``benchmarks/bench_grid.py``).

It takes the models of :mod:`d2lcore.models` that :func:`~d2lcore.models.as_sequential`
reads as a sequence of layers (a leading Flatten, Linear layers, activations, Dropout)
and only what it reproduces exactly, layer by layer. The models may differ in their
activations (each applied to its own models' rows) and in where they have Dropout
layers (a model without one there keeps every unit): an MLP without dropout stacks with
one with dropout, as the playground's models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from d2lcore.models import ACTIVATIONS, Dropout, as_sequential
from d2lcore.stacks import Stack, StackDropout

#: An operation of the stack: ("linear", index of its weight among the parameters),
#: ("flatten", 0), ("dropout", index among the dropout layers), ("act", column).
Op = tuple[str, int]


def _reproduced(
    models: Sequence[nn.Module],
) -> list[tuple[list[nn.Module], dict[int, float]]] | None:
    """Each model's parts where every one is a plain sequence of the same layers."""
    parts = [_parts(m) for m in models]
    if any(p is None for p in parts):
        return None
    found = [p for p in parts if p is not None]
    cores = [core for core, _ in found]
    if len({len(core) for core in cores}) > 1:
        return None
    if not all(_same_kind(column) for column in zip(*cores, strict=True)):
        return None
    return found


def _parts(model: nn.Module) -> tuple[list[nn.Module], dict[int, float]] | None:
    """``model``'s layers without its Dropout layers, and each Dropout's rate by its
    place (the number of other layers before it); ``None`` where the model is not a
    plain sequence of layers :class:`SequentialStack` reproduces."""
    seq = as_sequential(model)
    if seq is None:
        return None
    core: list[nn.Module] = []
    rates: dict[int, float] = {}
    for i, m in enumerate(seq):
        if type(m) is Dropout and len(core) not in rates:
            rates[len(core)] = m.p
        elif (
            (type(m) is nn.Linear and m.bias is not None)
            or type(m) in ACTIVATIONS.values()
            or (i == 0 and type(m) is nn.Flatten and (m.start_dim, m.end_dim) == (1, -1))
        ):
            core.append(m)
        else:
            return None
    last = core and type(core[-1]) is nn.Linear and len(core) not in rates
    return (core, rates) if last else None


def _same_kind(column: Sequence[nn.Module]) -> bool:
    """Whether one layer of every model can run as one stacked layer."""
    first = column[0]
    if isinstance(first, nn.Linear):
        return all(isinstance(m, nn.Linear) and m.weight.shape == first.weight.shape
                   for m in column)  # fmt: skip
    if isinstance(first, nn.Flatten):
        return all(isinstance(m, nn.Flatten) for m in column)
    return all(type(m) in ACTIVATIONS.values() for m in column)


class SequentialStack(Stack):
    """The parameters of K plain sequential models (Linear, activation,
    :class:`~d2lcore.models.Dropout`, a leading Flatten), stacked for batched matmuls.

    Linear layer i has a weight ``(K, in, out)`` (transposed from ``nn.Linear``'s, so a
    batch goes through it as ``h @ W``) and a bias ``(K, out)``. With ``shared_input``
    (every model sees the same batch) the first weight is kept as ``(in, K, out)``
    instead: then that layer, the costly one, is a single ``(b, in) @ (in, K*out)`` GEMM
    for all models, forward and backward, with no copies. Models of one activation
    next to each other share its call.

    Build it with :meth:`from_models`, which returns ``None`` when a model is anything
    it cannot reproduce exactly.
    """

    def __init__(self, parts: Sequence[tuple[list[nn.Module], dict[int, float]]],
                 models: Sequence[nn.Module], seeds: Sequence[int], example: torch.Tensor,
                 device: torch.device, *, shared_input: bool) -> None:  # fmt: skip
        cores = [core for core, _ in parts]
        places = sorted(set().union(*(rates for _, rates in parts)))
        shapes = []
        with torch.no_grad():  # each dropout layer's input shape, from one example
            h = example.to(device)
            for j, layer in enumerate(cores[0]):
                if j in places:
                    shapes.append(h.shape[1:])
                h = layer.to(device)(h)
        rates = [[r.get(j, 0.0) for j in places] for _, r in parts]
        dropout = StackDropout(rates, shapes, seeds, device)
        super().__init__([m.to(device) for m in models], dropout, example.dim(), device)
        self.ops: list[Op] = []
        self.activations: list[list[nn.Module]] = []  # per activation column, per model
        for j, column in enumerate(zip(*cores, strict=True)):
            if j in places:
                self.ops.append(("dropout", places.index(j)))
            first = column[0]
            if isinstance(first, nn.Linear):
                dim = 1 if shared_input and not self.model_dims else 0
                W = torch.stack([layer.weight.detach().T for layer in column], dim=dim)
                b = torch.stack([layer.bias.detach() for layer in column])
                self.ops.append(("linear", len(self.params)))
                self.params.extend([nn.Parameter(W.contiguous()), nn.Parameter(b)])
                self.model_dims += [dim, 0]
            elif isinstance(first, nn.Flatten):
                self.ops.append(("flatten", 0))
            else:  # an activation: elementwise
                self.ops.append(("act", len(self.activations)))
                self.activations.append(list(column))
        self.runs = self.activation_runs()

    @staticmethod
    def from_models(
        models: Sequence[nn.Module], seeds: Sequence[int], example: torch.Tensor,
        device: torch.device, *, shared_input: bool,
    ) -> SequentialStack | None:  # fmt: skip
        """A stack of ``models`` if each is a plain sequence of layers this class
        reproduces exactly: a Flatten first, Linear layers with biases, activations of
        :data:`~d2lcore.models.ACTIVATIONS` and Dropout layers, all in one order but for
        the Dropout layers; else ``None``."""
        found = _reproduced(models)
        if found is None:
            return None
        return SequentialStack(found, models, seeds, example, device, shared_input=shared_input)

    @staticmethod
    def reproduces(models: Sequence[nn.Module]) -> bool:
        """Whether :meth:`from_models` stacks ``models`` (without building the stack)."""
        return _reproduced(models) is not None

    def activation_runs(self) -> list[list[tuple[nn.Module, slice]]]:
        """Per activation column, the runs of neighbouring models with one activation."""
        runs = []
        for column in self.activations:
            found: list[tuple[nn.Module, slice]] = []
            for pos, row in enumerate(self.rows):
                act = column[row]
                if found and type(found[-1][0]) is type(act):
                    found[-1] = (found[-1][0], slice(found[-1][1].start, pos + 1))
                else:
                    found.append((act, slice(pos, pos + 1)))
            runs.append(found)
        return runs

    def keep_rows(self, rows: list[int]) -> None:
        super().keep_rows(rows)
        self.runs = self.activation_runs()

    def write(self, pos: int, model: nn.Module) -> None:
        parts = _parts(model)
        assert parts is not None  # from_models took only such models
        linears = [m for m in parts[0] if isinstance(m, nn.Linear)]
        weights = [i for kind, i in self.ops if kind == "linear"]
        for layer, i in zip(linears, weights, strict=True):
            layer.weight.copy_(self.params[i].select(self.model_dims[i], pos).T)  # (in, out)
            layer.bias.copy_(self.params[i + 1][pos])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h, K, shared = X, self.num_models, self.shared(X)
        uniforms, params = self.draws(X), list(self.params)
        for kind, i in self.ops:
            if kind == "linear":
                W, bias = params[i], params[i + 1]
                if self.model_dims[i] == 1:  # shared input, W: (in, K, out)
                    # One GEMM for all models; addmm adds the bias as nn.Linear does.
                    h = torch.addmm(bias.view(-1), h, W.view(W.shape[0], -1))
                    h = h.view(len(h), K, -1).transpose(0, 1)  # (K, b, out), a view
                else:  # W: (K, in, out)
                    h = torch.baddbmm(bias[:, None, :], h.expand(K, *h.shape[-2:]), W)
            elif kind == "flatten":  # only first: (b, ...) or (K, b, ...)
                h = h.flatten(1 if shared else 2)
            elif kind == "dropout":  # as models.Dropout computes it
                if uniforms is not None:
                    p = self.dropout.rates[i].view(-1, 1, 1)
                    h = h * (uniforms[i] >= p) / (1.0 - p)
            elif len(self.runs[i]) == 1:
                h = self.runs[i][0][0](h)
            else:
                h = torch.cat([act(h[rows]) for act, rows in self.runs[i]])
        return h
