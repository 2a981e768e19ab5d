"""Choosing the device and making runs repeatable."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

#: Environment variable that forces a device, e.g. ``D2L_DEVICE=cpu``.
DEVICE_ENV = "D2L_DEVICE"


def get_device(prefer: torch.device | str | None = None) -> torch.device:
    """Return the device to train on: CUDA when present, else the CPU.

    Args:
        prefer: a device or device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) that
            overrides the choice; the ``D2L_DEVICE`` environment variable does the same.
    """
    name = str(prefer) if prefer is not None else os.environ.get(DEVICE_ENV)
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} was requested but CUDA is not available here; "
                f"unset {DEVICE_ENV} or ask for 'cpu'"
            )
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_generator(seed: int) -> torch.Generator:
    """A CPU random-number generator of its own, seeded: for streams that must not
    depend on what else drew from the global one (shuffling, initialization)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


#: ``D2L_MALLOC=system`` leaves glibc's allocator as it was (:func:`keep_freed_memory`).
MALLOC_ENV = "D2L_MALLOC"
#: glibc's ``mallopt`` parameters (malloc.h) and the values set.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_UP_TO = 32 * 2**20  # glibc's largest mmap threshold: blocks to 32 MiB from the heap
_KEEP_FREED = 2**30  # freed memory at the heap's top kept up to 1 GiB
_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep the memory a training step frees for the next step.

    By default glibc gives blocks larger than 128 KiB back to the kernel when they are
    freed, and a convolutional step allocates and frees tens of MB of activations and
    their blocked copies: every step then pays the kernel for fresh zeroed pages (5,000
    page faults a classic LeNet step on Fashion-MNIST, a third of its time on one core).
    Here blocks up to 32 MiB come from the heap, and up to 1 GiB of freed heap is kept:
    a process holds on to its peak, as jemalloc or tcmalloc would. :func:`~d2lcore.train.fit`
    calls this on the CPU, once per process. It does nothing and returns ``False`` where
    there is no glibc, or with ``D2L_MALLOC=system``."""
    global _kept
    if _kept is None:
        _kept = False
        if os.environ.get(MALLOC_ENV, "").strip().lower() != "system":
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_UP_TO)) and \
                    bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED))  # fmt: skip
            except (OSError, AttributeError):  # not glibc: macOS, musl, Windows
                _kept = False
    return _kept
