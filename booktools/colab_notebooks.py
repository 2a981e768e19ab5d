"""Each chapter as a notebook Colab can open: the executed notebook of the last book build
(outputs kept) with one setup cell put first.

Colab opens ``.ipynb`` files from a GitHub path, and has its own torch but neither
``d2lcore`` nor the Debian data package. The setup cell, where ``d2lcore`` cannot be
imported, installs it from the repository at the commit that built the page (pip keeps
Colab's torch: ``d2lcore`` asks only for ``torch>=2.4``), adds the ``d2l`` reference
where the page imports it (without dependencies, as ``make setup`` does), and fetches
Fashion-MNIST through :func:`d2lcore.data.ensure_fashion_mnist` where the page uses it
(checked against the same checksums as the Debian copy). On a GPU it selects the
``gpu`` profile unless ``D2L_PROFILE`` says otherwise. Each step checks its own result
(what is installed, whether the data are there and verified), so the cell is safe to run
again: after a failed download, or after a runtime restart.

CI publishes the notebooks on the ``colab`` branch, where each page's "Colab" launch
button (``booktools/colab.py``) points::

    python -m booktools.colab_notebooks --book _build --out _build/colab
    python -m booktools.colab_notebooks --out /tmp/nb --source "d2lcore @ git+file:///repo@<sha>"

The notebooks come from ``<book>/jupyter_execute/`` (where myst-nb writes each executed
page); a chapter missing there is an error: build the book first.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from booktools import toc

ROOT = Path(__file__).resolve().parents[1]

#: Marks the setup cell (its metadata), so that a test or a rerun can find it.
SETUP_TAG = "d2l-colab-setup"

SETUP_CELL = '''\
# Colab: install d2lcore where it is missing, from the commit that built this page
# (Colab's own torch is kept).{d2l_clause}{data_clause}
# Each step checks its own result: run the cell again after a failure or a restart.
# On a GPU, use the gpu profile unless D2L_PROFILE says otherwise.
import importlib
import importlib.util
import os
import subprocess
import sys

D2LCORE = {source!r}


def pip_install(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        raise RuntimeError(f"pip install {{' '.join(args)}} failed:\\n{{output}}")


def install_if_missing(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pip_install(*args)
        importlib.invalidate_caches()
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"pip installed {{' '.join(args)}}, but {{module}} cannot be "
                               "imported: restart the runtime and run this cell again")


install_if_missing("d2lcore", D2LCORE)
{d2l_install}{data_fetch}
import torch

if torch.cuda.is_available() and not os.environ.get("D2L_PROFILE"):
    os.environ["D2L_PROFILE"] = "gpu"
print("d2lcore from", D2LCORE, "| profile:", os.environ.get("D2L_PROFILE") or "cpu")
'''


def setup_source(source: str, *, d2l: str | None, fashion_mnist: bool) -> str:
    """The setup cell's code: install ``source`` (a pip requirement for d2lcore) and the
    ``d2l`` requirement where given, each where it is missing, and fetch Fashion-MNIST
    where the page needs it and the files are not all there and verified
    (``ensure_fashion_mnist`` keeps what verifies). Each step runs whenever the cell does,
    so a rerun after a failed step retries it; success is printed only at the end."""
    d2l_install = ""
    if d2l is not None:
        d2l_install = f'install_if_missing("d2l", "--no-deps", {d2l!r})\n'
    data_fetch = ""
    if fashion_mnist:
        data_fetch = ("\nfrom d2lcore.data import ensure_fashion_mnist\n\n"
                      'print("Fashion-MNIST:", ensure_fashion_mnist())\n')  # fmt: skip
    return SETUP_CELL.format(
        source=source,
        d2l_clause=("\n# Install the d2l reference this page compares with, where missing."
                    if d2l else ""),
        data_clause=("\n# Fetch Fashion-MNIST where it is not all here and verified (checksums)."
                     if fashion_mnist else ""),
        d2l_install=d2l_install,
        data_fetch=data_fetch,
    )


def code_of(notebook: dict[str, Any]) -> str:
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in notebook["cells"] if c["cell_type"] == "code")  # fmt: skip


def colab_notebook(notebook: dict[str, Any], *, source: str, d2l: str, commit: str,
                   page: str) -> dict[str, Any]:  # fmt: skip
    """``notebook`` (nbformat 4 JSON) with the setup cell and a line on where it comes
    from put first; outputs and the other cells unchanged."""
    code = code_of(notebook)
    uses_d2l = re.search(r"^\s*(import d2l\b|from d2l\b)", code, re.M) is not None
    setup: dict[str, Any] = {
        "cell_type": "code",
        "execution_count": None,
        "id": "d2l-colab-setup",
        "metadata": {"tags": [SETUP_TAG]},
        "outputs": [],
        "source": setup_source(source, d2l=d2l if uses_d2l else None,
                               fashion_mnist="fashion_mnist" in code),  # fmt: skip
    }
    note = {
        "cell_type": "markdown",
        "id": "d2l-colab-origin",
        "metadata": {"tags": [SETUP_TAG]},
        "source": (f"*This notebook is the page `{page}` of the book, executed at commit "
                   f"`{commit[:12]}`, with its outputs. Run the first cell before the "
                   "others.*"),  # fmt: skip
    }
    out = dict(notebook)
    out["cells"] = [note, setup, *notebook["cells"]]
    metadata = dict(notebook.get("metadata", {}))
    metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                              "language": "python"}  # fmt: skip
    metadata["accelerator"] = "GPU"  # Colab offers a GPU runtime for the notebook
    out["metadata"] = metadata
    out["nbformat"], out["nbformat_minor"] = 4, max(notebook.get("nbformat_minor", 5), 5)
    return out


def chapters() -> list[str]:
    """The chapter pages of ``_toc.yml`` (``chapters/...``), in order."""
    return toc.chapters(ROOT)


def default_source(commit: str) -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    return f"d2lcore @ git+{url}@{commit}"


def head_commit() -> str:
    out = subprocess.run(["git", "-c", "safe.directory=*", "rev-parse", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def d2l_requirement() -> str:
    for line in (ROOT / "requirements-reference.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise ValueError("requirements-reference.txt names no package")


def write_notebooks(book: Path, out: Path, *, source: str, commit: str,
                    pages: list[str] | None = None) -> list[Path]:  # fmt: skip
    """Write ``out/<page>.ipynb`` for every chapter (or ``pages``); return the paths."""
    written = []
    d2l = d2l_requirement()
    for page in pages or chapters():
        executed = book / "jupyter_execute" / f"{page}.ipynb"
        if not executed.is_file():
            raise FileNotFoundError(f"{executed} is missing: build the book first "
                                    "(make book), then run this again")  # fmt: skip
        notebook = json.loads(executed.read_text())
        target = out / f"{page}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        result = colab_notebook(notebook, source=source, d2l=d2l, commit=commit, page=page)
        target.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=ROOT / "_build",
                        help="the build folder (holding jupyter_execute/)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="where to write the notebooks")
    parser.add_argument("--commit", help="the commit that built the book (default: HEAD)")
    parser.add_argument("--source", help="pip requirement the setup cell installs d2lcore "
                        "from (default: the repository at --commit)")  # fmt: skip
    parser.add_argument("--pages", help="comma-separated chapters (default: all)")
    args = parser.parse_args(argv)
    commit = args.commit or head_commit()
    pages = [p.strip() for p in args.pages.split(",")] if args.pages else None
    try:
        written = write_notebooks(args.book, args.out, source=args.source or default_source(commit),
                                  commit=commit, pages=pages)  # fmt: skip
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
