"""Grids of training runs: every combination of a few named axes (learning rate,
dropout, initialization scheme, ...), with each configuration's full history.

What a run is made of (:class:`TrainConfig` and :class:`ModelSpec`, from
:mod:`d2lcore.config` and re-exported here; the data as :class:`~d2lcore.data.Splits`),
:func:`train_one` (the reference: one model, :func:`~d2lcore.train.fit`), and
:func:`train_grid`: :func:`~d2lcore.grid.run_grid` over :func:`train_one`, with the
configurations that can train together stacked (:mod:`d2lcore.batched`).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields, replace
from typing import Any, cast

import torch
from torch import nn

from d2lcore.batched import fit_stacked
from d2lcore.cache import cache_dir, tensor_digest
from d2lcore.config import KINDS, ModelKind, ModelSpec, TrainConfig
from d2lcore.data import Splits
from d2lcore.device import get_device, make_generator
from d2lcore.grid import AxisValue, Config, Grid, GridResults, grid_configs, run_grid
from d2lcore.init import init_weights
from d2lcore.metrics import evaluate
from d2lcore.stack_choice import Choice, choose, kept_in
from d2lcore.stacks import dropout_generator, structure, why_not_stacked
from d2lcore.train import EpochHook, RunResult, fit, seeded

__all__ = ["KINDS", "AxisValue", "ExtrasFn", "GridResults", "ModelKind", "ModelSpec",
           "RunResult", "Splits", "TrainConfig", "build_model", "grid_configs", "train_grid",
           "train_one"]

#: ``extras(model, config) -> {name: array-like}``: what a figure needs from a trained
#: model (its weights, its filters, a feature map), kept with the grid.
ExtrasFn = Callable[[nn.Module, TrainConfig], Mapping[str, Any]]

# ----------------------------------------------------------------------------------
# What a run is made of: TrainConfig and ModelSpec live in d2lcore.config

def build_model(spec: ModelSpec, config: TrainConfig, device: torch.device) -> nn.Module:
    """``spec``'s model on the CPU, initialized from ``config.seed`` alone, with its
    dropout stream on ``device``."""
    with torch.random.fork_rng(devices=[]):  # default init: seeded, and no side effects
        torch.manual_seed(config.seed)
        model = spec.build(dropout=config.dropout, generator=dropout_generator(config.seed, device))
    return init_weights(
        model, config.init, std=config.init_std, generator=make_generator(config.seed)
    )


def train_one(
    spec: ModelSpec,
    config: TrainConfig,
    data: Splits,
    *,
    device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
) -> RunResult:
    """Train one configuration with :func:`~d2lcore.train.fit`: the reference that
    :func:`train_grid` matches. ``test_acc`` is the test accuracy (classes only,
    ``None`` when diverged or without a test split); ``model`` the trained model."""
    device = get_device(device)
    model = build_model(spec, config, device)
    loss_fn = spec.model_kind.loss()
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)  # fmt: skip
    else:
        # capturable: the step count on the GPU, so the step can replay as a CUDA graph
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay,
                                     capturable=device.type == "cuda")  # fmt: skip
    train = data.loader("train", batch_size=config.batch_size, seed=config.seed, device=device)
    scheduler = None
    if config.scheduled:
        factors = config.lr_factors(math.ceil(len(data.train[1]) / config.batch_size))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: factors[min(t, len(factors) - 1)])
    val = None if data.val is None else data.loader("val", device=device)
    with seeded(config.seed):  # a module drawing from the global stream stays repeatable
        history = fit(model, train, loss_fn=loss_fn, optimizer=optimizer,
                      num_epochs=config.num_epochs, val_batches=val, device=device,
                      on_epoch_end=on_epoch_end, scheduler=scheduler)  # fmt: skip
    test_acc = None
    if data.test is not None and not spec.regression and not history.diverged:
        test = data.loader("test", device=device)
        test_acc = evaluate(model, test, loss_fn, device=device).accuracy
    return RunResult(config=asdict(config), history=history, test_acc=test_acc, model=model)


# ----------------------------------------------------------------------------------
# Grids, batched and cached


def model_extras(fn: ExtrasFn, model: nn.Module, config: TrainConfig) -> dict[str, Any]:
    """``fn(model, config)`` in evaluation mode without gradients (the model's mode is
    put back), as a dict of its arrays by name."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = fn(model, config)
    finally:
        model.train(was_training)
    if not isinstance(out, Mapping):
        raise TypeError(f"extras must return a dict of arrays by name, not {type(out).__name__}")
    return {str(name): value for name, value in out.items()}


def data_fingerprint(data: Splits) -> str:
    """A hash of every tensor's dtype, shape and bytes, and the evaluation batch size."""
    splits = [t for split in (data.train, data.val, data.test) for t in (split or (None, None))]
    return f"eval_batch_size={data.eval_batch_size} " + tensor_digest(*splits)


