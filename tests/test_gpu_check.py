"""The GPU check (booktools/gpu_check.py), rehearsed on the CPU so it cannot rot between the
rare runs on a GPU: its reading of the pages equals jupytext's, and it runs end to end
with a tiny budget on a page subset, reporting passes, failures and what the budget cut."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from booktools import gpu_check

from .conftest import ROOT

PAGES = gpu_check.pages_in_toc()


def test_toc_pages_are_the_chapters() -> None:
    assert PAGES and all(p.is_file() for p in PAGES)
    assert {p.stem for p in PAGES} == {p.stem for p in (ROOT / "chapters").glob("*.md")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_cells_are_read_as_jupytext_reads_them(page: Path) -> None:
    ours = gpu_check.read_cells(page)
    theirs = [c for c in jupytext.read(page).cells if c.cell_type == "code"]
    assert [c.source for c in ours] == [c.source for c in theirs]
    assert [c.tags for c in ours] == [c.metadata.get("tags", []) for c in theirs]


@pytest.mark.book  # runs pages: the book stage, not the unit suite
def test_rehearsal_on_the_cpu(tmp_path: Path) -> None:
    """One real page passes, a page with a false assertion fails with its traceback,
    line and output (after a skip-execution cell, which is skipped, and a figure shown
    with no nbformat, as on a bare GPU machine), the two pages run at once and are
    reported in the order given, both benchmarks run at their smallest (d2lcore's side),
    and both report files are written."""
    bad = tmp_path / "bad_page.md"
    bad.write_text("# A page\n\n```{code-cell} ipython3\nx = 1\nprint('accuracy 0.5')\n```\n\n"
                   "```{code-cell} ipython3\n:tags: [skip-execution]\n\n"
                   "raise RuntimeError('a cell the build skips')\n```\n\n"
                   "```{code-cell} ipython3\nimport sys\nsys.modules['nbformat'] = None\n"
                   "import plotly.graph_objects as go\ngo.Figure(go.Scatter(y=[1, 2])).show()\n"
                   "```\n\n"
                   "text\n\n```{code-cell} ipython3\n:tags: [hide-input]\n\n"
                   "print('x is', x)\nassert x == 2, 'x is not 2'\n```\n")  # fmt: skip
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "booktools.gpu_check", str(out), "--profile", "cpu",
         "--pages", "data_operations", str(bad), "--budget-min", "5", "--quick-bench",
         "--jobs", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the bad page failed
    report = json.loads((out / "gpu_check.json").read_text())
    good, failed = report["pages"]
    assert good["page"] == "data_operations" and good["status"] == "passed"
    assert good["cells_done"] == good["cells"] == len(gpu_check.read_cells(PAGES[0]))
    # The skip-execution cell is skipped, as the book's build skips it.
    assert failed["status"] == "failed" and failed["cells_done"] == 3
    assert failed["error"]["type"] == "AssertionError" and failed["error"]["line"] == 27
    assert "x is not 2" in failed["error"]["traceback"]
    assert failed["error"]["stdout"] == "x is 1\n"
    assert report["jobs"] == 2
    assert failed["key_numbers"] == ["accuracy 0.5"]
    assert report["environment"]["device"] == "cpu" and report["profile"] == "cpu"
    benches = {b["benchmark"].split()[0]: b for b in report["benchmarks"]}
    assert set(benches) == {"benchmarks/bench_epoch.py", "benchmarks/bench_grid.py"}
    assert all(b["status"] == "passed" for b in benches.values()), benches
    assert "softmax 784-10" in benches["benchmarks/bench_epoch.py"]["output"]
    assert "speedup" in benches["benchmarks/bench_grid.py"]["output"]
    text = (out / "gpu_check.md").read_text()
    assert "| data_operations | passed |" in text and "AssertionError" in text
    assert "2 run 2 at a time" in text and "x is 1" in text


@pytest.mark.book  # runs pages: the book stage, not the unit suite
def test_budget_stops_cleanly(tmp_path: Path) -> None:
    slow = tmp_path / "slow_page.md"
    slow.write_text("```{code-cell} ipython3\nimport time\ntime.sleep(60)\n```\n")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "booktools.gpu_check", str(out), "--profile", "cpu",
         "--pages", str(slow), "data_operations", "--budget-min", "0.25", "--no-bench"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert [p["status"] for p in report["pages"]] == ["stopped by the budget"]
    assert report["not_reached"] == ["data_operations"]
    assert report["seconds"] < 30


def test_cells_know_their_lines_in_the_page() -> None:
    for page in PAGES[:2]:
        lines = page.read_text().splitlines()
        for cell in gpu_check.read_cells(page):
            if cell.source:
                assert lines[cell.first_line - 1] == cell.source.splitlines()[0]


def test_wheels_are_unpacked_only_where_missing(tmp_path: Path) -> None:
    """A bare machine gets what it lacks from the wheels; what it has stays its own."""
    import zipfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    contents = {"missing_mod_q7-1.0": {"missing_mod_q7/__init__.py": "X = 7\n"},
                "json-9.9": {"json/__init__.py": "raise ImportError\n"}}  # fmt: skip
    for dist, files in contents.items():
        with zipfile.ZipFile(wheels / f"{dist}-py3-none-any.whl", "w") as z:
            for name, text in files.items():
                z.writestr(name, text)
            z.writestr(f"{dist}.dist-info/METADATA", "Name: x\n")
    site = tmp_path / "site"
    assert gpu_check.unpack_wheels(wheels, site) == ["missing_mod_q7-1.0-py3-none-any.whl"]
    assert (site / "missing_mod_q7" / "__init__.py").is_file() and not (site / "json").exists()
