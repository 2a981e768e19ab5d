"""Run every chapter as a plain script on the device d2lcore picks, then the benchmarks,
within a time budget, and write a report: the GPU check.

Made for a bare GPU machine (Python with its own torch, no network, no Jupyter Book):
it needs only what the pages import. Pure-Python packages such a machine lacks travel as
wheels (``make gpu-wheels`` fetches them into ``.gpu-wheels/``) and are unpacked into a
temporary folder with ``--wheels``. Each page runs in a fresh interpreter, in the
chapters' folder, cell by cell (its MyST code cells read as jupytext reads them), with
the page's own assertions; each cell is timed.

    python -m booktools.gpu_check OUT [--profile gpu] [--budget-min 8] [--pages NAME ...]
                              [--jobs 1] [--wheels .gpu-wheels] [--no-bench] [--quick-bench]

OUT receives ``gpu_check.json`` and ``gpu_check.md``: the device, torch and CUDA
versions, each page's time, its slow (training) cells, the accuracies it printed, every
failure with its traceback, and what the budget left unreached. The exit status is 1 when
a page or benchmark failed, else 0 (a page the budget cut short is reported, not failed).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from booktools import exec_order, toc

ROOT = Path(__file__).resolve().parent.parent
#: A cell slower than this is listed with its time (the cells that train).
SLOW_CELL_S = 1.0
#: Benchmarks: (script, arguments, quick arguments for a rehearsal).
BENCHMARKS: tuple[tuple[str, list[str], list[str]], ...] = (
    ("benchmarks/bench_epoch.py", ["--epochs", "2"],
     ["--epochs", "1", "--models", "softmax", "--no-d2l"]),
    ("benchmarks/bench_grid.py", [],
     ["--models", "softmax", "--train-size", "2000", "--val-size", "500"]),
)
#: What the pages import beyond the standard library and torch.
PAGE_MODULES = ("numpy", "pandas", "plotly", "ipywidgets", "IPython", "torchvision", "d2l")


# ----------------------------------------------------------------------------------
# Pages as cells


@dataclass
class Cell:
    source: str
    line: int  # of the cell's fence in the page, 1-based
    tags: list[str] = field(default_factory=list)
    first_line: int = 0  # the page's line of the source's first line


#: Cells with this tag are not executed, as nbclient (the book's build) does not execute them.
SKIP_TAG = "skip-execution"

_FENCE = re.compile(r"^(`{3,})\{code-cell\}")


def read_cells(page: Path) -> list[Cell]:
    """The code cells of a MyST page, as jupytext reads them: the source between the
    ``{code-cell}`` fence and its closing fence, without the options (``:key: value``
    lines or a ``---`` block) that open the cell."""
    lines = page.read_text().splitlines()
    cells, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match.group(1), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        i += 1
        tags: list[str] = []
        if body and body[0].strip() == "---":  # a YAML block of options
            end = body.index("---", 1) if "---" in body[1:] else 0
            options, body = body[1:end], body[end + 1 :]
        else:
            n = 0
            while n < len(body) and re.match(r"^:[\w-]+:", body[n]):
                n += 1
            options, body = body[:n], body[n:]
        for option in options:
            if option.lstrip(": ").startswith("tags"):
                tags = re.findall(r"[\w-]+", option.split(":", 2)[-1])
        if body and not body[0].strip() and options:  # the blank line after options
            body = body[1:]
        first = i - 1 - len(body) + 1  # the closing fence is line i (1-based)
        cells.append(Cell("\n".join(body), start + 1, tags, first))
    return cells


def pages_in_toc(root: Path = ROOT) -> list[Path]:
    """The chapters' files, in the table of contents' order."""
    return [root / f"{name}.md" for name in toc.chapters(root)]


def figures_to_json() -> None:
    """A script has no front end to show a figure to: ``fig.show()`` serializes the
    figure (what a notebook's front end would receive) instead of asking for nbformat
    or a browser."""
    try:
        import plotly.basedatatypes
    except ImportError:  # the page reports the missing module itself
        return

    def show(self: Any, *args: Any, **kwargs: Any) -> None:
        self.to_json()

    plotly.basedatatypes.BaseFigure.show = show  # type: ignore[method-assign]


def run_page(page: Path, result_file: Path) -> int:
    """Execute ``page``'s cells in one namespace, timing each; after every cell, write
    what is known so far to ``result_file`` (a budget kill loses nothing)."""
    figures_to_json()
    os.chdir(page.parent)
    sys.path.insert(0, str(page.parent))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    cells = read_cells(page)
    result: dict[str, Any] = {"cells": len(cells), "done": 0, "cell_seconds": [],
                              "stdout": [], "error": None}  # fmt: skip
    for index, cell in enumerate(cells):
        out = io.StringIO()
        start = time.perf_counter()
        try:
            if SKIP_TAG not in cell.tags:  # the book's executor (nbclient) skips those
                # Line numbers of the page itself, so a traceback points into the page.
                tree = ast.increment_lineno(ast.parse(cell.source), cell.first_line - 1)
                with contextlib.redirect_stdout(out):
                    exec(compile(tree, str(page), "exec"), namespace)
        except BaseException as err:  # an assertion, an error, or an interrupt: report it
            frames = [f for f in traceback.extract_tb(err.__traceback__)
                      if f.filename == str(page)]  # fmt: skip
            result["error"] = {"cell": index, "line": frames[-1].lineno if frames else cell.line,
                               "type": type(err).__name__,
                               "traceback": traceback.format_exc()[-6000:],
                               "stdout": out.getvalue()[-3000:]}  # fmt: skip
        result["cell_seconds"].append(round(time.perf_counter() - start, 3))
        result["stdout"].append(out.getvalue()[-4000:])
        result["done"] = index + 1 if result["error"] is None else index
        result_file.write_text(json.dumps(result))
        if result["error"] is not None:
            return 1
    return 0


# ----------------------------------------------------------------------------------
# The check


def environment() -> dict[str, Any]:

    import torch

    import d2lcore

    device = d2lcore.get_device()
    return {
        "device": device.type,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),  # fmt: skip
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "missing_modules": [m for m in PAGE_MODULES if importlib.util.find_spec(m) is None],
    }


def unpack_wheels(folder: Path, into: Path) -> list[str]:
    """Unpack into ``into`` each wheel in ``folder`` whose modules this Python lacks (a
    wheel is a zip of the files to put on ``sys.path``: no pip needed); what the machine
    has already (its numpy, its IPython) is kept. Returns the wheels unpacked."""

    names = []
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            tops = {n.split("/")[0].removesuffix(".py") for n in z.namelist()
                    if not n.split("/")[0].endswith((".dist-info", ".data"))}  # fmt: skip
            if tops and all(importlib.util.find_spec(t) is not None for t in tops):
                continue
            z.extractall(into)
        names.append(wheel.name)
    return names


ACCURACY = re.compile(r"accura", re.IGNORECASE)


def key_numbers(stdout: list[str]) -> list[str]:
    """The printed lines that state an accuracy: the numbers the pages assert on."""
    lines = [line.strip() for text in stdout for line in text.splitlines()]
    return [line[:200] for line in lines if ACCURACY.search(line) and re.search(r"\d", line)][:12]


def check_page(page: Path, env: dict[str, str], seconds_left: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        result_file = Path(tmp) / "result.json"
        start = time.perf_counter()
        status = "passed"
        try:
            proc = subprocess.run([sys.executable, "-m", "booktools.gpu_check", "--run-page",
                                   str(page), "--result", str(result_file)],
                                  env=env, cwd=page.parent,
                                  capture_output=True, text=True,
                                  timeout=max(seconds_left, 1))  # fmt: skip
            if proc.returncode != 0:
                status = "failed"
        except subprocess.TimeoutExpired:
            status, proc = "stopped by the budget", None
        seconds = time.perf_counter() - start
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    cell_seconds = result.get("cell_seconds", [])
    cells = read_cells(page)
    report: dict[str, Any] = {
        "page": page.stem, "status": status, "seconds": round(seconds, 1),
        "cells_done": result.get("done", 0), "cells": len(cells),
        "slow_cells": [{"cell": i, "line": cells[i].line, "seconds": s}
                       for i, s in enumerate(cell_seconds) if s >= SLOW_CELL_S],
        "key_numbers": key_numbers(result.get("stdout", [])),
        "error": result.get("error"),
    }  # fmt: skip
    if status == "failed" and report["error"] is None and proc is not None:
        report["error"] = {"cell": None, "line": None, "type": "crash",
                           "traceback": (proc.stderr or proc.stdout)[-6000:]}  # fmt: skip
    return report


def check_pages(pages: list[Path], env: dict[str, str], budget: float, start: float,
                jobs: int) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """Check ``pages``, ``jobs`` at a time, the longest first (by the book's recorded
    execution times, ``booktools/exec_times.json``); a page that would start with under 5 s
    of the budget left is not reached. Returns the reports and the pages not reached,
    each in the order of ``pages``."""
    names = [f"chapters/{page.stem}" for page in pages]
    order = ([names.index(n) for n in exec_order.longest_first(names)] if jobs > 1
             else list(range(len(pages))))  # fmt: skip
    done: dict[int, dict[str, Any] | None] = {}

    def one(i: int) -> None:
        left = budget - (time.perf_counter() - start)
        done[i] = r = check_page(pages[i], env, left) if left >= 5 else None
        if r is not None:
            print(f"{r['page']}: {r['status']}, {r['seconds']:.1f} s, "
                  f"{r['cells_done']}/{r['cells']} cells", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, i) for i in order]:
            future.result()
    reports = [r for i in range(len(pages)) if (r := done[i]) is not None]
    return reports, [pages[i].stem for i in range(len(pages)) if done[i] is None]


def check_benchmark(script: str, args: list[str], env: dict[str, str],
                    seconds_left: float) -> dict[str, Any]:  # fmt: skip
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(ROOT / script), *args], env=env, cwd=ROOT,
                              capture_output=True, text=True,
                              timeout=max(seconds_left, 1))  # fmt: skip
        status = "passed" if proc.returncode == 0 else "failed"
        output = proc.stdout[-6000:] + ("" if proc.returncode == 0 else proc.stderr[-4000:])
    except subprocess.TimeoutExpired as err:
        status = "stopped by the budget"
        output = (err.stdout or b"").decode(errors="replace")[-4000:] if isinstance(
            err.stdout, bytes) else str(err.stdout or "")[-4000:]  # fmt: skip
    return {"benchmark": " ".join([script, *args]), "status": status,
            "seconds": round(time.perf_counter() - start, 1), "output": output}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# GPU check", "",
        f"- device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
        f"CUDA {env['cuda']}, Python {env['python']}, {env['cpus']} CPUs",
        f"- profile: `{report['profile']}`, budget {report['budget_s']:.0f} s, "
        f"used {report['seconds']:.0f} s",
        f"- pages: {len(report['pages'])} run {report['jobs']} at a time in "
        f"{report['pages_seconds']:.0f} s (each page's own time: "
        f"{sum(p['seconds'] for p in report['pages']):.0f} s in all)",
        "- modules the pages need that were missing: "
        f"{', '.join(env['missing_modules']) or 'none'}",
        "", "| page | status | seconds | cells | slow cells (line: s) | key numbers |",
        "|---|---|---:|---:|---|---|",
    ]  # fmt: skip
    for p in report["pages"]:
        slow = ", ".join(f"{c['line']}: {c['seconds']:.1f}" for c in p["slow_cells"])
        numbers = "<br>".join(n.replace("|", "/") for n in p["key_numbers"][:4])
        lines.append(f"| {p['page']} | {p['status']} | {p['seconds']:.1f} | "
                     f"{p['cells_done']}/{p['cells']} | {slow} | {numbers} |")  # fmt: skip
    if report["not_reached"]:
        lines += ["", f"Not reached within the budget: {', '.join(report['not_reached'])}"]
    for b in report["benchmarks"]:
        lines += ["", f"## `{b['benchmark']}`: {b['status']} ({b['seconds']:.0f} s)", "",
                  "```", b["output"].strip(), "```"]  # fmt: skip
    failures = [p for p in report["pages"] if p["error"]]
    if failures:
        lines += ["", "## Failures"]
        for p in failures:
            e = p["error"]
            lines += ["", f"### {p['page']}, cell {e['cell']} (line {e['line']}): {e['type']}",
                      "", "```", e["traceback"].strip(), "```"]  # fmt: skip
            if e.get("stdout", "").strip():
                lines += ["", "What the cell printed:", "", "```", e["stdout"].strip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", help="folder for the report")
    parser.add_argument("--profile", default="gpu", choices=("cpu", "gpu"))
    parser.add_argument("--budget-min", type=float, default=8.0,
                        help="stop cleanly after this many minutes (default 8)")
    parser.add_argument("--pages", nargs="+", help="chapter names or page paths (default: all)")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to unpack and use")
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmarks")
    parser.add_argument("--quick-bench", action="store_true",
                        help="the benchmarks at their smallest (a rehearsal)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="pages run at once, longest first (default 1: each page's "
                        "time is its own); the benchmarks always run alone")
    parser.add_argument("--run-page", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_page:
        return run_page(args.run_page, args.result)
    if args.out is None:
        parser.error("give the folder for the report")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")

    start = time.perf_counter()
    budget = args.budget_min * 60
    env = {**os.environ, "D2L_PROFILE": args.profile, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu_check_site_") as site:
        wheels = unpack_wheels(args.wheels, Path(site)) if args.wheels else []
        if wheels:
            env["PYTHONPATH"] = os.pathsep.join([site, env["PYTHONPATH"]])
            sys.path.insert(0, site)
        sys.path.insert(0, str(ROOT / "src"))
        os.environ["D2L_PROFILE"] = args.profile
        report: dict[str, Any] = {"environment": environment(), "profile": args.profile,
                                  "budget_s": budget, "jobs": args.jobs, "wheels": wheels,
                                  "pages": [],
                                  "not_reached": [], "benchmarks": []}  # fmt: skip
        pages = pages_in_toc()
        if args.pages:
            by_name = {p.stem: p for p in pages}
            pages = [by_name.get(n) or Path(n).resolve() for n in args.pages]
        page_env = dict(env)
        if args.jobs > 1:  # share the cores out, as the book's parallel build does
            page_env.setdefault("OMP_NUM_THREADS", str(exec_order.threads_per_job(args.jobs)))
        pages_start = time.perf_counter()
        checked, report["not_reached"] = check_pages(pages, page_env, budget, start, args.jobs)
        report["pages"] = checked
        report["pages_seconds"] = round(time.perf_counter() - pages_start, 1)
        if not args.no_bench:
            for script, full, quick in BENCHMARKS:
                left = budget - (time.perf_counter() - start)
                if left < 10:
                    report["not_reached"].append(script)
                    continue
                bench_args = quick if args.quick_bench else full
                report["benchmarks"].append(check_benchmark(script, bench_args, env, left))
                print(f"{script}: {report['benchmarks'][-1]['status']}, "
                      f"{report['benchmarks'][-1]['seconds']:.0f} s", flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (args.out / "gpu_check.md").write_text(markdown(report))
    failed = [p["page"] for p in report["pages"] if p["status"] == "failed"]
    failed += [b["benchmark"] for b in report["benchmarks"] if b["status"] == "failed"]
    print(f"gpu_check: {len(report['pages'])} pages, {len(failed)} failed, "
          f"{len(report['not_reached'])} not reached, {report['seconds']:.0f} s; "
          f"report in {args.out / 'gpu_check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

