"""Corrections panel: air removal, beam-decay normalisation, jitter and centre of rotation.

It calls :func:`xrdwidgets.corrections.correct` in a background job and shows the channel-summed
sinogram before and after, with each correction's report. "Use corrected" makes the corrected
stack the one reconstructions use (``state.stack``); "Reset" goes back to the raw data.
"""
from __future__ import annotations

import html
import logging

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import corrections as _corr
from .. import data as _data
from .. import jobs as _jobs
from ..progress import Progress
from . import _views as _fig
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["CorrectionsPanel", "correction_job"]


def correction_job(stack, **options):
    """Generator for a job: run :func:`xrdwidgets.corrections.correct`, return ``(stack, reports)``."""
    yield Progress(iteration=0, total=1, metrics={"step": "correcting"})
    corrected, reports = _corr.correct(stack, **options)
    yield Progress(iteration=1, total=1, metrics={"step": "done"})
    return corrected, reports


def _summed_image(stack, max_size=256):
    from ..views import decimate

    spec = _data.spectral_dim(stack)
    img = np.asarray(stack.sum(spec).transpose("angle", "translation").values, np.float32)
    return decimate(img, max_size)


def _before_after_figure():
    base = make_subplots(rows=1, cols=2, subplot_titles=("before (sum over channels)", "after"),
                         horizontal_spacing=0.1)
    for col in (1, 2):
        base.add_trace(go.Heatmap(z=[[0.0]], colorscale="Magma", showscale=False), row=1, col=col)
        base.update_xaxes(title_text="translation", row=1, col=col)
        base.update_yaxes(title_text="angle", autorange="reversed", row=1, col=col)
    base.update_layout(height=320, width=640, autosize=False, margin=dict(l=50, r=10, t=30, b=40))
    return _fig.FigureWidget(base)


class CorrectionsPanel:
    """Choose and run sinogram corrections on ``state.raw``; show before/after and reports."""

    def __init__(self, state: AppState, *, queue=True):
        self.state = state
        self.queue = queue
        self.job: _jobs.Job | None = None
        self.result = None
        self.reports: list = []
        self.air = w.Checkbox(value=True, description="air-scatter removal (edge translations)", indent=False)
        self.decay = w.Checkbox(value=True, description="beam-decay normalisation per projection", indent=False)
        self.jitter = w.Checkbox(value=True, description="motor-jitter correction (centre of mass)", indent=False)
        self.centre = w.Checkbox(value=True, description="centre of rotation (find and correct)", indent=False)
        self.centre_apply = w.ToggleButtons(options=[("store in geometry", "geometry"), ("shift data", "shift")],
                                            value="geometry", description="centre:",
                                            style={"button_width": "120px"})
        self.run_button = w.Button(description="Run corrections", button_style="primary", icon="wrench")
        self.use_button = w.Button(description="Use corrected", button_style="success", disabled=True)
        self.reset_button = w.Button(description="Reset to raw", disabled=True)
        self.status = w.HTML()
        self.report_html = w.HTML()
        self.fig = _before_after_figure()
        self.before, self.after = self.fig.data
        self.run_button.on_click(lambda _: self.run())
        self.use_button.on_click(lambda _: self.use())
        self.reset_button.on_click(lambda _: self.reset())
        state.observe(self._on_raw, "raw")
        self._on_raw()
        controls = w.VBox([self.decay, self.air, self.jitter, self.centre, self.centre_apply,
                           w.HBox([self.run_button, self.use_button, self.reset_button]), self.status,
                           self.report_html], layout=w.Layout(width="430px"))
        self.widget = w.HBox([controls, _fig.fixed_box(self.fig, 640, 320)])

    def _ipython_display_(self):  # pragma: no cover
        from IPython.display import display

        display(self.widget)

    def _on_raw(self, *_):
        raw = self.state.raw
        self.run_button.disabled = raw is None
        if raw is not None:
            with _fig.updating(self.fig):
                self.before.z = _summed_image(raw)
                self.after.z = [[0.0]]
            self.result = None
            self.use_button.disabled = True
            self.report_html.value = ""

    def options(self) -> dict:
        """Keyword arguments for :func:`xrdwidgets.corrections.correct` from the form."""
        return {"air": self.air.value, "decay": self.decay.value, "jitter": self.jitter.value,
                "centre": {"apply": self.centre_apply.value} if self.centre.value else False}

    def run(self) -> _jobs.Job | None:
        """Run the chosen corrections on the raw stack in a background job."""
        raw = self.state.raw
        if raw is None:
            return None
        self.status.value = "<i>running…</i>"
        self.run_button.disabled = True
        opts = self.options()
        self.job = _jobs.run(lambda: correction_job(raw, **opts), name="corrections", queue=self.queue)
        self.job.subscribe(self._on_event)
        return self.job

    def _on_event(self, ev):
        if not ev.state.finished:
            return
        self.run_button.disabled = False
        job = ev.job
        if ev.state is _jobs.State.DONE:
            self.result, self.reports = job.result
            with _fig.updating(self.fig):
                self.after.z = _summed_image(self.result)
            self.report_html.value = "<ul>" + "".join(
                f"<li>{html.escape(r.summary())}</li>" for r in self.reports) + "</ul>"
            self.status.value = f"done in {job.elapsed:.1f} s"
            self.use_button.disabled = False
        else:
            self.status.value = f"<span style='color:#b00'>{html.escape(job.message)}</span>"

    def use(self):
        """Make the corrected stack the one reconstructions use."""
        if self.result is not None:
            self.state.stack = self.result
            self.state.status = "using corrected stack: " + ", ".join(
                type(r).__name__.replace("Result", "") for r in self.reports)
            self.reset_button.disabled = False

    def reset(self):
        """Go back to the raw stack."""
        self.state.stack = self.state.raw
        self.reset_button.disabled = True
