"""Sphinx extension: keep myst-nb's execution cache honest.

The book executes its pages through jupyter-cache (``execute_notebooks: cache``), so a
rebuild with nothing changed executes nothing. jupyter-cache keys a page only on its
cells' source, though: a change in ``d2lcore``, in the pinned packages, in the build
profile (``D2L_PROFILE``) or in the device would otherwise leave stale outputs in the
book. This extension stores a fingerprint of those beside the cache and empties the
cache when the fingerprint differs, so every page runs again.

``D2L_EXECUTE=force`` empties the cache on every build (what CI does for a clean rebuild;
``make book-ci`` sets it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
FINGERPRINT_FILE = "d2l-fingerprint.json"
FORCE_ENV = "D2L_EXECUTE"


def build_fingerprint(root: Path) -> dict[str, str]:
    """What every page's outputs depend on besides its own cells."""
    import torch

    from d2lcore.cache import package_fingerprint
    from d2lcore.device import get_device
    from d2lcore.profile import current

    lock = root / "requirements.txt"
    return {
        "d2lcore": package_fingerprint(),
        "requirements": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "",
        "profile": current().name,
        "device": get_device().type,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _check_cache(app: Sphinx) -> None:
    config = getattr(app.env, "mystnb_config", None)
    if config is None or config.execution_mode != "cache":
        return
    cache = Path(config.execution_cache_path)
    stamp = cache / FINGERPRINT_FILE
    # The book's root is the folder with _config.yml (a single-page build's source folder
    # is the page's own folder).
    src = Path(app.srcdir).resolve()
    root = next((p for p in (src, *src.parents) if (p / "_config.yml").is_file()), src)
    fingerprint = build_fingerprint(root)
    try:
        old = json.loads(stamp.read_text())
    except (OSError, ValueError):
        old = None
    if os.environ.get(FORCE_ENV, "").lower() == "force":
        reason = f"{FORCE_ENV}=force"
    elif old is None:
        reason = "no fingerprint recorded" if cache.exists() else ""
    elif old != fingerprint:
        changed = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
        reason = f"{', '.join(changed)} changed"
    else:
        LOGGER.info("execution cache is current: unchanged pages are not executed again")
        return
    if reason and cache.exists():
        LOGGER.info(f"emptying the execution cache ({reason}): every page runs again")
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))


def setup(app: Sphinx) -> dict[str, Any]:
    # After myst-nb's own builder-inited handler, which sets the cache path.
    app.connect("builder-inited", _check_cache, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
