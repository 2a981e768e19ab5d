"""A configuration in words, for the figures' controls and readouts: what an axis
changes ("learning rate" for ``lr``), each value's text (also its URL-hash text), a
configuration and a run's final numbers as a readout, the grid as a caption, and a
figure's stable id."""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Mapping
from typing import Any

from d2lcore.grid import AxisValue
from d2lcore.train import History, RunResult

#: What a control changes, for the axis names the book uses; others read "weight decay"
#: for ``weight_decay``.
AXIS_LABELS = {
    "lr": "learning rate",
    "dropout": "dropout rate",
    "init": "initialization",
    "weight_decay": "weight decay",
    "batch_size": "batch size",
    "num_epochs": "epochs",
    "num_hiddens": "hidden units",
}

def axis_label(name: str, labels: Mapping[str, str] | None = None) -> str:
    """What the axis ``name`` changes, in words ("learning rate" for ``lr``)."""
    if labels and name in labels:
        return labels[name]
    return AXIS_LABELS.get(name, name.replace("_", " "))


def format_value(value: AxisValue) -> str:
    """A short, URL-safe-ish text for an axis value: ``0.1``, ``1e-05``, ``xavier_normal``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def value_texts(name: str, values: list[AxisValue]) -> list[str]:
    texts = [format_value(v) for v in values]
    if len(set(texts)) < len(texts):  # values closer than 6 digits: fall back to repr
        texts = [repr(v) if isinstance(v, float) else format_value(v) for v in values]
    if len(set(texts)) < len(texts):
        raise ValueError(f"axis {name!r} has repeated values: {values}")
    return texts


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_fig_id(title: str, axes: Mapping[str, Any]) -> str:
    """A stable id from the title and axis names: a readable slug, then a short digest of
    the full title and the names, so titles that differ only beyond the slug's 40
    characters or in non-ASCII letters ("Loss (α)", "Loss (β)") get different ids.
    The same inputs give the same id in every build; axis values are left out, so a
    link still fits when a build profile trains other values."""
    names = [str(n) for n in axes]
    digest = hashlib.sha256("\x1f".join([title, *names]).encode()).hexdigest()[:8]
    slug = "-".join(filter(None, [_slug(title)[:40], *(_slug(n)[:20] for n in names)]))
    if not slug or not slug[0].isalpha():
        slug = "fig-" + slug  # an id starts with a letter
    return f"{slug.rstrip('-')}-{digest}"


def _fmt_loss(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _fmt_acc(x: float) -> str:
    return f"{100 * x:.2f}%"


def describe_config(
    config: Mapping[str, AxisValue], labels: Mapping[str, str] | None = None
) -> str:
    """A configuration in words: "learning rate 0.1, dropout rate 0.5". The one place
    that says it, for the slider readouts and the live controls alike."""
    return ", ".join(f"{axis_label(k, labels)} {format_value(v)}" for k, v in config.items())


def readout(run: RunResult, labels: Mapping[str, str] | None = None) -> str:
    """The text above the panels for one configuration: its final numbers, or where it
    diverged. Up to three lines of plotly's HTML subset."""
    config = html.escape(describe_config(run.config, labels), quote=False)
    h = run.history
    if h.diverged:
        line = (f"diverged at epoch {h.diverged_epoch} (the loss stopped being a finite "
                f"number); {h.num_epochs} epochs recorded before")  # fmt: skip
    else:
        line = f"after {h.num_epochs} epochs: train loss {_fmt_loss(h.final()['train_loss'])}"
        if h.val_loss:
            line += f", validation loss {_fmt_loss(h.val_loss[-1])}"
        # Accuracies on a line of their own, so the readout fits a phone's width.
        accuracies = [f"validation accuracy {_fmt_acc(h.val_acc[-1])}"] if h.val_acc else []
        best_epoch = run.metrics.get("best_epoch")
        if best_epoch is not None and "best_val_acc" in run.metrics:
            # Early stopping kept another epoch's weights: the test measured those.
            accuracies.append(f"best validation accuracy "
                              f"{_fmt_acc(run.metrics['best_val_acc'])} at epoch "
                              f"{int(best_epoch)}, whose weights are kept")  # fmt: skip
        if run.test_acc is not None:
            accuracies.append(f"test accuracy {_fmt_acc(run.test_acc)}"
                              + (" with them" if best_epoch is not None else ""))
        if accuracies:
            line += "<br>" + ", ".join(accuracies)
    return f"<b>{config}</b><br>{line}"


def diverged_text(h: History) -> str:
    return f"diverged at epoch {h.diverged_epoch}" if h.diverged else ""


def grid_in_words(axes: Mapping[str, list[AxisValue]], labels: Mapping[str, str] | None,
              what: str, how: str) -> str:
    """The grid in words: "the 12 runs of 3 values of learning rate x 4 values of
    dropout rate, trained beforehand; the controls pick one"."""
    sizes = [f"{len(v)} values of {axis_label(n, labels)}" for n, v in axes.items()]
    count = math.prod(len(v) for v in axes.values())
    return f"the {count} {what} of {' x '.join(sizes)}, {how} beforehand; the controls pick one"
