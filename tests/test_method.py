"""No choice on test data: the pages choose on validation and read the test split once.

The book's rule (DESIGN.md, "Method on the pages"): hyperparameters, variants and "the
best configuration" are chosen on validation data; the test split is read once, for what
was chosen. This test reads the code cells of every page in ``_toc.yml`` (the cells of
the MyST notebook as jupytext reads them, IPython magics blanked; a cell that does not
parse is skipped) and fails where a *selection* reads a *test metric*. It executes
nothing.

**Test metric.** An identifier, attribute or string whose parts (split at ``_`` and
non-alphanumerics) contain ``test`` and a metric word (``acc``, ``loss``, ``error``,
``score``, ``metrics``, ...), such as ``test_acc``, ``run.test_acc``, ``"test_acc"``,
``test_losses``; the string ``"test"`` as a column (``df["test"]``); a bare metric read
from the test split (``history.test.acc``, ``results["test"]["loss"]``). Test *data*
(``X_test``, ``splits.test``) is no metric: an ``argmax`` over a model's outputs on test
images predicts, it does not choose. A name assigned from an expression that reads a test
metric reads it too (``table = DataFrame({m: [r.test_acc ...]})``, then
``table.max(axis=1)``), in this cell and the later ones, as does a function that returns
one. A column named for another split decides: ``summary.val_acc`` and
``summary["val_acc"]`` read validation even where ``summary`` also holds ``test_acc``.

**Selections** (each flagged where it reads a test metric, except inside an ``assert``,
which checks a claim and chooses nothing):

- ranking calls: ``idxmax``, ``idxmin``, ``argmax``, ``argmin``, ``argsort``, ``topk``,
  ``nlargest``, ``nsmallest``, ``sort_values``, ``sort``, ``sorted``, and
  ``max``/``min`` with ``key=``. For those with a key or a column argument (``key=``,
  ``sort_values(by)``, ``nlargest(n, columns)``) that argument alone is compared;
- ``max``/``min`` without a key where their value is kept (assigned, returned), used as
  an index (``runs[...]``, ``accs.index(...)``). Printed, formatted or put in arithmetic
  (``accs.max() - accs.min()``, a spread) they report a number and choose nothing;
- filters: a boolean mask (``df[df.test_acc > 0.5]``), ``df.query("test_acc > 0.5")``,
  a comprehension's ``if``, and an ``if`` (or ``a if c else b``) that keeps something
  when a test metric compares well (the hand-written ``argmax`` loop).

Not flagged, by design: a max of an error or a difference (``(learned - truth).abs().max()``
reads no metric by name); an ``assert`` comparing test numbers; ``groupby(...).test_acc
.mean()`` (a report, not a ranking).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

from .conftest import ROOT, toc_pages

ADVICE = (
    "choose on validation data (val_acc, val_loss) and read the test split once, "
    "for what was chosen"
)

CHOOSE = {
    "idxmax",
    "idxmin",
    "argmax",
    "argmin",
    "argsort",
    "topk",
    "nlargest",
    "nsmallest",
    "sort_values",
    "sort",
    "sorted",
}
EXTREMES = {"max", "min"}
#: methods whose column argument, where given, is what they compare
COLUMN_ARG = {"sort_values": ("by", 0), "nlargest": ("columns", 1), "nsmallest": ("columns", 1)}
METRIC_WORDS = {
    "acc",
    "accs",
    "accuracy",
    "accuracies",
    "loss",
    "losses",
    "error",
    "errors",
    "err",
    "score",
    "scores",
    "metric",
    "metrics",
    "ppl",
    "perplexity",
    "auc",
    "f1",
    "top1",
    "top5",
    "mse",
    "rmse",
    "mae",
    "nll",
    "bleu",
}
OTHER_SPLITS = {"train", "training", "val", "valid", "validation", "dev"}
#: calls through which a kept maximum stays that maximum (``float(x.max())``, ``.item()``)
TRANSPARENT = {"float", "int", "round", "item", "tolist", "to_dict"}


def _parts(text: str) -> list[str]:
    return [p for p in re.split(r"[^0-9a-z]+", text.lower()) if p]


def metric_kind(text: str) -> str | None:
    """What a name or column names: ``"test"`` (``test_acc``), ``"other"`` (a metric of
    another split: ``val_acc``, ``train_loss``), ``"bare"`` (a metric of no named split:
    ``acc``, ``nw_errors``), ``None`` (no metric: ``X_test``, ``lr``)."""
    parts = _parts(text)
    if not METRIC_WORDS.intersection(parts):
        return None
    if "test" in parts:
        return "test"
    return "other" if OTHER_SPLITS.intersection(parts) else "bare"


def _names_test_split(node: ast.AST) -> bool:
    """Whether an access path (``history.test``, ``results["test"]``) names the test
    split, so that a bare metric read from it (``.acc``, ``["loss"]``) is a test metric."""
    while True:
        if isinstance(node, ast.Name):
            return "test" in _parts(node.id)
        if isinstance(node, ast.Attribute):
            if "test" in _parts(node.attr):
                return True
            node = node.value
        elif isinstance(node, ast.Subscript):
            key = node.slice
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and ("test" in _parts(key.value))
            ):
                return True
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return False


def _parent(node: ast.AST) -> ast.AST | None:
    return getattr(node, "parent", None)


def _called_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


class _Detector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.tainted: set[str] = set()
        self.findings: list[tuple[int, str]] = []  # (line in the cell, message)
        self.source = ""

    # -- does an expression read a test metric? ---------------------------------------
    def reads_test(self, node: ast.AST | None) -> bool:
        if node is None:
            return False
        if isinstance(node, ast.Name):
            return node.id in self.tainted or metric_kind(node.id) == "test"
        if isinstance(node, ast.Constant):  # a column name, not prose ("test accuracy {x}")
            return (
                isinstance(node.value, str)
                and node.value.isidentifier()
                and metric_kind(node.value) == "test"
            )
        if isinstance(node, ast.JoinedStr):
            return False
        if isinstance(node, ast.Attribute):
            kind = metric_kind(node.attr)
            if kind == "test":
                return True
            if kind == "other":
                return False  # the column decides
            if kind == "bare" and _names_test_split(node.value):
                return True
            return self.reads_test(node.value)
        if isinstance(node, ast.Subscript):
            key = node.slice
            keys = key.elts if isinstance(key, (ast.List, ast.Tuple)) else [key]
            columns = [
                k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
            if keys and len(columns) == len(keys):
                kinds = ["test" if c.lower() == "test" else metric_kind(c) for c in columns]
                if "test" in kinds:
                    return True
                if all(k == "other" for k in kinds):
                    return False  # a column of validation (or training) numbers
                if "bare" in kinds and _names_test_split(node.value):
                    return True
                return self.reads_test(node.value)
            return self.reads_test(node.value) or self.reads_test(key)
        if isinstance(node, ast.Lambda):
            return self.reads_test(node.body)
        return any(self.reads_test(child) for child in ast.iter_child_nodes(node))

    # -- where a value checks or reports -------------------------------------------
    @staticmethod
    def _in_assert(node: ast.AST | None) -> bool:
        while node is not None:
            if isinstance(node, ast.Assert):
                return True
            node = _parent(node)
        return False

    @staticmethod
    def _kept(node: ast.AST) -> bool:
        """Whether the value of ``node`` (a max or min) is kept or used to pick: assigned
        or returned as it is (through ``float``, ``.item()``, indexing), or used as an
        index. Arithmetic, printing and formatting report it."""
        child, parent = node, _parent(node)
        while parent is not None:
            if isinstance(
                parent, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return, ast.NamedExpr)
            ):
                return child is parent.value
            if isinstance(parent, ast.Subscript):
                if child is parent.slice:
                    return True  # runs[accs.max()]: the extreme picks
            elif isinstance(parent, ast.Attribute):
                pass  # x.max().item, x.max().values
            elif isinstance(parent, ast.Call):
                name = _called_name(parent)
                if name == "index" and child is not parent.func:
                    return True  # accs.index(max(accs))
                if child is not parent.func and name not in TRANSPARENT:
                    return False
            elif isinstance(parent, (ast.Tuple, ast.List, ast.Starred, ast.keyword)):
                pass
            else:
                return False  # arithmetic, a comparison, an f-string, a statement...
            child, parent = parent, _parent(parent)
        return False

    # -- visitors -----------------------------------------------------------------
    def _flag(self, node: ast.AST, what: str) -> None:
        text = ast.get_source_segment(self.source, node) or ""
        text = " ".join(text.split())
        self.findings.append((getattr(node, "lineno", 0), f"{what}: `{text}`"))

    def visit_Call(self, node: ast.Call) -> None:
        name = _called_name(node)
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        key = next((k.value for k in node.keywords if k.arg == "key"), None)
        compared: list[ast.expr | None]
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
                self._flag(node, f"{name} ranks by a test metric")
        elif name in EXTREMES:
            if any(self.reads_test(c) for c in [receiver, *node.args]) and self._kept(node):
                self._flag(node, f"the {name} of a test metric is kept to choose with")
        elif (
            name == "query"
            and any(
                isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and any(metric_kind(w) == "test" for w in re.findall(r"[A-Za-z_]\w*", a.value))
                for a in node.args
            )
            and not self._in_assert(node)
        ):
            self._flag(node, "query filters on a test metric")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        mask = node.slice
        if (
            not isinstance(mask, ast.Constant)
            and any(isinstance(n, ast.Compare) and self.reads_test(n) for n in ast.walk(mask))
            and not self._in_assert(node)
        ):
            self._flag(node, "a mask filters on a test metric")
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        for condition in node.ifs:
            if self.reads_test(condition) and not self._in_assert(condition):
                self._flag(condition, "a comprehension filters on a test metric")
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        keeps = any(
            isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return))
            for stmt in node.body
            for n in ast.walk(stmt)
        )
        if keeps and self.reads_test(node.test):
            self._flag(node.test, "an if keeps what compares well on a test metric")
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        if self.reads_test(node.test) and not self._in_assert(node):
            self._flag(node.test, "a conditional picks on a test metric")
        self.generic_visit(node)

    def _assign(self, targets: list[ast.expr], value: ast.AST | None) -> None:
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
        try:
            tree = ast.parse(source)
        except SyntaxError:  # not Python (a cell of another language); nothing to read
            return []
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                child.parent = parent  # type: ignore[attr-defined]
        self.visit(tree)
        return sorted(self.findings)


def _blank_magics(source: str) -> str:
    """IPython magics and shell lines become blank lines, so line numbers stay."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def choices_on_test(sources: list[str]) -> list[tuple[int, int, str]]:
    """``(cell, line in cell, message)`` for each choice on a test metric in the cells
    ``sources``, read in order as one program."""
    detector = _Detector()
    return [
        (i, line, msg)
        for i, src in enumerate(sources)
        for line, msg in detector.check(_blank_magics(src))
    ]


