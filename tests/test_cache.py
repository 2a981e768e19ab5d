"""Tests of d2lcore.cache: atomic writes, keys, and a code fingerprint that covers the
modules that change trained numbers and leaves out the figure modules."""

from __future__ import annotations

import cmath
import dataclasses
import enum
import functools
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

import d2lcore
from d2lcore import cache, keys

PACKAGE = Path(d2lcore.__file__).parent


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the d2lcore source to edit."""
    dest = tmp_path / "src" / "d2lcore"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


@pytest.mark.parametrize("module", ["sliders.py", "widgets.py", "plotting.py"])
def test_editing_a_figure_module_keeps_the_fingerprint(package_copy: Path, module: str) -> None:
    before = cache.code_fingerprint(package_copy)
    append_comment(package_copy / module)
    assert cache.code_fingerprint(package_copy) == before
    # The book's execution cache still sees it: the page's output may change.
    assert cache.package_fingerprint(package_copy) != cache.package_fingerprint(PACKAGE)


@pytest.mark.parametrize("module", ["train.py", "grid.py", "sweep.py", "batched.py", "models.py"])
def test_editing_a_training_module_changes_the_fingerprint(
    package_copy: Path, module: str
) -> None:
    before = cache.code_fingerprint(package_copy)
    append_comment(package_copy / module)
    assert cache.code_fingerprint(package_copy) != before


def test_figure_edit_retrains_nothing_and_training_edit_retrains(
    package_copy: Path, tmp_path: Path
) -> None:
    """End to end, in fresh interpreters over the edited copy: a cached grid is served
    after a figure module changed, and trained again after a training module changed."""
    script = textwrap.dedent("""
        from d2lcore.grid import run_grid
        from d2lcore.train import History, RunResult
        calls = []
        def fn(config):
            calls.append(config)
            return RunResult(config=config, history=History(train_loss=[1.0], seconds=[0.0]))
        out = run_grid({"lr": [0.1, 0.2]}, fn, cache=True, name="edit-test")
        print(len(calls), out.meta["from_cache"])
    """)
    env = {**os.environ, "PYTHONPATH": str(package_copy.parent),
           cache.CACHE_ENV: str(tmp_path / "c")}  # fmt: skip

    def run() -> str:
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, check=True)  # fmt: skip
        return result.stdout.strip()

    assert run() == "2 False"
    assert run() == "0 True"
    append_comment(package_copy / "sliders.py")
    assert run() == "0 True"
    append_comment(package_copy / "train.py")
    assert run() == "2 False"


def test_key_covers_payload_and_device() -> None:
    assert cache.key({"a": 1}) == cache.key({"a": 1})
    assert cache.key({"a": 1}) != cache.key({"a": 2})
    assert cache.key({"a": 1}, device="cpu") != cache.key({"a": 1}, device="meta")


def test_tensor_digest_sees_dtype_shape_and_bytes() -> None:
    x = torch.arange(6.0)
    assert cache.tensor_digest(x) == cache.tensor_digest(x.clone())
    assert cache.tensor_digest(x) != cache.tensor_digest(x.double())
    assert cache.tensor_digest(x) != cache.tensor_digest(x.reshape(2, 3))
    assert cache.tensor_digest(x, None) != cache.tensor_digest(x)


def test_atomic_write_reports_errors_and_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "entry.json"
    assert cache.write_json(path, {"x": [1, 2]}) is None
    assert cache.read_json(path) == {"x": [1, 2]}

    def explode(f: object) -> None:
        raise OSError("disk full")

    assert cache.atomic_write(path, explode) == "disk full"
    assert cache.read_json(path) == {"x": [1, 2]}  # the old entry is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.json"]  # no temp file
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cache.write_json(blocker / "sub" / "e.json", {}) is not None
    assert cache.write_json(tmp_path / "odd.json", {"x": object()}) is not None
    path.write_text("{half")
    assert cache.read_json(path) is None


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    """A writer killed mid-write leaves a ``.tmp``; the next write removes it once it is
    old, and leaves a fresh one (another writer's, still at work) alone."""
    old, fresh = tmp_path / ".entry.abc.tmp", tmp_path / ".entry.def.tmp"
    old.write_text("half")
    fresh.write_text("half")
    long_ago = time.time() - 2 * cache.STALE_TMP_SECONDS
    os.utime(old, (long_ago, long_ago))
    assert cache.write_json(tmp_path / "entry.json", [1]) is None
    assert not old.exists() and fresh.exists()


# ----------------------------------------------------------------------------------
# Describing what a run reads


def describe(value: Any, name: str = "value") -> Any:
    return keys.Describer().describe(value, name)


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Settings:
    lr: float
    layers: tuple[int, ...] = (8,)


class Pair(NamedTuple):
    a: int
    b: int


def page_function(x: float) -> float:
    return x + 1


def other_function(x: float) -> float:
    return x + 2


def edited(t: torch.Tensor) -> torch.Tensor:
    t[2] += 1
    return t


def linear(weight: float = 0.5, corner: float = 0.5) -> nn.Module:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.zero_()
        layer.weight[0, 0] = corner
    return layer


def reader(value: Any) -> Callable[[dict], Any]:
    """A function that captures ``value`` in its closure, as a page's function does."""

    def run(config: dict) -> Any:
        return value, config

    return run


# (kind, a value, another value of it): each made twice by its factory.
KINDS: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
    ("tensor element", lambda: torch.arange(6.0), lambda: edited(torch.arange(6.0))),
    ("tensor dtype", lambda: torch.arange(6.0), lambda: torch.arange(6.0).double()),
    ("tensor shape", lambda: torch.arange(6.0), lambda: torch.arange(6.0).reshape(2, 3)),
    ("ndarray", lambda: np.arange(6.0), lambda: np.arange(6.0) * 2),
    ("numpy scalar", lambda: np.float32(1), lambda: np.float64(1)),
    ("int", lambda: 3, lambda: 4),
    ("float", lambda: 0.1, lambda: 0.2),
    ("int or float", lambda: 1, lambda: 1.0),
    ("str", lambda: "relu", lambda: "tanh"),
    ("bool", lambda: True, lambda: False),
    ("None", lambda: None, lambda: 0),
    ("tuple", lambda: (1, 2), lambda: (1, 3)),
    ("tuple or list", lambda: (1, 2), lambda: [1, 2]),
    ("list", lambda: [1, 2], lambda: [2, 1]),
    ("NamedTuple", lambda: Pair(1, 2), lambda: (1, 2)),
    ("dict", lambda: {"a": 1}, lambda: {"a": 2}),
    ("dict order", lambda: {"a": 1, "b": 2}, lambda: {"b": 2, "a": 1}),
    ("set", lambda: {1, 2}, lambda: {1, 3}),
    ("dataclass", lambda: Settings(0.1), lambda: Settings(0.1, (16,))),
    ("enum", lambda: Colour.RED, lambda: Colour.BLUE),
    ("nn.Module weights", lambda: linear(), lambda: linear(corner=1.0)),
    ("nn.Module setting", lambda: nn.Dropout(0.1), lambda: nn.Dropout(0.2)),
    ("nn.Module layers", lambda: nn.Sequential(nn.ReLU()), lambda: nn.Sequential(nn.Tanh())),
    ("torch.device", lambda: torch.device("cpu"), lambda: torch.device("meta")),
    ("torch.dtype", lambda: torch.float32, lambda: torch.float64),
    ("torch.Generator", lambda: torch.Generator().manual_seed(0),
     lambda: torch.Generator().manual_seed(1)),
    ("module", lambda: math, lambda: cmath),
    ("class", lambda: nn.Linear, lambda: nn.Conv2d),
    ("function", lambda: page_function, lambda: other_function),
    ("lambda", lambda: (lambda x: x + 1), lambda: (lambda x: x * 2)),
    ("partial", lambda: functools.partial(page_function, 1),
     lambda: functools.partial(page_function, 2)),
    ("library function", lambda: torch.relu, lambda: torch.tanh),
    ("nested", lambda: {"data": [(torch.zeros(2), 1)]}, lambda: {"data": [(torch.ones(2), 1)]}),
]


