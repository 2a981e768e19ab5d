"""One training step, replayed as a CUDA graph where it can be.

A small model's step on a GPU is bound by launches, not arithmetic: each of its few dozen
kernels costs the CPU more to launch (Python, autograd, the optimizer's loop) than the
GPU takes to run it. :class:`TrainStep` records the whole step (zeroing the gradients,
forward, loss, backward, the optimizer's update and the sum of the losses) once as a CUDA
graph and then replays it for every batch of the same shape: one launch a step.

A graph replays the same kernels on the same memory, so the step copies each batch into
fixed input tensors, and it is recorded only where replaying is the same computation:

- every batch but one of a different shape (an epoch's last, short batch) replays; the
  others run eagerly on the same parameters and optimizer state;
- the optimizer keeps no Python-side number that changes from step to step
  (:func:`graph_safe`): SGD, or Adam with ``capturable=True``, without a scheduler; a
  setting changed by hand between steps (a hook that lowers the learning rate) is seen
  (:func:`settings`) and the step recorded again;
- random numbers come from torch's default generator or from generators registered with
  the graph (each dropout layer's own, found on the model).

On a CPU there is no graph: ``capture=True`` there rehearses the rest of the path (the
fixed input tensors, the short batch run eagerly, the summed losses, a new step after the
stack drops a model), which the CPU tests check against the plain loop.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

#: Eager steps on a side stream before a graph is recorded (what torch's documentation
#: asks: lazily created state, such as momentum buffers, must exist before recording).
WARMUP_STEPS = 3


#: ``D2L_CUDA_GRAPHS``: ``auto`` (the default) records graphs on CUDA, ``off`` nowhere,
#: ``rehearse`` on every device (on a CPU: the path without the graph, for tests).
GRAPH_MODES = ("auto", "off", "rehearse")


def graphs_wanted(device: torch.device) -> bool:
    """Whether a step that can be replayed as a graph is, on ``device``
    (``D2L_CUDA_GRAPHS``)."""
    mode = os.environ.get("D2L_CUDA_GRAPHS", "auto").strip().lower() or "auto"
    if mode not in GRAPH_MODES:
        raise ValueError(f"D2L_CUDA_GRAPHS={mode!r} is not one of {', '.join(GRAPH_MODES)}; "
                         "unset it for the default (auto: CUDA graphs on a GPU)")  # fmt: skip
    return mode == "rehearse" or (mode == "auto" and device.type == "cuda")


def graph_safe(optimizer: Any, scheduler: object | None) -> str | None:
    """Why a step with this optimizer cannot be replayed as a graph, or ``None``."""
    if scheduler is not None:
        return "a learning-rate scheduler changes the rate between steps"
    if isinstance(optimizer, torch.optim.SGD):
        return None
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        if all(group.get("capturable") for group in optimizer.param_groups):
            return None
        return "Adam keeps its step count on the CPU unless capturable=True"
    if getattr(optimizer, "kind", None) == "sgd" and getattr(optimizer, "lr_factors", 1) is None:
        return None  # d2lcore.batched.StackedOptimizer's SGD without a schedule
    return f"{type(optimizer).__name__} keeps a step count outside the graph"


def settings(optimizer: Any) -> tuple[object, ...]:
    """The numbers of a ``torch.optim`` optimizer's groups (learning rate, momentum, weight
    decay, betas, ...): a recorded step keeps the values it was recorded with, so when
    one changes (a hook that lowers the rate between epochs) the step is recorded again."""

    def numeric(value: object) -> bool:
        if isinstance(value, tuple):
            return all(numeric(v) for v in value)
        return isinstance(value, bool | int | float)

    return tuple(tuple(sorted((key, value) for key, value in group.items() if numeric(value)))
                 for group in getattr(optimizer, "param_groups", ()))  # fmt: skip


def _generators(model: nn.Module) -> list[torch.Generator]:
    """The random generators the model's layers draw from (d2lcore's dropout keeps one
    each; a stack keeps one per model)."""
    found: dict[int, torch.Generator] = {}
    for module in model.modules():
        for value in vars(module).values():
            candidates = value if isinstance(value, list | tuple) else [value]
            for g in candidates:
                if isinstance(g, torch.Generator):
                    found[id(g)] = g
    return list(found.values())


class TrainStep:
    """``step(X, y)``: one optimizer step of ``model`` on a batch; the batch's summed loss
    goes into :attr:`loss_sum` (one number, or one per model of a stack), read once an
    epoch so the CPU never waits for the GPU inside the loop.

    Args:
        model: a module, or a stack whose ``forward`` gives every model's outputs.
        loss_fn: the mean loss; a stack's gives one mean loss per model.
        optimizer, scheduler: stepped after every batch as the plain loop steps them.
        stacked: ``model`` is a stack: its targets carry the model axis, ``(K, b, ...)``.
        capture: record the step as a CUDA graph (``None``: where :func:`graph_safe`
            and :func:`graphs_wanted`; ``True`` on a CPU rehearses the path without a
            graph).
    """

    def __init__(self, model: Any, loss_fn: Callable[..., torch.Tensor], optimizer: Any, *,
                 scheduler: Any = None, stacked: bool, device: torch.device,
                 capture: bool | None = None) -> None:  # fmt: skip
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.scheduler, self.stacked, self.device = scheduler, stacked, device
        unsafe = graph_safe(optimizer, scheduler)
        if capture is None:
            capture = unsafe is None and graphs_wanted(device)
        elif capture and unsafe is not None:
            raise ValueError(f"this step cannot be replayed as a graph: {unsafe}")
        self.capture = capture
        self.why_eager: str | None = None if capture else (unsafe or "capture=False")
        self.loss_sum: torch.Tensor | None = None
        self.graph: Any = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.warm = 0
        self.replays = 0
        self.settings: tuple[object, ...] = ()  # the optimizer's, when the inputs were fixed
        self.restarts = 0  # times the optimizer's settings changed under a fixed step

    def new_epoch(self, num_models: int | None) -> None:
        """Start summing the losses again, for ``num_models`` models (``None``: one)."""
        shape = () if num_models is None else (num_models,)
        if self.loss_sum is None or self.loss_sum.shape != shape:
            self.loss_sum = torch.zeros(shape, device=self.device)
            self._forget()  # a graph writes into the old sum
        else:
            self.loss_sum.zero_()

    def forget(self) -> None:
        """Record again at the next batch: the stack dropped models, so its parameters
        are new tensors."""
        self._forget()

    def _forget(self) -> None:
        self.graph, self.static, self.warm = None, None, 0

    def __call__(self, X: torch.Tensor, y: torch.Tensor) -> int:
        """One step on ``(X, y)`` (on the device); returns the number of examples."""
        count = y.shape[1] if self.stacked else len(y)
        if not self.capture:
            self._step(X, y, count)
            return count
        if self.static is not None and (X.shape != self.static[0].shape
                                        or y.shape != self.static[1].shape):  # fmt: skip
            self._step(X, y, count)  # a batch of another shape: eagerly, the graph stays
            return count
        if self.static is not None and settings(self.optimizer) != self.settings:
            self._forget()  # a graph would replay the old learning rate
            self.restarts += 1
        if self.static is None:
            self.static = (torch.empty_like(X), torch.empty_like(y))
            self.settings = settings(self.optimizer)
        static_X, static_y = self.static
        static_X.copy_(X)
        static_y.copy_(y)
        if self.device.type != "cuda":
            self._step(static_X, static_y, count)  # the rehearsal: the same tensors, eagerly
            return count
        if self.graph is None and self.warm < WARMUP_STEPS:
            self.warm += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._step(static_X, static_y, count)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return count
        if self.graph is None:
            self._record(count)
            if self.graph is None:  # recording failed: eagerly from now on
                self._step(static_X, static_y, count)
                return count
        self.graph.replay()
        self.replays += 1
        return count

    def _record(self, count: int) -> None:
        assert self.static is not None
        graph = torch.cuda.CUDAGraph()
        for g in _generators(self.model):
            if g.device.type != "cuda":  # it would draw once, while recording, never again
                self._give_up(f"a random generator on the {g.device.type} feeds the step")
                return
            if not hasattr(graph, "register_generator_state"):
                self._give_up("this torch cannot register a dropout generator with a graph")
                return
            graph.register_generator_state(g)
        self.optimizer.zero_grad()
        try:
            with torch.cuda.graph(graph):
                self._step(*self.static, count, zero=False)
        except RuntimeError as e:  # an operation that cannot be recorded
            self._give_up(f"recording the step failed ({e})")
            return
        self.graph = graph

    def _give_up(self, why: str) -> None:
        warnings.warn(f"training without a CUDA graph: {why}", RuntimeWarning, stacklevel=4)
        self.capture, self.why_eager = False, why

    def _step(self, X: torch.Tensor, y: torch.Tensor, count: int, *, zero: bool = True) -> None:
        # In a graph the gradients are not zeroed by the recorded step: zero_grad sets
        # them to None before recording, and backward then writes them in the graph's
        # memory; every replay overwrites them.
        if zero:
            self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(X), y)  # a stack's: each model's mean loss, (K,)
        # The models of a stack are independent: the sum gives each its own gradient.
        (loss.sum() if self.stacked else loss).backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        assert self.loss_sum is not None
        self.loss_sum += loss.detach() * count
