"""The book built on a bare GPU machine (booktools/gpu_book.py, booktools/gpu_wheels.py),
rehearsed on the CPU: the wheel lists hold what Jupyter Book needs, pinned; Babel is
slimmed to English; a small book builds with a wheel unpacked for its kernel and
``.vendor`` from a tarball, and writes its execution report; a machine that lacks a
module is told which."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from booktools import gpu_book, gpu_wheels, test_build

from .conftest import ROOT
from .test_book import tiny_book

#: Left out of the lists on purpose (gpu_book_wheels.txt says why), or the machine's own.
NOT_CARRIED = {"debugpy", "setuptools", "wheel", "packaging", "typing-extensions", "numpy",
               "torch"}  # fmt: skip


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(*roots: str) -> set[str]:
    """The installed distributions ``roots`` need, their requirements' requirements
    included (extras left out), as pip names them."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a conditional requirement this Python does not install
        seen.add(name)
        todo += [re.split(r"[ ;<>=!~\[(]", r)[0] for r in requires if "extra ==" not in r]
    return seen


def test_the_lists_carry_what_the_book_build_imports_pinned() -> None:
    carried = {canonical(n) for n in gpu_wheels.names(gpu_wheels.PAGE_LIST, gpu_wheels.BOOK_LIST)}
    needed = closure("jupyter-book", "sphinxcontrib-bibtex", "ipykernel", "plotly", "pandas")
    assert not needed - carried - NOT_CARRIED, "add these to booktools/gpu_book_wheels.txt"
    pins = gpu_wheels.pinned(gpu_wheels.names(gpu_wheels.BOOK_LIST))
    assert all("==" in p for p in pins), [p for p in pins if "==" not in p]
    assert len(gpu_wheels.names(gpu_wheels.PAGE_LIST, gpu_wheels.PAGE_LIST)) == len(
        gpu_wheels.names(gpu_wheels.PAGE_LIST))  # fmt: skip


def test_babel_is_slimmed_to_english(tmp_path: Path) -> None:
    wheel = tmp_path / "babel-2.18.0-py3-none-any.whl"
    kept = ["babel/__init__.py", "babel/locale-data/root.dat", "babel/locale-data/en.dat",
            "babel/locale-data/en_GB.dat", "babel-2.18.0.dist-info/RECORD"]  # fmt: skip
    dropped = ["babel/locale-data/de.dat", "babel/locale-data/fr_CA.dat",
               "babel/locale-data/ene.dat"]  # fmt: skip
    with zipfile.ZipFile(wheel, "w") as z:
        for name in kept + dropped:
            z.writestr(name, "x" * 1000)
    assert gpu_wheels.slim(wheel) > 0
    assert sorted(zipfile.ZipFile(wheel).namelist()) == sorted(kept)
    other = tmp_path / "pandas-1-py3-none-any.whl"
    other.write_bytes(wheel.read_bytes())
    assert gpu_wheels.slim(other) == 0


def test_a_machine_that_lacks_a_module_is_told_which(tmp_path: Path) -> None:
    assert gpu_book.missing_modules(("json", "no_such_module_x", "sphinxcontrib.nope")) == [
        "no_such_module_x", "sphinxcontrib.nope"]  # fmt: skip
    code = ("import booktools.gpu_book as g; g.BUILD_MODULES += ('no_such_module_x',); "
            f"raise SystemExit(g.main([{str(tmp_path / 'out')!r}, '--profile', 'cpu']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "no_such_module_x" in proc.stderr
    assert "make gpu-wheels" in proc.stderr
    report = json.loads((tmp_path / "out" / "gpu_book.json").read_text())
    assert report["missing"] == ["no_such_module_x"]


@pytest.mark.book  # builds a book: the book stage, not the unit suite
def test_rehearsal_builds_a_small_book_with_its_wheels_and_vendor(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "gpuprobe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("gpuprobe.py", "VALUE = 42\n")
        z.writestr("gpuprobe-1.0.dist-info/METADATA", "Name: gpuprobe\nVersion: 1.0\n")
    book = tiny_book(tmp_path, "On the device",
                     "import os, gpuprobe, d2lcore\n"
                     "print('probe', gpuprobe.VALUE, os.environ['D2L_PROFILE'], "
                     "d2lcore.get_device())")  # fmt: skip
    (book / ".vendor").unlink()  # it comes from the tarball instead
    vendor = tmp_path / "vendor.tar"
    with tarfile.open(vendor, "w") as tar:
        tar.add(ROOT / ".vendor", ".vendor")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "booktools.gpu_book", str(out), "--profile", "cpu",
         "--wheels", str(wheels), "--vendor", str(vendor), "--source", str(book),
         "--limit-min", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    html = book / "_build" / "gpu" / "_build" / "html"
    assert "probe 42 cpu cpu" in (html / "index.html").read_text()
    report = json.loads((out / "gpu_book.json").read_text())
    assert report["status"] == "built" and report["wheels"] == ["gpuprobe-1.0-py3-none-any.whl"]
    pages = json.loads((out / "exec_report.json").read_text())
    assert [p["succeeded"] for p in pages["pages"]] == [True], pages
    assert (html / "_exec_report.md").read_text() == (out / "exec_report.md").read_text()
    assert (out / "build.log").stat().st_size > 0


def test_jupyter_book_runs_without_its_script(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Unpacked from a wheel, Jupyter Book has no ``jupyter-book`` script beside Python:
    the build then runs its command-line entry point through ``python -c``."""
    real = sys.executable
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no script beside it
    cmd = test_build.command(None, tmp_path)
    assert cmd[:2] == [str(tmp_path / "python"), "-c"]
    assert cmd[3:] == ["build", str(tmp_path), "--all", "-W", "--keep-going"]
    proc = subprocess.run([real, "-c", cmd[2], "build", "--help"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "Convert your book's or page's content to HTML" in proc.stdout