def page_findings(path: Path) -> list[str]:
    """Each choice on a test metric in the page ``path``, as ``page:line: message``, the
    line counted in the page's own text."""
    text = path.read_text(encoding="utf-8")
    cells = [c.source for c in jupytext.read(path).cells if c.cell_type == "code"]
    starts: list[int | None] = []  # each cell's first line in the page, 0-based
    pos = 0
    for src in cells:
        at = text.find(src, pos) if src else -1
        starts.append(text.count("\n", 0, at) if at >= 0 else None)
        pos = at + len(src) if at >= 0 else pos
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name

    def where(cell: int, line: int) -> str:
        start = starts[cell]
        return f"cell {cell + 1}, line {line}" if start is None else str(start + line)

    return [f"{name}:{where(i, line)}: {msg}" for i, line, msg in choices_on_test(cells)]


def _page_path(page: str) -> Path:
    return next(
        (ROOT / f"{page}{s}" for s in (".md", ".ipynb") if (ROOT / f"{page}{s}").exists()),
        ROOT / f"{page}.md",
    )


@pytest.mark.parametrize("page", toc_pages())
def test_no_choice_on_test_data(page):
    findings = page_findings(_page_path(page))
    assert not findings, f"{ADVICE}:\n" + "\n".join(findings)


# -- the detector on synthetic snippets ---------------------------------------------

