"""PyTorch's standard data pipeline beside the book's: Fashion-MNIST's local files laid
out the way ``torchvision.datasets.FashionMNIST`` reads them, and the time of one epoch
of any loader.

torchvision reads ``<root>/FashionMNIST/raw/<name>`` as uncompressed IDX files and, when
they are missing, can only offer to download them. :func:`torchvision_fashion_mnist`
puts the four files there from the copy :func:`~d2lcore.datafiles.find_fashion_mnist`
finds (the Debian package's ``.gz`` files are decompressed and checked; uncompressed
files are linked, not copied), so ``FashionMNIST(root, download=False)`` reads the same
bytes as :func:`~d2lcore.data.load_fashion_mnist`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch

from d2lcore.datafiles import FASHION_MNIST_FILES, FASHION_MNIST_MD5, find_fashion_mnist, read_idx
from d2lcore.device import get_device

#: The folder under ``root`` where torchvision looks for Fashion-MNIST's files.
TORCHVISION_SUBDIR = Path("FashionMNIST") / "raw"


def torchvision_fashion_mnist(
    folder: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    checksums: Mapping[str, str] | None = FASHION_MNIST_MD5,
) -> Path:
    """Lay Fashion-MNIST out in ``folder`` for ``torchvision.datasets.FashionMNIST`` and
    return ``folder``, to pass as its ``root`` (with ``download=False``).

    Args:
        folder: where to write ``FashionMNIST/raw/`` (a temporary folder will do: the
            files take 55 MB, or nothing when the source files are uncompressed).
        root: a folder to look in first; the search is :func:`find_fashion_mnist`'s.
        checksums: MD5 of each decompressed file by name; ``None`` skips checking.

    Raises:
        DataNotFoundError: no copy of Fashion-MNIST was found (the message lists the
            places searched and how to get one).
        DataFileError: a file is corrupt, truncated or fails its checksum.
    """
    source = find_fashion_mnist(root)
    raw = Path(folder) / TORCHVISION_SUBDIR
    raw.mkdir(parents=True, exist_ok=True)
    for name, (_, size) in FASHION_MNIST_FILES.items():
        # find_fashion_mnist checked that one of the two is there
        path = next(p for p in (source / name, source / f"{name}.gz") if p.is_file())
        md5 = None if checksums is None else checksums[name]
        known = size if checksums is FASHION_MNIST_MD5 else None
        array = read_idx(path, md5, expected_size=known)  # checked before torchvision sees it
        target = raw / name
        target.unlink(missing_ok=True)  # a file or a link left by an earlier call
        if path.name == name:  # uncompressed already: link it
            target.symlink_to(path.resolve())
            continue
        header = (0x0800 | array.ndim).to_bytes(4, "big")  # uint8 data, ndim axes
        header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        tmp = target.with_name(f".{name}.part")
        with tmp.open("wb") as f:
            f.write(header)
            f.write(array.tobytes())
        os.replace(tmp, target)  # whole or absent, never half-written
    return Path(folder)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads of torch, then restore the number.

    Timings of small operations on a shared CPU are steadier on one thread: two threads
    wait for each other whenever another process holds a core.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_epoch(
    loader: Iterable[tuple[torch.Tensor, ...] | list[torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    repeats: int = 1,
) -> tuple[float, int]:
    """Seconds of one pass over ``loader`` with every batch moved to ``device``, the
    fastest of ``repeats`` passes, and the number of examples one pass yielded.

    The batches are moved as a training loop would move them (a no-op for a loader whose
    tensors already live there); on a GPU the time waits for the copies to finish.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    device = get_device(device)
    best, count = float("inf"), 0
    for _ in range(repeats):
        start, count = time.perf_counter(), 0
        for batch in loader:
            moved = [t.to(device, non_blocking=True) for t in batch]
            count += len(moved[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, count
