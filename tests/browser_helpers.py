"""Playwright helpers for the interactive figures of :mod:`d2lcore.figure_page` in a real
browser.

They drive the controls the way a reader does (a mouse click on a range input at a
step's place, a drag, or the keyboard) and read back what the figure shows from the
plotly graph div (``gd``) and the HTML around it:

    from .browser_helpers import CHROMIUM_ARGS, wait_for_plots, move_slider, figure_state

    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_page()
    page.goto(url)                       # e.g. http://127.0.0.1:PORT/chapters/mlp.html
    wait_for_plots(page)
    move_slider(page, fig_id, 0, 2)      # control 0 (the first axis) to its step 2
    state = figure_state(page, fig_id)   # {"config": {"lr": "1", ...}, "visible": [...], ...}

Every function takes the figure's plot id (``PageFigure.fig_id``; the ``<figure>`` around
it is ``{fig_id}-figure``); ``slider_figure_ids`` lists those on a page.
"""

from __future__ import annotations

from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

_STEPS = """(figId) => Array.from(document.querySelectorAll(
    '#' + figId + '-figure input.d2l-control-input'), i => Number(i.value))"""


def wait_for_plots(page: Any, timeout_ms: float = 30_000) -> None:
    """Wait until every plot on the page has been drawn: each interactive figure's
    (``data-d2l-drawn``, drawn near the viewport first, then the others while the page
    is idle) and every plain plotly figure's; then until the page holds still: the
    formulas out of view are typeset after the figures (``booktools/math_order.js``) and
    move the text below them, so a click aimed before that could miss."""
    page.wait_for_function(
        """() => {
          const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
          const figs = Array.from(document.querySelectorAll('figure.d2l-figure'));
          return divs.length > 0 && divs.every(gd => gd._fullLayout) &&
            figs.every(f => f.hasAttribute('data-d2l-drawn') && f.d2lFigure);
        }""",
        timeout=timeout_ms,
    )
    wait_for_math(page)


def wait_for_math(page: Any) -> None:
    """Every formula typeset (MathJax.startup.promise, where MathJax is on the page) and
    the fonts it uses loaded."""
    page.evaluate("""async () => {
      if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
      }
      // A font is asked for when a glyph of it is first drawn: after a frame or two.
      for (let i = 0; i < 2; i++) await new Promise(done => requestAnimationFrame(done));
      await document.fonts.ready;
    }""")  # fmt: skip


#: Whether the theme has given each block that scrolls a tab stop and the others none
#: (after the figures are drawn, when the page is idle: booktools/offline_assets.py).
TAB_STOPS_SET = """() => Array.from(document.querySelectorAll(
    'pre, .nboutput > .output_area, .cell_output > .output, .jp-RenderedHTMLCommon, '
    + '.pst-scrollable-table-container')).every(e => e.tabIndex ===
      (e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight ? 0 : -1))"""


def slider_figure_ids(page: Any, kind: str = "sliders") -> list[str]:
    """The plot ids of the page's interactive figures of ``kind``, in page order."""
    return page.evaluate(
        """(kind) => Array.from(document.querySelectorAll(
             'figure.d2l-figure[data-d2l-kind="' + kind + '"] .d2l-plot'), gd => gd.id)""",
        kind,
    )


def controls(page: Any, fig_id: str) -> list[dict[str, Any]]:
    """Each control of the figure: its axis ``name``, ``label`` text and step ``labels``."""
    return page.evaluate(
        """(figId) => { const el = document.getElementById(figId + '-figure');
             const data = el.d2lFigure.data;
             return Array.from(el.querySelectorAll('input.d2l-control-input'), (inp, i) => ({
               name: inp.name, label: el.querySelector('label[for="' + inp.id + '"]').textContent,
               labels: data.values[i]})); }""",
        fig_id,
    )


def control_locator(page: Any, fig_id: str, i: int) -> Any:
    """The range input of control ``i``."""
    return page.locator(f"#{fig_id}-figure input.d2l-control-input").nth(i)


