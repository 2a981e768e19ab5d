"""Checkpoints: a network's ``state_dict`` written atomically with its metadata
(:func:`save_checkpoint`), and read back safely (:func:`load_pretrained`: no code in the
file runs, and a file that does not fit the model says why).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d2lcore import cache
from d2lcore.heads import head_name

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit the model."""


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``{"format", "state_dict", "meta"}`` to ``path`` atomically (a reader never
    sees half a file); ``meta`` must be JSON-like (numbers, strings, lists, dicts)."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    entry = {"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": meta or {}}
    error = cache.atomic_write(path, lambda f: torch.save(entry, f))
    if error is not None:
        raise OSError(f"{path}: could not write the checkpoint: {error}")
    return path


def load_pretrained(
    path: str | os.PathLike[str], model: nn.Module, *, skip_head: bool = False
) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` and return the checkpoint's metadata.

    ``path`` is a checkpoint from :func:`save_checkpoint` or a plain ``state_dict`` (as
    torchvision's weight files are). Read with ``weights_only=True``: no code in the file
    runs. ``skip_head`` keeps ``model``'s own output layer (a head of another size).

    Raises:
        CheckpointError: the file is missing, not a checkpoint (garbage, truncated) or
            does not fit ``model`` (other layers or shapes); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file. Check the path, or save "
                              "one first (torch.save(model.state_dict(), path)).")  # fmt: skip
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as err:
        raise CheckpointError(f"{path}: cannot be read: permission denied. The file may be "
                              f"fine: give your user read access (chmod a+r {path}) or copy "
                              "it somewhere of yours.") from err  # fmt: skip
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                  f"({_first_line(err)}). The file is corrupt or incomplete: "
                                  "delete it and save or download it again.") from err  # fmt: skip
        name = found.group(1).removeprefix("builtins.")  # torch 2.4.1 writes builtins.getattr
        raise CheckpointError(
            f"{path}: refused: besides tensors it holds pickled Python objects, which could "
            "run code when loaded, so it is not loaded. If you made it yourself with "
            "torch.save(model, ...), load it once in a session you trust and save "
            "model.state_dict() instead; a file from elsewhere you do not trust should be "
            f"deleted. (It names {name}, which weights-only loading does not allow.)"
        ) from err
    except Exception as err:  # garbage or truncated: unreadable here
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{_first_line(err)}). The file is corrupt or incomplete: delete it and save "
            "or download it again."
        ) from err
    meta: dict[str, Any] = {}
    if isinstance(entry, dict) and "state_dict" in entry:
        state, meta = entry["state_dict"], dict(entry.get("meta") or {})
    else:
        state = entry
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state_dict of tensors. Save one with "
                              "torch.save(model.state_dict(), path).")  # fmt: skip
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise CheckpointError(f"{path}: holds NaN or infinite values in {broken[:5]}: the "
                              "network it was saved from had diverged, or the file is "
                              "damaged. Delete it and train or download it again.")  # fmt: skip
    head_keys = {f"{head_name(model)}.{k}" for k in ("weight", "bias")}
    if skip_head:
        state = {k: v for k, v in state.items() if k not in head_keys}
    try:
        result = model.load_state_dict(state, strict=not skip_head)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: {err}. Build the same "
            "architecture that saved the file (or pass skip_head=True if only the "
            "output layer differs)."
        ) from err
    missing = set(result.missing_keys) - head_keys
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}. Build the same architecture "
            "that saved the file."
        )
    return meta


def _first_line(err: BaseException) -> str:
    """The first line of an error's text, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__
