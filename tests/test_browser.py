"""Every built page in headless Chromium, with the network blocked: no console errors,
no failed requests, every figure drawn (the interactive ones lazily: near the viewport
first, the others while the page is idle), math typeset; on a desktop and on phones,
nothing wider than the screen or clipped by a section; the order of the work a page
puts off (formulas out of view, the theme's tab stops) after its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from .browser_helpers import TAB_STOPS_SET, draw_everything, open_offline, wait_for_math
from .conftest import toc_pages

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("page_name", toc_pages())
def test_page_loads_offline_and_renders(browser, site: str, built_book: Path, page_name: str):
    problems: list[str] = []
    page = open_offline(browser, f"{site}/{page_name}.html", problems)
    html = (built_book / f"{page_name}.html").read_text()
    n_figures = html.count('class="plotly-graph-div')
    if n_figures:
        # Every plot div drawn by plotly (each has its main SVG), every figure marked.
        page.wait_for_function(
            """(n) => { const divs = document.querySelectorAll('.plotly-graph-div');
                 return divs.length === n
                   && Array.from(divs).every(d => d.querySelector('svg.main-svg'))
                   && Array.from(document.querySelectorAll('figure.d2l-figure'))
                        .every(f => f.hasAttribute('data-d2l-drawn')); }""",
            arg=n_figures, timeout=60_000,
        )  # fmt: skip
    if "math notranslate" in html:
        page.wait_for_selector("mjx-container", timeout=20_000)
    wait_for_math(page)  # every formula, and the fonts they use
    page.wait_for_timeout(300)  # late console errors
    page.close()
    assert not problems, "\n".join(problems)


#: What overflows: the page wider than the window, or a section's content wider than the
#: section. book.css lets the browser skip laying out sections out of view, which also
#: clips what overflows a section instead of widening the page, and hides it from
#: scrollWidth: the check lays every section out while it measures.
OVERFLOWS = """() => {
  const all = document.createElement('style');
  all.textContent = 'section { content-visibility: visible !important; }';
  document.head.appendChild(all);
  const out = [], page = document.documentElement.scrollWidth;
  if (page > innerWidth + 1) out.push(`the page is ${page} px wide`);
  document.querySelectorAll('.bd-article section').forEach(s => {
    if (s.scrollWidth > s.clientWidth + 1) {
      out.push(`section #${s.id}: ${s.scrollWidth} px of content in ${s.clientWidth}`);
    }
  });
  all.remove();
  return out;
}"""


@pytest.mark.parametrize("width", [1400, 390, 320])
def test_no_page_is_wider_than_the_screen_or_clipped(browser, site: str, width: int):
    """Every page, its figures drawn and formulas typeset, at a desktop's width, a phone's
    and WCAG's reflow width. A wide element put into a section is seen (the check works
    on sections the browser skips)."""
    found: list[str] = []
    for name in toc_pages():
        page = browser.new_page(viewport={"width": width, "height": 844})
        page.goto(f"{site}/{name}.html", wait_until="load")
        draw_everything(page)
        found += [f"{name}: {o}" for o in page.evaluate(OVERFLOWS)]
        if name == "chapters/multilayer_perceptrons":
            wide = page.evaluate("""() => {
                const s = document.querySelectorAll('.bd-article section section')[2];
                const d = document.createElement('div');
                d.style.width = '3000px';
                d.textContent = 'too wide';
                s.appendChild(d);
                return s.id; }""")  # fmt: skip
            assert any(f"#{wide}:" in o for o in page.evaluate(OVERFLOWS)), "not seen"
        page.close()
    assert not found, "\n".join(found)


def test_scrolling_code_gets_a_tab_stop_once_the_figures_are_drawn(browser, site: str):
    """On a phone most code scrolls sideways: the theme gives each scrolling block a tab
    stop (and the others none) after the page's figures are drawn, when the page is idle."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{site}/chapters/multilayer_perceptrons.html", wait_until="load")
    draw_everything(page)
    page.wait_for_function(TAB_STOPS_SET, timeout=10_000)
    scrolling = page.evaluate("document.querySelectorAll('pre[tabindex=\"0\"]').length")
    page.close()
    assert scrolling > 10


def test_the_figures_draw_once_in_the_margins_the_book_gives_them(browser, site: str):
    """Plotly widens margins it finds short by drawing a figure a second time: the MLP
    page's figures (legends in up to five rows on a phone) fit the margins they are given,
    on a desktop and on a phone."""
    for width in (1400, 390):
        page = browser.new_page(viewport={"width": width, "height": 844})
        page.goto(f"{site}/chapters/multilayer_perceptrons.html", wait_until="load")
        draw_everything(page)
        widened = page.evaluate(
            """() => Array.from(document.querySelectorAll('.plotly-graph-div')).flatMap(gd => {
                 const m = gd.layout.margin || {}, s = gd._fullLayout._size;
                 return ['l', 'r', 't', 'b'].filter(k => m[k] !== undefined && s[k] > m[k])
                   .map(k => `${gd.closest('figure').id} ${k}: ${m[k]} -> ${s[k]}`); })""")
        page.close()
        assert not widened, f"at {width} px: {widened}"


def test_formulas_in_view_first_the_rest_after_the_figures(browser, site: str):
    """With plotly.js held back (its request refused: no figure can be drawn), the
    formulas in the first window are typeset, those further down are not; the reader
    stops at one: it is typeset; the rest wait for the figures at most MAX_WAIT_MS, then
    all are (MathJax.startup.promise resolves)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route("**/plotly.min.js*", lambda route: route.abort())
    page.goto(f"{site}/chapters/multilayer_perceptrons.html", wait_until="load")
    typeset = """(i) => document.querySelectorAll('.math')[i].querySelector('mjx-container')
                        !== null"""
    first_in_view = page.evaluate("""() => Array.from(document.querySelectorAll('.math'))
        .findIndex(m => m.getBoundingClientRect().top < innerHeight)""")
    assert first_in_view >= 0, "no formula in the first window"
    page.wait_for_function(typeset, arg=first_in_view, timeout=20_000)
    count = page.evaluate("document.querySelectorAll('.math').length")
    far, further = count // 2, count - 1
    assert not page.evaluate(typeset, far) and not page.evaluate(typeset, further)
    page.evaluate("(i) => document.querySelectorAll('.math')[i].scrollIntoView()", far)
    page.wait_for_function(typeset, arg=far, timeout=5_000)
    assert not page.evaluate(typeset, further), "typeset before the wait for the figures"
    page.evaluate("MathJax.startup.promise")
    assert page.evaluate("""() => Array.from(document.querySelectorAll('.math'))
        .every(m => m.querySelector('mjx-container'))""")
    page.close()