def bring_into_view(locator: Any) -> None:
    """Scroll the element to the middle of the window and wait until it holds still, as
    a reader's eye does: the browser lays out a section it had skipped (book.css) at its
    real size only once the section is on screen, which can move what is in it."""
    held = locator.evaluate("""async (el) => {
      const frame = () => new Promise(done => requestAnimationFrame(() => done()));
      let last = '';
      for (let i = 0; i < 30; i++) {
        el.scrollIntoView({block: 'center'});
        await frame();
        await frame();
        const r = el.getBoundingClientRect(), now = [r.left, r.top, r.width].join();
        const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        if (now === last && hit !== null && (hit === el || el.contains(hit))) return true;
        last = now;
      }
      return false;
    }""")  # fmt: skip
    assert held, "the element did not come to rest in view"


def slider_step_points(page: Any, fig_id: str, slider: int) -> list[tuple[float, float]]:
    """Viewport coordinates of each step of control ``slider``: where its thumb's centre
    sits at that step. Brings the control into view first."""
    bring_into_view(control_locator(page, fig_id, slider))
    points = page.evaluate(
        """([figId, i]) => {
          const inp = document.querySelectorAll(
            '#' + figId + '-figure input.d2l-control-input')[i];
          const r = inp.getBoundingClientRect(), n = Number(inp.max) + 1;
          const thumb = 16, y = r.top + r.height / 2;  // Chromium's thumb, 16 px across
          return Array.from({length: n}, (_, j) =>
            [r.left + thumb / 2 + (n > 1 ? j * (r.width - thumb) / (n - 1) : 0), y]);
        }""",
        [fig_id, slider],
    )
    return [(float(x), float(y)) for x, y in points]


def _wait_step(page: Any, fig_id: str, slider: int, step: int, timeout_ms: float) -> None:
    page.wait_for_function(
        f"([figId, i, j]) => ({_STEPS})(figId)[i] === j",
        arg=[fig_id, slider, step],
        timeout=timeout_ms,
    )
    page.wait_for_timeout(50)  # the figure redraws right after the input event


def move_slider(page: Any, fig_id: str, slider: int, step: int, timeout_ms: float = 5_000) -> None:
    """Click control ``slider`` at step ``step`` (as a reader would) and wait until the
    control is there."""
    x, y = slider_step_points(page, fig_id, slider)[step]
    page.mouse.click(x, y)
    _wait_step(page, fig_id, slider, step, timeout_ms)


def drag_slider(
    page: Any, fig_id: str, slider: int, to_step: int, timeout_ms: float = 5_000
) -> None:
    """Drag control ``slider``'s thumb from where it is to step ``to_step``, in small
    mouse moves, as a reader would."""
    points = slider_step_points(page, fig_id, slider)
    start = page.evaluate(f"([figId, i]) => ({_STEPS})(figId)[i]", [fig_id, slider])
    (x0, y), (x1, _) = points[start], points[to_step]
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=20)
    page.mouse.up()
    _wait_step(page, fig_id, slider, to_step, timeout_ms)


def press_key(page: Any, fig_id: str, slider: int, key: str) -> None:
    """Focus control ``slider`` and press ``key`` ("ArrowRight", "Home", ...)."""
    control_locator(page, fig_id, slider).focus()
    page.keyboard.press(key)
    page.wait_for_timeout(50)


def figure_state(page: Any, fig_id: str) -> dict[str, Any]:
    """What the figure shows now.

    Returns a dict with ``config`` (axis name -> the selected step's label, from the
    controls), ``actives`` (each control's step index), ``valuetexts`` (each control's
    ``aria-valuetext``), ``traces`` (how many the figure has, every configuration's),
    ``visible`` (for each visible trace: its ``index`` among all of them, ``name``,
    ``type``, ``y`` data and ``z`` rows, ``None`` without), ``annotations`` (for each
    annotation in layout order: its ``name``, whether it is ``visible`` and its ``text``
    as rendered; the panels' marks are named ``"diverged"``), ``readout`` (the live
    region's text) and ``hash`` (the page's URL hash).
    """
    return page.evaluate(
        """(figId) => {
          const gd = document.getElementById(figId);
          const el = document.getElementById(figId + '-figure');
          const inputs = Array.from(el.querySelectorAll('input.d2l-control-input'));
          const data = el.d2lFigure.data, config = {};
          inputs.forEach((inp, i) => { config[inp.name] = data.values[i][Number(inp.value)]; });
          const visible = [];
          // The "sliders" kind gives plotly only the selected configuration's traces;
          // the others wait in gd.d2lTraces.
          const first = gd.d2lTraces ? gd.d2lShown * gd.data.length : 0;
          gd.data.forEach((t, j) => {
            if (t.visible === true || t.visible === undefined) {
              visible.push({index: first + j, name: t.name, type: t.type || 'scatter',
                            y: Array.from(t.y || []),
                            z: t.z ? Array.from(t.z, row => Array.from(row)) : null});
            }
          });
          const annotations = (gd._fullLayout.annotations || []).map((a, i) => {
            const q = '.annotation[data-index="' + i + '"] .annotation-text';
            const node = gd.querySelector(q);
            return {name: a.name || null, visible: a.visible !== false && !!node,
                    text: node ? node.textContent : ''};
          });
          return {config: config, actives: inputs.map(i => Number(i.value)),
                  valuetexts: inputs.map(i => i.getAttribute('aria-valuetext')),
                  traces: (gd.d2lTraces || gd.data).length, visible: visible,
                  annotations: annotations,
                  readout: el.querySelector('.d2l-readout').textContent,
                  hash: window.location.hash};
        }""",
        fig_id,
    )


