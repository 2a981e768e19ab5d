"""Sphinx extension: Live Code runs on Thebe 0.9, served with the book, so the pages'
ipywidgets 8 controls work under it.

sphinx-thebe 0.3.1 loads Thebe 0.8.2 from unpkg, whose bundled widget manager is the
ipywidgets 7 one: an ipywidgets 8 control shows "Error displaying widget" there. Thebe
0.9 (unpacked from the npm registry into ``.vendor/`` by ``make vendor``) speaks
ipywidgets 8, but sphinx-thebe's launcher calls ``bootstrap()`` without
``requestKernel: true``, with which Thebe 0.9 starts no kernel session. So, on every page
that has a Live Code button:

- the launcher ``sphinx-thebe.js`` is replaced by ``live_code.js`` (beside this file),
  which does what it did with Thebe 0.9: marks the code cells executable, loads Thebe
  and its stylesheet when the button is pressed, and bootstraps it with a kernel;
- the address sphinx-thebe writes into the page (``THEBE_JS_URL``) points at the local
  copy, ``_static/vendor/thebe/index.js``.

Pressing the button still fetches nothing before it is pressed. Once pressed, the page
talks to mybinder.org (or the server the page's Thebe configuration names), and Thebe
fetches require.js from cdnjs when a widget needs it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

LAUNCHER = Path(__file__).with_name("live_code.js")
THEBE_URL = re.compile(r'const THEBE_JS_URL = "[^"]*"')


def _use_local_thebe(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                     doctree: Any) -> None:  # fmt: skip
    scripts = context.get("script_files", [])
    if not any((s.filename or "").endswith("sphinx-thebe.js") for s in scripts):
        return
    local = context["pathto"]("_static/vendor/thebe/index.js", 1)
    replaced = []
    for script in scripts:  # Sphinx's script objects are immutable: make new ones
        attributes = dict(script.attributes)
        filename = script.filename
        if (filename or "").endswith("sphinx-thebe.js"):
            filename = "_static/vendor/d2l-live-code.js"
            attributes.pop("async", None)
        body = attributes.get("body")
        if body and THEBE_URL.search(body):
            attributes["body"] = THEBE_URL.sub(f'const THEBE_JS_URL = "{local}"', body)
        if filename != script.filename or attributes != script.attributes:
            script = type(script)(filename, priority=script.priority, **attributes)
        replaced.append(script)
    context["script_files"] = replaced


def _copy_thebe(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    src = Path(app.srcdir).resolve()
    candidates = [base / app.config.live_code_thebe_dir for base in (src, *src.parents)]
    source = next((c for c in candidates if (c / "index.js").is_file()), candidates[0])
    if not (source / "index.js").is_file():
        raise ExtensionError(f"Thebe is missing from {source}; run `make vendor` (it unpacks "
                             "the npm package thebe) for the pages' Live Code button")  # fmt: skip
    vendor = Path(app.outdir) / "_static" / "vendor"
    target = vendor / "thebe"
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():  # the bundle and its chunks, without source maps
        if path.suffix in (".js", ".css"):
            shutil.copy2(path, target / path.name)
    shutil.copy2(LAUNCHER, vendor / "d2l-live-code.js")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("live_code_thebe_dir", ".vendor/thebe-0.9.3/lib", "html")
    # After offline_assets' deduplication of sphinx-thebe's inline configuration (900).
    app.connect("html-page-context", _use_local_thebe, priority=950)
    app.connect("build-finished", _copy_thebe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
