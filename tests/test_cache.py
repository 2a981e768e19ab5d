"""Tests of d2lcore.cache: atomic writes, keys, and a code fingerprint that covers the
modules that change trained numbers and leaves out the figure modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import d2lcore
from d2lcore import cache

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
