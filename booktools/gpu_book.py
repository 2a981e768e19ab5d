"""Build the book itself with Jupyter Book on a bare GPU machine (Python with its own torch,
no network, no Jupyter), as ``make book-ci`` builds it: every cell executed afresh, every
warning an error; then write the per-page execution report next to the HTML and into OUT.

What the build needs beyond torch travels with the working tree: the pages' packages and
Jupyter Book's as wheels (``make gpu-wheels``: ``.gpu-wheels`` and ``.gpu-book-wheels``),
``.vendor/`` as a tarball (``make gpu-vendor``: MathJax, plotly.js, Thebe; 5 MB) and
Fashion-MNIST's four files (``D2L_FASHION_MNIST_DIR``). The wheels are unpacked into a
temporary folder put on the path of the build and of its kernels; the pages execute in
ipykernel's own ``python3`` kernel, which runs on this Python.

    python -m booktools.gpu_book OUT [--profile gpu] [--wheels .gpu-wheels .gpu-book-wheels]
                             [--vendor .gpu-vendor.tar.xz] [--limit-min 9] [--source BOOK]

OUT receives ``exec_report.md`` and ``exec_report.json`` (the device, the profile and each
page's execution time and status), ``build.log`` and ``gpu_book.json`` (what ran, with
which wheels, and how it ended). The HTML stays in ``BOOK/_build/gpu/_build/html``, with
the report as ``_exec_report.md`` beside it. The exit status is the build's; 2 when the
machine lacks what the build imports (it names the modules).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from booktools import exec_report, gpu_check, test_build

ROOT = Path(__file__).resolve().parent.parent
#: What the build imports beyond the standard library and torch: missing ones stop it
#: before it starts, by name.
BUILD_MODULES = ("jupyter_book", "sphinx", "myst_nb", "nbclient", "ipykernel", "zmq",
                 "jupyter_cache", "sphinxcontrib.bibtex", "pydata_sphinx_theme", "yaml",
                 "plotly", "pandas", "numpy")  # fmt: skip


def missing_modules(modules: tuple[str, ...] | None = None) -> list[str]:
    """The modules of ``modules`` (:data:`BUILD_MODULES`) this Python cannot import."""
    missing = []
    for name in BUILD_MODULES if modules is None else modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the report")
    parser.add_argument("--profile", default="gpu", choices=("cpu", "gpu"))
    parser.add_argument("--wheels", type=Path, nargs="+", default=[],
                        help="folders of wheels to unpack and use")  # fmt: skip
    parser.add_argument("--vendor", type=Path,
                        help="a tarball of .vendor/ (make gpu-vendor), unpacked where the "
                        "book lacks it")  # fmt: skip
    parser.add_argument("--limit-min", type=float, default=9.0,
                        help="stop the build after this many minutes (default 9)")  # fmt: skip
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the book to build (default: this one)")  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = args.source.resolve()
    build_dir = source / "_build" / "gpu"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_book_site_") as site:
        wheels = [w for folder in args.wheels for w in gpu_check.unpack_wheels(folder, Path(site))]
        if args.vendor and not (source / ".vendor").is_dir():
            with tarfile.open(args.vendor) as tar:
                tar.extractall(source, filter="data")
        path = [site] if wheels else []
        path += [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        sys.path[:0] = [p for p in path[:-1] if p not in sys.path]
        # The build and every kernel it starts inherit these.
        os.environ.update({"PYTHONPATH": os.pathsep.join(filter(None, path)),
                           "D2L_PROFILE": args.profile, "D2L_EXECUTE": "force",
                           "MPLBACKEND": "Agg"})  # fmt: skip
        report = {"environment": gpu_check.environment(), "profile": args.profile,
                  "wheels": wheels, "source": str(source)}  # fmt: skip
        missing = missing_modules()
        if missing:
            report.update(status="missing modules", missing=missing)
            (out / "gpu_book.json").write_text(json.dumps(report, indent=1))
            print(f"gpu_book: this Python cannot import {', '.join(missing)}: run `make "
                  "gpu-wheels` and pass --wheels .gpu-wheels", file=sys.stderr)  # fmt: skip
            return 2
        shutil.rmtree(build_dir, ignore_errors=True)
        status = test_build.build(build_dir, args.limit_min * 60, source=source)
        log = build_dir / "_build" / "build.log"
        if log.is_file():
            shutil.copy(log, out / "build.log")
        html = test_build.html_folder(build_dir)
        environment = build_dir / "_build" / ".doctrees" / "environment.pickle"
        if environment.is_file():
            exec_report.main(["--build", str(build_dir / "_build"), "--quiet",
                              "--markdown", str(out / "exec_report.md"),
                              "--json", str(out / "exec_report.json")])  # fmt: skip
            if html.is_dir():
                shutil.copy(out / "exec_report.md", html / "_exec_report.md")
                shutil.copy(out / "exec_report.json", html / "_exec_report.json")
    report.update(status="built" if status == 0 else f"failed ({status})",
                  seconds=round(time.perf_counter() - start, 1), html=str(html))  # fmt: skip
    (out / "gpu_book.json").write_text(json.dumps(report, indent=1))
    print(f"gpu_book: {report['status']} in {report['seconds']:.0f} s; report in "
          f"{out / 'exec_report.md'}")  # fmt: skip
    return status


if __name__ == "__main__":
    raise SystemExit(main())
