"""Shared fixtures: tiny IDX files written by the tests, so the real Fashion-MNIST
loading code runs on data the tests control."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from .browser_helpers import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]


def load_module(path: Path, name: str) -> ModuleType:
    """Import the file ``path`` (a script, a Sphinx extension) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # what dataclasses look their module up in
    spec.loader.exec_module(module)
    return module


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
    # Its own process group, so that a timeout also ends the kernels it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # the timeout, or the tests interrupted (Ctrl-C)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="session")
def built_book() -> Path:
    """``_build/html`` of this repository, built once per test session.

    ``D2L_REUSE_BUILD=1`` reuses an existing build (for iterating on the browser tests);
    CI never sets it.
    """
    html = ROOT / "_build" / "html"
    if os.environ.get("D2L_REUSE_BUILD") == "1" and (html / "index.html").is_file():
        return html
    try:
        result = build_book(ROOT, timeout=BOOK_BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        result = build_book(ROOT, timeout=BOOK_BUILD_TIMEOUT_S)  # see BOOK_BUILD_TIMEOUT_S
    log = ROOT / "_build" / "build.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"the book build failed (full log: {log}):\n{tail}", pytrace=False)
    return html


def toc_pages() -> list[str]:
    """Every page in _toc.yml, as paths without suffix (``intro``, ``chapters/...``)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("chapters", "sections"):
                walk(entry.get(key, []))
            for part in entry.get("parts", []):
                walk(part.get("chapters", []))

    walk(toc.get("chapters", []))
    walk([{"chapters": p.get("chapters", [])} for p in toc.get("parts", [])])
    return pages


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
