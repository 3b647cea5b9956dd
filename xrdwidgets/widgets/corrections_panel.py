"""Corrections panel: air removal, beam-decay normalisation, jitter and centre of rotation.

It runs :func:`xrdwidgets.corrections.iterate_correct` in a background job and shows the
channel-summed sinogram before and after, with each correction's report. "Use corrected" makes
the corrected stack the one reconstructions use (``state.stack``); "Reset" goes back to the raw
data. The centre gallery runs :func:`xrdwidgets.corrections.iterate_centre_gallery`.
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
from . import plotting as _fig
from .job_view import JobView, error_html
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["CorrectionsPanel"]


def _thumbnail_png(image, size_px: int = 150) -> bytes:
    """A small colour-mapped PNG of a 2-D array (the gallery's thumbnails)."""
    import io as _io

    import matplotlib.image as mpimg

    from ..explore import percentile_limits

    a = np.asarray(image, np.float32)
    lo, hi = percentile_limits(a, (0.5, 99.5))
    reps = max(1, size_px // max(a.shape))
    a = np.kron(a, np.ones((reps, reps), np.float32)) if reps > 1 else a
    buf = _io.BytesIO()
    mpimg.imsave(buf, a, cmap="gray", vmin=lo, vmax=hi, format="png")
    return buf.getvalue()


def _show_sinogram(fig, trace, col: int, img):
    """Put a summed sinogram (from :func:`xrdwidgets.corrections.summary_sinogram`) into subplot
    ``col`` with its axes."""
    from ..explore import axis_label

    trace.z = np.asarray(img.values, np.float32) if img is not None else [[None]]
    axes = ("xaxis", "yaxis") if col == 1 else ("xaxis2", "yaxis2")
    if img is None:
        fig.layout[axes[0]].visible = fig.layout[axes[1]].visible = False
        return
    trace.x = np.asarray(img["translation"].values, float)
    trace.y = np.asarray(img["angle"].values, float)
    fig.layout[axes[0]].visible = fig.layout[axes[1]].visible = True
    fig.layout[axes[0]].title.text = axis_label(img["translation"]) or "translation"
    fig.layout[axes[1]].title.text = axis_label(img["angle"]) or "angle"


_AFTER_EMPTY = "after: press “Run corrections”"


def _before_after_figure():
    base = make_subplots(rows=1, cols=2, subplot_titles=("before (sum over channels)", _AFTER_EMPTY),
                         horizontal_spacing=0.12)
    for col in (1, 2):
        base.add_trace(go.Heatmap(z=[[None]], colorscale="Magma", showscale=col == 2,
                                  colorbar={"thickness": 10, "title": {"text": "Σ intensity", "side": "right"}}),
                       row=1, col=col)
        base.update_xaxes(title_text="translation (step)", row=1, col=col)
        base.update_yaxes(title_text="angle (deg)", autorange="reversed", row=1, col=col)
    base.update_layout(height=340, width=660, autosize=False, margin=dict(l=56, r=10, t=40, b=44),
                       plot_bgcolor="white")
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
                                            style={"button_width": "140px", "description_width": "50px"})
        self.run_button = w.Button(description="Run corrections", button_style="primary", icon="wrench")
        self.use_button = w.Button(description="Use corrected", button_style="success", disabled=True)
        self.reset_button = w.Button(description="Reset to raw", disabled=True)
        self.view = JobView(status_line=False, errors=False, buttons=[self.run_button])
        self.status = self.view.status
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
        self._build_gallery()
        self.widget = w.VBox([w.HBox([controls, _fig.fixed_box(self.fig, 660, 340)]), self.gallery_box])
        self.widget.add_class("xrdw-corrections-panel")

    def _ipython_display_(self):  # pragma: no cover
        from IPython.display import display

        display(self.widget)

    def _on_raw(self, *_):
        raw = self.state.raw
        self.run_button.disabled = raw is None
        if hasattr(self, "gallery_button"):
            self.gallery_button.disabled = raw is None
            self._on_stack()
        if raw is not None:
            # defaults that suit the data: a step its provenance says was done is not ticked
            done = set(_corr.applied_corrections(raw))
            for name, box in (("air", self.air), ("decay", self.decay), ("jitter", self.jitter),
                              ("centre", self.centre)):
                box.value = name not in done
            with _fig.updating(self.fig):
                _show_sinogram(self.fig, self.before, 1, _corr.summary_sinogram(raw))
                _show_sinogram(self.fig, self.after, 2, None)
                self.fig.layout.annotations[1].text = _AFTER_EMPTY
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
        opts = self.options()
        self.job = _jobs.run(lambda: _corr.iterate_correct(raw, **opts), name="corrections",
                             queue=self.queue)
        return self.view.watch(self.job, on_done=self._on_event)

    def _on_event(self, ev):
        job = ev.job
        if ev.state is _jobs.State.DONE:
            self.result, self.reports = job.result
            with _fig.updating(self.fig):
                _show_sinogram(self.fig, self.after, 2, _corr.summary_sinogram(self.result))
                self.fig.layout.annotations[1].text = "after"
            self.report_html.value = "<ul>" + "".join(
                f"<li>{html.escape(r.summary())}</li>" for r in self.reports) + "</ul>"
            self.status.value = f"done in {job.elapsed:.1f} s"
            self.use_button.disabled = False
        else:
            self.status.value = error_html(job.message)

    # ------------------------------------------------------------------ centre gallery
    def _build_gallery(self):
        self.gallery = None
        self.gallery_estimate = None
        self.gallery_job = None
        self.gallery_channels = w.IntRangeSlider(value=(0, 1), min=0, max=1, description="channels",
                                                 continuous_update=False, layout=w.Layout(width="420px"),
                                                 style={"description_width": "70px"})
        self.gallery_step = w.Dropdown(options=[("coarse: 1 step apart", 1.0), ("fine: ¼ step apart", 0.25)],
                                       value=1.0, description="row", layout=w.Layout(width="250px"),
                                       style={"description_width": "40px"})
        self.gallery_button = w.Button(description="Centre gallery", icon="th", button_style="info",
                                       tooltip="reconstruct the channel window at 7 candidate centres "
                                               "around the automatic estimate (or the chosen centre)")
        self.gallery_button.add_class("xrdw-gallery-start")
        self.gallery_button.on_click(lambda _: self.make_gallery())
        self.gallery_view = JobView(status="<small>Make a row of reconstructions at candidate centres of "
                                           "rotation; click the sharpest to store it in the geometry.</small>",
                                    status_line=False, errors=False, buttons=[self.gallery_button])
        self.gallery_status = self.gallery_view.status
        self.gallery_status.add_class("xrdw-gallery-status")
        self.geometry_html = w.HTML()
        self.geometry_html.add_class("xrdw-geometry")
        self.gallery_row = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.gallery_row.add_class("xrdw-gallery")
        self.gallery_box = w.VBox([
            w.HTML("<b>Centre of rotation by eye</b>"),
            w.HBox([self.gallery_channels, self.gallery_step, self.gallery_button],
                   layout=w.Layout(flex_flow="row wrap", align_items="center")),
            self.gallery_status, self.gallery_row, self.geometry_html])
        self.state.observe(self._on_stack, "stack")
        self._on_stack()
        self.gallery_button.disabled = self.state.raw is None

    def _on_stack(self, *_):
        stack = self.state.stack
        if stack is None:
            self.geometry_html.value = ""
            return
        spec = _data.spectral_dim(stack)
        n = stack.sizes[spec]
        if self.gallery_channels.max != max(n - 1, 1) or self.gallery_channels.value[1] > n - 1:
            with self.gallery_channels.hold_trait_notifications():
                self.gallery_channels.max = max(n - 1, 1)
                self.gallery_channels.value = (0, n - 1)
        geom = _data.get_geometry(stack)
        off = geom.centre_offset if geom is not None else 0.0
        self.geometry_html.value = (f"<small>geometry of the stack used: centre_offset = "
                                    f"<b class='xrdw-centre-offset'>{off:+.3f}</b> steps</small>")

    def make_gallery(self, *, around: float | None = None) -> _jobs.Job | None:
        """Start the gallery job: candidates around ``around`` (default: the centre chosen in
        the geometry for a fine row, else the automatic estimate)."""
        stack = self.state.stack
        if stack is None:
            return None
        step = float(self.gallery_step.value)
        if around is None and step < 1.0:
            geom = _data.get_geometry(stack)
            around = geom.centre_offset if geom is not None else None
        lo, hi = self.gallery_channels.value
        self.gallery_status.value = "<i>making the gallery…</i>"
        self.gallery_job = _jobs.run(lambda: _corr.iterate_centre_gallery(
                                         stack, around=around, step=step, n=7, channels=(lo, hi + 1)),
                                     name="centre gallery", queue=self.queue)
        return self.gallery_view.watch(self.gallery_job, on_done=self._on_gallery_event)

    def _on_gallery_event(self, ev):
        job = ev.job
        if ev.state is not _jobs.State.DONE:
            self.gallery_status.value = error_html(job.message)
            return
        self.gallery_estimate, self.gallery = job.result
        cells = []
        for k, c in enumerate(self.gallery["centre"].values):
            img = w.Image(value=_thumbnail_png(self.gallery.values[k]), format="png",
                          layout=w.Layout(width="140px", height="140px", object_fit="contain"))
            b = w.Button(description=f"{(0.0 if abs(c) < 0.005 else c):+.2f}", tooltip=f"store axis offset {c:+.3f} steps in the geometry",
                         layout=w.Layout(width="140px"))
            b.add_class("xrdw-gallery-choose")
            b.offset = float(c)
            b.on_click(lambda _, c=float(c): self.choose_centre(c))
            cells.append(w.VBox([img, b], layout=w.Layout(margin="2px")))
        self.gallery_row.children = cells
        self.gallery_status.value = (f"<small>automatic estimate {self.gallery_estimate:+.3f} steps; "
                                     "click the sharpest image (fewest arcs, no doubled edges) to "
                                     "choose it, then a fine row to refine.</small>")

    def choose_centre(self, offset: float):
        """Store ``offset`` (steps) as the centre of rotation in the geometry of the stack used."""
        corrected, report = _corr.correct_centre(self.state.stack, offset=float(offset), apply="geometry")
        self.state.stack = corrected
        self.reset_button.disabled = False
        self.state.status = f"centre of rotation {offset:+.3f} steps stored in the geometry"
        self.gallery_status.value = (f"<small>chosen: <b>{offset:+.3f}</b> steps (stored in the geometry; "
                                     "reconstructions use it). Pick “fine” and press the button to refine."
                                     "</small>")
        for cell in self.gallery_row.children:
            btn = cell.children[1]
            btn.button_style = "success" if abs(btn.offset - offset) < 1e-9 else ""
        return report

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
