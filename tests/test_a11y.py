"""Every built page against axe-core's WCAG 2.1 A and AA rules in headless Chromium: no
critical and no serious violation, with every figure drawn and the math typeset.

axe-core is unpacked from the npm registry into ``.vendor/`` by ``make vendor`` (the
Makefile's AXE_VERSION) and injected into the page from that file, so nothing is fetched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .browser_helpers import draw_everything, open_offline
from .conftest import ROOT, toc_pages

pytestmark = pytest.mark.browser

#: WCAG 2.0 and 2.1, levels A and AA.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
#: What fails a page.
FAILING_IMPACTS = ("critical", "serious")
#: The book's pages, and the theme's own that a reader reaches (the search results).
PAGES = [*toc_pages(), "search", "genindex"]


def axe_script() -> Path:
    """The vendored ``axe.min.js`` (the version the Makefile pins)."""
    version = re.search(r"^AXE_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert version, "the Makefile pins no AXE_VERSION"
    script = ROOT / ".vendor" / f"axe-core-{version[1]}" / "axe.min.js"
    if not script.is_file():
        pytest.fail(f"axe-core {version[1]} is missing from {script.parent}: run `make vendor` "
                    "(it unpacks the npm package axe-core)", pytrace=False)  # fmt: skip
    return script


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations of ``AXE_TAGS`` on the page as it is: each with its ``id``,
    ``impact``, ``help``, ``helpUrl`` and ``nodes`` (each node's CSS ``target``)."""
    page.add_script_tag(path=str(axe_script()))
    return page.evaluate(
        """async (tags) => {
          const result = await axe.run(document, {runOnly: {type: 'tag', values: tags},
                                                  resultTypes: ['violations']});
          return result.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            nodes: v.nodes.map(n => ({target: n.target.join(' '), impact: n.impact}))}));
        }""",
        AXE_TAGS,
    )


def describe(violations: list[dict[str, Any]], nodes: int = 3) -> str:
    """One line a violation (impact, id, help, how many nodes), then its first nodes."""
    lines = []
    for v in violations:
        lines.append(f"{v['impact']}: {v['id']}: {v['help']} ({len(v['nodes'])} nodes; "
                     f"{v['helpUrl']})")  # fmt: skip
        lines += [f"    {n['target']}" for n in v["nodes"][:nodes]]
    return "\n".join(lines)


@pytest.mark.parametrize("reader", ["desktop", "phone"])
@pytest.mark.parametrize("page_name", PAGES)
def test_every_page_has_no_serious_accessibility_violation(browser, site: str, page_name: str,
                                                           reader: str):  # fmt: skip
    """On a desktop in the light theme, and on a phone (390 px) in the dark theme: the
    rules that depend on the layout (what is shown) and on the colours (contrast)."""
    problems: list[str] = []
    phone = {"width": 390, "height": 844, "color_scheme": "dark"} if reader == "phone" else {}
    page = open_offline(browser, f"{site}/{page_name}.html", problems, **phone)
    try:
        draw_everything(page)
        violations = axe_violations(page)
    finally:
        page.close()
    failing = [v for v in violations if v["impact"] in FAILING_IMPACTS]
    assert not failing, (f"{page_name} ({reader}): {len(failing)} critical or serious "
                         f"WCAG 2.1 A/AA violations (axe-core):\n{describe(failing)}")  # fmt: skip
    assert not problems, "\n".join(problems)
