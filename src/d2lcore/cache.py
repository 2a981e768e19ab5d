"""One on-disk cache for everything the book trains: grid results and checkpoints.

Entries are files named by a key, a digest of everything the result depends on. What
every key includes, :func:`key` adds itself: the entry format, :func:`code_fingerprint`
(the source of the modules that change trained numbers), the device type and torch's
version. What a run reads besides (a page's function, the tensors and numbers it
captures), :class:`~d2lcore.keys.Describer` describes: nobody has to list it by hand.

Writes are atomic (a reader never sees half a file, and a ``kill -9`` leaves no broken
entry), and a write that fails (read-only or full disk) is reported, never raised: the
page still shows its results, it only trains again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

#: Environment variable naming the cache folder.
CACHE_ENV = "D2L_CACHE_DIR"
#: Bumped when the layout of an entry changes: older entries are then never read.
CACHE_FORMAT = 2

#: A temporary file older than this is litter from a writer that was killed (a live
#: writer renames its file within seconds): the next write removes it.
STALE_TMP_SECONDS = 3600.0

#: Modules that only draw, show or store results: editing them retrains nothing. Every
#: other module of the package is part of :func:`code_fingerprint` (a new module is, by
#: default). ``optim.py`` runs optimizers on a 2-D quadratic for a figure; no grid trains
#: with it. ``keys.py`` decides what a key reads, not what a run computes.
FIGURE_MODULES = ("plotting.py", "figure_page.py", "figure_text.py", "sliders.py",
                  "tiles.py", "widgets.py", "playground_figure.py", "profile.py", "diagnostics.py",
                  "optim.py", "cache.py", "keys.py", "__init__.py")  # fmt: skip


def default_cache_dir() -> Path:
    """``$D2L_CACHE_DIR``, else ``~/.cache/d2lcore/grids``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "d2lcore" / "grids")


def cache_dir(where: bool | str | os.PathLike[str] | None) -> Path | None:
    """The folder a ``cache=`` argument names: ``True``/``None`` the default folder, a
    path that folder, ``False`` none (always train)."""
    if where is False:
        return None
    if where is True or where is None:
        return default_cache_dir()
    return Path(where)


def code_fingerprint(package_dir: Path | None = None) -> str:
    """A hash of the source of the modules whose code changes trained numbers (every
    module of ``d2lcore`` but :data:`FIGURE_MODULES`): editing a figure module keeps
    every cached result, editing a training module invalidates them."""
    folder = package_dir or Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        if path.name not in FIGURE_MODULES:
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def package_fingerprint(package_dir: Path | None = None) -> str:
    """A hash of every file of the package (figure modules and scripts too): what the
    book's execution cache keys on, since a page's output depends on all of it."""
    folder = package_dir or Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".py", ".js", ".css")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    """A hash of each tensor's dtype, shape and bytes (``None`` counts as a tensor too)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none\0")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype} {tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def key(payload: Any, *, device: torch.device | str | None = None) -> str:
    """The key of an entry: a digest of ``payload`` (JSON-like: what the result depends
    on) with the cache format, the code fingerprint, ``device``'s type and torch's
    version added."""
    device_type = torch.device(device).type if device is not None else None
    full = {"format": CACHE_FORMAT, "payload": payload, "code": code_fingerprint(),
            "device": device_type, "torch": torch.__version__}  # fmt: skip
    text = json.dumps(full, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> str | None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then
    rename it into place. Returns the error (a read-only or full disk) as text, or
    ``None``; never leaves a partial file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an ordinary file is expected
        os.replace(tmp, path)
        tmp = None
        remove_stale_tmp(path.parent)
        return None
    except OSError as err:
        return str(err)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_tmp(folder: Path, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete the temporary files (``.*.tmp``) in ``folder`` older than ``max_age``
    seconds, left by writers that were killed; return what was deleted."""
    removed = []
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > max_age:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # another process removed it, or it is not ours to remove
            continue
    return removed


def write_json(path: Path, obj: Any) -> str | None:
    """``obj`` as JSON in ``path``, atomically (see :func:`atomic_write`)."""
    try:
        data = json.dumps(obj).encode()
    except (TypeError, ValueError) as err:  # not JSON-like: report it, as a full disk
        return f"not JSON-serializable: {err}"
    return atomic_write(path, lambda f: f.write(data))


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable in any way
    (partial, corrupt, not JSON): the caller trains again and overwrites it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
