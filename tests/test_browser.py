"""Every built page in headless Chromium, with the network blocked: no console errors,
no failed requests, every figure drawn (the interactive ones lazily: near the viewport
first, the others while the page is idle), math typeset."""

from __future__ import annotations

from pathlib import Path

import pytest

from .browser_helpers import open_offline
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
    page.wait_for_timeout(300)  # late console errors
    page.close()
    assert not problems, "\n".join(problems)
