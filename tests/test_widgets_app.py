"""Headless tests of the App wiring and of the figure-state helper."""
import time

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")
import plotly.graph_objects as go

from xrdwidgets import jobs
from xrdwidgets.widgets import _views
from xrdwidgets.widgets.app import TABS, App


def test_figure_state_follows_updates():
    fig = go.FigureWidget(go.Scatter(x=[0, 1], y=[1, 1]))
    with _views.updating(fig):
        fig.data[0].y = [5, 6]
    assert list(fig._widget_data[0]["y"]) == [5, 6]  # a view created later sees the update
    assert list(fig.get_state()["_widget_data"][0]["y"]) == [5, 6]


def test_app_builds_tabs_lazily():
    app = App.demo(size="tiny")
    assert app.tabs.selected_index == TABS.index("Explore")
    assert set(app.panels) == {"Explore"}
    app.tabs.selected_index = TABS.index("Reconstruct")
    assert "Reconstruct" in app.panels
    assert app.tabs.children[TABS.index("Reconstruct")].children == (app.recon.widget,)


def test_app_job_result_opens_in_explorer():
    app = App.demo(size="tiny")
    app.select("Reconstruct")
    recon = app.recon
    recon.queue = jobs.JobQueue("app-test")
    recon.method.value = "sirt"
    recon.param_widgets["n_iter"].value = 3
    job = recon.start()
    job.wait(timeout=60)
    end = time.time() + 10
    while "sirt #1" not in app.state.results and time.time() < end:
        time.sleep(0.02)
    assert "sirt #1" in app.state.results
    assert app.tabs.selected_index == TABS.index("Explore")
    assert set(app.state.results) == {"FBP", "sirt #1"}


def test_app_panel_rejects_unknown_tab():
    app = App.demo(size="tiny", reconstruct=False)
    with pytest.raises(ValueError, match="tab must be one of"):
        app.panel("Nope")
    assert app.tabs.selected_index == 0
    np.testing.assert_array_equal(app.state.stack.values, app.state.raw.values)
