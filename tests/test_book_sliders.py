"""Every slider figure on every built page, driven in headless Chromium like a reader
would: each control through every position, alone and in combination, the keyboard
reaching and moving every control of every figure, and links that carry a configuration
in the URL hash. Offline: requests beyond the local site fail the test (see
``open_offline``)."""

from __future__ import annotations

import functools
import http.server
import itertools
import math
import random
import re
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from .browser_helpers import (
    controls,
    figure_state,
    move_slider,
    open_offline,
    readout,
    redraw_times,
    slider_figure_ids,
    wait_for_plots,
)
from .conftest import toc_pages

pytestmark = pytest.mark.browser

SLIDER_MARK = 'data-d2l-kind="sliders"'  # each slider figure's <figure> element
PLAYGROUND_MARK = 'data-d2l-kind="playground"'  # the MLP playground's
#: What encodeURIComponent leaves as it is, besides letters and digits.
URI_SAFE = "-_.!~*'()"


def slider_pages(built_book: Path) -> list[str]:
    return [p for p in toc_pages() if SLIDER_MARK in (built_book / f"{p}.html").read_text()]


def _open_slider_page(browser, url: str, problems: list[str]):
    """Open a page offline, wait for its figures; return it and its slider figures' ids
    (the figures of d2lcore.sliders; the MLP playground, another kind of figure, has a
    test of its own)."""
    page = open_offline(browser, url, problems)
    wait_for_plots(page)
    return page, slider_figure_ids(page)


def _sliders(page, fig_id: str) -> list[dict]:
    """Each control of the figure: its axis ``name`` and step ``labels``."""
    return controls(page, fig_id)


def hash_part(sliders: list[dict], actives: list[int]) -> str:
    """The address's part for a selection, each value escaped as figure.js escapes it
    (encodeURIComponent: a value may hold a space or a comma, the separator)."""
    return ",".join(f"{quote(s['name'], safe=URI_SAFE)}={quote(s['labels'][a], safe=URI_SAFE)}"
                    for s, a in zip(sliders, actives, strict=True))  # fmt: skip


def _check_shows(page, fig_id: str, sliders: list[dict], actives: list[int],
                 *, in_hash: bool = True) -> str:
    """Assert the figure shows exactly the configuration the sliders select; return the
    readout text."""
    state = figure_state(page, fig_id)
    assert state["actives"] == actives
    sizes = [len(s["labels"]) for s in sliders]
    per_config = state["traces"] // math.prod(sizes)
    # Plotly holds the selected configuration's traces only (figure.js).
    assert page.evaluate("(id) => document.getElementById(id).data.length", fig_id) == per_config
    k = 0
    for size, a in zip(sizes, actives, strict=True):
        k = k * size + a  # itertools.product order: the last axis varies fastest
    shown = [t["index"] for t in state["visible"]]
    assert shown == list(range(k * per_config, (k + 1) * per_config)), (actives, shown)
    text = readout(page, fig_id)
    for s, a in zip(sliders, actives, strict=True):
        assert s["labels"][a] in text, f"readout {text!r} lacks {s['name']}={s['labels'][a]}"
    if in_hash:  # the selection is mirrored into the address
        part = hash_part(sliders, actives)
        assert f"{fig_id}:{part}" in state["hash"], state["hash"]
    return text


def test_some_page_has_slider_figures(built_book: Path):
    assert slider_pages(built_book), "no built page has a slider figure"


def _check_every_slider(browser, site: str, page_name: str) -> None:
    """Every slider figure of a page: each control through every position, alone and in
    combination, showing exactly the selected configuration with its own readout."""
    problems: list[str] = []
    page, fig_ids = _open_slider_page(browser, f"{site}/{page_name}.html", problems)
    rng = random.Random(0)
    for fig_id in fig_ids:
        sliders = _sliders(page, fig_id)
        actives = figure_state(page, fig_id)["actives"]
        readouts = {tuple(actives): _check_shows(page, fig_id, sliders, actives, in_hash=False)}
        # Each control alone, through every position.
        moved = False  # the address holds a selection once the reader has made one
        for i, s in enumerate(sliders):
            for j in range(len(s["labels"])):
                if actives[i] != j:
                    move_slider(page, fig_id, i, j)
                    actives[i], moved = j, True
                readouts[tuple(actives)] = _check_shows(page, fig_id, sliders, actives,
                                                        in_hash=moved)
        # In combination: every configuration when there are few, a sample otherwise,
        # each reached by moving the controls in a random order.
        combos = list(itertools.product(*[range(len(s["labels"])) for s in sliders]))
        if len(combos) > 40:
            combos = rng.sample(combos, 40)
        for combo in combos:
            order = list(range(len(sliders)))
            rng.shuffle(order)
            for i in order:
                if actives[i] != combo[i]:
                    move_slider(page, fig_id, i, combo[i])
                    actives[i] = combo[i]
            readouts[tuple(actives)] = _check_shows(page, fig_id, sliders, actives)
        # Every configuration visited showed a readout of its own.
        assert len(set(readouts.values())) == len(readouts) > 1
    _check_keyboard(page, slider_figure_ids(page) + slider_figure_ids(page, "playground"))
    page.close()
    assert not problems, "\n".join(problems)