def readout(page: Any, fig_id: str) -> str:
    """The readout's text as rendered (the configuration and its numbers)."""
    return page.evaluate(
        "(id) => document.getElementById(id + '-figure').querySelector('.d2l-readout')"
        ".textContent", fig_id)  # fmt: skip


def diverged_marks(page: Any, fig_id: str) -> list[str]:
    """The texts of the visible "diverged" marks in the panels (empty when none)."""
    return [a["text"] for a in figure_state(page, fig_id)["annotations"]
            if a["name"] == "diverged" and a["visible"]]  # fmt: skip


def draw_everything(page: Any, timeout_ms: float = 30_000) -> None:
    """Go to each figure in turn until it is drawn (a figure may draw only when it comes
    near the window), wait for the math to be typeset and the tab stops set, then go
    back to the top."""
    figures = page.locator(".plotly-graph-div")
    for i in range(figures.count()):
        figures.nth(i).evaluate("gd => gd.scrollIntoView({block: 'center'})")
        figures.nth(i).locator("svg.main-svg").first.wait_for(state="attached",
                                                              timeout=timeout_ms)
    page.evaluate("scrollTo(0, document.documentElement.scrollHeight)")
    if page.locator(".math").count():
        page.wait_for_selector("mjx-container", timeout=timeout_ms)
    wait_for_math(page)
    page.wait_for_function(TAB_STOPS_SET, timeout=timeout_ms)
    page.evaluate("scrollTo(0, 0)")


def open_offline(browser, url: str, problems: list[str], *, width: int = 1280,
                 height: int = 900, color_scheme: str = "light"):  # fmt: skip
    """Open ``url`` in a fresh page (a window ``width`` x ``height``, in the light or
    dark colour scheme) whose requests beyond the local site are refused and recorded;
    console errors and failed requests go into ``problems``."""
    page = browser.new_page(viewport={"width": width, "height": height},
                            color_scheme=color_scheme)  # fmt: skip
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
    """Median milliseconds of a redraw after moving control ``slider`` of the figure
    (timed in the page with ``performance.now()`` around the input event, up to the next
    frame), and of plotly's own redraw of the same first trace: the floor on this machine."""
    redraw, floor = page.evaluate(
        """async ([id, slider, repeats]) => { const gd = document.getElementById(id);
             const inp = document.querySelectorAll(
               '#' + id + '-figure input.d2l-control-input')[slider];
             const frame = () => new Promise(r => requestAnimationFrame(() => r()));
             const redraw = [], floor = [];
             const steps = Math.min(3, Number(inp.max) + 1);
             for (let j = 0; j < repeats; j++) {
               let t0 = performance.now();
               inp.value = String(j % steps);
               inp.dispatchEvent(new Event('input', {bubbles: true}));
               await frame();
               redraw.push(performance.now() - t0);
               t0 = performance.now();
               const t = gd.data[0];
               Plotly.restyle(gd, t.z ? {z: [t.z]} : {y: [t.y]}, [0]);
               await frame();
               floor.push(performance.now() - t0);
             }
             const median = xs => xs.slice().sort((a, b) => a - b)[xs.length >> 1];
             return [median(redraw), median(floor)]; }""",
        [fig_id, slider, repeats],
    )
    return float(redraw), float(floor)
