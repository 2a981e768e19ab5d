"""Shared fixtures: tiny IDX files written by the tests, so the real Fashion-MNIST
loading code runs on data the tests control."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from booktools import test_build, toc

from .browser_helpers import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``cwd`` whoever owns the checkout.

    On CI the tests may run as root in a container on a checkout owned by the runner's
    user, and git then refuses to run ("detected dubious ownership"). The tests trust the
    repository they belong to, so they run git with ``safe.directory=*`` (command-line
    configuration, which git honours for this setting). With ``check``, a failure fails
    the test with git's own message.
    """
    result = subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd,
                            capture_output=True)  # fmt: skip
    if check and result.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed in {cwd}:\n"
                    f"{result.stderr.decode(errors='replace')}", pytrace=False)  # fmt: skip
    return result


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX format (magic 0x0000080<ndim>, big-endian dims)."""
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny_fashion_mnist(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    """A folder with the four Fashion-MNIST files (gzip), 20 train and 8 test images.

    Returns the folder, the MD5 of each decompressed file, and the arrays.
    """
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 8, dtype=np.uint8),
    }
    md5 = {}
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        md5[name] = hashlib.md5(raw).hexdigest()
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(raw))
    return tmp_path, md5, arrays


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one torch thread: on tiny tensors threads only add overhead (and
    spin on a busy 2-core machine). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------
# The built book, shared by the book and browser tests


def run_process(cmd: list[str], *, timeout: float | None = None,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``subprocess.run(cmd, capture_output=True, text=True, ...)`` in its own process
    group: past ``timeout``, or when the caller is interrupted, the command and every
    process it started are killed; ``TimeoutExpired`` then carries what it printed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout or 0, output=out, stderr=err) from None
    except BaseException:  # the tests interrupted (Ctrl-C)
        _kill(proc)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def build_book(source: Path, *, output: Path | None = None,
               timeout: float = 3600) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Build a (small) book the way CI does: every cell executed, every warning an error.
    Past ``timeout`` the build and its kernels are killed and ``TimeoutExpired`` raised."""
    env = dict(os.environ)
    env.setdefault("D2L_CACHE_DIR", str(ROOT / ".d2l_cache"))
    return run_process(test_build.command(output, source), timeout=timeout, env=env)


#: The environment variable that names the test build's HTML (the Makefile sets it).
TEST_BOOK_ENV = "D2L_TEST_BOOK"


@pytest.fixture(scope="session")
def built_book() -> Path:
    """The HTML of the book built for the tests (``make test-build``:
    ``booktools/test_build.py``, into ``_build/test``; ``$D2L_TEST_BOOK`` names another
    folder). The build is a stage of its own: the tests that need it run after it."""
    html = Path(os.environ.get(TEST_BOOK_ENV) or test_build.html_folder())
    if not (html / "index.html").is_file():
        pytest.fail(f"no test build in {html}: run `make test-build` first (`make test-book` "
                    "and `make test-browser` do)", pytrace=False)  # fmt: skip
    return html


def toc_pages() -> list[str]:
    """Every page in _toc.yml, as paths without suffix (``intro``, ``chapters/...``)."""
    return toc.pages(ROOT)


# ----------------------------------------------------------------------------------
# A browser over the built book (Debian's Chromium, driven by Playwright)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``folder`` over HTTP on a free loopback port; yields its URL (no trailing
    slash) and the list of paths requested so far."""
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            requested.append(self.path)

    handler = functools.partial(Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def site(built_book: Path) -> Iterator[str]:
    """Serve the built HTML on a free loopback port."""
    with serving(built_book) as (url, _):
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
