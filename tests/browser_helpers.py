"""Playwright helpers for the slider figures of :mod:`d2lcore.sliders` in a real browser.

They drive the sliders the way a reader does (a mouse click on the slider's rail at a
step's tick) and read back what the figure shows from the plotly graph div (``gd``):

    from .browser_helpers import CHROMIUM_ARGS, wait_for_plots, move_slider, figure_state

    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_page()
    page.goto(url)                       # e.g. http://127.0.0.1:PORT/chapters/mlp.html
    wait_for_plots(page)
    move_slider(page, fig_id, 0, 2)      # slider 0 (the first axis) to its step 2
    state = figure_state(page, fig_id)   # {"config": {"lr": "1", ...}, "visible": [...], ...}

Every function takes the figure's div id (``SliderFigure.fig_id``); ``slider_figure_ids``
lists those on a page.
"""

from __future__ import annotations

from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

_GD = "document.getElementById({fig_id!r})"


def wait_for_plots(page: Any, timeout_ms: float = 30_000) -> None:
    """Wait until every plotly div on the page has been drawn (and has its sliders)."""
    page.wait_for_function(
        """() => {
          const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
          return divs.length > 0 && divs.every(gd => gd._fullLayout &&
            (gd.layout.sliders || []).length === gd.querySelectorAll('.slider-group').length);
        }""",
        timeout=timeout_ms,
    )


def slider_figure_ids(page: Any) -> list[str]:
    """The ids of the plotly divs on the page that have sliders, in page order."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.plotly-graph-div'))
                 .filter(gd => (gd.layout.sliders || []).length > 0).map(gd => gd.id)"""
    )


def slider_step_points(page: Any, fig_id: str, slider: int) -> list[tuple[float, float]]:
    """Viewport coordinates of each step of slider ``slider``: its tick's x on the rail's
    centre line. Scrolls the slider into view first."""
    group = page.locator(f"#{fig_id} .slider-group").nth(slider)
    group.scroll_into_view_if_needed()
    points = page.evaluate(
        """([figId, i]) => {
          const gd = document.getElementById(figId);
          const g = gd.querySelectorAll('.slider-group')[i];
          const rail = g.querySelector('.slider-rail-rect').getBoundingClientRect();
          const y = rail.top + rail.height / 2;
          const n = gd.layout.sliders[i].steps.length;
          const ticks = Array.from(g.querySelectorAll('.slider-tick-rect'))
                             .map(t => { const r = t.getBoundingClientRect();
                                         return r.left + r.width / 2; });
          if (ticks.length === n) { return ticks.map(x => [x, y]); }
          // No ticks drawn: steps are spread evenly over the rail, inset by the grip.
          const inset = 8, w = rail.width - 2 * inset;
          return Array.from({length: n}, (_, j) =>
            [rail.left + inset + (n > 1 ? j * w / (n - 1) : w / 2), y]);
        }""",
        [fig_id, slider],
    )
    return [(float(x), float(y)) for x, y in points]


def move_slider(page: Any, fig_id: str, slider: int, step: int, timeout_ms: float = 5_000) -> None:
    """Click slider ``slider``'s rail at step ``step`` (as a reader would) and wait until
    the slider has moved there."""
    x, y = slider_step_points(page, fig_id, slider)[step]
    page.mouse.click(x, y)
    page.wait_for_function(
        "([figId, i, j]) => document.getElementById(figId).layout.sliders[i].active === j",
        arg=[fig_id, slider, step],
        timeout=timeout_ms,
    )
    page.wait_for_timeout(50)  # the figure's handler redraws right after the event


def drag_slider(
    page: Any, fig_id: str, slider: int, to_step: int, timeout_ms: float = 5_000
) -> None:
    """Drag slider ``slider``'s grip from where it is to step ``to_step``, in small
    mouse moves, as a reader would."""
    points = slider_step_points(page, fig_id, slider)
    start = page.evaluate(
        "([figId, i]) => document.getElementById(figId).layout.sliders[i].active || 0",
        [fig_id, slider],
    )
    (x0, y), (x1, _) = points[start], points[to_step]
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=20)
    page.mouse.up()
    page.wait_for_function(
        "([figId, i, j]) => document.getElementById(figId).layout.sliders[i].active === j",
        arg=[fig_id, slider, to_step],
        timeout=timeout_ms,
    )
    page.wait_for_timeout(50)


