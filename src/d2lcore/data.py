"""Data: synthetic regression data, Fashion-MNIST from local files, :class:`Splits` (the
tensors of a data set's training, validation and test splits) and :class:`TensorLoader`,
which cuts a small data set that stays on the training device into minibatches.

Fashion-MNIST is looked for, in order, in a folder you name (``root=``), in the folder
named by the ``D2L_FASHION_MNIST_DIR`` environment variable, in the Debian/Ubuntu
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) and in
``~/.cache/d2lcore/fashion-mnist`` (where :func:`download_fashion_mnist` saves the
original files on a machine with a network). Nothing downloads by itself.

Every file is checked against the MD5 of its *decompressed* IDX bytes: Debian
re-compressed the files, so the ``.gz`` checksums differ from the original download's,
while the decompressed bytes are identical.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from d2lcore.device import get_device, make_generator

# ----------------------------------------------------------------------------------
# Synthetic data


def synthetic_linear_data(
    w: torch.Tensor | Sequence[float],
    b: float,
    num_examples: int,
    *,
    noise: float = 0.01,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``y = X w + b + noise`` with ``X ~ N(0, 1)``.

    Returns ``X`` of shape ``(num_examples, len(w))`` and ``y`` of shape
    ``(num_examples, 1)``, both on ``device``.
    """
    gen = make_generator(seed)
    w = torch.as_tensor(w, dtype=torch.float32).reshape(-1, 1)  # (d, 1)
    X = torch.randn(num_examples, len(w), generator=gen)  # (n, d)
    y = X @ w + b + noise * torch.randn(num_examples, 1, generator=gen)  # (n, 1)
    device = get_device(device)
    return X.to(device), y.to(device)


# ----------------------------------------------------------------------------------
# Fashion-MNIST files

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

#: Text labels of the ten classes, in label order.
FASHION_MNIST_LABELS = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip

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


def download_fashion_mnist(
    root: str | os.PathLike[str] = USER_CACHE_DIR, *, url: str | None = None
) -> Path:
    """Download the original Fashion-MNIST files into ``root`` (needs a network) and
    verify each against :data:`FASHION_MNIST_FILES`; return ``root``.

    Files already there are kept when they verify and fetched again when they do not.
    Never called by the book or the tests' builds; it is here for machines with neither
    the Debian package nor a copy of the files (Colab: :func:`ensure_fashion_mnist`).

    Args:
        url: the folder to fetch ``<name>.gz`` from; default ``$D2L_FASHION_MNIST_URL``,
            else :data:`ORIGINAL_URL`.

    Raises:
        DataNotFoundError: a file could not be fetched (naming it and why).
        DataFileError: a fetched file is not the file its name says (corrupt or truncated).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = url or os.environ.get(URL_ENV) or ORIGINAL_URL
    base = base if base.endswith("/") else base + "/"
    for name, (md5, size) in FASHION_MNIST_FILES.items():
        target = root / f"{name}.gz"
        if target.exists():
            try:
                read_idx(target, md5, expected_size=size)
                continue
            except DataFileError:
                pass  # a broken copy: fetch it again
        tmp = target.with_suffix(".part")
        try:
            urllib.request.urlretrieve(f"{base}{name}.gz", tmp)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise DataNotFoundError(f"could not download {base}{name}.gz: {err}. Check the "
                                    f"network, or set {URL_ENV} to a mirror.\n"
                                    f"{HOW_TO_GET}") from err  # fmt: skip
        try:
            read_idx(tmp, md5, expected_size=size)  # verify before it takes the file's name
        except DataFileError as err:
            tmp.unlink(missing_ok=True)
            why = str(err).split(" Delete or replace")[0]  # read_idx's advice names tmp
            raise DataFileError(f"{base}{name}.gz is not the file it should be, so nothing "
                                f"was kept ({why}). Try again, or set {URL_ENV} to another "
                                "mirror.") from err  # fmt: skip
        tmp.replace(target)
    return root


def ensure_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder :func:`find_fashion_mnist` finds; where it finds none, download the
    files (into the folder named by ``root`` or ``$D2L_FASHION_MNIST_DIR``, else
    ``~/.cache/d2lcore/fashion-mnist``) and return that. For a machine with a network
    and no copy (Colab); the book itself never downloads."""
    try:
        return find_fashion_mnist(root)
    except DataNotFoundError:
        target = root if root is not None else os.environ.get(FASHION_MNIST_ENV)
        return download_fashion_mnist(target or USER_CACHE_DIR)


def text_labels(labels: torch.Tensor | Sequence[int]) -> list[str]:
    """Turn class indices into Fashion-MNIST's text labels."""
    return [FASHION_MNIST_LABELS[int(i)] for i in labels]


# ----------------------------------------------------------------------------------
# In-memory loader


