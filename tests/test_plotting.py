import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from d2lcore.plotting import (
    BOOK_RENDERER,
    figure_json,
    image_grid,
    percent_heatmap,
    plot_history,
    plot_lines,
    tile,
    use_book_renderer,
)
from d2lcore.train import History


def test_book_renderer_emits_html_beside_plotly_mime():
    use_book_renderer()
    assert pio.renderers.default == BOOK_RENDERER
    fig = plot_lines([1, 2, 3], {"a": [1, 4, 9]}, xlabel="x", ylabel="y")
    bundle = pio.renderers[BOOK_RENDERER].to_mimebundle(fig.to_dict())
    assert "application/vnd.plotly.v1+json" in bundle
    html = bundle["text/html"]
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html
    assert (
        "<script src=" not in html and "cdn" not in html.lower()
    )  # plotly.js not inlined or fetched


def test_plot_history_has_loss_and_accuracy_panels_and_marks_divergence():
    good = History([1.0, 0.5], [1.1, 0.6], [0.6, 0.8], [0.1, 0.1])
    bad = History([], [], [], [], diverged=True, diverged_epoch=1)
    fig = figure_json(plot_history({"lr=0.1": good, "lr=10": bad}))
    names = [t["name"] for t in fig["data"]]
    assert "lr=0.1 train loss" in names and "lr=0.1 validation accuracy" in names
    assert any("diverged at epoch 1" in n for n in names)
    notes = [a["text"] for a in fig["layout"]["annotations"]]
    assert "lr=10 diverged at epoch 1" in notes  # visible even though its trace is empty
    acc = next(t for t in fig["data"] if t["name"] == "lr=0.1 validation accuracy")
    assert acc["y"] == [0.6, 0.8] and acc["xaxis"] == "x2"
    assert fig["layout"]["xaxis"]["title"]["text"] == "epoch"


def test_regression_history_has_one_panel():
    fig = figure_json(plot_history(History([2.0, 1.0], [2.1, 1.1], [], [0.1, 0.1])))
    assert {t.get("xaxis", "x") for t in fig["data"]} == {"x"}


def test_image_grid_titles_and_layout():
    imgs = torch.rand(10, 1, 28, 28)
    fig = image_grid(imgs, [f"img {i}" for i in range(10)], ncols=5)
    assert len(fig.data) == 10
    assert [a.text for a in fig.layout.annotations] == [f"img {i}" for i in range(10)]
    z = torch.as_tensor(fig.data[0].z)
    assert torch.allclose(z, imgs[0, 0] * 255)  # [0, 1] input shown on a 0..255 scale


def test_percent_heatmap_stores_whole_percents_in_one_byte():
    z = torch.tensor([[0.5, -0.25], [0.0, 0.001]])
    trace = percent_heatmap(z, unit="weight")
    assert trace.z.dtype == np.int8
    np.testing.assert_array_equal(trace.z, [[100, -50], [0, 0]])  # of the largest |z|
    assert (trace.zmin, trace.zmax, trace.zmid) == (-100, 100, 0)
    assert "weight %{z}% of 0.5" in trace.hovertemplate
    # A shared scale compares sizes; values beyond it are clipped.
    np.testing.assert_array_equal(percent_heatmap(z, scale=0.25).z, [[100, -100], [0, 0]])
    np.testing.assert_array_equal(percent_heatmap(np.zeros((2, 3))).z, np.zeros((2, 3)))
    # Every value within half a percent of the scale; about 1.5 bytes a cell in the page.
    x = np.random.default_rng(0).normal(size=(28, 28))
    stored = percent_heatmap(x, scale=3.0).z.astype(float) * 3.0 / 100
    assert np.abs(np.clip(x, -3, 3) - stored).max() <= 0.005 * 3.0 + 1e-12

    def page(*traces: go.Heatmap) -> str:
        return pio.to_html(go.Figure(traces), include_plotlyjs=False, full_html=False)

    html = page(percent_heatmap(x))
    # base64 (4/3 bytes a cell, a little more where "/" is escaped), and the settings
    assert '"dtype":"i1"' in html and len(html) - len(page()) < 28 * 28 * 1.6 + 700
    with pytest.raises(ValueError, match="2-D"):
        percent_heatmap(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        percent_heatmap(np.array([[np.nan]]))


def test_tile_lays_images_out_with_gaps_and_centres_smaller_ones():
    big = np.arange(1, 13, dtype=float).reshape(3, 4)
    small = np.full((1, 2), -1.0)
    t = tile([big, small, torch.tensor(big) * 2], cols=2, row_gap=2, col_gap=1)
    assert t.array.shape == (3 + 2 + 3, 4 + 1 + 4)
    assert t.corners == [(0, 0), (1, 6), (5, 0)]  # the small one centred in its cell
    np.testing.assert_array_equal(t.image(0), big)
    np.testing.assert_array_equal(t.image(1), small)
    np.testing.assert_array_equal(t.image(2), 2 * big)
    # Everything else is blank.
    assert np.count_nonzero(t.array) == big.size * 2 + small.size
    assert t.array[:, 4].tolist() == [0.0] * 8 and t.array[3:5].max() == 0.0


def test_relaid_puts_the_same_images_in_other_columns():
    images = [np.full((3, 4), j + 1.0) for j in range(5)] + [np.full((1, 2), -1.0)]
    t = tile(images, cols=3, row_gap=2, col_gap=1)
    assert (t.cols, t.row_gap, t.col_gap) == (3, 2, 1)
    two = t.relaid(2)
    assert two.array.shape == (3 * 3 + 2 * 2, 2 * 4 + 1) and two.cols == 2
    for c in (1, 2, 3, 6):
        again = t.relaid(c)
        assert again.corners == tile(images, cols=c, row_gap=2, col_gap=1).corners
        for j, image in enumerate(images):
            np.testing.assert_array_equal(again.image(j), image)
    assert t.relaid(10).cols == 6  # no more columns than images


@pytest.mark.parametrize("images, kwargs, message", [
    ([], {"cols": 2}, "no images"),
    ([np.zeros(3)], {"cols": 2}, "2-D"),
    ([np.zeros((2, 2))], {"cols": 0}, "cols must be at least 1"),
    ([np.zeros((2, 2))], {"cols": 1, "row_gap": -1}, "gaps at least 0"),
])  # fmt: skip
def test_tile_refuses_what_it_cannot_lay_out(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tile(images, **kwargs)
