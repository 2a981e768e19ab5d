"""The live controls, driven from plain Python (ipywidgets works without a frontend)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import ipywidgets as widgets
import pytest

from d2lcore.figure_text import describe_config
from d2lcore.train import EpochHook, History, RunResult
from d2lcore.widgets import STATUS_STYLE, LiveControls, StatusLine, live_controls

AXES = {"lr": [0.01, 0.1, 1.0], "dropout": [0.0, 0.5], "init": ["normal", "xavier_normal"]}
NUM_EPOCHS = 4


class FakeTrainer:
    """Records its calls; reports each epoch through the hook like ``fit`` does."""

    def __init__(self, diverge_at: int | None = None, error: Exception | None = None):
        self.calls: list[dict] = []
        self.progress_seen: list[int] = []
        self.diverge_at = diverge_at
        self.error = error
        self.during_run = None  # called inside the run, e.g. to click again

    def __call__(self, config: dict, on_epoch_end: EpochHook) -> RunResult:
        self.calls.append(dict(config))
        if self.error is not None:
            raise self.error
        h = History()
        for epoch in range(1, NUM_EPOCHS + 1):
            if epoch == self.diverge_at:
                h.diverged, h.diverged_epoch = True, epoch
                break
            loss = (1 + config["dropout"]) / (epoch * 10 * config["lr"])
            h.train_loss.append(loss)
            h.val_loss.append(loss * 1.1)
            h.val_acc.append(1 - loss / 100)
            h.seconds.append(0.01)
            on_epoch_end(epoch, h)
            self.progress_seen.append(self.controls.progress.value)
            if self.during_run is not None:
                self.during_run()
        return RunResult(config=dict(config), history=h, test_acc=0.77)


def make(trainer: FakeTrainer, **kwargs) -> LiveControls:
    kwargs.setdefault("default", {"lr": 0.1, "dropout": 0.0, "init": "xavier_normal"})
    controls = live_controls(trainer, AXES, num_epochs=NUM_EPOCHS, **kwargs)
    trainer.controls = controls
    return controls


def shown_figure(controls: LiveControls) -> dict:
    (output,) = controls.output.outputs
    return output["data"]["application/vnd.plotly.v1+json"]


def test_one_control_per_axis_and_nothing_runs_before_the_button():
    trainer = FakeTrainer()
    controls = make(trainer, bounds={"lr": (1e-6, 10.0)})
    lr, dropout, init = (controls.controls[n] for n in AXES)
    assert isinstance(lr, widgets.FloatText) and lr.value == 0.1
    assert isinstance(dropout, widgets.SelectionSlider)
    assert list(dropout.options) == [("0", 0.0), ("0.5", 0.5)] and dropout.value == 0.0
    assert isinstance(init, widgets.ToggleButtons) and init.value == "xavier_normal"
    assert lr.continuous_update is False and dropout.continuous_update is False
    assert "learning rate" in lr.description and "dropout rate" in dropout.description
    dropout.value = 0.5  # moving a control trains nothing
    assert trainer.calls == [] and controls.output.outputs == ()
    assert controls.widget.children[-1] is controls.output
    assert "application/vnd.jupyter.widget-view+json" in controls._repr_mimebundle_()


def test_the_button_trains_the_selected_values_and_shows_the_run():
    trainer = FakeTrainer()
    controls = make(trainer)
    controls.controls["dropout"].value = 0.5
    controls.controls["lr"].value = 0.01
    controls.button.click()
    assert trainer.calls == [{"lr": 0.01, "dropout": 0.5, "init": "xavier_normal"}]
    # Progress moved with every epoch and ends at the number of epochs.
    assert trainer.progress_seen == list(range(1, NUM_EPOCHS + 1))
    assert controls.progress.value == controls.progress.max == NUM_EPOCHS
    assert controls.progress.bar_style == "success"
    h = controls.result.history
    assert f"train loss {h.train_loss[-1]:.4g}" in controls.status.text
    assert "test accuracy 77.00%" in controls.status.text
    fig = shown_figure(controls)
    assert fig["data"][0]["y"] == pytest.approx(h.train_loss)
    assert "learning rate 0.01" in fig["layout"]["title"]["text"]
    assert "plotly-graph-div" in controls.output.outputs[0]["data"]["text/html"]

    controls.click_cooldown_s = 0.0
    controls.controls["init"].value = "normal"
    controls.button.click()
    assert trainer.calls[-1] == {"lr": 0.01, "dropout": 0.5, "init": "normal"}
    assert len(controls.output.outputs) == 1  # replaced, not appended
    assert "initialization normal" in shown_figure(controls)["layout"]["title"]["text"]


class _Shown(HTMLParser):
    """What a browser makes of a status line's HTML: its elements' attributes and text."""

    def __init__(self, markup: str):
        super().__init__()
        self.elements: list[dict[str, str | None]] = []
        self.text = ""
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append({"tag": tag, **dict(attrs)})

    def handle_data(self, data):
        self.text += data


def test_the_status_after_a_run_gives_the_numbers_first_and_wraps():
    """The status line after a run: the measured numbers, then the run time, then the
    configuration, in a widget that wraps (ipywidgets' Label is one line cut off with an
    ellipsis), as an escaped, polite live region."""
    controls = make(FakeTrainer())
    controls.controls["lr"].value = 0.01
    controls.train()
    h = controls.result.history
    text = controls.status.text
    accuracies = f"test accuracy 77.00%, validation accuracy {100 * h.val_acc[-1]:.2f}%"
    losses = f"train loss {h.train_loss[-1]:.4g}, validation loss {h.val_loss[-1]:.4g}"
    numbers = f"{accuracies}, {losses}"
    assert text.startswith(numbers + " ("), text
    config = "learning rate 0.01, dropout rate 0, initialization xavier_normal"
    assert re.fullmatch(re.escape(numbers) + r" \(\d+\.\d s\) · " + re.escape(config) + r"\.",
                        text), text  # fmt: skip
    # Rendered by an HTML widget, not a Label (.widget-label: nowrap, ellipsis), whose one
    # element wraps and announces its text.
    assert isinstance(controls.status, widgets.HTML)
    assert not isinstance(controls.status, widgets.Label)
    assert controls.status in controls.widget.children
    shown = _Shown(controls.status.value)
    (element,) = shown.elements
    assert element["role"] == "status" and element["aria-live"] == "polite"
    assert element["style"] == STATUS_STYLE
    assert "white-space: normal" in STATUS_STYLE and "overflow-wrap: anywhere" in STATUS_STYLE
    assert "nowrap" not in STATUS_STYLE and "ellipsis" not in STATUS_STYLE
    assert shown.text == text


def test_the_status_line_escapes_its_text():
    trainer = FakeTrainer(error=RuntimeError("<img src=x onerror=alert(1)> & <b>"))
    controls = make(trainer)
    controls.train()
    said = "Training failed: RuntimeError: <img src=x onerror=alert(1)> & <b>"
    assert controls.status.text == said
    assert "<img" not in controls.status.value and "<b>" not in controls.status.value
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &lt;b&gt;" in controls.status.value
    shown = _Shown(controls.status.value)
    assert [e["tag"] for e in shown.elements] == ["div"] and shown.text == said
    # Set before the widget exists, the text is shown too.
    assert "Choose the values" in _Shown(make(FakeTrainer()).status.value).text
    assert _Shown(StatusLine(text="a < b").value).text == "a < b"


def test_the_figure_is_shown_before_the_status_reports_the_run_and_the_button_returns():
    """A frontend sees the widget changes in the order they are made: when the status
    line says the run is done, and when the button can be pressed again, its figure must
    already be in the output (the Live Code test waits on exactly these two signs)."""
    trainer = FakeTrainer()
    controls = make(trainer)
    seen: list[tuple[str, int, bool]] = []
    controls.status.observe(lambda change: seen.append(
        ("status", len(controls.output.outputs), controls.button.disabled)), "value")  # fmt: skip
    controls.button.observe(lambda change: seen.append(
        ("button", len(controls.output.outputs), change["new"])), "disabled")  # fmt: skip
    controls.button.click()
    done = [s for s in seen if s[0] == "status"][-1]
    assert done[1] == 1, "the final status came before the figure"
    assert seen[-1] == ("button", 1, False), "the button came back before the figure"
    assert all(n == 0 for what, n, _ in seen[:-2] if what == "status")  # during the run


def test_train_returns_the_run_and_typed_values_within_bounds_are_used():
    trainer = FakeTrainer()
    controls = make(trainer, bounds={"lr": (1e-6, 10.0)})
    controls.controls["lr"].value = 0.37  # not a grid value: free within bounds
    result = controls.train()
    assert result is controls.result and result.config["lr"] == 0.37
    assert trainer.calls == [{"lr": 0.37, "dropout": 0.0, "init": "xavier_normal"}]


@pytest.mark.parametrize("lr", [0.0, -0.1, 11.0, float("nan"), float("inf")])
def test_an_invalid_value_gives_a_message_and_trains_nothing(lr):
    trainer = FakeTrainer()
    controls = make(trainer, bounds={"lr": (1e-6, 10.0)})
    controls.controls["lr"].value = lr
    assert controls.train() is None
    assert trainer.calls == []
    assert controls.status.text.startswith("Not trained: learning rate must be")
    assert controls.output.outputs == ()
    assert not controls.button.disabled


def test_clicks_during_a_run_are_ignored():
    trainer = FakeTrainer()
    controls = make(trainer)
    states = []

    def click_again():
        states.append(controls.button.disabled)
        assert controls.train() is None
        controls.button.click()

    trainer.during_run = click_again
    controls.button.click()
    assert len(trainer.calls) == 1
    assert states == [True] * NUM_EPOCHS  # disabled during the whole run
    assert not controls.button.disabled and not controls.running
    # A click queued while the run went on arrives right after it: dropped too, and
    # the status says so (keeping the run's numbers).
    trainer.during_run = None
    controls.button.click()
    assert len(trainer.calls) == 1
    assert controls.status.text.endswith(LiveControls.DROPPED)
    assert "validation accuracy" in controls.status.text
    controls.button.click()
    assert controls.status.text.count(LiveControls.DROPPED.strip()) == 1
    controls.click_cooldown_s = 0.0
    controls.button.click()
    assert len(trainer.calls) == 2


def test_an_exception_in_train_fn_becomes_a_message():
    trainer = FakeTrainer(error=RuntimeError("CUDA out of memory"))
    controls = make(trainer)
    assert controls.train() is None  # no traceback escapes
    assert controls.status.text == "Training failed: RuntimeError: CUDA out of memory"
    assert controls.progress.bar_style == "danger"
    assert not controls.button.disabled and not controls.running
    trainer.error = None
    assert controls.train() is not None  # the controls still work afterwards


def test_a_diverged_run_says_where():
    trainer = FakeTrainer(diverge_at=3)
    controls = make(trainer)
    result = controls.train()
    assert result.history.diverged
    assert controls.status.text.startswith("diverged at epoch 3: ")
    assert " s) · learning rate 0.1, " in controls.status.text
    assert controls.progress.value == 2 and controls.progress.bar_style == "warning"
    names = [t["name"] for t in shown_figure(controls)["data"]]
    assert any("diverged at epoch 3" in n for n in names)


def test_bad_arguments_are_refused():
    with pytest.raises(KeyError):
        live_controls(FakeTrainer(), AXES, default={"lr": 0.3})  # not a grid value
    with pytest.raises(KeyError):
        live_controls(FakeTrainer(), AXES, default={"momentum": 0.9})
    with pytest.raises(ValueError):
        live_controls(FakeTrainer(), AXES, default={}, bounds={"init": (0, 1)})
    with pytest.raises(ValueError):
        live_controls(FakeTrainer(), AXES, default={}, bounds={"lr": (1.0, 0.1)})


def test_progress_grows_when_the_number_of_epochs_is_not_given():
    trainer = FakeTrainer()
    controls = live_controls(trainer, AXES, default={})
    trainer.controls = controls
    controls.train()
    assert trainer.calls == [{"lr": 0.01, "dropout": 0.0, "init": "normal"}]
    assert controls.progress.value == controls.progress.max == NUM_EPOCHS


def test_a_num_epochs_axis_sets_the_length_of_the_progress_bar():
    trainer = FakeTrainer()
    controls = live_controls(
        trainer, {**AXES, "num_epochs": [2, NUM_EPOCHS]}, default={"num_epochs": NUM_EPOCHS}
    )
    trainer.controls = controls
    maxima = []
    trainer.during_run = lambda: maxima.append(controls.progress.max)
    controls.train()
    assert maxima == [NUM_EPOCHS] * NUM_EPOCHS
    assert " s) · learning rate 0.01, dropout rate 0, " in controls.status.text


def test_the_status_describes_the_run_as_the_slider_readouts_do():
    trainer = FakeTrainer()
    controls = make(trainer, labels={"lr": "step size"})
    controls.train()
    config = {"lr": 0.1, "dropout": 0.0, "init": "xavier_normal"}
    what = describe_config(config, {"lr": "step size"})
    assert what == "step size 0.1, dropout rate 0, initialization xavier_normal"
    assert controls.status.text.startswith("test accuracy 77.00%, ")
    assert controls.status.text.endswith(f" s) · {what}.")
    assert shown_figure(controls)["layout"]["title"]["text"] == what


def test_an_interrupt_during_a_run_leaves_a_working_panel():
    """'Interrupt kernel' in the middle of a run: the panel says where it stopped and
    that nothing was kept, the bar is no longer the blue of a running job, and the
    button trains again."""
    trainer = FakeTrainer()
    controls = make(trainer)

    def interrupt():
        if controls.progress.value == 2:
            raise KeyboardInterrupt

    trainer.during_run = interrupt
    assert controls.train() is None
    assert controls.status.text.startswith("Interrupted at epoch 2 of 4: nothing was kept")
    assert controls.progress.bar_style == "warning"
    assert not controls.button.disabled and not controls.running and controls.result is None
    trainer.during_run = None
    assert controls.train() is not None and controls.progress.bar_style == "success"


@pytest.mark.parametrize("returned", [None, "done", History()])
def test_a_train_fn_that_returns_no_run_says_so(returned):
    controls = make(lambda config, hook: returned)
    assert controls.train() is None
    assert controls.status.text.startswith(f"Training returned {type(returned).__name__}, "
                                            "not a RunResult")  # fmt: skip
    assert controls.progress.bar_style == "danger"
    assert not controls.button.disabled and not controls.running


def test_a_figure_function_draws_the_finished_run_instead_of_its_history():
    import plotly.graph_objects as go

    seen = []

    def figure(run: RunResult) -> go.Figure:
        seen.append(run)
        return go.Figure(go.Scatter(x=[0, 1], y=[run.test_acc, run.test_acc], name="mine"))

    controls = make(FakeTrainer(), figure=figure)
    result = controls.train()
    assert seen == [result]
    assert [t["name"] for t in shown_figure(controls)["data"]] == ["mine"]


def test_a_figure_function_that_raises_leaves_a_status_and_a_working_panel():
    def figure(run: RunResult) -> None:
        raise ValueError("no such trace")

    controls = make(FakeTrainer(), figure=figure)
    result = controls.train()
    assert result is not None and controls.result is result  # the run is kept
    assert controls.status.text == (
        "Trained, but drawing the figure failed: ValueError: no such trace")
    assert controls.progress.bar_style == "danger"
    assert not controls.button.disabled and not controls.running
    controls.figure = None
    assert controls.train() is not None and controls.progress.bar_style == "success"


@pytest.mark.parametrize("error", [SystemExit(3), GeneratorExit()])
def test_a_base_exception_in_train_fn_says_so_and_goes_on(error):
    """Not an Exception, not an interrupt: the status says what stopped the run and the
    panel works, and the exception goes on to the kernel, as it would without the panel."""
    trainer = FakeTrainer(error=error)
    controls = make(trainer)
    with pytest.raises(type(error)):
        controls.train()
    name = type(error).__name__
    assert controls.status.text.startswith(f"Training stopped: {name}")
    assert controls.status.text.endswith("Nothing was kept.")
    assert controls.progress.bar_style == "danger"
    assert not controls.button.disabled and not controls.running
    trainer.error = None
    assert controls.train() is not None


def test_a_value_just_over_a_bound_is_shown_as_given():
    controls = make(FakeTrainer(), bounds={"lr": (1e-4, 2.0)})
    controls.controls["lr"].value = 2.0000001
    assert controls.train() is None
    assert controls.status.text == (
        "Not trained: learning rate must be between 0.0001 and 2, got 2.0000001.")
