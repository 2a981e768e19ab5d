"""Hostile and broken data files: a folder the user named is used or refused (never
skipped without a word), unreadable files are named for what they are, and a
decompression bomb is stopped at the expected size. Hostile mirrors and broken download
targets: every failure is the module's data error, says what to do, and leaves nothing
behind."""

from __future__ import annotations

import contextlib
import errno
import gzip
import http.server
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from d2lcore import data, datafiles, download
from d2lcore.datafiles import DataFileError, DataNotFoundError, find_fashion_mnist, read_idx

from .conftest import idx_bytes, serving

NAME = "train-images-idx3-ubyte"


@pytest.fixture
def system_copy(tiny_fashion_mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A good system copy, so that skipping a broken named folder would go unnoticed."""
    folder, _, _ = tiny_fashion_mnist
    system = tmp_path / "system"
    shutil.copytree(folder, system)
    monkeypatch.setattr(datafiles, "DEBIAN_DIR", system)
    monkeypatch.setattr(datafiles, "USER_CACHE_DIR", tmp_path / "no-cache")
    return system


def named(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv(datafiles.FASHION_MNIST_ENV, str(folder))


def test_empty_named_folder_is_refused(system_copy, tmp_path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    named(monkeypatch, empty)
    with pytest.raises(DataNotFoundError, match=rf"{empty}.*D2L_FASHION_MNIST_DIR.*lacks"):
        find_fashion_mnist()


def test_missing_named_folder_is_refused(system_copy, tmp_path, monkeypatch) -> None:
    named(monkeypatch, tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        find_fashion_mnist()
    with pytest.raises(DataNotFoundError, match=r"named by root="):
        find_fashion_mnist(tmp_path / "nowhere")


@pytest.mark.parametrize("kind", ["folder", "fifo", "loop", "dangling"])
def test_broken_file_in_named_folder_is_named(system_copy, tmp_path, monkeypatch, kind) -> None:
    folder = tmp_path / "mine"
    shutil.copytree(system_copy, folder)
    bad = folder / f"{NAME}.gz"
    bad.unlink()
    if kind == "folder":
        bad.mkdir()
    elif kind == "fifo":
        os.mkfifo(bad)
    elif kind == "loop":
        os.symlink(bad, bad)
    else:
        os.symlink(tmp_path / "gone", bad)
    named(monkeypatch, folder)
    with pytest.raises(DataFileError, match=rf"{bad}.*is (a folder|a broken link|not a regular)"):
        find_fashion_mnist()


def test_good_named_folder_is_used(system_copy, tiny_fashion_mnist, monkeypatch) -> None:
    folder, _, _ = tiny_fashion_mnist
    named(monkeypatch, folder)
    assert find_fashion_mnist() == folder


def test_unreadable_file_says_permission_not_corrupt(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file whatever its mode")
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros((2, 3), dtype=np.uint8)))
    path.chmod(0)
    with pytest.raises(DataFileError, match="permission denied") as err:
        read_idx(path)
    assert "corrupt" not in str(err.value) and "chmod" in str(err.value)


def test_permission_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same message where the tests run as root: the open itself is refused."""
    path = tmp_path / "x"
    path.write_bytes(b"\0" * 16)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataFileError, match="permission denied") as err:
        read_idx(path)
    assert "corrupt" not in str(err.value) and "Delete" not in str(err.value)


def test_decompression_bomb_stops_at_the_expected_size(tmp_path: Path) -> None:
    """A small .gz that expands far past its known size is refused after reading one
    byte more than that size, not read whole."""
    path = tmp_path / "bomb.gz"
    header = idx_bytes(np.zeros((1, 28, 28), dtype=np.uint8))[:16]
    with gzip.open(path, "wb") as f:
        f.write(header)
        chunk = b"\0" * 2**20
        for _ in range(64):  # 64 MiB of zeros: a few kB on disk
            f.write(chunk)
    assert path.stat().st_size < 2**20
    with pytest.raises(DataFileError, match="more than 7,840,016 bytes once decompressed"):
        read_idx(path, expected_size=7_840_016)
    with pytest.raises(DataFileError, match="more than 1,000 bytes"):
        read_idx(path, expected_size=1000)


