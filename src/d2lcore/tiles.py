"""Images tiled into one heat map (:func:`d2lcore.plotting.tile`: templates, filters,
activations) shown in a slider figure as labelled images, laid out again in fewer columns
where the screen is narrow (the page script ``figure.js`` does, from the layouts computed
here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from d2lcore.figure_page import Panels, TileLayout, Tiles
from d2lcore.plotting import Tiling
from d2lcore.sliders import SliderFigure, SliderSpec

#: The narrowest a tile of :func:`set_tiles` may be on a screen, in CSS pixels: a 28 x 28
#: image at 3 screen pixels a pixel, with room for a label such as "activation 0".
MIN_TILE_WIDTH = 84


def _tile_layout(tiling: Tiling) -> TileLayout:
    """Where :func:`set_tiles` puts the tiles of ``tiling``, their labels (centred above
    each tile, in the blank rows above it) and the axes' ranges."""
    height, width = tiling.array.shape
    labels = [(left + (w - 1) / 2, top - 0.5)
              for (top, left), (_, w) in zip(tiling.corners, tiling.shapes, strict=True)]
    return TileLayout(cols=tiling.cols, shape=(height, width), corners=list(tiling.corners),
                      labels=labels, x_range=(-0.5, width - 0.5),
                      y_range=(height - 0.5, -tiling.row_gap - 0.5))  # fmt: skip


def set_tiles(fig: SliderFigure, tiling: Tiling, labels: Sequence[str], *,
              min_width: int = MIN_TILE_WIDTH) -> SliderFigure:  # fmt: skip
    """Show a slider figure's heat maps of tiled images (each configuration's
    :func:`~d2lcore.plotting.tile` array, laid out as ``tiling``) as images: square
    pixels, row 0 at the top, no axes, ``labels[j]`` above tile ``j``.

    Where the screen is too narrow for a tile to be ``min_width`` CSS pixels wide, the
    page script lays the tiles out again in as many columns as fit (more rows, the plot
    taller), as :meth:`~d2lcore.plotting.Tiling.relaid` does: a figure of ten templates
    in two rows of five shows them in rows of three on a phone. Every heat map of the
    first configuration's set with the tiled array's shape is taken for tiles; the
    figure must have one panel. Changes ``fig`` and returns it.
    """
    if not isinstance(fig.spec, SliderSpec) or fig.spec.tiles is not None:
        raise ValueError("set_tiles needs a slider figure without tiles")
    if len(labels) != len(tiling.shapes):
        raise ValueError(f"{len(labels)} labels for {len(tiling.shapes)} tiles")
    if Panels.of(fig.figure.layout.to_plotly_json(), 100) is not None:
        raise ValueError("set_tiles needs a figure of one panel")
    per_config = fig.spec.per_config
    traces = [t for t, trace in enumerate(fig.figure.data[:per_config])
              if trace.type == "heatmap" and np.shape(trace.z) == tiling.array.shape]
    if not traces:
        raise ValueError(f"no heat map of shape {tiling.array.shape} to take for tiles")
    for t, trace in enumerate(fig.figure.data):
        if t % per_config in traces and (np.shape(trace.z) != tiling.array.shape
                                         or trace.xaxis not in (None, "x")):
            raise ValueError(f"trace {t}: every configuration's tiles must have the shape "
                             f"{tiling.array.shape}, in the figure's one panel")  # fmt: skip
    shown = _tile_layout(tiling)
    first = len(fig.figure.layout.annotations)
    for (x, y), label in zip(shown.labels, labels, strict=True):
        fig.figure.add_annotation(x=x, y=y, text=label, showarrow=False, yanchor="bottom",
                                  xref="x", yref="y")  # fmt: skip
    fig.figure.update_xaxes(visible=False, range=list(shown.x_range), constrain="domain")
    # Square pixels; the image at the bottom of its panel, just above a colour bar below.
    fig.figure.update_yaxes(visible=False, range=list(shown.y_range), autorange=False,
                            scaleanchor="x", constrain="domain",
                            constraintoward="bottom")  # fmt: skip
    fig.figure.update_layout(margin={"l": 10, "r": 10})  # no axes to make room for
    tiles = Tiles(
        traces=traces, shapes=list(tiling.shapes),
        cell_width=max(w for _, w in tiling.shapes),
        layouts=[_tile_layout(tiling.relaid(c)) for c in range(1, tiling.cols)] + [shown],
        annotations=list(range(first, first + len(labels))), min_width=min_width,
    )  # fmt: skip
    fig.spec = dataclasses.replace(fig.spec, tiles=tiles)
    return fig
