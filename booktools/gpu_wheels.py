"""The wheels a bare GPU machine (CPython 3.12 with its own torch, no network) needs for the
GPU check and for building the book there: ``make gpu-wheels`` runs this.

Two lists name them (a package per line): ``gpu_wheels.txt``, what the pages import
(``booktools.gpu_check`` runs them as scripts), into ``.gpu-wheels``; and with ``--book``
``gpu_book_wheels.txt``, Jupyter Book and what it needs to execute the pages in a kernel
(``booktools.gpu_book``), into ``.gpu-book-wheels``. Each package is fetched at the version
``requirements.txt`` (or ``requirements-reference.txt``) pins, without dependencies, as a
CPython wheel for manylinux x86_64. A device machine takes at most 64 MiB a call with the
working tree, so the two folders travel in two calls (the first one's stay there), and
the wheels are slimmed: Babel keeps the locale data of English only (Sphinx formats this
book's dates in English; the other 1,080 locales are 29 MB). The total is printed, and a
folder over the limit fails.

    python -m booktools.gpu_wheels [OUT] [--book] [--python 3.12]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What the pages import (the GPU check), and what building the book adds (gpu_book).
PAGE_LIST = ROOT / "booktools" / "gpu_wheels.txt"
BOOK_LIST = ROOT / "booktools" / "gpu_book_wheels.txt"
PINS = (ROOT / "requirements.txt", ROOT / "requirements-reference.txt")
#: What a device machine carries with the working tree, in all.
CARRY_LIMIT = 64 * 2**20
#: Babel's locale data kept: the root locale and English ones.
BABEL_KEPT = re.compile(r"babel/locale-data/(root|en(_[A-Za-z0-9_]+)?)\.dat$")


def names(*lists: Path) -> list[str]:
    """The packages the lists name, in order, without comments or repeats."""
    found: list[str] = []
    for path in lists:
        for line in path.read_text().splitlines():
            name = line.split("#")[0].strip()
            if name and name.lower() not in (n.lower() for n in found):
                found.append(name)
    return found


def pinned(packages: list[str], pins: tuple[Path, ...] = PINS) -> list[str]:
    """``name==version`` for each package the pin files pin (names compared as pip
    compares them), else the bare name."""

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    versions = {}
    for path in pins:
        for line in path.read_text().splitlines():
            if "==" in line and not line.lstrip().startswith("#"):
                name, version = line.split("#")[0].strip().split("==", 1)
                versions[canonical(name)] = version.strip()
    return [f"{p}=={versions[canonical(p)]}" if canonical(p) in versions else p
            for p in packages]  # fmt: skip


def slim(wheel: Path) -> int:
    """Rewrite a Babel wheel without the locale data of other languages than English;
    return the bytes saved (0 for any other wheel). The wheels are unpacked, never
    installed, so the RECORD file is left as it was."""
    if not wheel.name.lower().startswith("babel-"):
        return 0
    before = wheel.stat().st_size
    slimmed = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slimmed, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename.startswith("babel/locale-data/") and \
                    not BABEL_KEPT.match(item.filename):  # fmt: skip
                continue
            dst.writestr(item, src.read(item))
    slimmed.replace(wheel)
    return before - wheel.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path,
                        help="the folder (.gpu-wheels; with --book .gpu-book-wheels)")  # fmt: skip
    parser.add_argument("--book", action="store_true",
                        help="what building the book adds (gpu_book_wheels.txt)")  # fmt: skip
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (3.12)")
    args = parser.parse_args(argv)
    listed = BOOK_LIST if args.book else PAGE_LIST
    args.out = args.out or ROOT / (".gpu-book-wheels" if args.book else ".gpu-wheels")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "--implementation", "cp", "--python-version", args.python,
           *[a for p in platforms for a in ("--platform", p)], "-d", str(args.out),
           *pinned(names(listed))]  # fmt: skip
    subprocess.run(cmd, check=True)
    saved = sum(slim(w) for w in args.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in args.out.glob("*.whl"))
    print(f"{len(list(args.out.glob('*.whl')))} wheels in {args.out}: {total / 2**20:.1f} MiB "
          f"({saved / 2**20:.1f} MiB of locale data left out)")  # fmt: skip
    if total > CARRY_LIMIT:
        print(f"more than the {CARRY_LIMIT // 2**20} MiB a device machine carries: trim "
              f"{listed.name}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