@pytest.mark.parametrize("train_size", [0, -100, 10**9, 2.5])
def test_train_size_is_checked(tiny_fashion_mnist, monkeypatch, train_size) -> None:
    """train_size=0 used to train on nothing and -100 on all but 100 images, quietly."""
    folder, md5, _ = tiny_fashion_mnist
    real = data.load_fashion_mnist
    monkeypatch.setattr(data, "load_fashion_mnist",
                        lambda split, root: real(split, root, checksums=md5))  # fmt: skip
    with pytest.raises(ValueError, match="train_size must be a whole number from 1 to 18 "):
        data.fashion_mnist_splits(train_size=train_size, val_size=2, root=folder, device="cpu")
    splits = data.fashion_mnist_splits(train_size=5, val_size=2, root=folder, device="cpu")
    assert len(splits.train[1]) == 5


# ----------------------------------------------------------------------------------
# Downloading (Colab's path): from a local HTTP server standing in for the mirror


@pytest.fixture
def tiny_files(tiny_fashion_mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny files' checksums and sizes stand for Fashion-MNIST's (so the download cap
    is small too), with no system copy; returns a copy of the files, to serve."""
    folder, md5, arrays = tiny_fashion_mnist
    served = tmp_path / "served"
    shutil.copytree(folder, served)
    sizes = {name: len(idx_bytes(a)) for name, a in arrays.items()}
    monkeypatch.setattr(datafiles, "FASHION_MNIST_FILES", {n: (md5[n], sizes[n]) for n in md5})
    monkeypatch.setattr(datafiles, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(datafiles, "USER_CACHE_DIR", tmp_path / "no-cache")
    return served


@pytest.fixture
def mirror(tiny_files: Path):
    """Serve a copy of the tiny files over HTTP; the checksums are the tiny files'.
    Yields ``(url, served folder, list of requested paths)``."""
    with serving(tiny_files) as (url, requested):
        yield url, tiny_files, requested


def test_ensure_downloads_into_the_named_folder_and_verifies(mirror, tmp_path, monkeypatch):
    url, served, requested = mirror
    target = tmp_path / "colab-data"
    target.mkdir()
    named(monkeypatch, target)
    monkeypatch.setenv(download.URL_ENV, url)
    with pytest.raises(DataNotFoundError):
        find_fashion_mnist()
    assert download.ensure_fashion_mnist() == target
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{n}.gz" for n in datafiles.FASHION_MNIST_FILES)
    assert len(requested) == 4
    tiny_md5 = {name: md5 for name, (md5, _) in datafiles.FASHION_MNIST_FILES.items()}
    images, labels = datafiles.load_fashion_mnist("test", checksums=tiny_md5)
    assert images.shape == (8, 28, 28) and labels.shape == (8,)
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in target.iterdir())  # readable by all
    # Found now: nothing is fetched again. A broken copy is fetched again.
    assert download.ensure_fashion_mnist() == target and len(requested) == 4
    (target / f"{NAME}.gz").write_bytes(b"\x1f\x8b broken")
    download.download_fashion_mnist(target)
    assert requested[4:] == [f"/{NAME}.gz"]
    datafiles.check_fashion_mnist(target)
    # All four there but one damaged (valid gzip, wrong bytes): ensure verifies, and
    # fetches that one again.
    (target / f"{NAME}.gz").write_bytes(gzip.compress(b"not the images"))
    assert download.ensure_fashion_mnist() == target
    assert requested[5:] == [f"/{NAME}.gz"]
    datafiles.check_fashion_mnist(target)


def test_ensure_never_replaces_a_broken_system_copy(mirror, tmp_path, monkeypatch):
    url, served, requested = mirror
    system = tmp_path / "system"
    shutil.copytree(served, system)
    (system / f"{NAME}.gz").write_bytes(gzip.compress(b"not the images"))
    monkeypatch.setattr(datafiles, "DEBIAN_DIR", system)
    monkeypatch.setenv(download.URL_ENV, url)
    with pytest.raises(DataFileError, match=rf"{system}/{NAME}.gz fails its checksum"):
        download.ensure_fashion_mnist()
    assert requested == []


def test_download_of_a_wrong_file_keeps_nothing(mirror, tmp_path):
    url, served, _ = mirror
    (served / f"{NAME}.gz").write_bytes(b"\x1f\x8b not the file")
    target = tmp_path / "data"
    with pytest.raises(DataFileError, match=rf"{url}/{NAME}.gz is not the file"):
        download.download_fashion_mnist(target, url=url)
    assert not (target / f"{NAME}.gz").exists()
    assert not list(target.glob("*.part"))


def test_download_failure_names_the_address_and_the_way_out(mirror, tmp_path):
    url, _, _ = mirror
    with pytest.raises(DataNotFoundError, match=rf"could not download {url}/.*404.*"
                       rf"Nothing was kept.*{download.URL_ENV}"):  # fmt: skip
        download.download_fashion_mnist(tmp_path / "data", url=url + "/missing")
    assert not list((tmp_path / "data").glob("*"))


# ----------------------------------------------------------------------------------
# Hostile mirrors and broken targets (issue #30): each failure is the data error with
# what to do, within seconds, and leaves no temporary file behind

Respond = Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up on a hostile answer is the point of the test


@contextlib.contextmanager
def hostile(respond: Respond) -> Iterator[str]:
    """A local HTTP server that answers every GET with ``respond(handler, release)``;
    ``release`` is set when the block ends, so an answer that stalls ends with the test.
    Yields the server's URL."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with contextlib.suppress(OSError):  # the client gave up: as intended
                respond(self, release)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = _QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def _headers(h: http.server.BaseHTTPRequestHandler, **headers: str) -> None:
    h.send_response(200)
    for key, value in headers.items():
        h.send_header(key.replace("_", "-"), value)
    h.end_headers()


def stall_before_headers(h: http.server.BaseHTTPRequestHandler, release: threading.Event):
    release.wait(30)


def stall_mid_body(h: http.server.BaseHTTPRequestHandler, release: threading.Event):
    _headers(h, Content_Length="10000")
    h.wfile.write(b"\x1f\x8b" + b"\0" * 1000)
    release.wait(30)


def endless_body(h: http.server.BaseHTTPRequestHandler, release: threading.Event):
    _headers(h)  # no length: the body ends when the connection closes, i.e. never
    while not release.is_set():
        h.wfile.write(b"\0" * 2**16)


def huge_announced(h: http.server.BaseHTTPRequestHandler, release: threading.Event):
    _headers(h, Content_Length=str(10**12))
    while not release.is_set():
        h.wfile.write(b"\0" * 2**16)


def truncated_chunks(h: http.server.BaseHTTPRequestHandler, release: threading.Event):
    _headers(h, Transfer_Encoding="chunked")
    h.wfile.write(b"1000\r\n" + b"\0" * 0x1000 + b"\r\n")  # one chunk, then the end


def short_body(h: http.server.BaseHTTPRequestHandler, release: threading.Event):
    _headers(h, Content_Length="1000")
    h.wfile.write(b"\x1f\x8b" + b"\0" * 498)  # 500 of the 1,000 bytes, then the end


def nothing_left(folder: Path) -> None:
    """No file or temporary file is left in ``folder`` (if it exists)."""
    left = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert left == [], f"left behind in {folder}: {left}"


def download_fails(url: str, target: Path, error: type[Exception], match: str) -> str:
    """Download from ``url`` with a 1 s timeout; check that it fails with ``error``
    matching ``match``, in under 5 s, leaving nothing. Returns the message."""
    start = time.monotonic()
    with pytest.raises(error, match=match) as err:
        download.download_fashion_mnist(target, url=url, timeout=1)
    assert time.monotonic() - start < 5, "the download was not stopped in time"
    nothing_left(target)
    assert "Nothing was kept" in str(err.value) or "nothing was kept" in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("respond", [stall_before_headers, stall_mid_body])
def test_a_stalled_mirror_times_out(tiny_files, tmp_path, respond) -> None:
    """A mirror that stops sending used to hang the call (and a Colab cell) for ever."""
    with hostile(respond) as url:
        message = download_fails(url, tmp_path / "data", DataNotFoundError,
                                 rf"could not download {url}/{NAME}.gz: the server sent "
                                 r"nothing for 1 s")  # fmt: skip
    assert download.URL_ENV in message and "Check the network" in message


def test_timeout_must_be_positive(tmp_path) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive"):
        download.download_fashion_mnist(tmp_path, url="http://127.0.0.1:9/", timeout=0)


@pytest.mark.parametrize("respond", [endless_body, huge_announced])
def test_a_body_without_end_stops_at_the_cap(tiny_files, tmp_path, respond) -> None:
    """An endless body used to write 3.5 GB in 20 s; a file is refused past its cap (its
    decompressed size plus gzip's framing), or at once when it announces more."""
    cap = download.download_cap(datafiles.FASHION_MNIST_FILES[NAME][1])
    with hostile(respond) as url:
        message = download_fails(url, tmp_path / "data", DataFileError,
                                 rf"{url}/{NAME}.gz (announces [\d,]+|sent more than {cap:,}) "
                                 rf"bytes, more than the file can be \({cap:,} bytes at most\)")
    assert ("announces" in message) == (respond is huge_announced)


def test_the_cap_fits_the_real_files() -> None:
    """The original downloads (26 MB, 29 kB, 4.4 MB, 5 kB) fit their caps, which stay
    under 64 MB."""
    compressed = {"train-images-idx3-ubyte": 26_421_880, "train-labels-idx1-ubyte": 29_515,
                  "t10k-images-idx3-ubyte": 4_422_102, "t10k-labels-idx1-ubyte": 5_148}
    for name, (_, size) in datafiles.FASHION_MNIST_FILES.items():
        assert compressed[name] < download.download_cap(size) < 64 * 2**20


def test_a_truncated_chunked_body_is_refused(tiny_files, tmp_path) -> None:
    """It used to raise http.client.IncompleteRead and leave a .part file."""
    with hostile(truncated_chunks) as url:
        download_fails(url, tmp_path / "data", DataNotFoundError,
                       rf"could not download {url}/{NAME}.gz: the connection closed after "
                       r"[\d,]+ bytes, before the end")  # fmt: skip


def test_a_body_shorter_than_announced_is_refused(tiny_files, tmp_path) -> None:
    with hostile(short_body) as url:
        download_fails(url, tmp_path / "data", DataNotFoundError,
                       r"closed after 500 of the 1,000 bytes announced")  # fmt: skip


@pytest.mark.parametrize("url", ["fashion-mnist.example.org/data", "localhost:8000/data"])
def test_an_address_without_a_scheme_is_refused(tmp_path, monkeypatch, url) -> None:
    """It used to raise a bare ValueError (or "unknown url type: localhost")."""
    target = tmp_path / "data"
    with pytest.raises(DataNotFoundError, match=r"not an http://, https:// or file:// address"):
        download.download_fashion_mnist(target, url=url)
    monkeypatch.setenv(download.URL_ENV, url)
    with pytest.raises(DataNotFoundError, match=rf"given by {download.URL_ENV}"):
        download.download_fashion_mnist(target)
    assert not target.exists()


def test_a_target_under_a_file_is_refused(tiny_files, tmp_path) -> None:
    """A target folder that cannot be made (root ignores permissions; not this)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataNotFoundError, match=rf"create the folder {blocker}/data.*a folder "
                       "above it is a file.*D2L_FASHION_MNIST_DIR"):  # fmt: skip
        download.download_fashion_mnist(blocker / "data", url="http://127.0.0.1:9/")
    with pytest.raises(DataNotFoundError, match=rf"create the folder {blocker} .*: it is a file"):
        download.download_fashion_mnist(blocker, url="http://127.0.0.1:9/")
    assert blocker.read_text() == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into every folder whatever its mode")
def test_a_read_only_target_is_refused(mirror, tmp_path) -> None:
    """It used to raise a raw PermissionError."""
    url, _, _ = mirror
    target = tmp_path / "data"
    target.mkdir()
    target.chmod(0o555)
    try:
        download_fails(url, target, DataNotFoundError,
                       rf"could not save {url}/{NAME}.gz in {target}: Permission denied")
    finally:
        target.chmod(0o755)


def test_a_refused_write_is_named(mirror, tmp_path, monkeypatch) -> None:
    """The same where the tests run as root: creating the temporary file is refused."""
    url, _, _ = mirror

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(download.tempfile, "mkstemp", refuse)
    message = download_fails(url, tmp_path / "data", DataNotFoundError,
                             rf"could not save {url}/{NAME}.gz in {tmp_path / 'data'}: "
                             "Permission denied. Check that you can write there")  # fmt: skip
    assert "network" not in message


def test_a_folder_where_the_file_should_go_is_left_alone(mirror, tmp_path) -> None:
    """It used to raise IsADirectoryError after writing a 26 MB .part file."""
    url, _, requested = mirror
    target = tmp_path / "data"
    (target / f"{NAME}.gz").mkdir(parents=True)
    (target / f"{NAME}.gz" / "mine").write_text("keep")
    with pytest.raises(DataFileError, match=rf"{target}/{NAME}.gz is a folder, where the "
                       r"download .* should go. Move it away"):  # fmt: skip
        download.download_fashion_mnist(target, url=url, timeout=1)
    assert [p.name for p in target.iterdir()] == [f"{NAME}.gz"]
    assert (target / f"{NAME}.gz" / "mine").read_text() == "keep"
    assert requested == []


def test_an_interrupt_leaves_nothing(mirror, tmp_path, monkeypatch) -> None:
    """Ctrl-C mid-download used to leave the .part file; it is removed, and the
    interrupt goes on."""
    url, _, _ = mirror
    write = download._write_all

    def interrupted(fd: int, chunk: bytes) -> None:
        write(fd, chunk)  # some bytes are on disk, then the reader presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_write_all", interrupted)
    target = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        download.download_fashion_mnist(target, url=url, timeout=1)
    nothing_left(target)


@pytest.mark.parametrize(("code", "says"), [(errno.ENOSPC, r"the disk is full \([\d,]+ MB free "
                                             r"in {target}\). Free some space there"),
                                            (errno.EIO, r"Input/output error")],
                         ids=["ENOSPC", "EIO"])  # fmt: skip
def test_a_failed_write_says_what_happened(mirror, tmp_path, monkeypatch, code, says) -> None:
    """A full disk used to say "Check the network"."""
    url, _, _ = mirror
    target = tmp_path / "data"

    def fail(fd: int, chunk: bytes) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(download, "_write_all", fail)
    message = download_fails(url, target, DataNotFoundError,
                             rf"could not save {url}/{NAME}.gz in {target}: "
                             + says.format(target=target))  # fmt: skip
    assert "network" not in message and datafiles.FASHION_MNIST_ENV in message


def test_two_downloads_into_one_folder_both_succeed(tiny_files, tmp_path) -> None:
    """They used to share one .part file, and one failed with a misleading message."""
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most at once

    def slowly(h: http.server.BaseHTTPRequestHandler, release: threading.Event) -> None:
        body = (tiny_files / h.path.lstrip("/")).read_bytes()
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        try:
            _headers(h, Content_Length=str(len(body)))
            h.wfile.write(body[: len(body) // 2])
            release.wait(0.2)  # both downloads are half-way through the same file
        finally:
            # Counted out before the last bytes go: once they arrive, the client may
            # ask for its next file before this thread runs again.
            with lock:
                in_flight[0] -= 1
        h.wfile.write(body[len(body) // 2 :])

    target = tmp_path / "data"
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def fetch(url: str) -> None:
        start.wait()
        try:
            download.download_fashion_mnist(target, url=url, timeout=5)
        except BaseException as err:  # noqa: BLE001 (reported by the test)
            errors.append(err)

    with hostile(slowly) as url:
        threads = [threading.Thread(target=fetch, args=(url,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert in_flight[1] == 2, "the two downloads did not overlap"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{n}.gz" for n in datafiles.FASHION_MNIST_FILES)
    datafiles.check_fashion_mnist(target)
