"""Thin adapters that draw the state of an :class:`~xrdwidgets.explore.model.ExplorerModel` into
the two plotly figures of the Explorer (the image and the pattern plot).

What each update sends to the browser: per pixel one float32 pattern per visible trace (binary)
in one ``batch_update`` message; per window one image block-averaged to at most
``max_image_size`` pixels per axis, as float32 rows (binary; see :mod:`xrdwidgets.widgets.plotting`,
"Heatmap payload"). No computation happens here: images, limits, patterns and titles come from
the model.
"""
from __future__ import annotations

import numpy as np

from .. import explore
from .plotting import OVERLAY_COLOURS, mirror_state, replace_shape, updating, z_rows

__all__ = ["draw_image", "draw_marker", "draw_patterns", "draw_window", "pattern_traces",
           "set_image_axes"]


def set_image_axes(fig, model) -> None:
    """Axis titles of the image figure from the model's row/col coordinates."""
    row, col, _spec = model.da.dims
    with updating(fig):
        fig.layout.xaxis.title.text = explore.axis_label(model.da[col])
        fig.layout.yaxis.title.text = explore.axis_label(model.da[row])


def draw_image(fig, model, shown, limits, title: str, *, new_coords: bool) -> None:
    """Send the display image ``shown`` with its colour ``limits`` and ``title`` in one
    ``Plotly.update`` message (``z`` as binary float32 rows); the coordinates and the hover text
    travel only when ``new_coords``."""
    row, col = shown.dims
    rl, cl = explore.axis_label(model.da[row]), explore.axis_label(model.da[col])
    restyle = {"z": [z_rows(shown.values)], "zmin": limits[0], "zmax": limits[1],
               "colorbar.title.text": explore.axis_label(shown)}
    if new_coords:
        restyle.update({
            "x": [np.asarray(shown[col].values, dtype=float)],
            "y": [np.asarray(shown[row].values, dtype=float)],
            "hovertemplate": f"{cl}: %{{x:.4g}}<br>{rl}: %{{y:.4g}}<br>value: %{{z:.4g}}<extra></extra>",
        })
    fig.plotly_update(restyle_data=restyle, relayout_data={"title.text": title}, trace_indexes=[0])
    mirror_state(fig)


def draw_window(fig, model) -> None:
    """Shade the model's channel window on the pattern figure (no shading for one channel on a
    one-channel axis, where it would fill the plot)."""
    spec = model.da[model.da.dims[2]].values
    i0, i1 = model.window
    step = abs(float(spec[1] - spec[0])) if spec.size > 1 else 1.0
    a, b = sorted((float(spec[i0]), float(spec[i1 - 1])))
    with updating(fig):
        replace_shape(fig, 0, x0=a - step / 2, x1=b + step / 2, visible=spec.size > 1)


def pattern_traces(fig, model) -> None:
    """(Re)build the pattern traces: the main data first, then one per overlay candidate."""
    spec = model.da.dims[2]
    names = [model.name] + list(model.compare)
    arrays = [model.da] + [da for da, _ in model.compare.values()]
    traces = []
    for i, (nm, da) in enumerate(zip(names, arrays)):
        c = da[da.dims[2]]
        # one or two channels: a line alone would be invisible, show the points
        traces.append({"type": "scatter", "mode": "lines" if c.size > 2 else "lines+markers", "name": nm,
                       "x": np.asarray(c.values, dtype=float),
                       "y": np.zeros(c.size, dtype=np.float32),
                       "line": {"width": 1.8 if i == 0 else 1.3,
                                "color": OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)]},
                       "hovertemplate": f"{nm}: %{{y:.4g}}<extra></extra>",
                       "visible": True})
    with updating(fig):
        fig.data = ()
        fig.add_traces(traces)
        fig.layout.xaxis.title.text = explore.axis_label(model.da[spec])
        fig.layout.yaxis.title.text = explore.axis_label(model.da)
        fig.layout.showlegend = len(traces) > 1


def draw_patterns(fig, model) -> None:
    """Send the patterns at the model's pixel (main + visible overlays) in one batch."""
    r, c = model.pixel
    visible = set(model.overlays)
    with updating(fig):
        fig.data[0].y = np.asarray(model.arr[r, c], dtype=np.float32)
        for i, (nm, (_, arr)) in enumerate(model.compare.items(), start=1):
            on = nm in visible
            if on:
                fig.data[i].y = np.asarray(arr[r, c], dtype=np.float32)
            if fig.data[i].visible != on:
                fig.data[i].visible = on
        fig.layout.title.text = model.pixel_text()


def draw_marker(fig, model) -> None:
    """Put the image's pixel marker on the model's pixel.

    Any layout change plotly's widget sends (even of one shape) makes plotly.js recompute and
    redraw the heatmap, during which the next hover waits; so the Explorer moves the marker on
    click, on ``select_pixel`` and when the cursor leaves the image, not on every hover.
    """
    r, c = model.pixel
    row, col, _spec = model.da.dims
    with updating(fig):
        replace_shape(fig, 0, xanchor=float(model.da[col].values[c]),
                      yanchor=float(model.da[row].values[r]), visible=True)
