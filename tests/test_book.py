"""The whole book builds with every cell executed, and a failing cell fails the build."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, build_book, toc_pages

pytestmark = pytest.mark.book


def test_every_page_is_built_with_executed_outputs(built_book: Path):
    for page in toc_pages():
        html = (built_book / f"{page}.html").read_text()
        assert "Traceback" not in html, f"{page} shows a traceback"
        if page.startswith("chapters/"):
            outputs = re.findall(r'class="cell_output', html)
            assert len(outputs) >= 5, f"{page} has only {len(outputs)} cell outputs"


def test_no_cdn_assets_in_built_pages(built_book: Path):
    for page in toc_pages():
        html = (built_book / f"{page}.html").read_text()
        srcs = re.findall(r'<script[^>]+src="([^"]+)"', html)
        external = [s for s in srcs if s.startswith(("http:", "https:", "//"))]
        assert not external, f"{page} loads scripts from the network: {external}"
    assert (built_book / "_static" / "vendor" / "plotly.min.js").is_file()
    assert (built_book / "_static" / "vendor" / "mathjax" / "tex-chtml.js").is_file()


def test_a_cell_that_raises_fails_the_build(tmp_path: Path):
    book = tmp_path / "book"
    book.mkdir()
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    shutil.copytree(ROOT / "_ext", book / "_ext")
    (book / ".vendor").symlink_to(ROOT / ".vendor")
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "index.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n"
        "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
        "# A page that fails\n\n```{code-cell} ipython3\n"
        "raise ValueError('this cell is broken on purpose')\n```\n"
    )
    result = build_book(book, output=tmp_path)
    assert result.returncode != 0
    assert "this cell is broken on purpose" in result.stdout + result.stderr
