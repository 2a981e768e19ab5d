"""The whole book builds with every cell executed, and a failing cell fails the build."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from booktools import exec_order, parallel_exec

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
    assert (built_book / "_static" / "vendor" / "d2l-figure.js").is_file()


def test_figure_pages_load_the_figure_script_once(built_book: Path):
    """Every page with an interactive figure loads figure.js once, after plotly.js, and
    keeps no inline copy of the program (the figure's own script is one attach call)."""
    pages = 0
    for page in toc_pages():
        html = (built_book / f"{page}.html").read_text()
        if 'class="d2l-figure"' not in html:
            continue
        pages += 1
        # Sphinx adds a cache-busting "?v=..." to each script's address.
        srcs = [s.split("?")[0] for s in re.findall(r'<script[^>]+src="([^"]+)"', html)]
        ours = [i for i, s in enumerate(srcs) if s.endswith("vendor/d2l-figure.js")]
        plotly_js = [i for i, s in enumerate(srcs) if s.endswith("vendor/plotly.min.js")]
        assert len(ours) == 1 and len(plotly_js) == 1 and plotly_js[0] < ours[0], (page, srcs)
        assert "root.d2lFigures = {" not in html, f"{page} inlines the figure program"
    assert pages >= 8


def tiny_book(folder: Path, title: str, code: str) -> Path:
    """A one-page book with this repository's configuration and extensions."""
    book = folder / "book"
    book.mkdir()
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    shutil.copy(ROOT / "requirements.txt", book / "requirements.txt")
    shutil.copy(ROOT / "references.bib", book / "references.bib")  # _config.yml names it
    shutil.copytree(ROOT / "booktools", book / "booktools")
    (book / ".vendor").symlink_to(ROOT / ".vendor")
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "index.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n"
        "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
        f"# {title}\n\n```{{code-cell}} ipython3\n{code}\n```\n"
    )
    return book


def add_page(book: Path, name: str, title: str, code: str) -> None:
    """Another page in a :func:`tiny_book`, listed in its table of contents."""
    index = (book / "index.md").read_text()
    header = index[: index.index("# ")]
    cell = f"```{{code-cell}} ipython3\n{code}\n```\n"
    (book / f"{name}.md").write_text(f"{header}# {title}\n\n{cell}")
    toc = (book / "_toc.yml").read_text()
    if "chapters:" not in toc:
        toc += "chapters:\n"
    (book / "_toc.yml").write_text(toc + f"- file: {name}\n")


def _timed_page(runs: Path, name: str) -> str:
    """A cell that sleeps and appends "<name> <start> <end>" to ``runs``."""
    return ("import time\nstart = time.time()\ntime.sleep(3)\n"
            f"open({str(runs)!r}, 'a').write(f'{name} {{start}} {{time.time()}}\\n')\n"
            f"print('{name} done')")  # fmt: skip


