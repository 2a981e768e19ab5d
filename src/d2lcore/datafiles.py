"""Fashion-MNIST's files: where to find them, their checksums, reading the IDX format,
an explicit download, and a command line that checks them
(``python -m d2lcore.datafiles --check``; ``python -m d2lcore.data --check`` runs it too).

The files are looked for, in order, in a folder you name (``root=``), in the folder
named by the ``D2L_FASHION_MNIST_DIR`` environment variable, in the Debian/Ubuntu
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) and in
``~/.cache/d2lcore/fashion-mnist`` (where :func:`download_fashion_mnist` saves the
original files on a machine with a network). Nothing downloads by itself.

Every file is checked against the MD5 of its *decompressed* IDX bytes: Debian
re-compressed the files, so the ``.gz`` checksums differ from the original download's,
while the decompressed bytes are identical. :func:`~d2lcore.data.fashion_mnist_splits`
turns the files into tensors.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_ENV = "D2L_FASHION_MNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
USER_CACHE_DIR = Path.home() / ".cache" / "d2lcore" / "fashion-mnist"
ORIGINAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: Environment variable naming another place to download the files from (a mirror).
URL_ENV = "D2L_FASHION_MNIST_URL"

#: MD5 and size of each decompressed IDX file.
FASHION_MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 47_040_016),
    "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60_008),
    "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 7_840_016),
    "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10_008),
}
FASHION_MNIST_MD5 = {name: md5 for name, (md5, _) in FASHION_MNIST_FILES.items()}

HOW_TO_GET = (
    "To get Fashion-MNIST, do one of:\n"
    "  - on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist\n"
    f"  - put the four IDX files (.gz or not) in a folder and set {FASHION_MNIST_ENV}"
    " to it\n"
    "  - with a network: python -c 'import d2lcore.data as d;"
    " d.download_fashion_mnist()'"
)

_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ndim -> magic number (uint8 data)


class DataFileError(ValueError):
    """A data file is truncated, corrupt or not the file its name says."""


class DataNotFoundError(FileNotFoundError):
    """No copy of a data set was found in any of the places searched."""


def fashion_mnist_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for Fashion-MNIST, in order."""
    dirs = [Path(root)] if root is not None else []
    if os.environ.get(FASHION_MNIST_ENV):
        dirs.append(Path(os.environ[FASHION_MNIST_ENV]))
    return [*dirs, DEBIAN_DIR, USER_CACHE_DIR]


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _check_named_folder(folder: Path, source: str) -> None:
    """A folder the user named is used or refused, never skipped: raise when it is not a
    folder, or when one of the four files is missing or is not a regular file (a
    directory, a FIFO, a broken link or a link loop), naming that file."""
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} (named by {source}) is not a folder. Point "
                                f"{source} at the folder that holds the four Fashion-MNIST "
                                f"files, or unset it.\n{HOW_TO_GET}")  # fmt: skip
    for name in FASHION_MNIST_FILES:
        if _file_in(folder, name):
            continue
        for candidate in (folder / name, folder / f"{name}.gz"):
            if os.path.lexists(candidate):
                what = ("a folder" if candidate.is_dir() else
                        "a broken link or a link loop" if candidate.is_symlink() else
                        "not a regular file (a FIFO, socket or device)")  # fmt: skip
                raise DataFileError(f"{candidate} (in {folder}, named by {source}) is {what}, "
                                    f"not an IDX file. Replace it with the file {name}.gz "
                                    f"or {name}.\n{HOW_TO_GET}")  # fmt: skip
        raise DataNotFoundError(f"{folder} (named by {source}) lacks {name} (.gz or not). "
                                f"Put all four files there, or unset {source}.\n"
                                f"{HOW_TO_GET}")  # fmt: skip


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the first folder that holds all four Fashion-MNIST files.

    A folder you name (``root=`` or ``$D2L_FASHION_MNIST_DIR``) is used or refused: when
    it lacks a file or holds a broken one, the error names that file instead of the
    search moving on to the system copy without a word.

    Raises:
        DataNotFoundError: naming every folder searched and how to get the data, or the
            file a named folder lacks.
        DataFileError: a named folder holds something that is not a file where a data
            file should be.
    """
    if root is not None:
        _check_named_folder(Path(root), "root=")
        return Path(root)
    if os.environ.get(FASHION_MNIST_ENV):
        folder = Path(os.environ[FASHION_MNIST_ENV])
        _check_named_folder(folder, FASHION_MNIST_ENV)
        return folder
    searched = fashion_mnist_dirs(root)
    for folder in searched:
        if all(_file_in(folder, name) for name in FASHION_MNIST_FILES):
            return folder
    places = "\n".join(f"  - {d}" for d in searched)
    raise DataNotFoundError(f"Fashion-MNIST was not found. Searched:\n{places}\n{HOW_TO_GET}")


#: The largest IDX file read when its size is not known (Fashion-MNIST's largest is
#: 47 MB): a small ``.gz`` that expands to gigabytes is stopped here, not read whole.
MAX_IDX_BYTES = 256 * 2**20


def read_idx(
    path: str | os.PathLike[str],
    expected_md5: str | None = None,
    *,
    expected_size: int | None = None,
) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a uint8 array.

    Args:
        path: the file.
        expected_md5: MD5 of the decompressed bytes; ``None`` skips the check.
        expected_size: size of the decompressed bytes, when known: reading stops one
            byte past it (else past :data:`MAX_IDX_BYTES`), so a decompression bomb
            never fills the memory.

    Raises:
        DataFileError: when the file cannot be read, is not valid gzip, is truncated,
            too large, has a bad header or does not match its checksum. The message
            names the file and says what to do.
    """
    path = Path(path)
    fix = f"Delete or replace {path} with a good copy.\n{HOW_TO_GET}"
    limit = expected_size if expected_size is not None else MAX_IDX_BYTES
    try:
        with path.open("rb") as f:
            packed = f.read(2) == b"\x1f\x8b"  # gzip magic
        with (gzip.open(path, "rb") if packed else path.open("rb")) as f:
            raw = f.read(limit + 1)
    except PermissionError as err:
        raise DataFileError(
            f"{path} cannot be read: permission denied. The file may be fine: give your "
            f"user read access (chmod a+r {path}) or copy the files to a folder of yours "
            f"and set {FASHION_MNIST_ENV} to it."
        ) from err
    except IsADirectoryError as err:
        raise DataFileError(f"{path} is a folder, not an IDX file. {fix}") from err
    except (OSError, EOFError, zlib.error) as err:
        raise DataFileError(f"{path} is corrupt or truncated ({err}). {fix}") from err
    if len(raw) > limit:
        raise DataFileError(
            f"{path} holds more than {limit:,} bytes"
            f"{' once decompressed' if packed else ''}, more than this file can be "
            f"({'its known size' if expected_size is not None else 'the largest IDX file read'}"
            f"); reading stopped there. It is not the file its name says. {fix}"
        )
    if expected_md5 is not None:
        digest = hashlib.md5(raw).hexdigest()
        if digest != expected_md5:
            raise DataFileError(
                f"{path} fails its checksum: MD5 of its decompressed bytes is {digest}, "
                f"expected {expected_md5}. The file is damaged or a different file. {fix}"
            )
    if len(raw) < 8:
        raise DataFileError(f"{path} is too short to be an IDX file ({len(raw)} bytes). {fix}")
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic != _IDX_MAGIC.get(ndim):
        raise DataFileError(f"{path} is not a uint8 IDX file (magic {magic:#010x}). {fix}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header + int(np.prod(shape))
    if len(raw) != expected_len:
        raise DataFileError(
            f"{path} is truncated or padded: its header promises shape {shape} "
            f"({expected_len} bytes) but it holds {len(raw)} bytes. {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    checksums: Mapping[str, str] | None = FASHION_MNIST_MD5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of Fashion-MNIST as uint8 images ``(N, 28, 28)`` and int64 labels.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: a folder to look in first (see the module docstring for the rest).
        checksums: MD5 of each decompressed file by name; ``None`` skips checking.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    prefix = "train" if split == "train" else "t10k"
    folder = find_fashion_mnist(root)
    arrays = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        name = f"{prefix}-{kind}"
        path = _file_in(folder, name)
        assert path is not None  # find_fashion_mnist checked
        arrays.append(read_idx(path, None if checksums is None else checksums[name],
                               expected_size=FASHION_MNIST_FILES[name][1]
                               if checksums is FASHION_MNIST_MD5 else None))  # fmt: skip
    images, labels = arrays
    if len(images) != len(labels):
        raise DataFileError(
            f"{folder}: {len(images)} {split} images but {len(labels)} labels; "
            f"the files do not belong together. {HOW_TO_GET}"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


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
    root: str | os.PathLike[str] = USER_CACHE_DIR,
    *,
    url: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download the original Fashion-MNIST files into ``root`` (needs a network) and
    verify each against :data:`FASHION_MNIST_FILES`; return ``root``.

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
    for name, (md5, size) in FASHION_MNIST_FILES.items():
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
    """The folder :func:`find_fashion_mnist` finds, its four files verified; where it finds
    none, download the files (into the folder named by ``root`` or
    ``$D2L_FASHION_MNIST_DIR``, else ``~/.cache/d2lcore/fashion-mnist``) and return that.

    Safe to call any number of times: files that verify are kept, and a missing or broken
    file in the download folder is fetched again. For a machine with a network and no
    copy (Colab); the book itself never downloads.
    """
    named = root if root is not None else os.environ.get(FASHION_MNIST_ENV)
    target = Path(named) if named else USER_CACHE_DIR
    try:
        folder = find_fashion_mnist(root)
    except DataNotFoundError:
        return download_fashion_mnist(target, timeout=timeout)
    try:
        return check_fashion_mnist(folder)
    except DataFileError:
        if folder != target:
            raise  # the system's copy: not this function's to replace
    download_fashion_mnist(folder, timeout=timeout)
    return check_fashion_mnist(folder)


def check_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """Find Fashion-MNIST and verify all four files; return the folder."""
    folder = find_fashion_mnist(root)
    for name, (md5, size) in FASHION_MNIST_FILES.items():
        path = _file_in(folder, name)
        assert path is not None
        read_idx(path, md5, expected_size=size)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: print the folder of Fashion-MNIST (``--check``: after verifying
    the four files); exit status 1, with the reason on stderr, when there is none."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Find and verify Fashion-MNIST.")
    parser.add_argument("--check", action="store_true", help="verify the four files")
    parser.add_argument("--root", help="a folder to look in first")
    args = parser.parse_args(argv)
    try:
        folder = check_fashion_mnist(args.root) if args.check else find_fashion_mnist(args.root)
    except (DataNotFoundError, DataFileError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"Fashion-MNIST: {folder} (checksums verified)" if args.check else folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