_KEYBOARD_STATE = """(id) => { const el = document.getElementById(id + '-figure');
  const gd = document.getElementById(id), s = gd.d2lShown;
  const inputs = Array.from(el.querySelectorAll('input.d2l-control-input'));
  return {focused: document.activeElement.id, ids: inputs.map(i => i.id),
          steps: inputs.map(i => Number(i.value)), max: inputs.map(i => Number(i.max)),
          valuetexts: inputs.map(i => i.getAttribute('aria-valuetext')),
          values: el.d2lFigure.data.values,
          readout: el.querySelector('[role="status"][aria-live="polite"]').textContent,
          shown: JSON.stringify(s && typeof s === 'object' ? s.actives : s)}; }"""


def _check_keyboard(page, fig_ids: list[str]) -> None:
    """Tab to each control of each figure (from the figure's caption, where a reader
    clicking the text starts Tab's way), and move it one key press (ArrowRight, or Home
    at its end): the value in words, the live readout and the figure follow."""
    for fig_id in fig_ids:
        figure = page.locator(f"#{fig_id}-figure")
        start = figure.locator(".d2l-figure-caption, .d2l-figure-title").first
        start.click()
        state = page.evaluate(_KEYBOARD_STATE, fig_id)
        for i, control in enumerate(state["ids"]):
            page.keyboard.press("Tab")
            before = page.evaluate(_KEYBOARD_STATE, fig_id)
            assert before["focused"] == control, f"Tab reached {before['focused']!r}, not {control}"
            key, step = (("ArrowRight", before["steps"][i] + 1)
                         if before["steps"][i] < before["max"][i] else ("Home", 0))
            page.keyboard.press(key)
            page.wait_for_function(
                "([id, i, j]) => Number(document.getElementById(id + '-control-' + i).value)"
                " === j",
                arg=[fig_id, i, step], timeout=5_000,
            )  # fmt: skip
            page.wait_for_timeout(50)  # the figure redraws right after the input event
            after = page.evaluate(_KEYBOARD_STATE, fig_id)
            what = f"{fig_id} control {i} ({key})"
            assert after["focused"] == control, what
            assert after["valuetexts"][i] == after["values"][i][step], what
            assert after["readout"] != before["readout"], f"{what}: the readout stayed"
            assert after["shown"] != before["shown"], f"{what}: the figure stayed"


@pytest.mark.parametrize("page_name", toc_pages())
def test_every_slider_moves_the_figure(browser, site: str, built_book: Path, page_name: str):
    if SLIDER_MARK not in (built_book / f"{page_name}.html").read_text():
        pytest.skip("no slider figure on this page")
    _check_every_slider(browser, site, page_name)


@pytest.mark.parametrize("page_name", toc_pages())
def test_a_link_with_a_configuration_opens_on_it(browser, site: str, built_book: Path,
                                                 page_name: str):
    if SLIDER_MARK not in (built_book / f"{page_name}.html").read_text():
        pytest.skip("no slider figure on this page")
    problems: list[str] = []
    page, fig_ids = _open_slider_page(browser, f"{site}/{page_name}.html", problems)
    fig_id = fig_ids[0]
    sliders = _sliders(page, fig_id)
    default = figure_state(page, fig_id)["actives"]
    # The last value of every axis: a configuration other than the default.
    target = [len(s["labels"]) - 1 for s in sliders]
    assert target != default
    part = hash_part(sliders, target)
    page.close()
    page = open_offline(browser, f"{site}/{page_name}.html#{fig_id}:{part}", problems)
    wait_for_plots(page)
    page.wait_for_function(
        "([id, t]) => JSON.stringify(Array.from(document.querySelectorAll("
        "'#' + id + '-figure input.d2l-control-input'), i => Number(i.value)))"
        " === JSON.stringify(t)",
        arg=[fig_id, target],
        timeout=5_000,
    )
    _check_shows(page, fig_id, sliders, target)
    page.close()
    assert not problems, "\n".join(problems)


SLIDERS_PAGE = """\
import plotly.graph_objects as go
from d2lcore.plotting import use_book_renderer
from d2lcore.sliders import trace_slider_figure

use_book_renderer()
axes = {"lr": [0.1, 1.0], "seed": [0, 1]}
sets = [[go.Heatmap(z=[[k, k + 1], [k + 2, k + 3]]), go.Scatter(y=[k, 1, 2], name="loss")]
        for k in range(4)]
display(trace_slider_figure(axes, sets, title="Map and loss", panels=(1, 2),
                            trace_panels=[(1, 1), (1, 2)], xaxis_title=["x", "epoch"],
                            yaxis_title=["y", "loss"], readouts=[f"case {k}" for k in range(4)],
                            fixed_ranges=True))
trace_slider_figure({"a": [1, 2]}, [[go.Scatter(y=[1, 2])], [go.Scatter(y=[3, 1])]],
                    title="Second", xaxis_title="x", yaxis_title="y")"""


