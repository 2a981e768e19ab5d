"""Sphinx extension: serve plotly.js and MathJax from the built site, not from CDNs.

- plotly.js is the official partial bundle ``plotly.js-cartesian-dist-min`` (unpacked from
  the npm registry into ``.vendor/`` by ``make``): the trace types the book draws
  (scatter, heatmap, contour, histogram) in 1.5 MB instead of the full bundle's 4.8 MB.
  The build takes the version the installed ``plotly`` package bundles, so the two always
  match, and fails when it is missing. It is served as ``_static/vendor/plotly.min.js``
  and loaded only on pages that hold a plotly figure, once per page, as
  ``PLOTLY_LOADING`` says.
- ``figure.js`` and ``figure.css`` (the interactive figures' page script and style sheet,
  ``d2lcore.figure_page``, from the installed package) are copied to ``_static/vendor/``
  as ``d2l-figure.js`` and ``d2l-figure.css`` and loaded after plotly.js only on pages
  that hold such a figure; the copies each figure carries inline (for notebooks shown
  outside the book) are removed from those pages. ``playground.js`` (the MLP
  playground's kind, ``d2lcore.playground_figure``) is served the same way as
  ``d2l-playground.js``.
- MathJax 3 (unpacked from the npm registry into ``.vendor/mathjax`` by ``make``) is
  copied to ``_static/vendor/mathjax``; ``mathjax_path`` in ``_config.yml`` points there.
  Each page with math carries ``math_order.js`` inline before it: the formulas in view
  first, the rest once the page's figures are drawn.

Two fixes of markup the book's packages write, for readers of screen readers (axe-core's
WCAG 2.1 rules; ``tests/test_a11y.py``):

- docutils 0.21 writes the bibliography as ``role="list"`` whose entries have the
  deprecated role ``doc-biblioentry`` (a list without items, critical for axe): they
  become ``listitem``;
- myst-nb 1.4 names a hidden cell's ``<summary>`` "Toggle hidden content", which is not
  what it shows ("Show code cell content"): the label goes, and the summary is named
  by its visible text.

The theme's own (FontAwesome's script, the search field's name) are template overrides
in ``_templates/``.

Vendor bundles are copied at the end of the build instead of living in a ``_static``
source folder, because Jupyter Book would then add every ``.js`` in it to every page.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import plotly.offline
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

#: The plotly.js version of the Python package, which the served bundle must have.
PLOTLYJS_VERSION = plotly.offline.get_plotlyjs_version()
#: Where ``make vendor`` unpacks the bundle (PLOTLYJS in the Makefile), from the book's root.
PLOTLY_BUNDLE = Path(f".vendor/plotly.js-cartesian-{PLOTLYJS_VERSION}/plotly-cartesian.min.js")
#: How a page loads plotly.js and the page scripts that use it:
#:
#: - ``"blocking"``: a plain ``<script>`` in ``<head>``; the first paint waits for it.
#: - ``"defer"`` (the book's): ``<script defer>``; the page paints first, the scripts run in
#:   order once the HTML is parsed, and ``figure.js`` draws every figure (each figure's own
#:   inline script only attaches it where the page script already runs).
PLOTLY_LOADING = "defer"
# Found without importing d2lcore (which imports torch): the page scripts' files.
_D2LCORE = importlib.util.find_spec("d2lcore")
_PACKAGE = (Path(next(iter(_D2LCORE.submodule_search_locations or [])))
            if _D2LCORE is not None else Path("."))  # fmt: skip
#: The interactive figures' page script and style sheet (``d2lcore.figure_page``), and
#: the MLP playground's kind of figure.
FIGURE_JS, FIGURE_CSS = _PACKAGE / "figure.js", _PACKAGE / "figure.css"
PLAYGROUND_JS = _PACKAGE / "playground.js"
#: Each page script: its file, what marks a page that needs it, its name when served.
PAGE_SCRIPTS = ((FIGURE_JS, 'class="d2l-figure"', "d2l-figure.js"),
                (PLAYGROUND_JS, 'data-d2l-kind="playground"', "d2l-playground.js"))
#: The order in which MathJax typesets a page (inline on each page with math).
MATH_ORDER_JS = Path(__file__).with_name("math_order.js")
# The parts of MathJax's es5 folder that tex-chtml.js loads (fonts, lazy components).
MATHJAX_PARTS = ("tex-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors")


def _add_plotly(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                doctree: Any) -> None:
    body = context.get("body", "")
    if PLOTLY_LOADING not in ("blocking", "defer"):
        raise ExtensionError(f"PLOTLY_LOADING is {PLOTLY_LOADING!r}: 'blocking' or 'defer'")
    loading = {"defer": "defer"} if PLOTLY_LOADING == "defer" else {}
    if "plotly-graph-div" in body:
        # Called during html-page-context, this adds the script to this page only.
        app.add_js_file("vendor/plotly.min.js", priority=200, **loading)
    for priority, (script, mark, served) in enumerate(PAGE_SCRIPTS, start=201):
        if mark in body:
            # Once per page, after plotly.js; the figures' inline copies become redundant
            # (each only defines the program when it is missing), so they are dropped.
            app.add_js_file(f"vendor/{served}", priority=priority, **loading)
            body = context["body"] = body.replace(script.read_text(encoding="utf-8"), "")
    if PAGE_SCRIPTS[0][1] in body:  # and the style sheet, once
        app.add_css_file("vendor/d2l-figure.css")
        css = f"<style>{FIGURE_CSS.read_text(encoding='utf-8')}</style>"
        context["body"] = body.replace(css, "")


def _order_math(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                doctree: Any) -> None:  # fmt: skip
    # After sphinx.ext.mathjax's handler (a built-in extension's, connected first), which
    # adds MathJax only to pages with math; after its configuration script too (501).
    # Its script's file name is mathjax_path, under _static/ where that is a local path.
    scripts = context.get("script_files", [])
    if any(str(s.filename or "").endswith(app.config.mathjax_path) for s in scripts):
        app.add_js_file(None, body=MATH_ORDER_JS.read_text(encoding="utf-8"), priority=501)


#: Markup of docutils and myst-nb, and what replaces it (see the module's docstring).
MARKUP_FIXES = (('role="doc-biblioentry"', 'role="listitem"'),
                ('<summary aria-label="Toggle hidden content">', "<summary>"))  # fmt: skip


def _fix_markup(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                doctree: Any) -> None:  # fmt: skip
    body = context.get("body", "")
    for old, new in MARKUP_FIXES:
        body = body.replace(old, new)
    if body:
        context["body"] = body


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


def _vendored(app: Sphinx, relative: str | Path, probe: str = "") -> Path:
    """``relative`` (a vendor file or folder, holding ``probe``) in the book's root, else
    the first candidate. A single-page build (`jupyter-book build page.md`) has the page's
    folder as its source, so look in the folders above it too, and beside ``_ext``."""
    src = Path(app.srcdir).resolve()
    bases = (src, *src.parents, Path(__file__).resolve().parents[1])
    candidates = [base / relative for base in bases]
    return next((c for c in candidates if (c / probe).is_file()), candidates[0])


def plotly_bundle(app: Sphinx) -> Path:
    """The vendored plotly.js bundle, checked to be the Python package's version."""
    bundle = _vendored(app, PLOTLY_BUNDLE)
    if not bundle.is_file():
        raise ExtensionError(
            f"plotly.js {PLOTLYJS_VERSION} is missing from {bundle.parent}; run `make vendor` "
            "(it unpacks the npm package plotly.js-cartesian-dist-min) so the figures draw "
            f"offline. The Makefile's PLOTLYJS_VERSION must be {PLOTLYJS_VERSION}, the "
            "version the installed Python plotly bundles."
        )
    with bundle.open(encoding="utf-8") as f:
        header = f.read(300)
    if f"v{PLOTLYJS_VERSION}\n" not in header:
        raise ExtensionError(f"{bundle} is not plotly.js {PLOTLYJS_VERSION}: its header "
                             f"reads {header[:120]!r}; run `make vendor` again")  # fmt: skip
    return bundle


