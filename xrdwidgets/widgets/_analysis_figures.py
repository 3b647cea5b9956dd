"""The plotly figures of the App's analysis tabs and the helpers that update them.

Layout only: each builder returns the empty figure of one tab (:func:`roi_image_figure`,
:func:`roi_pattern_figure`, :func:`peakfit_figure`); :func:`heat_update` and
:func:`label_image_axes` send an image and its axis titles. The science is in
:mod:`xrdwidgets.analysis`; the panels are in :mod:`xrdwidgets.widgets.analysis_panel`.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import data as _data
from .. import explore as _v
from . import plotting as _fig

__all__ = ["error_html", "heat_update", "need", "label_image_axes", "roi_image_figure", "roi_pattern_figure",
           "peakfit_figure"]


def error_html(text: str) -> str:
    """An error message as HTML (escaped, in the error colour)."""
    return f"<span class='xrdw-msg xrdw-error' style='color:#b00020'>{html.escape(text)}</span>"


def heat_update(fig, trace_index: int, image, *, title: str | None = None, annotation: int | None = None):
    """Send a 2-D image to heatmap ``trace_index`` (binary float32 rows) with percentile limits.

    ``image``: a 2-D DataArray (its coordinates become the heatmap's x/y, so hover and click
    events give coordinate values) or a bare array (x/y are then pixel indices). ``title`` goes
    to the figure title, or to subplot title number ``annotation`` when given.
    """
    img = np.asarray(image, dtype=np.float32)
    lo, hi = _v.percentile_limits(img, (1.0, 99.0))
    restyle = {"z": [_fig.z_rows(img)], "zmin": float(lo), "zmax": float(hi)}
    if hasattr(image, "dims"):
        restyle["y"] = [np.asarray(image[image.dims[0]].values, dtype=float)]
        restyle["x"] = [np.asarray(image[image.dims[1]].values, dtype=float)]
    relayout = None
    if title:
        relayout = {"title.text": title} if annotation is None else {f"annotations[{annotation}].text": title}
    fig.plotly_update(restyle_data=restyle, relayout_data=relayout, trace_indexes=[trace_index])
    _fig.mirror_state(fig)


def need(obj, what: str):
    """``obj``, or a DataError "nothing to download yet: <what>" when it is None."""
    if obj is None:
        raise _data.DataError(f"nothing to download yet: {what}")
    return obj


def label_image_axes(fig, image, *, row: int = 1, col: int = 1, colorbar_trace: int | None = 0):
    """Axis titles (with units) of a heatmap subplot from the image's coordinates, and its colour
    bar title from the image's ``long_name``/``units``."""
    if not hasattr(image, "dims"):
        return
    rd, cd = image.dims[:2]
    fig.update_yaxes(title_text=_v.axis_label(image[rd]) if rd in image.coords else rd, row=row, col=col)
    fig.update_xaxes(title_text=_v.axis_label(image[cd]) if cd in image.coords else cd, row=row, col=col)
    if colorbar_trace is not None:
        fig.data[colorbar_trace].colorbar.title = {"text": _v.axis_label(image) or "intensity", "side": "right"}
    _fig.mirror_state(fig)


def roi_image_figure():
    """Empty figure of the ROI-image tab: one heatmap (520 × 460 px, y down, square pixels)."""
    fig = _fig.FigureWidget(make_subplots(rows=1, cols=1))
    fig.add_heatmap(z=[[0.0]], colorscale="Viridis", colorbar={"thickness": 12})
    fig.update_layout(width=520, height=460, autosize=False,
                      margin=dict(l=64, r=10, t=_fig.TOP_MARGIN, b=48),
                      title={**_fig._TITLE, "text": "no reconstruction yet: run one in the "
                             "Reconstruct tab"}, plot_bgcolor="white")
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_xaxes(constrain="domain")
    return fig


def roi_pattern_figure():
    """Empty figure of the ROI-pattern tab: mask heatmap | mean pattern with peak markers (900 × 420 px)."""
    base = make_subplots(rows=1, cols=2, column_widths=[0.42, 0.58], horizontal_spacing=0.08,
                         subplot_titles=("mask on the ROI image", "mean pattern of the mask"))
    base.add_trace(go.Heatmap(z=[[0.0]], colorscale="Viridis", showscale=False, hoverinfo="skip"), row=1, col=1)
    base.add_trace(go.Scatter(x=[], y=[], mode="lines", name="mean pattern"), row=1, col=2)
    base.add_trace(go.Scatter(x=[], y=[], mode="markers", name="suggested peaks",
                              marker={"symbol": "triangle-down", "size": 10, "color": "#d62728"}), row=1, col=2)
    base.update_layout(width=900, height=420, autosize=False, showlegend=False,
                       margin=dict(l=50, r=10, t=40, b=40))
    base.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", row=1, col=1)
    base.update_xaxes(constrain="domain", row=1, col=1)
    return _fig.FigureWidget(base)


def peakfit_figure(width: int):
    """Empty figure of the peak-fit tab: parameter map | pixel data, fit, residual (``width`` × 430 px)."""
    base = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.16,
                         subplot_titles=("parameter map: press Fit", "pixel: hover the map after a fit"))
    base.add_trace(go.Heatmap(z=[[None]], colorscale="Viridis", colorbar={"thickness": 10, "x": 0.40},
                              showscale=False,
                              hovertemplate="x %{x}, y %{y}: %{z:.4g}<extra></extra>"), row=1, col=1)
    for nm, colour in (("data", "#1f3b73"), ("fit", "#d62728"), ("residual", "#7f7f7f")):
        base.add_trace(go.Scatter(x=[], y=[], mode="lines", name=nm, line={"color": colour}), row=1, col=2)
    base.update_layout(width=width, height=430, autosize=False, margin=dict(l=56, r=10, t=40, b=44),
                       legend={"x": 1, "xanchor": "right", "y": 1}, plot_bgcolor="white")
    base.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", row=1, col=1)
    base.update_xaxes(constrain="domain", row=1, col=1)
    base.update_xaxes(visible=False)   # shown with their data (no empty axes before a fit)
    base.update_yaxes(visible=False)
    return _fig.FigureWidget(base)
