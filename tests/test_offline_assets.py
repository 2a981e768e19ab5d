"""``booktools/offline_assets.py``: the plotly.js bundle the book serves (the partial bundle of
the Python package's version, with the book's trace types), how pages load it, the markup
fixes, and (on the built book) the theme's FontAwesome script left out with its icons
still drawn."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import plotly.offline
import pytest
from sphinx.errors import ExtensionError

from booktools import offline_assets

from .conftest import ROOT, toc_pages

assets = offline_assets

#: The trace types the book's figures draw (d2lcore.plotting and the pages).
BOOK_TRACES = ("scatter", "heatmap", "contour", "histogram")


class FakeApp:
    """What ``booktools/offline_assets.py`` uses of Sphinx's application, with each script's
    attributes."""

    def __init__(self, srcdir: Path | None = None):
        self.js_files: list[tuple[str, int, dict[str, str]]] = []
        self.srcdir, self.outdir = srcdir or ROOT, None
        self.builder = type("Builder", (), {"format": "html"})()

    def add_js_file(self, filename: str, priority: int = 500, **attributes: str) -> None:
        self.js_files.append((filename, priority, attributes))

    def add_css_file(self, filename: str, priority: int = 500, **attributes: str) -> None:
        pass


def a_page_with_every_script() -> dict[str, Any]:
    """A page body with a plotly figure and the mark of every page script."""
    marks = "".join(f"<div {mark}></div>" for _, mark, _ in assets.PAGE_SCRIPTS)
    return {"body": f'<div class="plotly-graph-div"></div>{marks}'}


def test_the_served_bundle_is_the_python_packages_plotly_js():
    bundle = assets.plotly_bundle(FakeApp())
    version = plotly.offline.get_plotlyjs_version()
    assert bundle.name == "plotly-cartesian.min.js" and version in bundle.parent.name
    assert f"plotly.js (cartesian - minified) v{version}\n" in bundle.read_text()[:300]
    # A third of the full bundle, which the book served before.
    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert bundle.stat().st_size < full.stat().st_size / 3
    pinned = re.search(r"^PLOTLYJS_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned and pinned[1] == version, "the Makefile's PLOTLYJS_VERSION is not plotly's"


def test_a_missing_or_wrong_bundle_fails_the_build_with_what_to_run(tmp_path: Path,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.setattr(assets, "PLOTLY_BUNDLE", Path(".vendor/plotly.js-nothing/plotly.js"))
    with pytest.raises(ExtensionError, match=r"missing .*run `make vendor`.*PLOTLYJS_VERSION"):
        assets.plotly_bundle(FakeApp(tmp_path))
    wrong = tmp_path / ".vendor" / "plotly.js-nothing" / "plotly.js"
    wrong.parent.mkdir(parents=True)
    wrong.write_text("/**\n* plotly.js (cartesian - minified) v3.0.0\n*/\n")
    with pytest.raises(ExtensionError, match=r"is not plotly.js .*run `make vendor` again"):
        assets.plotly_bundle(FakeApp(tmp_path))


@pytest.mark.parametrize("loading", ["blocking", "defer"])
def test_plotly_and_the_page_scripts_load_as_plotly_loading_says(monkeypatch, loading: str):
    monkeypatch.setattr(assets, "PLOTLY_LOADING", loading)
    app = FakeApp()
    assets._add_plotly(app, "page", "page.html", a_page_with_every_script(), None)
    names = [name for name, _, _ in app.js_files]
    assert names == ["vendor/plotly.min.js", *(f"vendor/{s}" for _, _, s in assets.PAGE_SCRIPTS)]
    expected = {"defer": "defer"} if loading == "defer" else {}
    assert all(attributes == expected for _, _, attributes in app.js_files), app.js_files
    monkeypatch.setattr(assets, "PLOTLY_LOADING", "async")
    with pytest.raises(ExtensionError, match="'blocking' or 'defer'"):
        assets._add_plotly(FakeApp(), "page", "page.html", a_page_with_every_script(), None)


@pytest.mark.parametrize("loading", ["blocking", "defer"])
def test_a_sphinx_build_writes_the_script_tag_plotly_loading_says(tmp_path: Path, monkeypatch,
                                                                   loading: str):  # fmt: skip
    """A real Sphinx build (no Jupyter Book, no kernel) of a page with a plotly figure."""
    from sphinx.application import Sphinx

    monkeypatch.setattr(assets, "PLOTLY_LOADING", loading)
    # Sphinx imports the extension by name: this module's copy (other tests load theirs).
    monkeypatch.setitem(sys.modules, "offline_assets", assets)
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text('extensions = ["offline_assets"]\n'
                                 f"offline_mathjax_dir = {str(ROOT / '.vendor/mathjax/es5')!r}\n")
    (src / "index.rst").write_text("Figure\n======\n\n.. raw:: html\n\n"
                                   '   <div class="plotly-graph-div"></div>\n')  # fmt: skip
    app = Sphinx(str(src), str(src), str(tmp_path / "out"), str(tmp_path / "doctrees"), "html",
                 status=None, warning=None, freshenv=True)  # fmt: skip
    app.build()
    html = (tmp_path / "out" / "index.html").read_text()
    tags = [t for t in re.findall(r"<script[^>]*>", html) if "vendor/plotly.min.js" in t]
    assert len(tags) == 1, tags
    assert ("defer" in tags[0]) == (loading == "defer"), tags[0]
    served = tmp_path / "out" / "_static" / "vendor" / "plotly.min.js"
    assert served.read_bytes() == assets.plotly_bundle(app).read_bytes()


def test_a_page_with_math_gets_the_typesetting_order_after_mathjax_s_configuration(
        tmp_path: Path, monkeypatch):  # fmt: skip
    """A real Sphinx build: the page with a formula carries math_order.js inline, after
    the configuration MathJax reads; the page without one carries neither."""
    from sphinx.application import Sphinx

    monkeypatch.setitem(sys.modules, "offline_assets", assets)
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text('extensions = ["offline_assets"]\n'
                                 "mathjax_path = 'vendor/mathjax/tex-chtml.js'\n"
                                 "mathjax3_config = {'options': {'processHtmlClass': 'math'}}\n"
                                 f"offline_mathjax_dir = {str(ROOT / '.vendor/mathjax/es5')!r}\n")
    (src / "index.rst").write_text("Math\n====\n\n:math:`x^2`\n\n.. toctree::\n\n   plain\n")
    (src / "plain.rst").write_text("Plain\n=====\n\nNo formula.\n")
    app = Sphinx(str(src), str(src), str(tmp_path / "out"), str(tmp_path / "doctrees"), "html",
                 status=None, warning=None, freshenv=True)  # fmt: skip
    app.build()
    order = assets.MATH_ORDER_JS.read_text(encoding="utf-8")
    html = (tmp_path / "out" / "index.html").read_text()
    assert html.count(order) == 1
    assert html.index("window.MathJax = {") < html.index(order) < html.index("</head>")
    assert "tex-chtml.js" in html
    plain = (tmp_path / "out" / "plain.html").read_text()
    assert "tex-chtml.js" not in plain and "startup.pageReady" not in plain


#: The theme's script as the installed pydata-sphinx-theme serves it.
THEME_JS = (Path(importlib.util.find_spec("pydata_sphinx_theme").origin).parent / "theme"
            / "pydata_sphinx_theme" / "static" / "scripts" / "pydata-sphinx-theme.js")  # fmt: skip


def test_the_theme_s_tab_stop_check_waits_for_the_figures(tmp_path: Path):
    """The installed theme's script has the check the book puts off; patched once, a
    second build leaves it as it is; a theme without it fails the build by name."""
    scripts = tmp_path / "_static" / "scripts"
    scripts.mkdir(parents=True)
    served = scripts / "pydata-sphinx-theme.js"
    text = THEME_JS.read_text(encoding="utf-8")
    old, new = assets.THEME_TAB_STOPS
    assert text.count(old) == 1, "the installed theme's check is not the one patched"
    served.write_text(text, encoding="utf-8")
    assets._patch_theme(tmp_path)
    patched = served.read_text(encoding="utf-8")
    assert patched == text.replace(old, new) and "d2lFigures" in patched
    assets._patch_theme(tmp_path)  # a second build over the same output
    assert served.read_text(encoding="utf-8") == patched
    served.write_text(text.replace(old, "/* another check */"), encoding="utf-8")
    with pytest.raises(ExtensionError, match="THEME_TAB_STOPS"):
        assets._patch_theme(tmp_path)


def test_the_bibliography_is_a_list_of_items_and_summaries_are_named_by_their_text():
    context = {"body": '<div role="list" class="citation-list">'
                       '<div class="citation" id="id2" role="doc-biblioentry">[BKH16]</div>'
                       '</div><details><summary aria-label="Toggle hidden content">'
                       "<p>Show code cell source</p></summary></details>"}  # fmt: skip
    assets._fix_markup(FakeApp(), "references", "page.html", context, None)
    assert 'role="listitem"' in context["body"] and "doc-biblioentry" not in context["body"]
    assert "<summary>" in context["body"] and "aria-label" not in context["body"]


@pytest.mark.browser
def test_the_bundle_draws_every_trace_type_of_the_book(browser):
    page = browser.new_page()
    page.set_content("<!doctype html><html><body><div id='plot'></div></body></html>")
    page.add_script_tag(path=str(assets.plotly_bundle(FakeApp())))
    found = page.evaluate(
        """(types) => {
          const traces = Plotly.PlotSchema.get().traces;
          const data = types.map(type => type === 'scatter' ? {type, y: [1, 2]}
                                 : type === 'histogram' ? {type, x: [1, 2, 2]}
                                 : {type, z: [[1, 2], [3, 4]]});
          return Plotly.newPlot('plot', data).then(gd => ({
            version: Plotly.version, registered: types.filter(t => t in traces),
            drawn: gd._fullData.map(t => t.type)}));
        }""",
        list(BOOK_TRACES),
    )
    page.close()
    assert found["version"] == plotly.offline.get_plotlyjs_version()
    assert found["registered"] == list(BOOK_TRACES)
    assert found["drawn"] == list(BOOK_TRACES)


@pytest.mark.browser
@pytest.mark.parametrize("width", [1400, 390])
def test_pages_show_the_theme_icons_without_fontawesome_s_script(browser, site: str,
                                                                 built_book: Path,
                                                                 width: int):  # fmt: skip
    """No page loads the theme's 1.5 MB icon script; the icons a reader sees (the menu,
    the launch buttons, the colour mode, the search, the contents) are drawn from
    FontAwesome's web font instead (served with the theme)."""
    for name in toc_pages():
        html = (built_book / f"{name}.html").read_text()
        assert "fontawesome.js" not in html, f"{name} loads FontAwesome's script"
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{site}/chapters/multilayer_perceptrons.html", wait_until="load")
    page.evaluate("document.fonts.ready")
    icons = page.evaluate(
        """() => Array.from(document.querySelectorAll('i[class*="fa-"], span[class*="fa-"]'))
             .filter(i => i.getClientRects().length > 0)
             .map(i => { const before = getComputedStyle(i, '::before');
                         return {icon: i.className, content: before.content,
                                 font: before.fontFamily,
                                 width: i.getBoundingClientRect().width}; })"""
    )  # fmt: skip
    loaded = page.evaluate("document.fonts.check('900 16px \"Font Awesome 6 Free\"')")
    page.close()
    assert len(icons) >= 3, icons  # the menu, the search, the colour mode (at least)
    for icon in icons:
        assert icon["content"] not in ("none", "normal", '""'), icon
        assert "Font Awesome" in icon["font"] and icon["width"] > 4, icon
    assert loaded, "FontAwesome's solid font did not load"