def test_pages_execute_in_parallel_once_each_and_are_reported_as_executed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    """Three pages to execute, two at a time (booktools/parallel_exec.py): each runs once, two
    of them at the same time; the report says they were executed in this build, and the
    next build executes nothing and reports cache hits."""
    runs = tmp_path / "runs.txt"
    book = tiny_book(tmp_path, "Page index", _timed_page(runs, "index"))
    for name in ("a", "b"):
        add_page(book, name, f"Page {name}", _timed_page(runs, name))
    monkeypatch.delenv("D2L_EXECUTE", raising=False)
    monkeypatch.setenv("D2L_EXECUTE_JOBS", "2")

    def build() -> tuple[dict[str, tuple[float, float]], dict[str, str], str]:
        result = build_book(book, output=tmp_path)
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-3000:]
        found = [line.split() for line in runs.read_text().splitlines()]
        assert sorted(name for name, *_ in found) == ["a", "b", "index"], found  # once each
        report = subprocess.run(
            [sys.executable, "-m", "booktools.exec_report", "--build",
             str(tmp_path / "_build"), "--json", str(tmp_path / "report.json"), "--quiet"],
            cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert report.returncode == 0, report.stderr
        pages = json.loads((tmp_path / "report.json").read_text())["pages"]
        methods = {p["page"]: p["method"] for p in pages}
        return {name: (float(a), float(b)) for name, a, b in found}, methods, log

    def outputs(name: str) -> list[str]:
        """The text outputs of the page's notebook in jupyter_execute/ (the Colab
        notebooks are made from these)."""
        nb = json.loads((tmp_path / "_build" / "jupyter_execute" / f"{name}.ipynb").read_text())
        texts = [o.get("text", "") for c in nb["cells"] for o in c.get("outputs", [])]
        return ["".join(t) for t in texts]  # nbformat may store a text as its lines

    times, methods, log = build()
    assert "executing 3 pages, 2 at a time" in log
    assert methods == {"index": "executed", "a": "executed", "b": "executed"}
    spans = sorted(times.values())
    overlaps = [b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)]
    assert any(overlaps), f"no two pages ran at the same time: {spans}"
    assert all(outputs(name) == [f"{name} done\n"] for name in times)
    times_again, methods, log = build()
    assert times_again == times  # nothing ran again
    assert methods == {"index": "cached", "a": "cached", "b": "cached"}
    assert all(outputs(name) == [f"{name} done\n"] for name in times)  # from the cache


