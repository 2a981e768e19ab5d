"""Run one page the way a Binder reader does, inside Binder's environment.

tests/test_binder.py starts this file with the Python of the environment it built from
binder/ alone, so the kernel is that environment's ``python3`` kernel, the one Binder
starts. It converts the page with jupytext and executes every cell in a kernel whose
working folder is the page's folder (as in JupyterLab and Thebe), through the runner the
book build uses (``booktools.notebooks``); two cells added at the end, in the same
kernel, say which Python and d2lcore ran and press the Train button of each
live-controls panel the page made. It prints one JSON line: what ran, how long it took,
and what each panel showed after its run. On stderr it says which cell it starts.

    python -m tests.binder_page chapters/linear_regression.md   # from the repository
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat

from booktools import notebooks

CELL_TIMEOUT_S = 600  # the book build's limit per cell

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


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def main(page: Path) -> int:
    nb = notebooks.read(page)
    kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
    report: dict[str, object] = {"page": str(page), "kernel": kernel}
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    trains = "live_controls(" in page.read_text()
    if trains:
        nb.cells.append(nbformat.v4.new_code_cell(PRESS_TRAIN))

    def started(cell: nbformat.NotebookNode, cell_index: int) -> None:
        # What a stalled run was waiting for (the rehearsal shows stderr's end).
        what = ("pressing Train on the live controls" if cell.source == PRESS_TRAIN
                else f"cell {cell_index} of {n_cells} started: "
                     f"{(cell.source.strip().splitlines() or [''])[0][:80]}")  # fmt: skip
        print(what, file=sys.stderr, flush=True)

    result = notebooks.execute(nb, cwd=page.parent, timeout=CELL_TIMEOUT_S, on_cell=started)
    if result.failure is not None:
        report["error"] = result.failure
        print(json.dumps(report))
        return 1
    report["cells"] = n_cells
    report["seconds"] = round(result.seconds, 2)
    report["where"] = json.loads(_stdout(nb.cells[n_cells]))
    if trains:
        report["live_controls"] = json.loads(_stdout(nb.cells[n_cells + 1]))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.binder_page PAGE.md")
    sys.exit(main(Path(sys.argv[1]).resolve()))