class TensorLoader:
    """Minibatches sliced from tensors that live on the training device.

    Each pass over the loader is one epoch: a fresh permutation (when ``shuffle``)
    from the loader's own generator, so every example appears exactly once per epoch
    and the sequence of epochs is the same for the same ``seed`` on any device.

    Args:
        tensors: tensors with the same first dimension (e.g. ``X`` and ``y``).
        batch_size: examples per minibatch; the last batch may be smaller.
        shuffle: draw a new order every epoch (training) or keep the order (evaluation).
        seed: seed of the shuffling stream.
        device: where to keep the data; defaults to :func:`get_device`.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.device = get_device(device)
        self.tensors = tuple(t.to(self.device) for t in tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._gen = make_generator(seed)

    @property
    def num_examples(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)  # ceil

    def reseed(self, seed: int) -> None:
        """Restart the shuffling stream, as if the loader were new with ``seed``."""
        self.seed = seed
        self._gen = make_generator(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.num_examples
        if self.shuffle:
            # Drawn on the CPU so the order does not depend on the device.
            order = torch.randperm(n, generator=self._gen).to(self.device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                # index_select is the same gather as t[idx], at half the cost on the CPU.
                yield tuple(t.index_select(0, idx) for t in self.tensors)
        else:
            for start in range(0, n, self.batch_size):
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)


def train_val_split(
    *tensors: torch.Tensor, val_size: int | float, seed: int = 0
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Split tensors at random into a training part and a validation part.

    Args:
        val_size: number of validation examples, or a fraction in ``(0, 1)``.
    Returns:
        ``(train_tensors, val_tensors)``.
    """
    n = len(tensors[0])
    k = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 < k < n:
        raise ValueError(f"val_size must leave both parts non-empty; got {val_size} of {n}")
    order = torch.randperm(n, generator=make_generator(seed))
    val_idx, train_idx = order[:k], order[k:]
    return tuple(t[train_idx] for t in tensors), tuple(t[val_idx] for t in tensors)


#: The tensors ``(X, y)`` of one split of a data set.
Split = tuple[torch.Tensor, torch.Tensor]
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Splits:
    """A data set in memory: the tensors ``(X, y)`` of a training split and optional
    validation and test splits, and how to cut them into minibatches.

    ``batch_size`` and ``seed`` are the defaults of the training loader (a trainer
    with its own configuration passes its own); ``eval_batch_size`` is the batch size
    of the validation and test loaders. Loaders are made on demand by :meth:`loader`,
    so one data set serves any number of runs.
    """

    train: Split
    val: Split | None = None
    test: Split | None = None
    batch_size: int = 256
    eval_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        for name in SPLIT_NAMES:
            split = getattr(self, name)
            if split is None:
                continue
            X, y = split  # a pair, whatever sequence it came as
            if len(X) != len(y):
                raise ValueError(f"{name}: {len(X)} inputs but {len(y)} targets")
            object.__setattr__(self, name, (X, y))
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be at least 1")

    def split(self, name: str) -> Split:
        """The tensors of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; choose from {SPLIT_NAMES}")
        split: Split | None = getattr(self, name)
        if split is None:
            raise ValueError(f"this data set has no {name!r} split")
        return split

    def loader(
        self,
        name: str = "train",
        *,
        batch_size: int | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> TensorLoader:
        """A new loader over split ``name``: shuffled from ``seed`` (default
        :attr:`seed`) in minibatches of ``batch_size`` (default :attr:`batch_size`)
        for ``"train"``; in order, in batches of :attr:`eval_batch_size` (or
        ``batch_size``) for ``"val"`` and ``"test"``. The data stays on its device
        unless ``device`` says otherwise."""
        X, y = self.split(name)
        train = name == "train"
        default_bs = self.batch_size if train else self.eval_batch_size
        return TensorLoader(X, y, batch_size=batch_size or default_bs, shuffle=train,
                            seed=self.seed if seed is None else seed,
                            device=X.device if device is None else device)  # fmt: skip


def fashion_mnist_splits(
    batch_size: int = 256,
    *,
    val_size: int = 10_000,
    train_size: int | None = None,
    flatten: bool = False,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
) -> Splits:
    """Fashion-MNIST as device-resident :class:`Splits`, pixels scaled to ``[0, 1]``.

    The 60,000 training images are split into ``60,000 - val_size`` for training and
    ``val_size`` for validation; the 10,000 test images are kept for the final test.

    Args:
        batch_size: training minibatch size (evaluation uses larger batches).
        val_size: validation examples taken from the training split.
        train_size: keep only this many training examples (e.g. a fast CPU build).
        flatten: give images as vectors of 784 values instead of ``(1, 28, 28)``.
        seed: seed of the split and of the shuffling.
        device: where the tensors live; defaults to :func:`get_device`.
    """
    shape = (-1, 784) if flatten else (-1, 1, 28, 28)
    images, labels = load_fashion_mnist("train", root)
    X = (images.float() / 255).reshape(shape)
    (X_train, y_train), (X_val, y_val) = train_val_split(X, labels, val_size=val_size, seed=seed)
    if train_size is not None:
        # Checked before slicing: X[:0] is empty and X[:-100] quietly drops 100 images.
        if (isinstance(train_size, bool) or not isinstance(train_size, int)
                or not 1 <= train_size <= len(y_train)):  # fmt: skip
            raise ValueError(f"train_size must be a whole number from 1 to {len(y_train):,} "
                             f"(the training images left after {val_size:,} for validation), "
                             f"not {train_size!r}")  # fmt: skip
        X_train, y_train = X_train[:train_size], y_train[:train_size]
    test_images, test_labels = load_fashion_mnist("test", root)
    X_test = (test_images.float() / 255).reshape(shape)
    device = get_device(device)
    return Splits(
        train=(X_train.to(device), y_train.to(device)),
        val=(X_val.to(device), y_val.to(device)),
        test=(X_test.to(device), test_labels.to(device)),
        batch_size=batch_size, eval_batch_size=max(batch_size, 1024), seed=seed,
    )  # fmt: skip


def check_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """Find Fashion-MNIST and verify all four files; return the folder."""
    folder = find_fashion_mnist(root)
    for name, (md5, _) in FASHION_MNIST_FILES.items():
        path = _file_in(folder, name)
        assert path is not None
        read_idx(path, md5)
    return folder


def _main(argv: Sequence[str] | None = None) -> int:
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
    raise SystemExit(_main())