def test_a_page_that_fails_in_parallel_execution_fails_the_build_with_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    book = tiny_book(tmp_path, "A page that works", "print('fine')")
    add_page(book, "broken", "A page that fails",
             "raise ValueError('this cell is broken on purpose')")  # fmt: skip
    monkeypatch.setenv("D2L_EXECUTE_JOBS", "2")
    result = build_book(book, output=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "executing 2 pages, 2 at a time" in log
    assert "broken failed in parallel execution" in log
    assert "this cell is broken on purpose" in log  # myst-nb ran it again and reported it


def test_a_bad_number_of_jobs_is_refused_with_what_to_set(monkeypatch: pytest.MonkeyPatch):
    for bad in ("two", "0"):
        monkeypatch.setenv("D2L_EXECUTE_JOBS", bad)
        with pytest.raises(ValueError, match="D2L_EXECUTE_JOBS must be"):
            parallel_exec.default_jobs()
    monkeypatch.setenv("D2L_EXECUTE_JOBS", "3")
    assert parallel_exec.default_jobs() == 3
    monkeypatch.delenv("D2L_EXECUTE_JOBS")
    assert 1 <= parallel_exec.default_jobs() <= parallel_exec.MAX_DEFAULT_JOBS


def test_every_chapter_has_an_execution_time_for_the_order_of_execution():
    """booktools/exec_times.json orders the parallel execution: it names the chapters of the
    table of contents, and only them (a stale name would hide a missing one)."""
    chapters = {p for p in toc_pages() if p.startswith("chapters/")}
    seconds = exec_order.expected_seconds()
    assert set(seconds) == chapters
    assert all(s > 0 for s in seconds.values())


def test_a_cell_that_raises_fails_the_build(tmp_path: Path):
    book = tiny_book(tmp_path, "A page that fails",
                     "raise ValueError('this cell is broken on purpose')")
    result = build_book(book, output=tmp_path)
    assert result.returncode != 0
    assert "this cell is broken on purpose" in result.stdout + result.stderr


def test_a_citation_missing_from_the_bibliography_fails_the_build(tmp_path: Path):
    book = tiny_book(tmp_path, "A page that cites", "print('cited')")
    page = book / "index.md"
    page.write_text(page.read_text() + "\nAs {cite:t}`lecun1998gradient` and "
                    "{cite:p}`nobody1999missing` showed.\n\n```{bibliography}\n```\n")
    result = build_book(book, output=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert 'could not find bibtex key "nobody1999missing"' in log, log[-3000:]
    assert 'bibtex key "lecun1998gradient"' not in log  # the key that exists resolves


def test_execution_cache_reruns_a_page_only_when_something_changed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """Unchanged: the page's cell does not run again. Another build profile, or
    D2L_EXECUTE=force, runs it again (the cache does not key on them by itself)."""
    runs = tmp_path / "runs.txt"
    book = tiny_book(tmp_path, "A page that counts its runs",
                     f"open({str(runs)!r}, 'a').write('run\\n')")
    monkeypatch.delenv("D2L_PROFILE", raising=False)
    monkeypatch.delenv("D2L_EXECUTE", raising=False)

    def build_and_count() -> int:
        result = build_book(book, output=tmp_path)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return len(runs.read_text().splitlines())

    assert build_and_count() == 1
    assert build_and_count() == 1  # nothing changed: nothing executed
    monkeypatch.setenv("D2L_PROFILE", "gpu")
    assert build_and_count() == 2  # another profile: executed again
    assert build_and_count() == 2
    monkeypatch.setenv("D2L_EXECUTE", "force")
    assert build_and_count() == 3  # forced


def test_a_dead_worker_fails_over_only_its_own_page(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    """A page whose parallel-execution worker is killed (its kernel kills it, the first
    time only) runs again as Sphinx reads it, and the log says why; the other pages are
    executed once, in parallel, as before (a dead worker used to break the shared pool
    and send every page back to myst-nb)."""
    runs = tmp_path / "runs.txt"
    marker = tmp_path / "killed-once"
    killer = ("import os, signal, pathlib\n"
              f"marker = pathlib.Path({str(marker)!r})\n"
              f"open({str(runs)!r}, 'a').write('killer\\n')\n"
              "if not marker.exists():\n"
              "    marker.write_text('')\n"
              "    os.kill(os.getppid(), signal.SIGKILL)  # the kernel's parent: the worker\n"
              "print('killer survived')")  # fmt: skip
    book = tiny_book(tmp_path, "Page index", _timed_page(runs, "index"))
    add_page(book, "a", "Page a", _timed_page(runs, "a"))
    add_page(book, "killer", "Page killer", killer)
    monkeypatch.delenv("D2L_EXECUTE", raising=False)
    monkeypatch.setenv("D2L_EXECUTE_JOBS", "2")
    result = build_book(book, output=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert ("killer failed in parallel execution (its worker process died (killed, or out "
            "of memory))") in log, log[-3000:]
    names = [line.split()[0] for line in runs.read_text().splitlines()]
    assert sorted(names) == ["a", "index", "killer", "killer"], names
    assert "executed index in" in log and "executed a in" in log, log[-6000:]


@pytest.mark.parametrize("damage", ["truncated database", "missing record"])
def test_a_damaged_execution_cache_is_started_afresh(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, damage):
    """A cut-short ``global.db`` stopped every build with a raw database error, a record
    folder that is gone with a ``KeyError`` inside myst-nb: the build says the cache is
    damaged, empties it and executes the page again."""
    runs = tmp_path / "runs.txt"
    book = tiny_book(tmp_path, "A page that counts its runs",
                     f"open({str(runs)!r}, 'a').write('run\\n')")
    monkeypatch.delenv("D2L_EXECUTE", raising=False)
    first = build_book(book, output=tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    cache = tmp_path / "_build" / ".jupyter_cache"
    if damage == "truncated database":
        db = cache / "global.db"
        db.write_bytes(db.read_bytes()[:1000])
    else:
        [record] = (cache / "executed").iterdir()
        shutil.rmtree(record)
    second = build_book(book, output=tmp_path)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "emptying the execution cache (it is damaged: " in log, log[-3000:]
    assert len(runs.read_text().splitlines()) == 2  # executed again
    third = build_book(book, output=tmp_path)  # and the new cache serves the next build
    assert third.returncode == 0 and len(runs.read_text().splitlines()) == 2


def test_pages_start_longest_first_and_an_unmeasured_page_before_all():
    seconds = exec_order.expected_seconds()
    measured = sorted(seconds, key=seconds.__getitem__)  # shortest first
    assert exec_order.longest_first([*measured, "chapters/new_page"]) == [
        "chapters/new_page", *reversed(measured)]