def train_grid(
    spec: ModelSpec,
    axes: Mapping[str, Sequence[AxisValue]],
    base: TrainConfig,
    data: Splits,
    *,
    device: torch.device | str | None = None,
    batched: bool | None = None,
    cache: bool | str | os.PathLike[str] = True,
    extras: ExtrasFn | None = None,
) -> GridResults:
    """Train every combination of ``axes`` (names of :class:`TrainConfig` fields; the
    other fields come from ``base``) and return the :class:`GridResults`: that is
    :func:`~d2lcore.grid.run_grid` over :func:`train_one`, plus stacking.

    Configurations sharing ``batch_size``, ``num_epochs`` and ``optimizer`` whose
    models have the same layers (a dropout rate of 0 builds no dropout layer) train
    together with stacked weights (:func:`~d2lcore.batched.fit_stacked`); each equals
    :func:`train_one` with its config up to float rounding. Whether a group trains
    stacked (on the matmul path or with ``torch.func``) or one configuration at a time
    is measured on ``device`` for the group's models and batches
    (:func:`~d2lcore.stack_choice.choose`): stacked convolutions, for one, are slower on
    a CPU and faster on a GPU. A diverged configuration is marked in its history and the
    others go on.

    Args:
        data: the tensors of each split (e.g. :func:`~d2lcore.data.fashion_mnist_splits`);
            batch size and seed come from each configuration.
        batched: ``None`` takes each group's faster path, measured; ``True`` stacks
            wherever the models can stack, on the matmul path where it applies (to
            measure it, as ``benchmarks/bench_grid.py`` does); ``False`` trains one
            configuration at a time with :func:`train_one`.
        cache: ``True`` keeps results in :func:`~d2lcore.cache.default_cache_dir`, a
            path keeps them there, ``False`` always trains. The key covers the axes,
            what the grid's functions capture (the spec, every configuration, the
            data, what ``extras`` reads, and whether configurations stack; see
            :func:`~d2lcore.grid.run_grid`), the training code, the device type and
            torch's version; a corrupt entry is trained again and overwritten.
        extras: ``extras(model, config) -> {name: array-like}``, evaluated on every
            trained model (stacked or not, a diverged one too: its numbers may not be
            finite) in evaluation mode without gradients; the result becomes the run's
            ``extras`` and is cached with the grid (arrays come back as NumPy arrays).
            What it reads is part of the key, so changing it trains again.

    Every run's ``model`` is the trained module (``None`` when read from the cache).
    ``meta`` records ``key``, ``from_cache``, ``seconds`` (this call),
    ``train_seconds``, ``device``, ``batched`` (whether configurations were batched),
    ``stacking`` (each group's path and what was measured) and, where none stacked,
    ``unstacked_reason``.
    """
    device = get_device(device)
    names = {f.name for f in fields(TrainConfig)}
    grid = Grid(axes)
    for name in grid.names:
        if name not in names:
            raise ValueError(f"unknown axis {name!r}; axes are TrainConfig fields: {sorted(names)}")
    configs = [replace(base, **cast(dict[str, Any], c)) for c in grid]  # validates each
    reason = "batched=False" if batched is False else None
    measure = batched is None  # each group's path measured (stack_choice) or forced
    batched = reason is None
    paths: list[tuple[int, Choice]] = []  # each stackable group's size and path, for meta

    def with_extras(run: RunResult, config: TrainConfig) -> RunResult:
        if extras is not None and run.model is not None:
            run.extras = model_extras(extras, run.model, config)
        return run

    def one(combo: Config) -> RunResult:
        config = configs[grid.index(combo)]
        return with_extras(train_one(spec, config, data, device=device), config)

    def together(combos: list[Config]) -> list[RunResult]:
        todo = [configs[grid.index(c)] for c in combos]
        models = [build_model(spec, c, device) for c in todo]
        # Stackable together: one batch_size, num_epochs and optimizer, and one layout.
        group_of: dict[tuple[object, ...], list[int]] = defaultdict(list)
        for i, (c, model) in enumerate(zip(todo, models, strict=True)):
            group_of[(c.batch_size, c.num_epochs, c.optimizer, structure(model))].append(i)
        results: list[RunResult | None] = [None] * len(todo)
        example = data.train[0][:1]
        for members in group_of.values():
            group = [todo[i] for i in members]
            choice = Choice("alone")
            if len(members) > 1 and not why_not_stacked([models[i] for i in members], example):
                choice = Choice("matmuls")
                if measure:
                    choice = choose(spec, [models[i] for i in members], group, data, device,
                                    train_alone=lambda c, d: train_one(spec, c, d, device=device),
                                    build=lambda c: build_model(spec, c, device))  # fmt: skip
                paths.append((len(members), choice))
            if not choice.stacked:
                for i in members:
                    results[i] = with_extras(train_one(spec, todo[i], data, device=device),
                                             todo[i])  # fmt: skip
                continue
            trained = fit_stacked([models[i] for i in members], group, data,
                                  regression=spec.regression, device=device,
                                  fast=choice.fast)  # fmt: skip
            for i, (history, test_acc) in zip(members, trained, strict=True):
                run = RunResult(config=asdict(todo[i]), history=history, test_acc=test_acc,
                                model=models[i])  # fmt: skip
                results[i] = with_extras(run, todo[i])
        return [r for r in results if r is not None]

    # The key reads what `one` and `together` capture: spec, configs, data, extras.
    with kept_in(cache_dir(cache)):  # measured choices of stacking, beside the grids
        out = run_grid(grid.axes, one, batch=together if batched else None, cache=cache,
                       device=device, name="train_grid")  # fmt: skip
    described = [f"{n} models: {choice.describe()}" for n, choice in paths]
    if paths and not any(choice.stacked for _, choice in paths):  # every group measured
        batched, reason = False, "; ".join(described)  # slower stacked than alone
    out.meta["batched"] = batched
    if reason is not None:
        out.meta["unstacked_reason"] = reason
    if paths:
        out.meta["stacking"] = described
    return out