def test_a_built_page_loads_the_figure_script_once(tmp_path: Path, browser):
    """A one-page book with two slider figures: figure.js and figure.css are served from
    the site, loaded once (the script after plotly.js), the figures' inline copies are
    gone, and the page passes the checks every built page with slider figures gets."""
    from d2lcore.figure_page import FIGURE_CSS, FIGURE_JS, program

    from .conftest import build_book
    from .test_book import tiny_book

    book = tiny_book(tmp_path, "Slider figures", SLIDERS_PAGE)
    result = build_book(book, output=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    html_dir = tmp_path / "_build" / "html"
    page_html = (html_dir / "index.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page_html)
    assert scripts.count("_static/vendor/d2l-figure.js") == 1
    assert "_static/vendor/d2l-playground.js" not in scripts  # no playground here
    assert scripts.index("_static/vendor/plotly.min.js") < scripts.index(
        "_static/vendor/d2l-figure.js")  # fmt: skip
    sheets = re.findall(r'<link[^>]+href="([^"]+)"', page_html)
    assert sheets.count("_static/vendor/d2l-figure.css") == 1
    assert page_html.count(SLIDER_MARK) == 2
    assert program(FIGURE_JS) not in page_html and program(FIGURE_CSS) not in page_html
    for served, path in [("d2l-figure.js", FIGURE_JS), ("d2l-figure.css", FIGURE_CSS)]:
        assert (html_dir / "_static" / "vendor" / served).read_text() == path.read_text()

    handler = functools.partial(_Quiet, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        problems: list[str] = []
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        page, (first, second) = _open_slider_page(browser, url, problems)
        move_slider(page, first, 0, 1)
        move_slider(page, first, 1, 1)
        state = figure_state(page, first)
        assert [(t["index"], t["type"]) for t in state["visible"]] == [(6, "heatmap"),
                                                                        (7, "scatter")]
        assert state["visible"][0]["z"] == [[3, 4], [5, 6]]
        assert readout(page, first).endswith("case 3")
        move_slider(page, second, 0, 1)
        assert figure_state(page, second)["visible"][0]["y"] == [3, 1]
        page.close()
        assert not problems, "\n".join(problems)
        # What test_every_slider_moves_the_figure checks on every page of the book.
        _check_every_slider(browser, url.rsplit("/", 1)[0], "index")
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _playground_state(page, fig_id: str) -> dict:
    return page.evaluate(
        """(id) => { const gd = document.getElementById(id), s = gd.d2lShown;
             const el = document.getElementById(id + '-figure');
             const [boundary, points, loss] = gd.layout.images.map(im => im.source);
             return {actives: Array.from(el.querySelectorAll('input.d2l-control-input'),
                                         i => Number(i.value)),
                     z: JSON.stringify(s.z), points: JSON.stringify(s.points), loss: loss,
                     images: [boundary, points],
                     readout: el.querySelector('.d2l-readout').textContent}; }""",
        fig_id,
    )


def test_the_playground_follows_every_control(browser, site: str, built_book: Path):
    """Every control of the MLP playground through every position: the readout names the
    selected values and the figure's data change; the keyboard reaches and moves every
    control; a redraw stays within its budget."""
    pages = [p for p in toc_pages() if PLAYGROUND_MARK in (built_book / f"{p}.html").read_text()]
    assert pages, "no built page has the MLP playground"
    for name in pages:
        problems: list[str] = []
        page = open_offline(browser, f"{site}/{name}.html", problems)
        wait_for_plots(page)
        fig_ids = slider_figure_ids(page, "playground")
        assert fig_ids, f"{name}: the playground has no figure"
        attached = page.evaluate("(ids) => ids.every(id => document.getElementById(id)"
                                 ".classList.contains('d2l-playground'))", fig_ids)  # fmt: skip
        assert attached, f"{name}: the playground's page script did not attach"
        for fig_id in fig_ids:
            sliders = _sliders(page, fig_id)
            before = _playground_state(page, fig_id)
            for i, s in enumerate(sliders):
                for j, label in enumerate(s["labels"]):
                    if before["actives"][i] == j:
                        continue
                    move_slider(page, fig_id, i, j)
                    after = _playground_state(page, fig_id)
                    assert after["actives"][i] == j
                    shown = f"epoch {label}:" if s["name"] == "epoch" else label
                    assert shown in after["readout"], (s["name"], label, after["readout"])
                    changed = [k for k in ("z", "points", "loss") if after[k] != before[k]]
                    assert changed, f"moving {s['name']} to {label} changed no data"
                    if s["name"] == "dataset":
                        assert "points" in changed and after["images"][1] != before["images"][1]
                    if "z" in changed:  # the picture follows the numbers
                        assert after["images"][0] != before["images"][0]
                    before = after
            redraw, floor = redraw_times(page, fig_id, len(sliders) - 1, 11)
            # The budget is 100 ms; where plotly's own redraw of the heat map takes longer
            # (a busy machine), the slider's redraw may not cost much more than that.
            assert redraw < max(100, 1.5 * floor + 20), (redraw, floor)
        _check_keyboard(page, fig_ids)
        page.close()
        assert not problems, "\n".join(problems)
