"""train_grid's choice between stacked and one-at-a-time training, measured on the device
(d2lcore.stack_choice): the slower path loses, a choice is measured once, a grid too
small to be worth measuring takes the default, the probe leaves the random streams
alone, and a measured grid still equals train_one."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from d2lcore import stack_choice
from d2lcore.config import ModelSpec, TrainConfig
from d2lcore.data import Splits
from d2lcore.device import make_generator
from d2lcore.stack_choice import PROBE_STEPS, ROUNDS, Choice, choose
from d2lcore.sweep import build_model, train_grid, train_one

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int, size: int = 6) -> Splits:
    gen = make_generator(0)
    y = torch.randint(0, 3, (n,), generator=gen)
    X = torch.rand(n, 1, size, size, generator=gen)
    X[:, 0, :2, :2] += y[:, None, None].float()
    return Splits((X, y), eval_batch_size=64)


SPEC = ModelSpec("mlp", 36, 3, hidden_sizes=(8,))
#: 640 examples in batches of 8, 3 epochs: 240 steps, enough to be worth measuring.
BASE = TrainConfig(lr=0.1, num_epochs=3, batch_size=8)


def group(n: int = 4) -> tuple[list[torch.nn.Module], list[TrainConfig]]:
    configs = [replace(BASE, lr=0.05 * (i + 1)) for i in range(n)]
    return [build_model(SPEC, c, CPU) for c in configs], configs


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_choice, "_chosen", {})


def choice(train_alone, models=None, configs=None, data=None) -> Choice:  # type: ignore[no-untyped-def]
    if models is None:
        models, configs = group()
    return choose(SPEC, models, configs, data or images(640), CPU, train_alone=train_alone,
                  build=lambda c: build_model(SPEC, c, CPU))  # fmt: skip


def test_a_slow_path_loses_and_the_seconds_are_kept() -> None:
    def slow_alone(config: TrainConfig, data: Splits) -> None:
        time.sleep(0.02 * len(data.train[1]) / config.batch_size)  # 20 ms a step

    slow = choice(slow_alone)
    assert slow.stacked and slow.path in ("matmuls", "torch.func")
    assert set(slow.seconds) == {"alone", "matmuls", "torch.func"}  # the MLP has both stacks
    assert slow.seconds["alone"] == pytest.approx(0.02, rel=0.5)
    assert "measured" in slow.describe()

    stack_choice._chosen.clear()
    fast = choice(lambda config, data: None)  # costs nothing a step: one at a time wins
    assert fast.path == "alone" and not fast.stacked


def test_a_choice_is_measured_once_per_kind_of_group() -> None:
    calls: list[int] = []

    def counted(config: TrainConfig, data: Splits) -> None:
        calls.append(len(data.train[1]))

    first = choice(counted)
    # One step to warm up, then ROUNDS runs of PROBE_STEPS.
    assert calls == [8] + [8 * PROBE_STEPS] * ROUNDS
    assert choice(counted) is first and len(calls) == 1 + ROUNDS
    # Another size of group is another kind.
    choice(counted, *group(5))
    assert len(calls) == 2 * (1 + ROUNDS)


def test_choices_are_kept_on_disk_within_kept_in(tmp_path: Path) -> None:
    calls: list[int] = []

    def counted(config: TrainConfig, data: Splits) -> None:
        calls.append(len(data.train[1]))

    with stack_choice.kept_in(tmp_path):
        first = choice(counted)
    (kept,) = (tmp_path / "stacking").glob("*.json")
    stack_choice._chosen.clear()  # another process: measured before, read from the file
    once = 1 + ROUNDS  # runs of one model a measurement makes
    with stack_choice.kept_in(tmp_path):
        assert choice(counted) == first and len(calls) == once
    # A corrupt or foreign file is measured again and rewritten.
    for n, text in enumerate(['{not json', '{"path": "alone"}', '[1, 2]',
                              '{"path": "fastest", "seconds": {}}',
                              '{"path": "alone", "seconds": {"alone": "slow"}}'], start=2):
        kept.write_text(text)
        stack_choice._chosen.clear()
        with stack_choice.kept_in(tmp_path):
            choice(counted)
        assert len(calls) == n * once, text
        assert json.loads(kept.read_text())["path"] in stack_choice.PATHS
    stack_choice._chosen.clear()
    choice(counted)  # outside kept_in: nothing read
    assert len(calls) == 7 * once


def test_a_grid_too_small_to_measure_takes_the_default() -> None:
    def never(config: TrainConfig, data: Splits) -> None:
        raise AssertionError("a small grid is not measured")

    assert choice(never, data=images(64)) == Choice("matmuls")
    lenet = ModelSpec("lenet", 1, 3)
    configs = [replace(BASE, lr=lr) for lr in (0.1, 0.2)]
    models = [build_model(lenet, c, CPU) for c in configs]
    picked = choose(lenet, models, configs, images(64, size=28), CPU, train_alone=never,
                    build=lambda c: build_model(lenet, c, CPU))  # fmt: skip
    # On a CPU grouped convolutions ran slower than one model at a time: unmeasured,
    # a convolutional group trains one at a time there (and stacks on a GPU).
    assert picked == Choice("alone") and "not measured" in picked.describe()
    on_gpu = stack_choice._unmeasured(fast=False, device=torch.device("cuda"))
    assert on_gpu == Choice("torch.func")


def test_the_probe_leaves_the_random_streams_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    choice(lambda config, data: torch.rand(100))
    assert torch.equal(torch.get_rng_state(), state)


def test_a_measured_grid_equals_train_one_and_says_what_it_measured() -> None:
    data = images(640)
    axes = {"lr": [0.05, 0.2], "seed": [0, 1]}
    grid = train_grid(SPEC, axes, BASE, data, cache=False)
    (path,) = grid.meta["stacking"]
    assert path.startswith("4 models: ") and "measured a model's step" in path
    for run in grid:
        alone = train_one(SPEC, replace(BASE, **run.config), data)
        assert run.history.train_loss == pytest.approx(alone.history.train_loss, rel=1e-4)
    if "models: alone" in path:
        assert grid.meta["batched"] is False and grid.meta["unstacked_reason"] == path
    else:
        assert grid.meta["batched"] is True and "unstacked_reason" not in grid.meta


def test_a_group_with_a_warm_up_is_measured_on_its_own_schedule() -> None:
    """A configuration whose learning rate warms up for an epoch keeps its schedule in the
    probe (it decides whether a GPU replays the step as a graph): two epochs a run."""
    calls: list[tuple[int, int]] = []

    def counted(config: TrainConfig, data: Splits) -> None:
        calls.append((config.num_epochs, config.warmup_epochs))

    models, configs = group()
    warm = [replace(c, num_epochs=3, warmup_epochs=1, schedule="cosine") for c in configs]
    picked = choice(counted, models, warm)
    assert calls == [(2, 1)] * (1 + ROUNDS) and picked.seconds
