"""Run one page the way a Binder reader does, inside Binder's environment.

tests/test_binder.py starts this file with the Python of the environment it built from
binder/ alone, so the kernel is that environment's ``python3`` kernel, the one Binder
starts. It converts the page with jupytext, executes every cell in a kernel whose working
folder is the page's folder (as in JupyterLab and Thebe), then, in the same kernel,
presses the Train button of each live-controls panel the page made. It prints one JSON
line: what ran, how long it took, and what each panel showed after its run.

    python tests/binder_page.py chapters/linear_regression.md
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CELL_TIMEOUT_S = 600  # the book build's limit per cell
KERNEL_STARTUP_TIMEOUT_S = 300  # nbclient's 60 s is short while make test's stages run

# Runs in the page's kernel after its last cell: which Python and d2lcore it used.
WHERE = """\
import json as _json, sys as _sys, d2lcore as _d2lcore
print(_json.dumps({"executable": _sys.executable, "prefix": _sys.prefix,
                   "d2lcore": _d2lcore.__file__}))
"""

# Presses Train on every LiveControls the page displayed (IPython's Out keeps each
# displayed value) or bound to a name, the way a reader's click does.
PRESS_TRAIN = """\
import json as _json, time as _time
from d2lcore.widgets import LiveControls as _LiveControls

_panels = {id(v): v for v in [*Out.values(), *globals().values()]
           if isinstance(v, _LiveControls)}
_report = []
for _panel in _panels.values():
    _before = _panel.status.text
    _start = _time.perf_counter()
    _panel.button.click()
    _report.append({
        "status_before": _before,
        "status": _panel.status.text,
        "bar_style": _panel.progress.bar_style,
        "progress": [_panel.progress.value, _panel.progress.max],
        "trained": _panel.result is not None,
        "button_enabled": not _panel.button.disabled,
        "figure_mime_types": sorted({m for o in _panel.output.outputs
                                     for m in o.get("data", {})}),
        "seconds": round(_time.perf_counter() - _start, 2),
    })
print(_json.dumps(_report))
"""


def _run(client: NotebookClient, nb: nbformat.NotebookNode, source: str) -> str:
    """Execute ``source`` as a new cell in the running kernel; return its stdout."""
    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def main(page: Path) -> int:
    nb = jupytext.read(page)
    kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel,
                            startup_timeout=KERNEL_STARTUP_TIMEOUT_S,
                            resources={"metadata": {"path": str(page.parent)}})  # fmt: skip
    report: dict[str, object] = {"page": str(page), "kernel": kernel}
    start = time.perf_counter()
    with client.setup_kernel():
        n_cells = len(nb.cells)
        try:
            for index, cell in enumerate(nb.cells[:n_cells]):
                # What a stalled run was waiting for (the rehearsal shows stderr's end).
                first = cell.source.strip().splitlines()[:1] or [""]
                print(f"cell {index} of {n_cells} started: {first[0][:80]}", file=sys.stderr,
                      flush=True)  # fmt: skip
                client.execute_cell(cell, index)
        except CellExecutionError as error:
            report["error"] = f"cell {index} failed:\n{error}"
            print(json.dumps(report))
            return 1
        report["cells"] = n_cells
        report["seconds"] = round(time.perf_counter() - start, 2)
        report["where"] = json.loads(_run(client, nb, WHERE))
        if "live_controls(" in page.read_text():
            print("pressing Train on the live controls", file=sys.stderr, flush=True)
            report["live_controls"] = json.loads(_run(client, nb, PRESS_TRAIN))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/binder_page.py PAGE.md")
    sys.exit(main(Path(sys.argv[1]).resolve()))