CAUGHT = [
    "best = df.loc[df.test_acc.idxmax()]",
    'best = df.loc[df["test_acc"].idxmin()]',
    'best = summary.loc[summary.groupby("n")["test_acc"].idxmax()]',
    "best = summary.loc[summary.groupby('n').test_acc.idxmax()]",
    "best = max(runs, key=lambda r: r.test_acc)",
    "best = min(runs, key=lambda r: r.history.test_loss[-1])",
    "best = sorted(runs, key=lambda r: -r.test_acc)[0]",
    'best = summary.sort_values("test_acc").iloc[-1]',
    'best = summary.sort_values(by=["test_loss", "lr"]).iloc[0]',
    'top3 = summary.nlargest(3, "test_acc")',
    'best = df.loc[df["test"].idxmax()]',
    "i = np.argmax(test_accs)",
    "i = torch.tensor(test_losses).argmin().item()",
    'print("best:", df.test_acc.idxmax())',
    "best_lr = lrs[test_accs.index(max(test_accs))]",
    "best_acc = float(summary.test_acc.max())",
    "best = results['test']['acc'].argmax()",
    "best = history.test.acc.idxmax()",
    # filters
    "good = summary[summary.test_acc > 0.8]",
    'good = summary.loc[(summary.lr < 0.1) & (summary["test_acc"] > 0.8)]',
    'good = summary.query("test_acc > 0.8")',
    "good = [r for r in runs if r.test_acc > 0.8]",
    # the hand-written argmax
    "best = None\nfor run in runs:\n    if best is None or run.test_acc > best.test_acc:\n"
    "        best = run",
    "best = a if a.test_acc > b.test_acc else b",
    # a choice through a name that holds test numbers
    "table = pd.DataFrame({m: [r.test_acc for r in runs[m]] for m in runs})\n"
    "fine_tuned = table[['full', 'gentle']].max(axis=1)",
    "def score(r):\n    return r.metrics['test_loss']\nbest = min(runs, key=score)",
]

