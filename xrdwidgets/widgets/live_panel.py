"""The Live tab: follow a scan being written, with images while it runs.

A thin view over :mod:`xrdwidgets.live`: pick the file (or folder) being written and a PONI in
the data folder, declare the scan plan, and Start. The session
(:func:`xrdwidgets.live.iterate_live`) runs as a background job; its events only set widget
traits: scan progress (frames, angles, rate, ETA, missing wedge), the latest frame and pattern
(the radial windows shaded), the growing sinogram of one window, and the current FBP images of
the windows. *Explore now* puts the partial volume in the Explore tab; when the scan ends the
stack is loaded in the App (Data, Reconstruct, …) and its FBP opens in Explore.

Paths are relative to the data folder and confined to it (:mod:`xrdwidgets.base.safety`); the plan
size is bounded (:data:`MAX_LIVE_BYTES`) so a visitor cannot exhaust the server's memory.
"""
from __future__ import annotations

import functools
import html
import logging
import threading
import time
from pathlib import Path

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import jobs
from ..base import safety
from . import plotting as _fig
from .integrate_panel import PONI_SUFFIXES, _listing
from .job_view import JobView
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["LivePanel", "parse_windows", "MAX_LIVE_BYTES"]

#: Largest working memory of a live session started from the dashboard (patterns, sinogram, images).
MAX_LIVE_BYTES = 2 * 2**30
_ORDERS = ("raster", "zigzag", "interlaced", "interlaced-zigzag", "rotation-fast")
#: A session started from the dashboard ends when no frame arrived for this long (s).
IDLE_TIMEOUT_S = 1800.0
_STYLE = {"description_width": "8em"}
_N_IMAGES = 4
_EXPECTED_ERRORS = (OSError, ValueError, IndexError, TimeoutError)


