"""Sphinx extension: keep myst-nb's execution cache honest.

The book executes its pages through jupyter-cache (``execute_notebooks: cache``), so a
rebuild with nothing changed executes nothing. jupyter-cache keys a page only on its
cells' source, though: a change in ``d2lcore``, in the pinned packages, in the build
profile (``D2L_PROFILE``) or in the device would otherwise leave stale outputs in the
book. This extension stores a fingerprint of those beside the cache and empties the
cache when the fingerprint differs, so every page runs again.

A damaged cache (a database that cannot be read, a record whose notebook is gone) is
emptied too, with the reason in the build log, instead of stopping the build.

``D2L_EXECUTE=force`` empties the cache on every build (what CI does for a clean rebuild;
``make book-ci`` sets it).

A page taken from the cache also gets its outputs into its notebook in
``jupyter_execute/`` (myst-nb writes it without them), where the Colab notebooks come from.
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


def cache_damage(cache: Path) -> str | None:
    """Why the jupyter-cache in ``cache`` cannot be used, or ``None`` when it can (or does
    not exist yet). A truncated database or a record whose notebook is gone would stop the
    build with a raw database error or a ``KeyError`` inside myst-nb."""
    if not (cache / "global.db").exists():
        return None
    from jupyter_cache import get_cache

    try:
        records = get_cache(str(cache)).list_cache_records()
    except Exception as error:  # sqlite: "file is not a database", "disk image is malformed"
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"its database cannot be read ({type(error).__name__}: {first[:200]})"
    for record in records:
        if not (cache / "executed" / record.hashkey / "base.ipynb").is_file():
            return f"the notebook of its record {record.pk} is missing"
    return None


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
    damage = cache_damage(cache)
    if os.environ.get(FORCE_ENV, "").lower() == "force":
        reason = f"{FORCE_ENV}=force"
    elif damage is not None:
        reason = f"it is damaged: {damage}"
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


def _write_cached_outputs(app: Sphinx, doctree: Any) -> None:
    """Put the cached outputs into the page's notebook in ``jupyter_execute/``.

    On a cache hit myst-nb renders the cached outputs but writes the notebook as it read
    it, without outputs (myst-nb 1.4: it merges into a copy). The Colab notebooks are
    made from these files (booktools/colab_notebooks.py), so after a page is read, its
    notebook is rewritten with the outputs of its cache record.
    """
    env = app.env
    config = getattr(env, "mystnb_config", None)
    if config is None or config.execution_mode != "cache" or not config.output_folder:
        return
    written = Path(config.output_folder, *f"{env.docname}.ipynb".split("/"))
    if not written.is_file():
        return  # not a notebook page
    import nbformat
    from jupyter_cache import get_cache

    notebook = nbformat.reads(written.read_text(encoding="utf8"), as_version=4)
    if any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
        return  # executed in place: the outputs are there
    try:
        _, merged = get_cache(config.execution_cache_path).merge_match_into_notebook(notebook)
    except KeyError:
        return  # not in the cache (not executed, or failed)
    written.write_text(nbformat.writes(merged), encoding="utf8")


def setup(app: Sphinx) -> dict[str, Any]:
    # After myst-nb's own builder-inited handler, which sets the cache path.
    app.connect("builder-inited", _check_cache, priority=900)
    app.connect("doctree-read", _write_cached_outputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