def _check_plotly_bundle(app: Sphinx) -> None:
    # Before any page executes, not after a ten-minute build.
    if app.builder.format == "html":
        plotly_bundle(app)


#: pydata-sphinx-theme 0.17's check of which code blocks and outputs scroll (those get a
#: tab stop): it runs once the HTML is parsed and again 300 ms after any change under
#: ``#main-content``, and reads every block's scroll width. Where the browser skips laying
#: out the sections out of view (book.css), each run lays out the whole page again: a
#: second or more of a slowed phone's time while the figures wait, after every figure
#: drawn and every formula typeset. The book runs the same check once the page's figures
#: are drawn (``d2lFigures.whenDrawn``, at once on a page without figures, after 10 s at
#: most), when the browser is idle, and then after each change as before.
THEME_TAB_STOPS = (
    'window.addEventListener("resize",t),new MutationObserver(t).observe(document.'
    'getElementById("main-content"),{subtree:!0,childList:!0}),e()}',
    'window.addEventListener("resize",t);const w=()=>{let d=!1;const g=()=>{d||(d=!0,'
    '(window.requestIdleCallback||setTimeout)(e))},f=window.d2lFigures;f&&f.whenDrawn?'
    '(f.whenDrawn(g),setTimeout(g,1e4)):g()},v=_(w,300);new MutationObserver(v).observe('
    'document.getElementById("main-content"),{subtree:!0,childList:!0}),w()}',
)


def _patch_theme(outdir: Path) -> None:
    script = outdir / "_static" / "scripts" / "pydata-sphinx-theme.js"
    if not script.is_file():
        return
    text = script.read_text(encoding="utf-8")
    old, new = THEME_TAB_STOPS
    if old not in text and new not in text:
        raise ExtensionError(
            f"{script} has no longer the tab-stop check that booktools/offline_assets.py "
            "puts off until the figures are drawn (THEME_TAB_STOPS): a new "
            "pydata-sphinx-theme; see whether the check still needs it and update the pattern"
        )
    script.write_text(text.replace(old, new), encoding="utf-8")


def _copy_assets(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    _patch_theme(Path(app.outdir))
    vendor = Path(app.outdir) / "_static" / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    shutil.copy2(plotly_bundle(app), vendor / "plotly.min.js")
    for script, _, served in PAGE_SCRIPTS:
        shutil.copy2(script, vendor / served)
    shutil.copy2(FIGURE_CSS, vendor / "d2l-figure.css")
    source = _vendored(app, app.config.offline_mathjax_dir, "tex-chtml.js")
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
    app.connect("builder-inited", _check_plotly_bundle)
    app.connect("html-page-context", _add_plotly)
    app.connect("html-page-context", _fix_markup)
    app.connect("html-page-context", _order_math)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
