"""A notebook executed in a Jupyter kernel, in one place: the book build's parallel
execution (``parallel_exec``), the Binder rehearsal's page runs (``tests/binder_page.py``,
in Binder's environment) and the Colab rehearsal (``tests/test_colab.py``, in its stand-in
for Colab) all run pages through :func:`execute`, nbclient's public ``execute`` underneath,
as jupyter-cache (and so myst-nb) runs them.

The GPU check is the one runner apart: a bare GPU machine has no Jupyter, so
``gpu_check`` runs a page's code cells as a script.

    python -m booktools.notebooks NOTEBOOK [--timeout 600] [--out FILE]

runs a notebook (``.ipynb``, or a MyST page through jupytext) in its own folder, writes
the executed notebook to ``--out`` (an ``.ipynb`` in place by default), prints one JSON
line (seconds, the failure's traceback or null) and exits 1 when a cell failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How long to wait for the kernel to start. nbclient's default is 60 s; with make test's
#: stages running at once on 2 cores a kernel has taken longer (the page then failed, or
#: went back to myst-nb to run a second time).
KERNEL_STARTUP_TIMEOUT_S = 300


@dataclass
class Executed:
    notebook: Any  # nbformat.NotebookNode, its outputs filled in
    seconds: float
    failure: str | None  # the traceback of the cell that failed or ran out of time


def execute(notebook: Any, *, cwd: str | Path, timeout: int | None, allow_errors: bool = False,
            on_cell: Callable[[Any, int], None] | None = None) -> Executed:  # fmt: skip
    """Execute every cell of ``notebook`` in place in a new kernel whose working folder is
    ``cwd``, each cell within ``timeout`` seconds. The notebook's own ``execution``
    metadata overrides ``timeout`` and ``allow_errors``, as in jupyter-cache.
    ``on_cell(cell=..., cell_index=...)`` is called as each cell starts.

    A cell that raises (unless ``allow_errors``) or runs out of time ends the run: the
    result carries its traceback. A kernel that cannot start or dies raises."""
    from nbclient import execute as nbclient_execute
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    settings = notebook.metadata.get("execution", {})
    timeout = settings.get("timeout", timeout)
    allow_errors = settings.get("allow_errors", allow_errors)
    hooks: dict[str, Any] = {"on_cell_execute": on_cell} if on_cell is not None else {}
    failure = None
    start = time.perf_counter()
    try:
        # record_timing off, as in jupyter-cache: timings in the cells' metadata would make
        # the notebook another one to the cache's lookup, and myst-nb would run it again.
        nbclient_execute(notebook, cwd=str(cwd), timeout=timeout, allow_errors=allow_errors,
                         startup_timeout=KERNEL_STARTUP_TIMEOUT_S, record_timing=False,
                         **hooks)  # fmt: skip
    except (CellExecutionError, CellTimeoutError):
        failure = traceback.format_exc()
    return Executed(notebook, time.perf_counter() - start, failure)


def read(path: Path) -> Any:
    """A notebook file, or a MyST page (the book's ``.md``) read as a notebook by jupytext."""
    if path.suffix == ".ipynb":
        import nbformat

        return nbformat.read(path, as_version=4)
    import jupytext

    return jupytext.read(path, fmt="md:myst")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path, help="an .ipynb file or a MyST page")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--out", type=Path, help="where to write the executed notebook")
    args = parser.parse_args(argv)
    path = args.notebook.resolve()
    if not path.is_file():
        parser.error(f"no notebook at {path}")
    out = args.out or (path if path.suffix == ".ipynb" else None)
    result = execute(read(path), cwd=path.parent, timeout=args.timeout)
    if out is not None:
        import nbformat

        nbformat.write(result.notebook, out)
    print(json.dumps({"seconds": round(result.seconds, 2), "failure": result.failure}))
    return 1 if result.failure else 0


if __name__ == "__main__":
    sys.exit(main())
