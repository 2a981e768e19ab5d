"""Every built page in headless Chromium, with the network blocked: no console errors,
no failed requests, every plotly figure rendered, math typeset."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import toc_pages

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def site(built_book: Path) -> Iterator[str]:
    """Serve the built HTML on a free loopback port."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_offline(browser, url: str, problems: list[str]):
    """Open ``url`` in a fresh page whose requests beyond the local site are refused
    and recorded; console errors and failed requests go into ``problems``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    origin = url.split("/", 3)[:3]
    local = "/".join(origin)

    def route(r):
        if r.request.url.startswith(local) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems.append(f"network request blocked: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.goto(url, wait_until="load")
    return page


@pytest.mark.parametrize("page_name", toc_pages())
def test_page_loads_offline_and_renders(browser, site: str, built_book: Path, page_name: str):
    problems: list[str] = []
    page = open_offline(browser, f"{site}/{page_name}.html", problems)
    html = (built_book / f"{page_name}.html").read_text()
    n_figures = html.count('class="plotly-graph-div"')
    if n_figures:
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_figures}",
            timeout=20_000,
        )
    if "math notranslate" in html:
        page.wait_for_selector("mjx-container", timeout=20_000)
    page.wait_for_timeout(300)  # late console errors
    page.close()
    assert not problems, "\n".join(problems)