def parse_windows(text: str) -> list[tuple[float, float]]:
    """``"3.0-3.3, 5.1-5.4"`` → ``[(3.0, 3.3), (5.1, 5.4)]`` (at most 4; ValueError naming the bad part)."""
    out = []
    for part in (p.strip() for p in str(text).replace(";", ",").split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-") if not part.startswith("-") else ("", "", "")
        try:
            win = (float(lo), float(hi)) if sep else None
        except ValueError:
            win = None
        if win is None or not win[1] > win[0]:
            raise ValueError(f"window {part!r}: expected 'low-high' with high > low (e.g. 3.1-3.3)")
        out.append(win)
    if len(out) > _N_IMAGES:
        raise ValueError(f"windows: at most {_N_IMAGES}, found {len(out)}")
    return out


class LivePanel:
    """Live mode in a tab (see the module docstring).

    Parameters
    ----------
    state : AppState
    data_dir : path-like, optional
        The data folder (default ``$XRDWIDGETS_DATA_DIR``).

    Attributes
    ----------
    source : ipywidgets.Text
        File or folder being written, relative to the data folder.
    poni : ipywidgets.Dropdown
    n_translations, n_angles, bins : ipywidgets.BoundedIntText
    order : ipywidgets.Dropdown
    windows : ipywidgets.Text
        Radial windows of the images, ``"lo-hi, lo-hi"`` (deg or 1/Å).
    sino_window : ipywidgets.Dropdown
        Which window's sinogram is shown.
    period, update_every : ipywidgets.BoundedFloatText
        Polling period and least time between image updates (s).
    start_button, stop_button, explore_button : ipywidgets.Button
    fig : plotly FigureWidget
        Latest frame | latest pattern | growing sinogram.
    images : plotly FigureWidget
        The current images of the windows.
    status : ipywidgets.HTML
    session : xrdwidgets.live.LiveSession or None
    job : xrdwidgets.jobs.Job or None
    """

    def __init__(self, state: AppState, *, data_dir=None):
        self.on_explore: list = []     # called when the visitor presses "Explore now"
        self.state = state
        self.session = None
        self.job = None
        self._stop = threading.Event()
        self._last_render = 0.0
        self._shown_image = None
        self._windows = []
        self._name = ""
        try:
            self.root = safety.data_root(data_dir)
        except OSError as exc:
            log.warning("live panel: %s", exc)
            self.root = None
        L = functools.partial(w.Layout, width="26em")
        self.source = w.Text(value="", placeholder="scan file (.h5) or folder", description="Source",
                             style=_STYLE, layout=L())
        self.poni = w.Dropdown(options=[], description="PONI", style=_STYLE, layout=L())
        self.n_translations = w.BoundedIntText(value=32, min=2, max=4096, description="Translations", style=_STYLE,
                                               layout=w.Layout(width="14em"))
        self.n_angles = w.BoundedIntText(value=24, min=2, max=4096, description="Angles", style=_STYLE,
                                         layout=w.Layout(width="14em"))
        self.order = w.Dropdown(options=_ORDERS, value="raster", description="Order", style=_STYLE,
                                layout=w.Layout(width="20em"))
        self.bins = w.BoundedIntText(value=300, min=16, max=5000, description="Bins", style=_STYLE,
                                     layout=w.Layout(width="14em"))
        self.windows = w.Text(value="", placeholder="e.g. 3.1-3.3, 5.2-5.4 (empty: strongest peaks)",
                              description="2θ windows", style=_STYLE, layout=L())
        self.sino_window = w.Dropdown(options=[("window 1", 0)], value=0, description="Sinogram of",
                                      style=_STYLE, layout=w.Layout(width="20em"))
        self.period = w.BoundedFloatText(value=0.5, min=0.05, max=60, step=0.05, description="Poll every (s)",
                                         style=_STYLE, layout=w.Layout(width="14em"))
        self.update_every = w.BoundedFloatText(value=1.0, min=0.0, max=600, step=0.1,
                                               description="Images every (s)", style=_STYLE,
                                               layout=w.Layout(width="14em"))
        self.start_button = w.Button(description="Start", icon="play", button_style="primary")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        # the job's lifecycle (Start back at its end); progress and status come from the session
        self.view = JobView(status_line=False, errors=False, buttons=[self.start_button])
        self.explore_button = w.Button(description="Explore now", icon="search", disabled=True)
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        for wd, cls in ((self.source, "xrdw-live-source"), (self.poni, "xrdw-live-poni"),
                        (self.start_button, "xrdw-live-start"), (self.stop_button, "xrdw-live-stop"),
                        (self.explore_button, "xrdw-live-explore"), (self.n_translations, "xrdw-live-nt"),
                        (self.n_angles, "xrdw-live-na"), (self.order, "xrdw-live-order"),
                        (self.bins, "xrdw-live-bins"), (self.windows, "xrdw-live-windows")):
            wd.add_class(cls)
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="14em"))
        self.status = w.HTML("", layout=w.Layout(min_height="1.6em"))
        self.status.add_class("xrdw-live-status")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.explore_button.on_click(lambda _: self._explore_clicked())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.sino_window.observe(lambda _: self._render(force=True), "value")
        self.fig = self._top_figure()
        self.images = self._image_figure()
        controls = w.VBox([w.HBox([self.source, self.poni]),
                           w.HBox([self.n_translations, self.n_angles, self.order, self.bins]),
                           w.HBox([self.windows, self.sino_window]),
                           w.HBox([self.period, self.update_every]),
                           w.HBox([self.start_button, self.stop_button, self.explore_button, self.refresh_button]),
                           w.HBox([self.progress, self.status])])
        self.widget = w.VBox([controls, _fig.fixed_box(self.fig, 1000, 330), _fig.fixed_box(self.images, 1000, 300)])
        self.widget.add_class("xrdw-live-panel")
        self.refresh()

    # ------------------------------------------------------------------ figures
    @staticmethod
    def _top_figure():
        base = make_subplots(rows=1, cols=3, column_widths=[0.3, 0.4, 0.3], horizontal_spacing=0.08,
                             subplot_titles=("latest frame (log)", "latest pattern", "sinogram (window 1)"))
        base.add_trace(go.Heatmap(z=[[0.0]], colorscale="Viridis", showscale=False, hoverinfo="skip"), 1, 1)
        base.add_trace(go.Scatter(x=[], y=[], mode="lines", name="pattern", line={"color": "#1f3b73"}), 1, 2)
        base.add_trace(go.Heatmap(z=[[0.0]], colorscale="Magma", showscale=False, hoverongaps=False), 1, 3)
        base.update_layout(width=1000, height=330, autosize=False, showlegend=False,
                           margin=dict(l=45, r=10, t=40, b=40), uirevision="keep")
        base.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", row=1, col=1)
        base.update_xaxes(constrain="domain", row=1, col=1)
        base.update_xaxes(title_text="angle index", row=1, col=3)
        base.update_yaxes(title_text="translation", autorange="reversed", row=1, col=3)
        return _fig.FigureWidget(base)

    @staticmethod
    def _image_figure():
        base = make_subplots(rows=1, cols=_N_IMAGES, horizontal_spacing=0.04,
                             subplot_titles=[f"window {k + 1}" for k in range(_N_IMAGES)])
        for k in range(_N_IMAGES):
            base.add_trace(go.Heatmap(z=[[0.0]], colorscale="Viridis", showscale=False), 1, k + 1)
            base.update_yaxes(autorange="reversed", scaleanchor=f"x{k + 1 if k else ''}", constrain="domain",
                              showticklabels=False, row=1, col=k + 1)
            base.update_xaxes(constrain="domain", showticklabels=False, row=1, col=k + 1)
        base.update_layout(width=1000, height=300, autosize=False, showlegend=False,
                           margin=dict(l=10, r=10, t=40, b=10), uirevision="keep")
        return _fig.FigureWidget(base)

    # ------------------------------------------------------------------ files
    def refresh(self):
        """List the PONI files of the data folder."""
        if self.root is None:
            self._show("no data folder is configured (start the app with --data-dir DIR)", "error")
            return
        self.poni.options = _listing(self.root, PONI_SUFFIXES)

    def _show(self, text: str, kind: str = "info"):
        colour = {"error": "#b00020", "ok": "#1b5e20"}.get(kind, "#333")
        self.status.value = f"<span class='xrdw-live-{kind}' style='color:{colour}'>{html.escape(text)}</span>"

    def _user_text(self, exc: BaseException) -> str:
        text = str(exc) if isinstance(exc, _EXPECTED_ERRORS) else f"unexpected error ({jobs.describe_error(exc)})"
        if self.root is not None:
            root = str(Path(self.root).resolve())
            text = text.replace(root + "/", "").replace(root, ".")
        return text.splitlines()[0] if text else type(exc).__name__

    # ------------------------------------------------------------------ session
    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.state.finished

    def start(self):
        """Start following the source (a background job)."""
        from ..integrate import IntegrationOptions, ScanPlan
        from ..live import LiveSession, iterate_live

        if self.busy:
            self._show("busy: stop the current session first", "error")
            return None
        try:
            if self.root is None:
                raise ValueError("no data folder is configured")
            if not self.source.value.strip():
                raise ValueError("Source: give the scan file or folder being written")
            src = safety.confine(self.source.value.strip(), self.root)
            poni = safety.confine(self.poni.value, self.root, must_exist=True) if self.poni.value else None
            n_t, n_a, bins = int(self.n_translations.value), int(self.n_angles.value), int(self.bins.value)
            need = 4 * bins * (2 * n_t * n_a + 2 * n_t * n_t)
            if need > MAX_LIVE_BYTES:
                raise ValueError(f"plan of {n_t} × {n_a} points × {bins} bins needs {need / 2**30:.1f} GiB; "
                                 f"the dashboard allows {MAX_LIVE_BYTES / 2**30:.0f} GiB (use the CLI)")
            self._windows = parse_windows(self.windows.value)
            plan = ScanPlan.regular(n_t, n_a, order=self.order.value)
            self.session = LiveSession(src, poni, plan=plan, options=IntegrationOptions(bins=bins),
                                       update_every_s=float(self.update_every.value))
        except _EXPECTED_ERRORS as exc:
            self._show(self._user_text(exc), "error")
            return None
        self._stop.clear()
        self._shown_image = None
        self._name = Path(self.source.value).name
        gen = functools.partial(iterate_live, None, plan=plan, session=self.session,
                                period_s=float(self.period.value), stop=self._stop, idle_timeout_s=IDLE_TIMEOUT_S)
        self.stop_button.disabled = False
        self._show(f"waiting for frames in {self.source.value} …")
        self.job = jobs.run(gen, name=f"live: {self._name}", rate_hz=5.0)
        return self.view.watch(self.job, on_progress=self._on_event, on_done=self._on_done)

    def stop(self):
        """Stop following (the frames received so far stay explorable)."""
        self._stop.set()

    def _explore_clicked(self):
        """The visitor asked to explore: put the volume in Explore and call ``on_explore`` (the App
        switches to its Explore tab; nothing else switches tabs)."""
        if self.explore() is not None:
            for cb in list(self.on_explore):
                cb()

    def explore(self):
        """Put the current (partial) volume in the Explore tab."""
        vol = self.session.volume() if self.session is not None else None
        if vol is None:
            self._show("no image yet", "error")
            return None
        if self.state.raw is None or self.state.raw.attrs.get("live_name") != self._name:
            stack = self.session.stack(checksums=False)
            stack.attrs["live_name"] = self._name
            self.state.set_data(stack, name=f"live {self._name} (partial)")
        cov = self.session.recon.coverage()
        self.state.add_result(f"live FBP ({cov['angles']}/{cov['n_angles']} angles)", vol)
        return vol

    def _on_event(self, ev):
        """Job thread: only sets traits."""
        if ev.state.finished:
            return   # drawn by _on_done
        try:
            self._render()
        except Exception as exc:  # noqa: BLE001  (a display error must not leave the panel stuck)
            log.exception("live panel: showing an update failed")
            self._show(self._user_text(exc), "error")

    def _on_done(self, ev):
        """Job thread, once at the end: the last images and the outcome."""
        try:
            self._render(force=True)
            if ev.state == jobs.State.DONE and self.session.complete:
                stack = ev.job.result
                stack.attrs["live_name"] = self._name
                self.state.set_data(stack, name=f"live {self._name}")
                self.state.add_result("live FBP", self.session.volume())
                self._show(f"scan complete: {self.session.received} frames; the stack is loaded in the app", "ok")
            elif ev.state == jobs.State.FAILED:
                if not isinstance(ev.job.error, _EXPECTED_ERRORS):
                    log.error("live panel job failed", exc_info=ev.job.error)
                self._show(self._user_text(ev.job.error), "error")
            else:
                self._show(f"stopped after {self.session.received}/{self.session.n_frames} frames", "info")
        except Exception as exc:  # noqa: BLE001  (a display error must not leave the panel stuck)
            log.exception("live panel: showing an update failed")
            self._show(self._user_text(exc), "error")
        finally:
            self.stop_button.disabled = True

    def _render(self, force: bool = False):
        sess = self.session
        if sess is None or sess.patterns is None:
            return
        now = time.monotonic()
        if not force and now - self._last_render < 0.2:
            return
        self._last_render = now
        snap = sess.snapshot()
        from ..live import strongest_windows, window_images

        if not self._windows and snap.latest_pattern is not None:
            self._windows = strongest_windows(snap.radial, np.nanmean(sess.patterns[:snap.frames], axis=0), 3)
        wins = self._windows
        k = min(int(self.sino_window.value or 0), len(wins) - 1) if wins else 0
        opts = [(f"window {i + 1}: {lo:.3g}–{hi:.3g}", i) for i, (lo, hi) in enumerate(wins)] or [("window 1", 0)]
        if list(self.sino_window.options) != opts:
            self.sino_window.options = opts
        self.progress.value = snap.frames / max(1, snap.n_frames)
        if not snap.finished:
            self._show(snap.summary())
        r = snap.radial
        with _fig.updating(self.fig):
            if snap.latest_frame is not None:
                fr = np.asarray(snap.latest_frame, np.float64)
                bad = fr >= np.iinfo(np.uint32).max - 1 if fr.dtype.kind != "f" else ~np.isfinite(fr)
                if sess.source.pixel_mask is not None:
                    bad = bad | sess.source.pixel_mask
                self.fig.data[0].z = _fig.z_rows(np.where(bad, np.nan, np.log1p(np.clip(fr, 0, None))))
            self.fig.data[1].x, self.fig.data[1].y = r.tolist(), np.nan_to_num(snap.latest_pattern).tolist()
            if wins:
                sino = window_images(snap.sinogram, r, [wins[k]])[..., 0]
                self.fig.data[2].z = _fig.z_rows(sino)
                self.fig.layout.shapes = [dict(type="rect", xref="x2", yref="paper", x0=lo, x1=hi, y0=0, y1=1,
                                               fillcolor="rgba(255,165,0,0.25)", line={"width": 0}, layer="below")
                                          for lo, hi in wins]
                self.fig.layout.annotations[2].text = f"sinogram ({wins[k][0]:.3g}–{wins[k][1]:.3g})"
        _fig.mirror_state(self.fig)
        if snap.volume is not None and (force or snap.image_time != self._shown_image) and wins:
            self._shown_image = snap.image_time
            imgs = window_images(snap.volume, r, wins)
            cov = snap.coverage
            with _fig.updating(self.images):
                for i in range(_N_IMAGES):
                    self.images.data[i].z = _fig.z_rows(imgs[..., i] if i < len(wins) else np.full((1, 1), np.nan))
                    self.images.layout.annotations[i].text = (
                        f"{wins[i][0]:.3g}–{wins[i][1]:.3g}" if i < len(wins) else "")
                self.images.layout.title = {"text": f"FBP of {cov['angles']}/{cov['n_angles']} angles "
                                                    f"({snap.frames_in_image} frames), missing wedge "
                                                    f"{cov['missing_wedge_deg']:.0f}°",
                                            "x": 0.01, "font": {"size": 13}}
            _fig.mirror_state(self.images)
            self.explore_button.disabled = False

    def close(self):
        self.stop()
