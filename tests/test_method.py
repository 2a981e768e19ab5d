"""No choice on test data: the pages choose on validation and read the test split once.

The book's rule (softmax chapter, DESIGN.md "Method on the pages"): hyperparameters,
variants and "the best configuration" are chosen on validation data; the test split is
read once, for what was chosen. This test reads every page's code cells (the cells of the
MyST notebook, as jupytext reads them; IPython magics are blanked) and fails where a
*selection* chooses on a *test metric*.

**Test metric.** An identifier, attribute or string whose parts (split at ``_`` and
non-alphanumerics) contain ``test`` and a metric word (``acc``, ``loss``, ``error``,
``score``, ``metrics``, ...), such as ``test_acc``, ``run.test_acc``, ``"test_acc"``,
``test_losses``; or the string ``"test"`` as a column (``df["test"]``). Test *data*
(``X_test``, ``target_test``) is not a metric: an ``argmax`` over a model's outputs on
test images predicts, it does not choose. A name assigned from an expression that reads a
test metric reads it too (``table = DataFrame({m: [r.test_acc ...]})``, then
``table.max(axis=1)``), as does a function that returns one. Selecting a column by a
metric name decides: ``summary.val_acc`` and ``summary["val_acc"]`` read validation even
where ``summary`` also holds ``test_acc``.

**Selections that choose** (flagged wherever they read a test metric, except inside an
``assert``, which checks a claim and chooses nothing): ``idxmax``, ``idxmin``,
``argmax``, ``argmin``, ``argsort``, ``topk``, ``nlargest``, ``nsmallest``,
``sort_values``, ``sort``, ``sorted``, and ``max``/``min`` with ``key=``. For those
with a key or a column argument (``key=``, ``sort_values(by)``, ``nlargest(n, col)``)
that argument alone is what is compared.

**Selections that report** a number: ``max``/``min`` without a key, as functions or
methods. Printing the largest test accuracy chooses nothing, so these pass when they
stand in a ``print``, an f-string, a ``.format`` call or an ``assert``. Anywhere else
their value is kept and used (``fine_tuned = table[[a, b]].max(axis=1)``: the better
variant's test accuracy taken as fine-tuning's) and they count as a choice.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

from .conftest import ROOT

PAGES = sorted((ROOT / "chapters").glob("*.md"))

CHOOSE = {"idxmax", "idxmin", "argmax", "argmin", "argsort", "topk", "nlargest",
          "nsmallest", "sort_values", "sort", "sorted"}
EXTREMES = {"max", "min"}
#: methods whose column argument, where given, is what they compare
COLUMN_ARG = {"sort_values": ("by", 0), "nlargest": ("columns", 1),
              "nsmallest": ("columns", 1)}
METRIC_WORDS = {"acc", "accs", "accuracy", "accuracies", "loss", "losses", "error",
                "errors", "err", "score", "scores", "metric", "metrics", "ppl",
                "perplexity", "auc", "f1", "top1", "top5"}


def _parts(text: str) -> list[str]:
    return [p for p in re.split(r"[^0-9a-z]+", text.lower()) if p]


def metric_kind(text: str) -> str | None:
    """``"test"`` for a test metric's name, ``"other"`` for another metric's
    (``val_acc``, ``train_loss``), ``None`` for a name that is no metric. The bare word
    ``test`` counts only as a column key (see ``reads_test``): ``splits.test`` is data."""
    parts = _parts(text)
    if not METRIC_WORDS.intersection(parts):
        return None
    return "test" if "test" in parts else "other"


class _Detector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.tainted: set[str] = set()
        self.findings: list[tuple[int, str]] = []  # (line in the snippet, message)
        self.source = ""

    # -- does an expression read a test metric? ---------------------------------------
    def reads_test(self, node: ast.AST | None) -> bool:
        if node is None:
            return False
        if isinstance(node, ast.Name):
            return node.id in self.tainted or metric_kind(node.id) == "test"
        if isinstance(node, ast.Constant):  # a column name, not prose ("test accuracy {x}")
            return (isinstance(node.value, str) and node.value.isidentifier()
                    and node.value.lower() != "test" and metric_kind(node.value) == "test")
        if isinstance(node, ast.JoinedStr):
            return False
        if isinstance(node, ast.Attribute):
            kind = metric_kind(node.attr)
            if kind is not None:
                return kind == "test"
            return self.reads_test(node.value)
        if isinstance(node, ast.Subscript):
            key = node.slice
            keys = key.elts if isinstance(key, (ast.List, ast.Tuple)) else [key]
            if all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in keys):
                kinds = ["test" if k.value.lower() == "test" else metric_kind(k.value)
                         for k in keys]
                if "test" in kinds:
                    return True
                if kinds and all(k == "other" for k in kinds):
                    return False  # a column of validation (or training) numbers
                return self.reads_test(node.value)
            return self.reads_test(node.value) or self.reads_test(key)
        if isinstance(node, ast.Lambda):
            return self.reads_test(node.body)
        return any(self.reads_test(child) for child in ast.iter_child_nodes(node))

    # -- where a value only reports -----------------------------------------------
    @staticmethod
    def _in_assert(node: ast.AST) -> bool:
        while node is not None:
            if isinstance(node, ast.Assert):
                return True
            node = getattr(node, "parent", None)
        return False

    @staticmethod
    def _reported(node: ast.AST) -> bool:
        while node is not None:
            if isinstance(node, (ast.Assert, ast.JoinedStr, ast.FormattedValue)):
                return True
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Name) and f.id == "print") or (
                        isinstance(f, ast.Attribute) and f.attr == "format"):
                    return True
            if isinstance(node, ast.stmt):
                return False
            node = getattr(node, "parent", None)
        return False

    # -- visitors -----------------------------------------------------------------
    def _flag(self, node: ast.AST, what: str) -> None:
        text = ast.get_source_segment(self.source, node) or what
        self.findings.append((node.lineno, f"{what}: {text}"))

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
            else None
        receiver = f.value if isinstance(f, ast.Attribute) else None
        key = next((k.value for k in node.keywords if k.arg == "key"), None)
        if name in CHOOSE or (name in EXTREMES and key is not None):
            if key is not None:
                compared = [key]
            elif name in COLUMN_ARG:
                kw, pos = COLUMN_ARG[name]
                column = next((k.value for k in node.keywords if k.arg == kw), None)
                if column is None and len(node.args) > pos:
                    column = node.args[pos]
                compared = [column] if column is not None else [receiver]
            else:
                compared = [receiver, *node.args, *(k.value for k in node.keywords)]
            if any(self.reads_test(c) for c in compared) and not self._in_assert(node):
                self._flag(node, f"{name} chooses on a test metric")
        elif name in EXTREMES:
            compared = [receiver, *node.args]
            if any(self.reads_test(c) for c in compared) and not self._reported(node):
                self._flag(node, f"{name} of a test metric is kept, not only reported")
        self.generic_visit(node)

    def _assign(self, targets: list[ast.AST], value: ast.AST | None) -> None:
        test = self.reads_test(value)
        for target in targets:
            for n in ast.walk(target):
                if isinstance(n, ast.Name):
                    (self.tainted.add if test else self.tainted.discard)(n.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        self._assign(node.targets, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.generic_visit(node)
        self._assign([node.target], node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.generic_visit(node)
        if self.reads_test(node.value):
            self._assign([node.target], node.value)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self._assign([node.target], node.iter)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.generic_visit(node)
        returns = [r.value for r in ast.walk(node) if isinstance(r, ast.Return)]
        if any(self.reads_test(r) for r in returns):
            self.tainted.add(node.name)

    def check(self, source: str) -> list[tuple[int, str]]:
        """Findings in one cell; names tainted here stay tainted for later cells."""
        self.source, self.findings = source, []
        tree = ast.parse(source)
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                child.parent = parent  # type: ignore[attr-defined]
        self.visit(tree)
        return self.findings


def _blank_magics(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def choices_on_test(sources: list[str]) -> list[tuple[int, int, str]]:
    """``(cell, line in cell, message)`` for each choice on a test metric in the cells
    ``sources``, read in order as one program."""
    detector = _Detector()
    return [(i, line, msg) for i, src in enumerate(sources)
            for line, msg in detector.check(_blank_magics(src))]


def page_findings(path: Path) -> list[str]:
    """Each choice on a test metric in a page, as ``page:line: message``."""
    text = path.read_text(encoding="utf-8")
    cells = [c.source for c in jupytext.read(path).cells if c.cell_type == "code"]
    offsets, pos = [], 0
    for src in cells:  # each cell's first line in the page, for the report
        at = text.find(src, pos) if src else -1
        offsets.append(text.count("\n", 0, at) if at >= 0 else None)
        pos = at + len(src) if at >= 0 else pos
    return [f"{path.relative_to(ROOT)}:"
            f"{offsets[i] + line if offsets[i] is not None else f'cell {i + 1}'}: {msg}"
            for i, line, msg in choices_on_test(cells)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_no_choice_on_test_data(page):
    findings = page_findings(page)
    assert not findings, ("choose on validation metrics and read the test split once:\n"
                          + "\n".join(findings))


# -- the detector on synthetic snippets ---------------------------------------------

CAUGHT = [
    "best = df.loc[df.test_acc.idxmax()]",
    "best = max(runs, key=lambda r: r.test_acc)",
    "best = sorted(runs, key=lambda r: -r.test_acc)[0]",
    'best = summary.sort_values("test_acc").iloc[-1]',
    'best = df.loc[df["test"].idxmax()]',
    "i = np.argmax(test_accs)",
    'print("best:", df.test_acc.idxmax())',
    # a choice through a name that holds test numbers
    "table = pd.DataFrame({m: [r.test_acc for r in runs[m]] for m in runs})\n"
    "fine_tuned = table[['full', 'gentle']].max(axis=1)",
    "def score(r):\n    return r.metrics['test_loss']\nbest = min(runs, key=score)",
]

PASSED = [
    "best = df.loc[df.val_acc.idxmax()]",
    'best = summary.loc[summary.groupby("n")["val_acc"].idxmax()]',
    "best = max(runs, key=lambda r: r.history.val_acc[-1])",
    # a table that also holds test numbers, chosen by its validation column
    'summary = grid.summary()[["lr", "val_acc", "test_acc"]]\n'
    'best = summary.sort_values("val_acc").iloc[-1]',
    # reporting, not choosing
    "print(f'largest test accuracy {max(test_accs):.3f}')",
    "assert gain.idxmax() == smallest, 'the gain should be largest with few labels'",
    "by_init = summary.groupby('init').test_acc.mean()",
    # test data is no metric: predictions, not a choice
    "pred = model(X_test).argmax(dim=1)",
]


@pytest.mark.parametrize("snippet", CAUGHT)
def test_detector_catches(snippet):
    assert choices_on_test([snippet]), snippet


@pytest.mark.parametrize("snippet", PASSED)
def test_detector_passes(snippet):
    assert not choices_on_test([snippet]), choices_on_test([snippet])


def test_detector_follows_names_across_cells():
    cells = ["acc = {n: run.test_acc for n, run in runs.items()}", "%time x = 1",
             "best = max(acc, key=acc.get)"]
    assert [(i, line) for i, line, _ in choices_on_test(cells)] == [(2, 1)]
