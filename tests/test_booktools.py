"""booktools' shared pieces: the one reader of the table of contents, the test build's
report of what a stopped build was waiting for, and the one notebook runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from booktools import notebooks, test_build, toc

from .conftest import ROOT


def test_toc_lists_every_page_in_reading_order(tmp_path: Path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\n"
        "parts:\n"
        "  - caption: One\n    chapters:\n"
        "      - file: chapters/a\n        sections:\n          - file: chapters/a_more\n"
        "      - file: notes\n"
        "  - caption: Two\n    chapters:\n      - file: chapters/b\n"
    )  # fmt: skip
    assert toc.pages(tmp_path) == ["intro", "chapters/a", "chapters/a_more", "notes",
                                   "chapters/b"]  # fmt: skip
    assert toc.chapters(tmp_path) == ["chapters/a", "chapters/a_more", "chapters/b"]


def test_the_books_own_toc_starts_at_the_intro_and_ends_with_the_references():
    pages = toc.pages(ROOT)
    assert pages[0] == "intro" and pages[-1] == "references"
    assert all((ROOT / f"{page}.md").is_file() for page in pages)


@pytest.mark.parametrize("text", ["chapters: [", "- file: a\n"])
def test_a_broken_toc_is_a_clear_error(tmp_path: Path, text: str):
    (tmp_path / "_toc.yml").write_text(text)
    with pytest.raises(ValueError, match="_toc.yml"):
        toc.pages(tmp_path)


LOG = """\
\x1b[01mmyst-nb v1.4.0:\x1b[39;49;00m NbParserConfig(...)
executing 3 pages, 2 at a time (1 thread(s) each): chapters/fine_tuning, chapters/attention, chapters/data_operations
executed chapters/attention in 41.0 s
"""  # noqa: E501


def test_a_stopped_build_names_the_pages_it_was_executing():
    assert test_build.waiting_for(LOG.splitlines()) == (
        "executing chapters/fine_tuning, chapters/data_operations")
    failed = LOG + "chapters/fine_tuning failed in parallel execution (boom); it runs again\n"
    assert test_build.waiting_for(failed.splitlines()) == "executing chapters/data_operations"
    reading = LOG + ("executed chapters/fine_tuning in 9.0 s\n"
                     "executed chapters/data_operations in 2.0 s\n"
                     "parallel execution: 3 of 3 pages in 52.0 s\n"
                     "\x1b[01mreading sources... \x1b[39;49;00m[ 50%] "
                     "\x1b[35mchapters/optimization\x1b[39;49;00m\n")  # fmt: skip
    assert test_build.waiting_for(reading.splitlines()) == (
        "reading (and executing) chapters/optimization")
    assert test_build.waiting_for([]) == "its first output"


def test_a_build_past_its_limit_is_stopped_and_says_what_it_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    # A stand-in for jupyter-book that starts executing two pages and then hangs.
    script = ("import time\n"
              "print('executing 2 pages, 2 at a time (1 thread(s) each): a, b', flush=True)\n"
              "print('executed b in 0.1 s', flush=True)\n"
              "time.sleep(60)\n")  # fmt: skip
    monkeypatch.setattr(test_build, "command", lambda out, source: [sys.executable, "-c", script])
    assert test_build.build(tmp_path, limit_s=1.5) == 1
    err = capsys.readouterr().err
    assert "stopped after" in err and "waiting for: executing a" in err, err
    log = (tmp_path / "_build" / "build.log").read_text()
    assert "executed b in 0.1 s" in log and "waiting for: executing a" in log


# The one notebook runner (it starts Jupyter kernels: the book stage)


def _notebook(*sources: str) -> Any:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


@pytest.mark.book
def test_a_notebook_runs_in_its_folder_cell_by_cell(tmp_path: Path):
    started: list[int] = []
    nb = _notebook("import os\nprint(os.getcwd())", "x = 6 * 7", "print(x)")
    result = notebooks.execute(nb, cwd=tmp_path, timeout=60,
                               on_cell=lambda cell, cell_index: started.append(cell_index))
    assert result.failure is None and result.seconds > 0
    assert started == [0, 1, 2]
    assert nb.cells[0].outputs[0]["text"].strip() == str(tmp_path)
    assert nb.cells[2].outputs[0]["text"].strip() == "42"


@pytest.mark.book
def test_a_failing_cell_ends_the_run_with_its_traceback(tmp_path: Path):
    nb = _notebook("print('before')", "raise ValueError('broken on purpose')", "print('after')")
    result = notebooks.execute(nb, cwd=tmp_path, timeout=60)
    assert result.failure is not None and "broken on purpose" in result.failure
    assert nb.cells[0].outputs and not nb.cells[2].outputs
    # The notebook's own execution metadata lets it go on, as in jupyter-cache.
    nb = _notebook("raise ValueError('shown, not fatal')", "print('after')")
    nb.metadata["execution"] = {"allow_errors": True}
    assert notebooks.execute(nb, cwd=tmp_path, timeout=60).failure is None
    assert nb.cells[1].outputs[0]["text"].strip() == "after"


@pytest.mark.book
def test_the_runner_runs_a_page_from_the_command_line(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("---\njupytext:\n  text_representation:\n    format_name: myst\n"
                    "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
                    "# A page\n\n```{code-cell} ipython3\nprint(2 + 2)\n```\n")  # fmt: skip
    out = tmp_path / "page.ipynb"
    ok = subprocess.run([sys.executable, "-m", "booktools.notebooks", str(page), "--out",
                         str(out)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["failure"] is None
    assert "4" in out.read_text()
    page.write_text(page.read_text().replace("print(2 + 2)", "1 / 0"))
    bad = subprocess.run([sys.executable, "-m", "booktools.notebooks", str(page)], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "ZeroDivisionError" in json.loads(bad.stdout)["failure"]
