"""Milliseconds a control's move takes to redraw, for every control of every
interactive figure (slider figures and the MLP playground) in the built book, in headless
Chromium (the budget: 100 ms).

Each control (a range input) is moved ``--repeats`` times (default 11) through the
page's own handler (its value set, an ``input`` event sent), timed in the page with
``performance.now()`` from the change to the next animation frame; the median is printed
beside plotly's own redraw of the figure's first trace (``Plotly.restyle``), which is the
floor a page script cannot go under on this machine for a heat map (for a scatter trace
it is nearly free). The slowest control is printed last. The book must be built first
(``make book``); the script serves ``_build/html`` (or ``--html``) on a free loopback
port and blocks every other request.

Usage::

    python benchmarks/bench_redraw.py                 # every page with a figure's controls
    python benchmarks/bench_redraw.py --pages chapters/optimization --repeats 21
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser_helpers import (  # noqa: E402
    CHROMIUM_ARGS,
    open_offline,
    redraw_times,
    wait_for_plots,
)
from tests.conftest import CHROMIUM, serving, toc_pages  # noqa: E402

BUDGET_MS = 100.0
#: What marks a built page with figures that have controls (d2lcore.figure_page).
MARKS = ('data-d2l-kind="sliders"', 'data-d2l-kind="playground"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--pages", nargs="*", help="pages as in _toc.yml (default: all)")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"no built book in {args.html}: run `make book` first", file=sys.stderr)
        return 2

    def has_figures(page: str) -> bool:
        html = args.html / f"{page}.html"
        return html.is_file() and any(mark in html.read_text() for mark in MARKS)

    pages = args.pages or [p for p in toc_pages() if has_figures(p)]
    from playwright.sync_api import sync_playwright

    rows: list[tuple[float, float, str]] = []
    with serving(args.html) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name in pages:
            problems: list[str] = []
            page = open_offline(browser, f"{url}/{name}.html", problems)
            wait_for_plots(page)
            # Each figure with controls: its plot's id, the controls' names, how many
            # traces it holds (every configuration's) and what it draws.
            figures = page.evaluate(
                """() => Array.from(document.querySelectorAll('figure.d2l-figure'))
                     .filter(el => el.d2lFigure && el.querySelector('input.d2l-control-input'))
                     .map(el => { const gd = el.querySelector('.d2l-plot');
                                  const data = el.d2lFigure.data;
                                  return [gd.id, data.names, (gd.d2lTraces || gd.data).length,
                                          data.kind === 'sliders'
                                            ? gd.data[0].type || 'scatter' : data.kind]; })"""
            )  # fmt: skip
            for fig_id, names, traces, kind in figures:
                for i, control in enumerate(names):
                    redraw, floor = redraw_times(page, fig_id, i, args.repeats)
                    what = f"{name} {fig_id[:40]} ({kind}, {traces} traces) control {control}"
                    rows.append((redraw, floor, what))
                    print(f"{redraw:7.1f} ms  (plotly's floor {floor:6.1f} ms)  {what}", flush=True)
            page.close()
            if problems:
                print(f"  {name}: {problems}", file=sys.stderr)
        browser.close()
    if not rows:
        print("no figure with controls found", file=sys.stderr)
        return 1
    over = sum(r > BUDGET_MS for r, _, _ in rows)
    redraw, floor, what = max(rows)
    print(f"\n{len(rows)} controls, {over} over {BUDGET_MS:.0f} ms; the slowest: "
          f"{redraw:.1f} ms (plotly's floor {floor:.1f} ms), {what}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
