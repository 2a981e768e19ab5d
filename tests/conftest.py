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
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from booktools import toc

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


#: The whole book's build in the tests (about 11 min clean on 2 cores). Past it the build
#: is stopped and run once more: a page's execution has been seen to stall with both
#: the kernel and nbclient idle, past nbclient's own cell timeout (the CNN page, three
#: times); the pages executed before it come from the execution cache the second time.
BOOK_BUILD_TIMEOUT_S = 1500


#: Processes started by ``run_process`` and not yet ended: what the end of an interrupted
#: session stops (a set-up in the background would otherwise run on after pytest).
_LIVE: set[subprocess.Popen[str]] = set()


def run_process(cmd: list[str], *, timeout: float | None = None,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``subprocess.run(cmd, capture_output=True, text=True, ...)`` in its own process
    group: past ``timeout``, or when the caller is interrupted, the command and every
    process it started are killed (then ``TimeoutExpired`` or the interruption raised)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)  # fmt: skip
    _LIVE.add(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # the timeout, or the tests interrupted (Ctrl-C)
        _kill(proc)
        proc.communicate()
        raise
    finally:
        _LIVE.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def build_book(source: Path, *, output: Path | None = None,
               timeout: float = 3600) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Build a book the way CI does: every cell executed, every warning an error. Past
    ``timeout`` the build and its kernels are killed and ``TimeoutExpired`` raised."""
    jupyter_book = str(Path(sys.executable).parent / "jupyter-book")
    cmd = [jupyter_book, "build", str(source), "--all", "-W", "--keep-going"]
    if output is not None:
        cmd += ["--path-output", str(output)]
    env = dict(os.environ)
    env.setdefault("D2L_CACHE_DIR", str(ROOT / ".d2l_cache"))
    return run_process(cmd, timeout=timeout, env=env)


# ----------------------------------------------------------------------------------
# Slow set-ups, started in the background as soon as the tests are collected
#
# The book build (about 7 min) and Binder's environment (about 3 min of pip) each keep
# only part of the 2 cores busy for much of their time: the book's last pages execute
# alone, pip mostly unpacks. Run one after the other before the tests that need them
# (and Binder's page runs and the Colab rehearsal after them), a fresh clone's
# ``make test`` took 35 min 49 s; sharing the cores, 27 min 55 s. So each is started in
# a thread when the session's tests are collected (if a selected test needs it), the
# tests that need none of them run first, meanwhile, and a test that needs one waits
# for it.


@dataclass
class Background:
    """A set-up run in a daemon thread: ``result()`` waits for it and returns its value,
    or raises what it raised (``pytest.fail`` included) in the test that waits."""

    name: str
    start: Callable[[list[pytest.Item]], Any]  # given the session's selected tests
    cleanup: Callable[[Any], None] | None = None
    stop: Callable[[], None] | None = None  # asks a running set-up to end early
    _items: list[pytest.Item] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _value: Any = None
    _error: BaseException | None = None
    _taken: bool = False

    def begin(self, items: list[pytest.Item] | None = None) -> None:
        if self._thread is None:
            self._items = list(items or [])
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self.start(self._items)
        except BaseException as error:  # noqa: BLE001 (handed to the test that waits)
            self._error = error

    def result(self, *, take: bool = True) -> Any:
        """The set-up's value (started now if it was not); whoever takes it cleans up
        (another set-up that only reads it passes ``take=False``)."""
        self.begin()
        assert self._thread is not None
        self._thread.join()
        self._taken = self._taken or take
        if self._error is not None:
            raise self._error
        return self._value

    def abandon(self) -> None:
        """At the session's end: clean up a value no test took (the tests interrupted)."""
        if self._thread is None or self._taken:
            return
        self._thread.join(timeout=600)
        if self._error is None and self.cleanup is not None and not self._thread.is_alive():
            self.cleanup(self._value)


#: The set-ups to start in the background, by the name of the fixture that takes them.
BACKGROUND: dict[str, Background] = {}


def in_background(fixture: str, start: Callable[[list[pytest.Item]], Any],
                  cleanup: Callable[[Any], None] | None = None,
                  stop: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Start ``start(selected tests)`` in the background when a selected test uses
    ``fixture``, which takes its value with ``BACKGROUND[fixture].result()`` and then
    owns it; ``cleanup`` ends a value no test took, ``stop`` a set-up still running when
    the session ends."""
    BACKGROUND[fixture] = Background(fixture, start, cleanup, stop)


#: Fixtures whose work runs in the background while other tests run: the tests that
#: wait for it go last (Binder's page runs, started with Binder's environment).
RUN_LAST = {"page_runs"}


def _order(item: pytest.Item) -> int:
    names = set(getattr(item, "fixturenames", ()))
    return 2 if names & RUN_LAST else 1 if names & BACKGROUND.keys() else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tests that need no background set-up first, so that they run while the set-ups
    # do; the tests that wait for background work last. A stable sort keeps each group's
    # order.
    items.sort(key=_order)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ())
              if name in BACKGROUND}  # fmt: skip
    for name in sorted(needed):
        BACKGROUND[name].begin(session.items)


def pytest_sessionfinish() -> None:
    # Every fixture is torn down by now: a process still running is a set-up no test
    # waited for (the tests were interrupted).
    for job in BACKGROUND.values():
        if job.stop is not None:
            job.stop()
    for proc in list(_LIVE):
        _kill(proc)
    for job in BACKGROUND.values():
        job.abandon()


def _build_the_book(items: list[pytest.Item]) -> subprocess.CompletedProcess[str] | None:
    """The book built into ``_build/html`` (None: ``D2L_REUSE_BUILD`` kept a build)."""
    html = ROOT / "_build" / "html"
    if os.environ.get("D2L_REUSE_BUILD") == "1" and (html / "index.html").is_file():
        return None
    try:
        return build_book(ROOT, timeout=BOOK_BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return build_book(ROOT, timeout=BOOK_BUILD_TIMEOUT_S)  # see BOOK_BUILD_TIMEOUT_S


in_background("built_book", _build_the_book)


@pytest.fixture(scope="session")
def built_book() -> Path:
    """``_build/html`` of this repository, built once per test session (in the
    background, from the start of the session).

    ``D2L_REUSE_BUILD=1`` reuses an existing build (for iterating on the browser tests);
    CI never sets it.
    """
    html = ROOT / "_build" / "html"
    result = BACKGROUND["built_book"].result()
    if result is None:
        return html
    log = ROOT / "_build" / "build.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"the book build failed (full log: {log}):\n{tail}", pytrace=False)
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