def figure_state(page: Any, fig_id: str) -> dict[str, Any]:
    """What the figure shows now.

    Returns a dict with ``config`` (axis name -> the selected step's label, from the
    sliders), ``actives`` (each slider's step index), ``traces`` (how many the figure
    has, every configuration's), ``visible`` (for each visible trace: its ``index`` among
    all of them, ``name``, ``type``, ``y`` data and ``z`` rows, ``None`` without),
    ``annotations`` (for each annotation in layout order: its ``name``, whether it is
    ``visible`` and its ``text`` as rendered in the page; the readout is named
    ``"readout"``, the panels' marks ``"diverged"``) and ``hash`` (the page's URL hash).
    """
    return page.evaluate(
        """(figId) => {
          const gd = document.getElementById(figId);
          const sliders = gd.layout.sliders || [];
          const config = {};
          sliders.forEach(s => { config[s.name] = s.steps[s.active || 0].label; });
          const visible = [];
          // d2lcore.sliders gives plotly only the selected configuration's traces
          // (sliders.js); the others wait in gd.d2lTraces.
          const first = gd.d2lTraces ? gd.d2lShown * gd.data.length : 0;
          gd.data.forEach((t, j) => {
            if (t.visible === true || t.visible === undefined) {
              visible.push({index: first + j, name: t.name, type: t.type || 'scatter',
                            y: Array.from(t.y || []),
                            z: t.z ? Array.from(t.z, row => Array.from(row)) : null});
            }
          });
          const annotations = (gd._fullLayout.annotations || []).map((a, i) => {
            const el = gd.querySelector('.annotation[data-index="' + i + '"] .annotation-text');
            return {name: a.name || null, visible: a.visible !== false && !!el,
                    text: el ? el.textContent : ''};
          });
          return {config: config, actives: sliders.map(s => s.active || 0),
                  traces: (gd.d2lTraces || gd.data).length, visible: visible,
                  annotations: annotations, hash: window.location.hash};
        }""",
        fig_id,
    )


def readout(page: Any, fig_id: str) -> str:
    """The readout's text as rendered (the configuration and its final numbers)."""
    texts = [a["text"] for a in figure_state(page, fig_id)["annotations"]
             if a["name"] == "readout"]  # fmt: skip
    if not texts:
        raise AssertionError(f"figure {fig_id} has no readout annotation")
    return texts[0]


def diverged_marks(page: Any, fig_id: str) -> list[str]:
    """The texts of the visible "diverged" marks in the panels (empty when none)."""
    return [a["text"] for a in figure_state(page, fig_id)["annotations"]
            if a["name"] == "diverged" and a["visible"]]  # fmt: skip


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


def axis_ranges(page: Any, fig_id: str) -> dict[str, list[float]]:
    """The range plotly draws for each x and y axis of the figure, by layout key."""
    return page.evaluate(
        """(figId) => {
          const fl = document.getElementById(figId)._fullLayout, out = {};
          Object.keys(fl).filter(k => /^[xy]axis\\d*$/.test(k))
                .forEach(k => { out[k] = fl[k].range.slice(); });
          return out;
        }""",
        fig_id,
    )


def redraw_times(page: Any, fig_id: str, slider: int, repeats: int) -> tuple[float, float]:
    """Median milliseconds of a redraw after moving ``slider`` of the figure (timed in the
    page with ``performance.now()`` around the change, up to the next frame), and of
    plotly's own redraw of the same first heat map: the floor on this machine."""
    redraw, floor = page.evaluate(
        """async ([id, slider, repeats]) => { const gd = document.getElementById(id);
             const frame = () => new Promise(r => requestAnimationFrame(() => r()));
             const redraw = [], floor = [];
             const steps = Math.min(3, gd.layout.sliders[slider].steps.length);
             for (let j = 0; j < repeats; j++) {
               let t0 = performance.now();
               gd.layout.sliders[slider].active = j % steps;
               gd.emit('plotly_sliderchange', {interaction: true});
               await frame();
               redraw.push(performance.now() - t0);
               t0 = performance.now();
               Plotly.restyle(gd, {z: [gd.data[0].z]}, [0]);
               await frame();
               floor.push(performance.now() - t0);
             }
             const median = xs => xs.slice().sort((a, b) => a - b)[xs.length >> 1];
             return [median(redraw), median(floor)]; }""",
        [fig_id, slider, repeats],
    )
    return float(redraw), float(floor)