PASSED = [
    "best = df.loc[df.val_acc.idxmax()]",
    'best = summary.loc[summary.groupby("n")["val_acc"].idxmax()]',
    "best = max(runs, key=lambda r: r.history.val_acc[-1])",
    "best = results['val']['acc'].argmax()",
    # a table that also holds test numbers, chosen by its validation column
    'summary = grid.summary()[["lr", "val_acc", "test_acc"]]\n'
    'best = summary.sort_values("val_acc").iloc[-1]\n'
    'print(f"chosen on validation: test accuracy {best.test_acc:.4f}")',
    "good = summary[summary.val_acc > 0.8]",
    # reporting and checking, not choosing
    "print(f'largest test accuracy {max(test_accs):.3f}')",
    "print('largest test accuracy', summary.test_acc.max())",
    "spread = summary.test_acc.max() - summary.test_acc.min()",
    "assert gain.idxmax() == smallest, 'the gain should be largest with few labels'",
    "assert (summary[summary.init == 'normal'].test_acc < 0.2).all()",
    "assert max(r.test_acc for r in runs) < 0.9",
    "by_init = summary.groupby('init').test_acc.mean()",
    "fig.update_yaxes(range=[0, 1.05 * summary.test_acc.max()])",
    # a max of an error, test data, a bare error of no split: no test metric
    "err = (learned - truth).abs().max()",
    "pred = model(X_test).argmax(dim=1)",
    "order = splits.test[1].argsort()",
    "best_h = bandwidths[nw_errors.index(min(nw_errors))]",
    'print("test accuracy after the best epoch:", history.val_acc.index(max(history.val_acc)))',
]


@pytest.mark.parametrize("snippet", CAUGHT)
def test_detector_catches(snippet):
    assert choices_on_test([snippet]), snippet


@pytest.mark.parametrize("snippet", PASSED)
def test_detector_passes(snippet):
    assert not choices_on_test([snippet]), choices_on_test([snippet])


def test_detector_follows_names_across_cells():
    cells = [
        "acc = {n: run.test_acc for n, run in runs.items()}",
        "%time x = 1",
        "best = max(acc, key=acc.get)",
    ]
    assert [(i, line) for i, line, _ in choices_on_test(cells)] == [(2, 1)]


def test_detector_skips_a_cell_that_does_not_parse():
    assert choices_on_test(["SELECT * FROM runs", "i = np.argmax(test_accs)"]) == [
        (1, 1, "argmax ranks by a test metric: `np.argmax(test_accs)`")
    ]


# -- the detector on synthetic pages ------------------------------------------------

PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A page

```{{code-cell}} ipython3
%matplotlib inline
summary = grid.summary()
```

Some prose.

```{{code-cell}} ipython3
:tags: [remove-cell]
print(len(summary))
```

```{{code-cell}} ipython3
{choice}
print(f"test accuracy {{best.test_acc:.4f}}")
```
"""


@pytest.mark.parametrize(
    "choice",
    [
        "best = summary.loc[summary.test_acc.idxmax()]",
        'best = summary.sort_values("test_acc").iloc[-1]',
        "best = max(grid.runs, key=lambda r: r.test_acc)",
    ],
)
def test_page_on_test_data_fails_with_its_line(tmp_path, choice):
    page = tmp_path / "page.md"
    page.write_text(PAGE.format(choice=choice), encoding="utf-8")
    findings = page_findings(page)
    line = PAGE.format(choice=choice).splitlines().index(choice) + 1
    assert len(findings) == 1 and findings[0].startswith(f"page.md:{line}: "), findings
    assert "test_acc" in findings[0]


@pytest.mark.parametrize(
    "choice",
    [
        "best = summary.loc[summary.val_acc.idxmax()]",
        'best = summary.sort_values("val_acc").iloc[-1]',
        "best = max(grid.runs, key=lambda r: r.val_acc)",
    ],
)
def test_page_on_validation_passes(tmp_path, choice):
    page = tmp_path / "page.md"
    page.write_text(PAGE.format(choice=choice), encoding="utf-8")
    assert page_findings(page) == []
