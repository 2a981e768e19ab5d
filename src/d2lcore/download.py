"""The explicit download of Fashion-MNIST (:func:`download_fashion_mnist`), for a machine
with a network and no copy of the files, and :func:`ensure_fashion_mnist`, which finds the
files or downloads them (Colab's path). Nothing downloads by itself: the book and the
tests' builds never call these.

Each file is streamed into a temporary file of its own beside its target, capped in size
and in the time the server may stall, verified against
:data:`~d2lcore.datafiles.FASHION_MNIST_FILES`, and only then given its name; on any
failure nothing is kept. Finding, checking and reading the files is
:mod:`d2lcore.datafiles`'; :mod:`d2lcore.data` re-exports both functions.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# The settings the tests patch (FASHION_MNIST_FILES, USER_CACHE_DIR, DEBIAN_DIR) are read
# through the module, at call time.
from d2lcore import datafiles
from d2lcore.datafiles import (
    FASHION_MNIST_ENV,
    HOW_TO_GET,
    DataFileError,
    DataNotFoundError,
    read_idx,
)

ORIGINAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: Environment variable naming another place to download the files from (a mirror).
URL_ENV = "D2L_FASHION_MNIST_URL"

#: Seconds a download waits for the server, to connect or for its next bytes, before it
#: gives up: a mirror that stalls must not hang the call (or a Colab cell) for ever.
DOWNLOAD_TIMEOUT_S = 30.0

_URL_SCHEMES = ("http", "https", "file")
_CHUNK = 2**16


def download_cap(size: int) -> int:
    """The most bytes a download of a file whose decompressed size is ``size`` may take.

    No gzip file is larger than its content stored uncompressed plus gzip's framing (5
    bytes a 64 KiB block, a header of a few bytes): the cap allows that and a margin, so a
    mirror serving the file stored or uncompressed still fits, and a body without end
    stops there (47 MB for the largest file, whose download is 26 MB).
    """
    return size + size // 1024 + 2**16


def _write_all(fd: int, chunk: bytes) -> None:
    """Write ``chunk`` to ``fd`` unbuffered, so that a full disk fails here and not later."""
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


def _fetch_error(url: str, err: BaseException, timeout: float, got: int | None = None) -> Exception:
    """A network failure (or an unusable address) as the data error, saying what happened."""
    reason = getattr(err, "reason", err)  # URLError wraps the socket's error
    if isinstance(err, urllib.error.HTTPError):
        why = f"the server answered {err.code} {err.reason}"
    elif isinstance(reason, TimeoutError):
        why = f"the server sent nothing for {timeout:g} s (the timeout= argument)"
    elif isinstance(err, http.client.IncompleteRead):
        why = f"the connection closed after {got or 0:,} bytes, before the end of the file"
    else:
        why = str(reason) or type(reason).__name__
    return DataNotFoundError(f"could not download {url}: {why}. Nothing was kept. Check the "
                             f"network and try again, or set {URL_ENV} to a mirror.\n"
                             f"{HOW_TO_GET}")  # fmt: skip


def _save_error(err: OSError, folder: Path, what: str) -> DataNotFoundError:
    """A local failure to write (a full disk, no permission) as the data error: not the
    network's fault, so the message says what happened where."""
    where = f"use another folder (root=, or {FASHION_MNIST_ENV})"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:,.0f} MB free in {folder}"
        except OSError:
            free = f"in {folder}"
        why = f"the disk is full ({free}). Free some space there (Fashion-MNIST takes 31 MB "
        why += f"compressed), or {where}"
    else:
        why = f"{err.strerror or err}. Check that you can write there, or {where}"
    return DataNotFoundError(f"could not save {what} in {folder}: {why}. Nothing was kept.")


