"""Live controls for a running kernel (Jupyter, Binder, Thebe): pick a configuration,
press "Train", watch the progress, see the run's figure.

The page passes the training as a function ``train_fn(config, on_epoch_end)`` that
returns a :class:`~d2lcore.sweep.RunResult`; these controls only collect the values,
check them, call it and show what came back. Training starts only on the button, and
the button is disabled while a run is in progress, so a reader cannot queue up runs.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

import ipywidgets as widgets
from traitlets import Unicode, observe

from d2lcore.figure_page import PLOT_CONFIG
from d2lcore.figure_text import axis_label, describe_config, format_value
from d2lcore.grid import AxisValue
from d2lcore.plotting import BookRenderer, plot_history
from d2lcore.train import EpochHook, History, RunResult

TrainFn = Callable[[dict[str, AxisValue], EpochHook], RunResult]
Bounds = tuple[float, float]


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _control(
    name: str, values: Sequence[AxisValue], value: AxisValue, label: str, bounds: Bounds | None
) -> widgets.ValueWidget:
    """The widget for one axis: a box to type into when the axis has bounds (free
    values), a slider over the grid's values for other numbers, buttons or a drop-down
    for names."""
    style = {"description_width": "initial"}
    layout = widgets.Layout(width="auto")
    if all(_is_number(v) for v in values):
        if bounds is not None:
            ints = all(isinstance(v, int) for v in values)
            return (widgets.IntText if ints else widgets.FloatText)(
                value=value, description=f"{label}:", continuous_update=False, style=style
            )
        return widgets.SelectionSlider(
            options=[(format_value(v), v) for v in values], value=value,
            description=f"{label}:", continuous_update=False, style=style, layout=layout,
        )  # fmt: skip
    options = [(format_value(v), v) for v in values]
    if len(values) <= 4:
        return widgets.ToggleButtons(options=options, value=value, description=f"{label}:",
                                     style=style)  # fmt: skip
    return widgets.Dropdown(options=options, value=value, description=f"{label}:", style=style)


#: How the status line's text is shown: wrapped at the panel's width (ipywidgets' Label is
#: one line, ``white-space: nowrap`` and ``text-overflow: ellipsis``, so the end of a long
#: status was cut off), long words broken rather than overflowing, and with the line
#: height of body text (the widget's own, 28 px, is for one line beside a control).
STATUS_STYLE = "white-space: normal; overflow-wrap: anywhere; line-height: 1.4; padding: 5px 0"


class StatusLine(widgets.HTML):
    """The panel's status line: plain :attr:`text` that wraps, announced to screen
    readers as it changes.

    Set :attr:`text`; :attr:`value`, what the frontend draws, follows it: the text,
    escaped, in a ``role="status"`` (``aria-live="polite"``) block styled by
    :data:`STATUS_STYLE`. Only ``value`` is sent to the frontend.
    """

    text = Unicode("", help="what the status line says, plain text")

    @observe("text")
    def _render(self, change: dict[str, Any]) -> None:
        self.value = (f'<div class="d2l-live-status" role="status" aria-live="polite" '
                      f'style="{STATUS_STYLE}">{html.escape(change["new"])}</div>')  # fmt: skip


class LiveControls:
    """Controls that re-train one configuration on demand and draw its history: one
    control per axis, a "Train" button, a progress bar, a status line and the latest
    run's figure. ``widget`` is the whole panel; ``train()`` is what the button does
    (tests call it directly); ``status.text`` is what the status line says (a
    :class:`StatusLine`, which wraps).

    Args:
        train_fn: ``train_fn(config, on_epoch_end)`` trains ``config`` (axis name ->
            value), calls ``on_epoch_end(epoch, history)`` after each epoch (pass it to
            :func:`~d2lcore.train.fit`) and returns a :class:`~d2lcore.sweep.RunResult`.
        axes: each axis' values (the grid's); a slider, buttons or a drop-down offers them.
        default: the values shown first (axes left out take their first value).
        labels: what each control changes (names the book uses have labels already).
        bounds: ``{name: (low, high)}``, inclusive, for numeric axes the reader may type
            any value into; a value outside (or not a number) trains nothing.
        num_epochs: the length of a run, for the progress bar; without it a
            ``num_epochs`` axis gives it, else the bar grows as the run goes.
        figure: what to draw of a finished run (``figure(result)``, a plotly figure);
            its history (:func:`~d2lcore.plotting.plot_history`) by default. While a
            run goes on, ``train_fn`` may draw into :attr:`output` itself.
    """

    #: Clicks that arrive this soon after a run ends were queued while it ran (the
    #: kernel handles messages one at a time); they are dropped, not run.
    click_cooldown_s = 0.5

    def __init__(
        self,
        train_fn: TrainFn,
        axes: Mapping[str, Sequence[AxisValue]],
        *,
        default: Mapping[str, AxisValue],
        labels: Mapping[str, str] | None = None,
        bounds: Mapping[str, Bounds] | None = None,
        num_epochs: int | None = None,
        figure: Callable[[RunResult], Any] | None = None,
    ) -> None:
        self.train_fn = train_fn
        self.figure = figure
        self.axes = {name: list(values) for name, values in axes.items()}
        self.labels = dict(labels or {})
        self.bounds = dict(bounds or {})
        self.num_epochs = num_epochs
        unknown = (set(default) | set(self.bounds)) - set(self.axes)
        if unknown:
            raise KeyError(f"default or bounds name axes {sorted(unknown)} not in {list(axes)}")
        for name, (low, high) in self.bounds.items():
            if not all(_is_number(v) for v in self.axes[name]):
                raise ValueError(f"bounds given for {name!r}, whose values are not numbers")
            if not low < high:
                raise ValueError(f"bounds for {name!r} must be (low, high), got {(low, high)}")
        self.controls: dict[str, widgets.ValueWidget] = {}
        for name, values in self.axes.items():
            value = default.get(name, values[0])
            if name not in self.bounds and value not in values:
                raise KeyError(f"default {name}={value!r} is not one of {values}")
            self.controls[name] = _control(name, values, value, axis_label(name, self.labels),
                                           self.bounds.get(name))  # fmt: skip
        self.button = widgets.Button(description="Train", button_style="primary", icon="play",
                                     tooltip="train this configuration")  # fmt: skip
        self.progress = widgets.IntProgress(value=0, min=0, max=num_epochs or 1,
                                            description="epoch", bar_style="")  # fmt: skip
        self.status = StatusLine(text="Choose the values, then press Train.")
        self.output = widgets.Output()
        self.widget = widgets.VBox([
            *self.controls.values(),
            widgets.HBox([self.button, self.progress]),
            self.status,
            self.output,
        ])  # fmt: skip
        self.button.on_click(self._on_click)
        self.result: RunResult | None = None
        self.running = False
        self._ended_at = -math.inf
        self._total: int | None = num_epochs

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def config(self) -> dict[str, AxisValue]:
        """The configuration the controls show now."""
        return {name: control.value for name, control in self.controls.items()}

    def validate(self, config: Mapping[str, AxisValue]) -> str | None:
        """Why ``config`` cannot be trained, or ``None`` when it can."""
        for name, value in config.items():
            label = axis_label(name, self.labels)
            if name in self.bounds:
                low, high = self.bounds[name]
                if not _is_number(value) or not math.isfinite(value):
                    return f"{label} must be a number, got {value!r}"
                if not low <= value <= high:
                    # The value as typed: ``:g`` would round 2.0000001 to "2", which reads
                    # as inside the bounds.
                    return f"{label} must be between {low:g} and {high:g}, got {value!r}"
            elif value not in self.axes[name]:
                return f"{label} must be one of {[format_value(v) for v in self.axes[name]]}"
        return None

    #: Appended to the status when a click is dropped (see :attr:`click_cooldown_s`).
    DROPPED = " A click made during the run was ignored: press Train to train again."

    def _on_click(self, _button: widgets.Button) -> None:
        if time.monotonic() - self._ended_at < self.click_cooldown_s:
            if not self.status.text.endswith(self.DROPPED):
                self.status.text += self.DROPPED
            return
        self.train()

    def _on_epoch_end(self, epoch: int, history: History) -> None:
        if self.progress.max < epoch:
            self.progress.max = epoch  # the number of epochs was not given
        self.progress.value = epoch
        total = f"/{self._total}" if self._total else ""
        self.status.text = f"epoch {epoch}{total}: train loss {history.train_loss[-1]:.4g}"

    def train(self) -> RunResult | None:
        """Train the selected configuration and show it; what the button calls.

        Returns the run, or ``None`` when nothing was trained (a run already in
        progress, an invalid value, ``train_fn`` raised, was interrupted or returned
        something other than a :class:`~d2lcore.train.RunResult`). Every way a run ends
        leaves the status line saying which, the bar coloured to match and the button
        ready for the next run.
        """
        if self.running:
            return None  # a click during a run: the button is disabled, ignore it anyway
        config = self.config()
        problem = self.validate(config)
        if problem is not None:
            self.status.text = f"Not trained: {problem}."
            return None
        self.running = True
        self.button.disabled = True
        try:
            return self._run(config)
        finally:  # the button comes back only once the figure is shown (or the run failed)
            self.running = False
            self.button.disabled = False
            self._ended_at = time.monotonic()

    def _run(self, config: dict[str, AxisValue]) -> RunResult | None:
        self.progress.value, self.progress.bar_style = 0, "info"
        # The run's length: given, or an axis of the grid, or found out as it goes.
        epochs = self.num_epochs or config.get("num_epochs")
        self.progress.max = epochs if isinstance(epochs, int) and epochs > 0 else 1
        self._total = self.progress.max if epochs else None
        self.status.text = f"Training {describe_config(config, self.labels)} ..."
        start = time.perf_counter()
        try:
            result = self.train_fn(dict(config), self._on_epoch_end)
        except KeyboardInterrupt:  # "Interrupt kernel" during the run: stop, say so
            self.progress.bar_style = "warning"
            self.status.text = (f"Interrupted at epoch {self.progress.value}"
                                f"{f' of {self._total}' if self._total else ''}: nothing "
                                "was kept. Press Train to run it again.")  # fmt: skip
            return None
        except Exception as error:  # a reader sees a message, never a traceback
            self.progress.bar_style = "danger"
            self.status.text = f"Training failed: {type(error).__name__}: {error}"
            return None
        except BaseException as error:  # SystemExit and the like: say so, then let it go on
            self.progress.bar_style = "danger"
            detail = f": {error}" if str(error) else ""
            name = type(error).__name__
            self.status.text = f"Training stopped: {name}{detail}. Nothing was kept."
            raise
        if not isinstance(result, RunResult):
            self.progress.bar_style = "danger"
            self.status.text = (f"Training returned {type(result).__name__}, not a RunResult: "
                                "nothing to show. The training function must return its "
                                "RunResult.")  # fmt: skip
            return None
        self.result = result
        try:
            self._show(result, config, time.perf_counter() - start)
        except Exception as error:  # the run is kept; only its figure is missing
            self.progress.bar_style = "danger"
            self.status.text = (f"Trained, but drawing the figure failed: "
                                f"{type(error).__name__}: {error}")  # fmt: skip
        return result

    def _show(self, result: RunResult, config: Mapping[str, AxisValue], seconds: float) -> None:
        h = result.history
        what = describe_config(config, self.labels)
        # The figure first, then the status line: a reader (or a test) who sees the run's
        # numbers in the status finds its figure already there.
        fig = self.figure(result) if self.figure is not None else plot_history(h, title=what)
        # Replacing the outputs in one assignment is clear_output(wait=True) + display
        # without flicker, and works from any thread and without a frontend.
        bundle = BookRenderer(config=PLOT_CONFIG).to_mimebundle(fig.to_dict())
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
        # The numbers and the run time first, then the configuration they belong to (the
        # panel shows it above): "test accuracy 84.00%, train loss 0.41 (1.7 s) ·
        # learning rate 0.1, dropout rate 0.2."
        took = f"({seconds:.1f} s) · {what}."
        if h.diverged:
            self.progress.bar_style = "warning"
            self.status.text = (f"diverged at epoch {h.diverged_epoch}: the loss stopped being "
                                f"a finite number {took}")  # fmt: skip
        else:
            self.progress.bar_style = "success"
            self.progress.max = max(self.progress.max, h.num_epochs)
            self.progress.value = h.num_epochs
            parts: list[str] = []
            if result.test_acc is not None:
                parts.append(f"test accuracy {100 * result.test_acc:.2f}%")
            if h.val_acc:
                parts.append(f"validation accuracy {100 * h.val_acc[-1]:.2f}%")
            if h.train_loss:
                parts.append(f"train loss {h.train_loss[-1]:.4g}")
            if h.val_loss:
                parts.append(f"validation loss {h.val_loss[-1]:.4g}")
            numbers = ", ".join(parts) or f"trained {h.num_epochs} epochs"
            self.status.text = f"{numbers} {took}"


#: ``live_controls(train_fn, axes, default=...)`` builds the panel: another name for
#: :class:`LiveControls`, which reads well as the last line of a notebook cell.
live_controls = LiveControls