@pytest.mark.parametrize(("kind", "make", "make_other"), KINDS, ids=[k[0] for k in KINDS])
def test_each_kind_of_captured_value_is_in_the_key(
    kind: str, make: Callable[[], Any], make_other: Callable[[], Any]
) -> None:
    """Two equal values (made apart) give one key, another value another key."""

    def key(value: Any) -> str:
        return cache.key(describe(reader(value)))

    assert key(make()) == key(make())
    assert key(make()) != key(make_other())


def compiled(source: str, *, line: int = 1, filename: str = "<cell 1>") -> Callable[..., Any]:
    namespace: dict[str, Any] = {"__name__": "__main__", "DATA": torch.ones(3)}
    exec(compile("\n" * (line - 1) + textwrap.dedent(source), filename, "exec"), namespace)
    return namespace["run"]


def test_code_is_keyed_by_what_runs_not_where_it_sits() -> None:
    source = """
        def run(config):
            # a comment
            return DATA.sum() * config["lr"]
    """
    key = describe(compiled(source))
    # A cell moved down the page, or run again under another name, keeps its key.
    assert describe(compiled(source, line=40, filename="<cell 7>")) == key
    assert describe(compiled(source.replace("# a comment", "# another"))) == key
    assert describe(compiled(source.replace("sum()", "mean()"))) != key
    assert describe(compiled(source.replace('"lr"', '"wd"'))) != key


def test_what_a_run_only_writes_stays_out_of_the_key() -> None:
    calls: list[int] = []
    count = 0

    def collects(config: dict) -> int:
        nonlocal count
        count += 1
        calls.append(1)
        return config["lr"]

    before = describe(collects)
    calls.append(2)
    count = 5
    assert describe(collects) == before

    def reads_calls(config: dict) -> int:
        calls.append(1)
        return len(calls)  # read: part of the key

    before = describe(reads_calls)
    calls.append(3)
    assert describe(reads_calls) != before


def test_cycles_and_recursion_end() -> None:
    def factorial(n: int) -> int:
        return 1 if n <= 1 else n * factorial(n - 1)

    loop: list[Any] = [1]
    loop.append(loop)
    assert describe(factorial) == describe(factorial)
    assert describe(reader(loop)) == describe(reader(loop))


def test_library_code_is_named_not_read() -> None:
    from d2lcore.train import fit

    assert describe(fit) == {"function": "d2lcore.train.fit", "version": ""}
    assert describe(torch.relu) == {"builtin": "torch._VariableFunctionsClass.relu"}
    assert describe(np.mean)["version"] == np.__version__
    assert describe(torch) == {"module": "torch"}


def test_unkeyable_values_name_their_place() -> None:
    with pytest.raises(keys.UnkeyableError, match=r"value\['a'\]\[1\] is a builtins.object"):
        describe({"a": [1, object()]})
    with pytest.raises(keys.UnkeyableError, match="an array of Python objects"):
        describe(np.array([None, 1]))
    handle = open(os.devnull)
    try:
        with pytest.raises(keys.UnkeyableError, match=r"run's closure variable value is a "
                                                       r"_io.TextIOWrapper"):  # fmt: skip
            describe(reader(handle), "fn")
    finally:
        handle.close()
