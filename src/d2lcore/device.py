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
