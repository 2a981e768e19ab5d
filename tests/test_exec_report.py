"""booktools/exec_report.py reads the execution times myst-nb records in a real (tiny) build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from .conftest import ROOT, build_book

PAGE = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# A small page

```{code-cell} ipython3
import time

time.sleep(0.2)
print(sum(range(10)))
```
"""


def make_book(folder: Path, execute_notebooks: str | None = None) -> Path:
    """The project's configuration with an intro and one small executed page."""
    book = folder / "book"
    book.mkdir()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    if execute_notebooks is not None:
        config["execute"]["execute_notebooks"] = execute_notebooks
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    shutil.copytree(ROOT / "booktools", book / "booktools")
    shutil.copy(ROOT / "references.bib", book / "references.bib")  # _config.yml names it
    (book / ".vendor").symlink_to(ROOT / ".vendor")
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: pages/small\n"
    )
    (book / "intro.md").write_text("# A tiny book\n\nOne page follows.\n")
    (book / "pages").mkdir()
    (book / "pages" / "small.md").write_text(PAGE)
    return book


def build(book: Path) -> None:
    result = build_book(book)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "booktools.exec_report", *args], cwd=ROOT,
                          capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.book  # builds a book: the book stage, not the unit suite
def test_report_lists_the_executed_page_then_the_cached_one(tmp_path, monkeypatch):
    # The project's own execution settings (jupyter-cache); the report and the builds
    # share a time zone that is not UTC, to check how cache times are read.
    monkeypatch.delenv("D2L_EXECUTE", raising=False)
    monkeypatch.setenv("TZ", "JST-9")
    monkeypatch.setenv("D2L_PROFILE", "gpu")
    book = make_book(tmp_path)
    build(book)
    md, js = tmp_path / "out" / "report.md", tmp_path / "out" / "report.json"
    first = report("--build", str(book / "_build"), "--markdown", str(md), "--json", str(js))
    assert first.returncode == 0, first.stderr

    data = read_json(js)
    assert [p["page"] for p in data["pages"]] == ["pages/small"]  # intro is not a notebook
    page = data["pages"][0]
    assert page["method"] == "executed" and page["succeeded"] is True
    assert 0.2 <= page["runtime_s"] < 120  # the cell sleeps 0.2 s
    assert data["total_runtime_s"] == page["runtime_s"] and data["failed"] == []
    assert data["execution_mode"] == yaml.safe_load((ROOT / "_config.yml").read_text())[
        "execute"]["execute_notebooks"]  # fmt: skip
    assert data["profile"] == "gpu"
    assert data["torch"] == torch.__version__
    assert data["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    finished = datetime.fromisoformat(page["finished"])
    assert abs((datetime.now(UTC) - finished).total_seconds()) < 600

    assert first.stdout == md.read_text()
    row = next(line for line in first.stdout.splitlines() if line.startswith("| pages/small"))
    assert row == f"| pages/small | executed | {page['runtime_s']:.2f} | yes |"
    assert "- profile: `gpu`" in first.stdout
    assert f"**{page['runtime_s']:.2f}**" in first.stdout  # the total

    if data["execution_mode"] != "cache":
        return
    build(book)  # --all rereads the page; its cells are unchanged, so the cache serves it
    second = report("--build", str(book / "_build"), "--quiet", "--json", str(tmp_path / "2.json"))
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""  # --quiet
    (cached,) = read_json(tmp_path / "2.json")["pages"]
    assert cached["method"] == "cached"
    # A cache hit reports the execution that filled the cache: its runtime and its time.
    assert cached["runtime_s"] == pytest.approx(page["runtime_s"])
    assert abs((datetime.fromisoformat(cached["finished"]) - finished).total_seconds()) < 5


def test_no_build_is_a_clear_error(tmp_path: Path):
    result = report("--build", str(tmp_path / "_build"))
    assert result.returncode == 2
    assert "no book build found" in result.stderr
    assert "environment.pickle does not exist" in result.stderr
    assert "make book" in result.stderr
