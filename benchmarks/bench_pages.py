"""What each page of the built book costs a reader: bytes transferred, time to first paint
and time until every figure is drawn, on a desktop and on a slowed phone.

Every page is opened in a fresh browser context (an empty cache, as on a first visit) in
headless Chromium, from a local HTTP server that compresses its responses with gzip as a
web server does (level 6; woff2 fonts and images as they are). As soon as the HTML is
parsed, the reader goes to each figure in turn (scrolled to the middle of the window) and
on once it is drawn, then to the bottom of the page: figures drawn only when they come
near the window are drawn too, and the time does not grow with the length of the text
between them. It prints, per page:

- **bytes**: the gzip-compressed size of every response the page loaded, scrolled to the
  bottom (MathJax's fonts and components included), and the number of requests;
- **FCP**: the browser's ``first-contentful-paint`` timing;
- **drawn**: when the last figure was drawn (every ``.plotly-graph-div`` holds an
  ``svg.main-svg``), from the start of the navigation; and **wait**: the longest a figure
  stayed undrawn after it entered the window.

Two set-ups: a desktop window of 1400 x 900, and a phone of 390 x 844 (device scale 3,
touch) with the CPU slowed 4x (Chrome DevTools Protocol,
``Emulation.setCPUThrottlingRate``). Each time is the median of ``--repeats`` loads.
The targets are printed with pass or fail; the script does not fail on them. Requests to
other hosts are refused by the browser and listed.

Usage::

    python benchmarks/bench_pages.py                      # _build/html, every page, 3 loads each
    python benchmarks/bench_pages.py /tmp/other/_build/html --pages chapters/multilayer_perceptrons
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import mimetypes
import os
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser_helpers import CHROMIUM_ARGS  # noqa: E402
from tests.conftest import CHROMIUM, toc_pages  # noqa: E402

#: The issue's targets: the heaviest page, the first paint on the desktop, and the MLP
#: page's figures on the slowed phone.
MAX_BYTES = 3_000_000
MAX_FCP_DESKTOP_MS = 1500.0
MAX_DRAWN_PHONE_MS = 6000.0
FIGURE_PAGE = "chapters/multilayer_perceptrons"

#: Types a web server sends as they are: compressing them again gains nothing.
PRECOMPRESSED = {".woff2", ".woff", ".png", ".jpg", ".jpeg", ".gif", ".gz", ".zip"}


@dataclass(frozen=True)
class Setup:
    name: str
    width: int
    height: int
    scale: float = 1.0
    mobile: bool = False
    cpu_slowdown: float = 1.0


SETUPS = (Setup("desktop", 1400, 900),
          Setup("phone", 390, 844, scale=3.0, mobile=True, cpu_slowdown=4.0))  # fmt: skip

#: Installed before the page's own scripts: records when each figure entered the window
#: and when it was drawn, and when all were (``performance.now()``, from navigation start).
PROBE = """(() => {
  const state = window.__benchPages = {seen: new Map(), drawn: new Map(), all: null, count: 0};
  const check = () => {
    if (document.readyState === 'loading' || state.all !== null) return;
    const figures = document.querySelectorAll('.plotly-graph-div');
    state.count = figures.length;
    let all = true;
    figures.forEach(gd => {
      if (state.drawn.has(gd)) return;
      if (gd.querySelector('svg.main-svg')) state.drawn.set(gd, performance.now());
      else all = false;
    });
    if (all) { state.all = performance.now(); observer.disconnect(); }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, {childList: true, subtree: true});
  document.addEventListener('DOMContentLoaded', () => {
    const inView = new IntersectionObserver(entries => entries.forEach(e => {
      if (e.isIntersecting && !state.seen.has(e.target)) {
        state.seen.set(e.target, performance.now());
      }
    }));
    document.querySelectorAll('.plotly-graph-div').forEach(gd => inView.observe(gd));
    check();
  });
})();"""

#: What the probe found: the figures, the last drawn, the longest wait in the window, FCP.
RESULTS = """() => {
  const s = window.__benchPages;
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  let wait = 0;
  s.seen.forEach((t, gd) => {
    wait = Math.max(wait, (s.drawn.has(gd) ? s.drawn.get(gd) : performance.now()) - t);
  });
  return {count: s.count, drawn: s.all, wait: s.count ? wait : null,
          fcp: fcp ? fcp.startTime : null};
}"""
#: Scrolls figure ``i`` to the middle of the window; and whether it is drawn.
GO_TO_FIGURE = """(i) => document.querySelectorAll('.plotly-graph-div')[i]
                      .scrollIntoView({block: 'center'})"""
IS_DRAWN = """(i) => document.querySelectorAll('.plotly-graph-div')[i]
                  .querySelector('svg.main-svg') !== null"""


@dataclass
class Load:
    """One page load: bytes and requests (from the server), times in ms (from the page)."""

    bytes: int
    requests: int
    fcp: float | None
    drawn: float | None
    wait: float | None
    figures: int
    elsewhere: list[str] = field(default_factory=list)
    responses: list[tuple[str, int]] = field(default_factory=list)  # the largest first


@contextmanager
def gzip_server(folder: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """Serve ``folder`` on a free loopback port, compressing what a web server would; yields
    the URL and the list of (path, body size) sent (the caller empties it between pages)."""
    sent: list[tuple[str, int]] = []
    cache: dict[tuple[Path, bool], bytes] = {}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            file = (folder / path.lstrip("/")).resolve()
            if file.is_dir():
                file = file / "index.html"
            if folder.resolve() not in file.parents or not file.is_file():
                self.send_error(404)
                return
            squeeze = ("gzip" in self.headers.get("Accept-Encoding", "")
                       and file.suffix not in PRECOMPRESSED)  # fmt: skip
            with lock:
                if (file, squeeze) not in cache:
                    raw = file.read_bytes()
                    cache[file, squeeze] = gzip.compress(raw, 6, mtime=0) if squeeze else raw
                body = cache[file, squeeze]
            self.send_response(200)
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            self.send_header("Content-Type", kind)
            if squeeze:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            with lock:
                sent.append((path, len(body)))

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()


def load_page(browser: Any, url: str, setup: Setup, sent: list[tuple[str, int]],
              timeout_s: float = 90.0) -> Load:  # fmt: skip
    """Open ``url`` in a fresh context as ``setup`` says, go to each figure until it is
    drawn, then to the bottom, and return what it cost."""
    context = browser.new_context(
        viewport={"width": setup.width, "height": setup.height},
        device_scale_factor=setup.scale, is_mobile=setup.mobile, has_touch=setup.mobile,
    )  # fmt: skip
    context.add_init_script(PROBE)
    page = context.new_page()
    local = url.split("/", 3)[:3]
    elsewhere: list[str] = []
    page.on("request", lambda r: r.url.split("/", 3)[:3] != local
            and not r.url.startswith("data:") and elsewhere.append(r.url))  # fmt: skip
    if setup.cpu_slowdown != 1:
        cdp = context.new_cdp_session(page)
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": setup.cpu_slowdown})
    sent.clear()
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
    count = page.evaluate("document.querySelectorAll('.plotly-graph-div').length")
    deadline = time.monotonic() + timeout_s
    for i in range(count):
        page.evaluate(GO_TO_FIGURE, i)
        try:
            page.wait_for_function(IS_DRAWN, arg=i, polling=20,
                                   timeout=max(1.0, deadline - time.monotonic()) * 1000)
        except PlaywrightTimeout:
            break  # "drawn" stays empty: a figure was never drawn
    page.evaluate("scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)  # what loads late: MathJax's fonts and components
    state = page.evaluate(RESULTS)
    load = Load(bytes=sum(size for _, size in sent), requests=len(sent), fcp=state["fcp"],
                drawn=state["drawn"], wait=state["wait"], figures=state["count"],
                elsewhere=elsewhere, responses=sorted(sent, key=lambda r: -r[1]))  # fmt: skip
    context.close()
    return load


def median(values: list[float | None]) -> float | None:
    """The median, or None when a load did not get there (a figure never drawn)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) else None


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, nargs="?", default=ROOT / "_build" / "html",
                        help="the built book (default: _build/html)")
    parser.add_argument("--pages", nargs="*", help="pages as in _toc.yml (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--largest", type=int, default=0, metavar="N",
                        help="also print each page's N largest responses (gzip)")
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"no built book in {args.html}: run `make book` first", file=sys.stderr)
        return 2
    pages = args.pages or toc_pages()
    # The times depend on the machine's load as much as on the page: say what it was.
    print(f"{os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
          flush=True)  # fmt: skip

    # Other hosts resolve nowhere: the book must not need them, and none is waited for.
    blocked = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    results: dict[tuple[str, str], list[Load]] = {}
    with gzip_server(args.html) as (url, sent), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, blocked])
        for name in pages:
            for setup in SETUPS:
                loads = [load_page(browser, f"{url}/{name}.html", setup, sent)
                         for _ in range(args.repeats)]  # fmt: skip
                results[name, setup.name] = loads
                for other in sorted({u for load in loads for u in load.elsewhere}):
                    print(f"  {name}: a request to another host, refused: {other}")
                if args.largest and setup is SETUPS[0]:
                    for path, size in loads[0].responses[:args.largest]:
                        print(f"  {name}: {size / 1e3:9,.1f} kB  {path}")
            print(f"measured {name}", file=sys.stderr, flush=True)
        browser.close()

    header = (f"{'page':<40} {'figures':>7} {'requests':>8} {'bytes (gzip)':>12} | "
              + " | ".join(f"{s.name + ' (CPU /' + format(s.cpu_slowdown, 'g') + ')':^31}"
                           for s in SETUPS))  # fmt: skip
    print(header)
    print(f"{'':<40} {'':>7} {'':>8} {'':>12} | "
          + " | ".join(f"{'FCP':>9} {'drawn':>10} {'wait':>10}" for _ in SETUPS))
    print("-" * len(header))
    for name in pages:
        first = results[name, SETUPS[0].name]
        figures = first[0].figures
        cells = []
        for setup in SETUPS:
            loads = results[name, setup.name]
            drawn, wait = (ms(median([getattr(x, key) for x in loads])) if figures else "-"
                           for key in ("drawn", "wait"))  # fmt: skip
            cells.append(f"{ms(median([x.fcp for x in loads])):>9} {drawn:>10} {wait:>10}")
        size = statistics.median(x.bytes for x in first)
        requests = statistics.median(x.requests for x in first)
        print(f"{name:<40} {figures:>7} {requests:>8.0f} {size / 1e6:>9.2f} MB | "
              + " | ".join(cells))  # fmt: skip

    print("\ntargets (printed, not enforced):")
    heaviest = max(pages, key=lambda n: statistics.median(x.bytes for x in results[n, "desktop"]))
    size = statistics.median(x.bytes for x in results[heaviest, "desktop"])
    verdict = "pass" if size <= MAX_BYTES else "FAIL"
    print(f"  {verdict}  the heaviest page at most {MAX_BYTES / 1e6:g} MB: {heaviest}, "
          f"{size / 1e6:.2f} MB")
    slow = [(n, median([x.fcp for x in results[n, "desktop"]])) for n in pages]
    over = [(n, f) for n, f in slow if f is None or f >= MAX_FCP_DESKTOP_MS]
    worst = max((f for _, f in slow if f is not None), default=None)
    print(f"  {'FAIL' if over else 'pass'}  first paint under {MAX_FCP_DESKTOP_MS / 1e3:g} s on "
          f"the desktop: the slowest {ms(worst)}"
          + (f"; over: {', '.join(n for n, _ in over)}" if over else ""))  # fmt: skip
    if (FIGURE_PAGE, "phone") in results:
        drawn = median([x.drawn for x in results[FIGURE_PAGE, "phone"]])
        verdict = "pass" if drawn is not None and drawn <= MAX_DRAWN_PHONE_MS else "FAIL"
        print(f"  {verdict}  every figure of {FIGURE_PAGE} drawn within "
              f"{MAX_DRAWN_PHONE_MS / 1e3:g} s on the slowed phone: {ms(drawn)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
