"""Sphinx extension: serve plotly.js and MathJax from the built site, not from CDNs.

- ``plotly.min.js`` (from the installed ``plotly`` package, so it always matches the
  Python side) is copied to ``_static/vendor/`` and loaded only on pages that hold a
  plotly figure, once per page.
- ``sliders.js`` (the page script of ``d2lcore.sliders``, from the installed package) is
  copied to ``_static/vendor/d2l-sliders.js`` and loaded after plotly.js only on pages
  that hold a slider figure; the copy each figure carries inline (for notebooks shown
  outside the book) is removed from those pages. ``playground.js`` (the MLP
  playground's, ``d2lcore.playground_figure``) is served the same way as ``d2l-playground.js``.
- MathJax 3 (unpacked from the npm registry into ``.vendor/mathjax`` by ``make``) is
  copied to ``_static/vendor/mathjax``; ``mathjax_path`` in ``_config.yml`` points there.

Vendor bundles are copied at the end of the build instead of living in a ``_static``
source folder, because Jupyter Book would then add every ``.js`` in it to every page.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import plotly
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
# Found without importing d2lcore (which imports torch): the page script's file.
_D2LCORE = importlib.util.find_spec("d2lcore")
SLIDERS_JS = (Path(next(iter(_D2LCORE.submodule_search_locations or []))) / "sliders.js"
              if _D2LCORE is not None else Path("sliders.js"))  # fmt: skip
#: What a slider figure's inline script calls; a page that holds it needs sliders.js.
SLIDERS_CALL = "window.d2lSliders.attach("
#: The MLP playground's page script (``d2lcore.playground_figure``), served the same way.
PLAYGROUND_JS = SLIDERS_JS.with_name("playground.js")
PLAYGROUND_CALL = "window.d2lPlayground.attach("
#: Each page script: its file, what a figure that needs it calls, its name when served.
PAGE_SCRIPTS = ((SLIDERS_JS, SLIDERS_CALL, "d2l-sliders.js"),
                (PLAYGROUND_JS, PLAYGROUND_CALL, "d2l-playground.js"))
# The parts of MathJax's es5 folder that tex-chtml.js loads (fonts, lazy components).
MATHJAX_PARTS = ("tex-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors")


def _add_plotly(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                doctree: Any) -> None:
    body = context.get("body", "")
    if "plotly-graph-div" in body:
        # Called during html-page-context, this adds the script to this page only.
        app.add_js_file("vendor/plotly.min.js", priority=200)
    for priority, (script, call, served) in enumerate(PAGE_SCRIPTS, start=201):
        if call in body:
            # Once per page, after plotly.js; the figures' inline copies become redundant
            # (each only defines the program when it is missing), so they are dropped.
            app.add_js_file(f"vendor/{served}", priority=priority)
            body = context["body"] = body.replace(script.read_text(encoding="utf-8"), "")


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                    doctree: Any) -> None:
    # Under Jupyter Book, sphinx-thebe and sphinx-togglebutton register their inline
    # configuration scripts twice (once with filename None, once with ""), so Sphinx
    # does not see them as equal; the second `const THEBE_JS_URL` is a JavaScript
    # error on every page. Keep the first of each.
    seen: set[tuple[Any, ...]] = set()
    unique: list[Any] = []
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _copy_assets(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    vendor = Path(app.outdir) / "_static" / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PLOTLY_JS, vendor / "plotly.min.js")
    for script, _, served in PAGE_SCRIPTS:
        shutil.copy2(script, vendor / served)
    # Relative to the book's root; a single-page build (`jupyter-book build page.md`)
    # has the page's folder as its source, so look in the folders above it too.
    src = Path(app.srcdir).resolve()
    candidates = [base / app.config.offline_mathjax_dir for base in (src, *src.parents)]
    source = next((c for c in candidates if (c / "tex-chtml.js").is_file()), candidates[0])
    if not (source / "tex-chtml.js").is_file():
        raise ExtensionError(
            f"MathJax is missing from {source}; run `make vendor` (it unpacks the npm "
            "package mathjax) so the book's math renders offline"
        )
    for part in MATHJAX_PARTS:
        src, dst = source / part, vendor / "mathjax" / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("offline_mathjax_dir", ".vendor/mathjax/es5", "html")
    app.connect("html-page-context", _add_plotly)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