def _fetch_into(fd: int, url: str, folder: Path, *, cap: int, timeout: float) -> None:
    """Stream ``url`` into the open file ``fd``: at most ``cap`` bytes, each wait for the
    server at most ``timeout`` seconds; a body shorter than the length it announced fails."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise _fetch_error(url, err, timeout) from err
    refuse = (f"more than the file can be ({cap:,} bytes at most), so nothing was kept. It "
              f"is not the file its name says: set {URL_ENV} to another mirror.")  # fmt: skip
    with response:
        announced = response.headers.get("Content-Length")
        length = int(announced) if announced and announced.strip().isdigit() else None
        if length is not None and length > cap:
            raise DataFileError(f"{url} announces {length:,} bytes, {refuse}")
        got = 0
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as err:
                raise _fetch_error(url, err, timeout, got) from err
            if not chunk:
                break
            got += len(chunk)
            if got > cap:
                raise DataFileError(f"{url} sent more than {cap:,} bytes, {refuse}")
            try:
                _write_all(fd, chunk)
            except OSError as err:
                raise _save_error(err, folder, url) from err
    if length is not None and got != length:
        raise DataNotFoundError(f"could not download {url}: the connection closed after "
                                f"{got:,} of the {length:,} bytes announced. Nothing was "
                                f"kept. Try again, or set {URL_ENV} to a mirror.")  # fmt: skip


def _download_one(url: str, target: Path, md5: str, size: int, *, timeout: float) -> None:
    """Fetch ``url`` into a temporary file of its own beside ``target``, verify it, and
    give it ``target``'s name in one step; on any failure, interrupts included, remove it."""
    folder = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    except OSError as err:
        raise _save_error(err, folder, url) from err
    tmp = Path(tmp_name)
    try:
        try:
            with contextlib.suppress(OSError):  # some mounts (FUSE, SMB) refuse modes
                os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the data from other users
            _fetch_into(fd, url, folder, cap=download_cap(size), timeout=timeout)
        finally:
            os.close(fd)
        try:
            read_idx(tmp, md5, expected_size=size)  # verify before it takes the file's name
        except DataFileError as err:
            why = str(err).split(" Delete or replace")[0]  # read_idx's advice names tmp
            raise DataFileError(f"{url} is not the file it should be, so nothing was kept "
                                f"({why}). Try again, or set {URL_ENV} to another "
                                "mirror.") from err  # fmt: skip
        try:
            os.replace(tmp, target)
        except OSError as err:
            raise _save_error(err, folder, url) from err
    except BaseException:  # KeyboardInterrupt too: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def download_fashion_mnist(
    root: str | os.PathLike[str] = datafiles.USER_CACHE_DIR,
    *,
    url: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download the original Fashion-MNIST files into ``root`` (needs a network) and
    verify each against :data:`~d2lcore.datafiles.FASHION_MNIST_FILES`; return ``root``.

    Files already there are kept when they verify and fetched again when they do not.
    Each file is written to a temporary file of its own in ``root`` and takes its name
    only once verified, so an interrupted, failed or concurrent download leaves nothing
    half-written. Never called by the book or the tests' builds; it is here for machines
    with neither the Debian package nor a copy of the files (Colab:
    :func:`ensure_fashion_mnist`).

    Args:
        url: the folder to fetch ``<name>.gz`` from (``http://``, ``https://`` or
            ``file://``); default ``$D2L_FASHION_MNIST_URL``, else :data:`ORIGINAL_URL`.
        timeout: seconds to wait for the server, to connect or for its next bytes.

    Raises:
        DataNotFoundError: a file could not be fetched or saved (naming it and why: the
            network, a stalled server, a full disk, a folder you cannot write to).
        DataFileError: a fetched file is not the file its name says (corrupt, truncated,
            too large), or something that is not a file sits where a file should go.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    base = url or os.environ.get(URL_ENV) or ORIGINAL_URL
    base = base if base.endswith("/") else base + "/"
    scheme = urllib.parse.urlsplit(base).scheme
    if scheme not in _URL_SCHEMES:
        source = "url=" if url else URL_ENV if os.environ.get(URL_ENV) else "ORIGINAL_URL"
        raise DataNotFoundError(f"could not download from {base!r} (given by {source}): it is "
                                "not an http://, https:// or file:// address. Write it with "
                                f"its scheme, e.g. {ORIGINAL_URL}")  # fmt: skip
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = ("it is a file" if isinstance(err, FileExistsError) else
               "a folder above it is a file" if isinstance(err, NotADirectoryError) else
               err.strerror or str(err))  # fmt: skip
        raise DataNotFoundError(f"could not create the folder {root} to download "
                                f"Fashion-MNIST into: {why}. Use another folder (root=, or "
                                f"{FASHION_MNIST_ENV}).") from err  # fmt: skip
    for name, (md5, size) in datafiles.FASHION_MNIST_FILES.items():
        target = root / f"{name}.gz"
        if target.exists() and not target.is_file():
            what = "a folder" if target.is_dir() else "not a regular file"
            raise DataFileError(f"{target} is {what}, where the download of {name}.gz should "
                                "go. Move it away, or download into another folder (root=, "
                                f"or {FASHION_MNIST_ENV}).")  # fmt: skip
        if target.is_file():
            try:
                read_idx(target, md5, expected_size=size)
                continue
            except DataFileError:
                pass  # a broken copy: fetch it again
        _download_one(f"{base}{name}.gz", target, md5, size, timeout=timeout)
    return root


def ensure_fashion_mnist(
    root: str | os.PathLike[str] | None = None, *, timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """The folder :func:`~d2lcore.datafiles.find_fashion_mnist` finds, its four files
    verified; where it finds none, download the files (into the folder named by ``root``
    or ``$D2L_FASHION_MNIST_DIR``, else ``~/.cache/d2lcore/fashion-mnist``) and return that.

    Safe to call any number of times: files that verify are kept, and a missing or broken
    file in the download folder is fetched again. For a machine with a network and no
    copy (Colab); the book itself never downloads.
    """
    named = root if root is not None else os.environ.get(FASHION_MNIST_ENV)
    target = Path(named) if named else datafiles.USER_CACHE_DIR
    try:
        folder = datafiles.find_fashion_mnist(root)
    except DataNotFoundError:
        return download_fashion_mnist(target, timeout=timeout)
    try:
        return datafiles.check_fashion_mnist(folder)
    except DataFileError:
        if folder != target:
            raise  # the system's copy: not this function's to replace
    download_fashion_mnist(folder, timeout=timeout)
    return datafiles.check_fashion_mnist(folder)
