"""plotly FigureWidgets that survive being updated before the browser shows them.

With plotly ≥ 6 (anywidget), trace and layout updates travel as one-off messages
(``_py2js_restyle`` …) while the figure's synced state (``_widget_data``, ``_widget_layout``)
keeps its *initial* value. A view created later — every widget in a Voila page, or a figure
in a tab opened later — therefore shows the figure as it was constructed. We track rendered views
(``_view_count``) and, while no view exists, copy the current data and layout into the synced
state after each update; once a view exists, only the small update messages are sent.

Each FigureWidget also carries plotly.js (about 5 MB) as its module source, sent to the browser
per instance: build few of them, and build them when they are first shown.
"""
from __future__ import annotations

import contextlib
import copy

import plotly.graph_objects as go

__all__ = ["figure", "updating", "sync_unrendered"]


def figure(*args, **kwargs) -> go.FigureWidget:
    """A ``go.FigureWidget`` that counts its views (see :func:`sync_unrendered`)."""
    fig = go.FigureWidget(*args, **kwargs)
    fig._view_count = 0
    return fig


def sync_unrendered(fig: go.FigureWidget) -> None:
    """If no view of ``fig`` exists yet, make its synced state equal its current content."""
    if getattr(fig, "_view_count", None) in (0, None):
        d = fig.to_dict()
        fig._widget_data = copy.deepcopy(d["data"])
        fig._widget_layout = copy.deepcopy(d["layout"])


@contextlib.contextmanager
def updating(fig: go.FigureWidget):
    """``with updating(fig): ...`` — a ``batch_update`` that also keeps unrendered state current."""
    with fig.batch_update():
        yield fig
    sync_unrendered(fig)
