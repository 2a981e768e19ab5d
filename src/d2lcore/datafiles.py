"""Fashion-MNIST's files: where to find them, their checksums, reading the IDX format,
and a command line that checks them (``python -m d2lcore.datafiles --check``;
``python -m d2lcore.data --check`` runs it too). The explicit download is
:mod:`d2lcore.download`'s.

The files are looked for, in order, in a folder you name (``root=``), in the folder
named by the ``D2L_FASHION_MNIST_DIR`` environment variable, in the Debian/Ubuntu
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) and in
``~/.cache/d2lcore/fashion-mnist`` (where :func:`~d2lcore.download.download_fashion_mnist`
saves the original files on a machine with a network). Nothing downloads by itself.

Every file is checked against the MD5 of its *decompressed* IDX bytes: Debian
re-compressed the files, so the ``.gz`` checksums differ from the original download's,
while the decompressed bytes are identical. :func:`~d2lcore.data.fashion_mnist_splits`
turns the files into tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_ENV = "D2L_FASHION_MNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
USER_CACHE_DIR = Path.home() / ".cache" / "d2lcore" / "fashion-mnist"

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
