"""The Integrate tab: raw detector frames + PONI from the data folder → a sinogram stack.

Pick a raw scan (HDF5/NeXus master or stack) and a PONI file from the data folder, look at one
frame with its strongest rings overlaid and its integrated pattern
(:func:`xrdwidgets.integrate.frame_preview`), set mask / unit / bins / method, and integrate the
whole scan (:func:`xrdwidgets.integrate.iterate_integration`) as a background job. The stack
goes into the shared :class:`~xrdwidgets.widgets.state.AppState` (so the next tabs use it) and
``on_done`` callbacks (the App switches to its Data tab).

Paths are relative to the data folder and confined to it (:mod:`xrdwidgets.base.safety`); callbacks
only start jobs; the job thread only sets traits.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import jobs
from ..base import safety
from ..base.progress import Progress
from . import plotting as _fig
from .job_view import JobView
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["IntegratePanel", "RAW_SUFFIXES", "PONI_SUFFIXES", "MASK_SUFFIXES"]

RAW_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")
PONI_SUFFIXES = (".poni",)
MASK_SUFFIXES = (".edf", ".npy", ".tif", ".tiff", ".msk")
_FILE_MASK = "(the file's own pixel mask)"
_METHODS = (("plain mean", "mean"), ("10 % trimmed mean (removes spots)", "trimmed"),
            ("sigma clipping (3 σ)", "sigma_clip"))
_EXPECTED_ERRORS = (OSError, ValueError, IndexError)
_STYLE = {"description_width": "6em"}


def _listing(root, suffixes, *, max_files: int = 500, max_depth: int = 6) -> list[str]:
    """Files with ``suffixes`` under ``root`` (relative, confined, not hidden), sorted.

    HDF5 files come from :func:`xrdwidgets.base.safety.list_data_files`; other kinds (PONI, masks)
    from the same kind of walk: symlinked folders not followed, at most ``max_depth`` levels."""
    if root is None:
        return []
    if suffixes == RAW_SUFFIXES:
        return [f for f in safety.list_data_files(root) if f.lower().endswith(RAW_SUFFIXES)]
    base = Path(root).resolve()
    out = []
    for here, dirs, files in os.walk(base, followlinks=False):
        rel_here = Path(here).relative_to(base)
        dirs[:] = [d for d in sorted(dirs) if not d.startswith(".") and len(rel_here.parts) < max_depth]
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            rel = (rel_here / name).as_posix()
            try:
                safety.confine(rel, base, must_exist=True)
            except (OSError, ValueError):
                continue
            out.append(rel)
            if len(out) >= max_files:
                return sorted(out)
    return sorted(out)


def _preview_source(raw, poni, **kw):
    from ..integrate import frame_preview

    yield Progress(iteration=0, total=1)
    return frame_preview(raw, poni, **kw)


class IntegratePanel:
    """Raw frames → sinogram stack, in a tab.

    Parameters
    ----------
    state : AppState
        Receives the integrated stack (:meth:`AppState.set_data`).
    data_dir : path-like, optional
        The data folder (default ``$XRDWIDGETS_DATA_DIR``); without one the panel says so.
    workdir : path-like, optional
        Where the stack is written while it is integrated (out of core, resumable); default: in
        memory.

    Attributes
    ----------
    raw, poni, mask : ipywidgets.Dropdown
    frame, bins : ipywidgets.BoundedIntText
    unit, method : ipywidgets widgets
    trim : ipywidgets.FloatSlider
    preview_button, run_button : ipywidgets.Button
    fig : plotly FigureWidget
        The frame with rings (left) and its pattern (right).
    status : ipywidgets.HTML
    job : xrdwidgets.jobs.Job or None
    on_done : list of callables
        Called with the stack after a successful integration.
    """

    def __init__(self, state: AppState, *, data_dir=None, workdir=None):
        self.state = state
        self.workdir = Path(workdir) if workdir is not None else None
        self.job: jobs.Job | None = None
        self.on_done: list = []
        try:
            self.root = safety.data_root(data_dir)
        except OSError as exc:
            log.warning("integrate panel: %s", exc)
            self.root = None
        self.raw = w.Dropdown(options=[], description="Raw scan", style=_STYLE, layout=w.Layout(width="30em"))
        self.poni = w.Dropdown(options=[], description="PONI", style=_STYLE, layout=w.Layout(width="30em"))
        self.mask = w.Dropdown(options=[_FILE_MASK], description="Mask", style=_STYLE, layout=w.Layout(width="30em"))
        self.frame = w.BoundedIntText(value=0, min=0, max=10**9, description="Frame", style=_STYLE,
                                      layout=w.Layout(width="14em"))
        self.unit = w.ToggleButtons(options=[("2θ (deg)", "tth"), ("q (1/Å)", "q")], value="tth",
                                    description="Unit", style={**_STYLE, "button_width": "6em"})
        self.bins = w.BoundedIntText(value=500, min=16, max=20000, description="Bins", style=_STYLE,
                                     layout=w.Layout(width="14em"))
        self.method = w.Dropdown(options=_METHODS, value="mean", description="Method", style=_STYLE,
                                 layout=w.Layout(width="30em"))
        self.trim = w.FloatSlider(value=10.0, min=1.0, max=40.0, step=1.0, description="Trim (%)",
                                  style=_STYLE, disabled=True)
        self.preview_button = w.Button(description="Preview frame", icon="eye")
        self.run_button = w.Button(description="Integrate scan", icon="play", button_style="primary")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.preview_button.add_class("xrdw-preview")
        self.run_button.add_class("xrdw-integrate")
        self.raw.add_class("xrdw-raw")
        self.poni.add_class("xrdw-poni")
        self.view = JobView(status_line=False, errors=False, hide_progress=True, progress_width="12em",
                            buttons=[self.preview_button, self.run_button])
        self.status, self.progress = self.view.status, self.view.progress
        self.status.layout.min_height = "1.6em"
        self.status.add_class("xrdw-status")
        self.method.observe(lambda ch: setattr(self.trim, "disabled", ch["new"] != "trimmed"), "value")
        self.preview_button.on_click(lambda _: self.preview())
        self.run_button.on_click(lambda _: self.start())
        self.refresh_button.on_click(lambda _: self.refresh())
        base = make_subplots(rows=1, cols=2, column_widths=[0.42, 0.58], horizontal_spacing=0.1,
                             subplot_titles=("frame (log counts) and rings", "integrated pattern"))
        base.add_trace(go.Heatmap(z=[[0.0]], colorscale="Viridis", showscale=False, hoverinfo="skip"), row=1, col=1)
        base.add_trace(go.Scatter(x=[], y=[], mode="lines", line={"width": 1.5, "color": "#ff5252"},
                                  hoverinfo="skip", connectgaps=False, name="rings"), row=1, col=1)
        base.add_trace(go.Scatter(x=[], y=[], mode="lines", name="pattern"), row=1, col=2)
        base.add_trace(go.Scatter(x=[], y=[], mode="markers", name="ring peaks",
                                  marker={"symbol": "triangle-down", "size": 9, "color": "#ff5252"}), row=1, col=2)
        base.update_layout(width=900, height=400, autosize=False, showlegend=False,
                           margin=dict(l=50, r=10, t=40, b=40))
        base.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", row=1, col=1)
        base.update_xaxes(constrain="domain", row=1, col=1)
        self.fig = _fig.FigureWidget(base)
        controls = w.VBox([self.raw, self.poni, self.mask, w.HBox([self.frame, self.bins]), self.unit,
                           self.method, self.trim,
                           w.HBox([self.preview_button, self.run_button, self.refresh_button]),
                           w.HBox([self.progress, self.status])])
        self.widget = w.VBox([controls, _fig.fixed_box(self.fig, 900, 400)])
        self.widget.add_class("xrdw-integrate-panel")
        self.refresh()

    # ------------------------------------------------------------------ files
    def refresh(self):
        """List the raw scans, PONI and mask files of the data folder."""
        if self.root is None:
            self._show("no data folder is configured (start the app with --data-dir DIR)", "error")
            return
        raws = _listing(self.root, RAW_SUFFIXES)
        masters = [f for f in raws if "master" in Path(f).name] + [f for f in raws if "master" not in Path(f).name]
        self.raw.options = masters
        self.poni.options = _listing(self.root, PONI_SUFFIXES)
        self.mask.options = [_FILE_MASK] + _listing(self.root, MASK_SUFFIXES)

    def _paths(self):
        if self.root is None:
            raise safety.UnsafePathError("no data folder is configured (start the app with --data-dir DIR)")
        if not self.raw.value or not self.poni.value:
            raise ValueError("choose a raw scan and a PONI file first")
        raw = safety.confine(self.raw.value, self.root, must_exist=True)
        poni = safety.confine(self.poni.value, self.root, must_exist=True)
        mask = None
        if self.mask.value and self.mask.value != _FILE_MASK:
            mask = safety.confine(self.mask.value, self.root, must_exist=True)
        return raw, poni, mask

    def options(self) -> dict:
        """The integration settings chosen in the panel (keywords of IntegrationOptions)."""
        return {"unit": self.unit.value, "bins": int(self.bins.value), "method": self.method.value,
                "trim": float(self.trim.value)}

    # ------------------------------------------------------------------ messages
    def _show(self, text: str, kind: str = "info"):
        self.status.value = _fig.message_html(text, kind)

    def _user_text(self, exc: BaseException) -> str:
        if isinstance(exc, _EXPECTED_ERRORS):
            text = str(exc)
        else:
            text = f"unexpected error ({jobs.describe_error(exc)}); details are in the server log"
        if self.root is not None:   # no server paths shown to the visitor
            text = text.replace(str(Path(self.root).resolve()) + "/", "").replace(str(Path(self.root).resolve()), ".")
        return text.splitlines()[0] if text else type(exc).__name__

    # ------------------------------------------------------------------ jobs
    @property
    def busy(self) -> bool:
        return self.view.busy

    def _start(self, label, source, on_result):
        if self.busy:
            self._show("busy: wait for the current job to finish", "error")
            return None
        self._show(f"{label} …")
        self.job = jobs.run(source, name=f"integrate: {label}")
        return self.view.watch(self.job, on_progress=self._on_event,
                               on_done=functools.partial(self._on_done, on_result=on_result))

    def _on_event(self, ev):
        p = ev.progress
        if p is not None and getattr(p, "total", None):
            fps = (p.metrics or {}).get("frames_per_s")
            if fps and not ev.state.finished:
                self._show(f"integrating: {p.metrics['frames']}/{p.metrics['n_frames']} frames, "
                           f"{fps:.0f} frames/s")

    def _on_done(self, ev, *, on_result):
        job = ev.job
        try:
            if ev.state == jobs.State.DONE:
                on_result(job.result)
            elif ev.state == jobs.State.FAILED:
                if not isinstance(job.error, _EXPECTED_ERRORS):
                    log.error("integrate panel job failed", exc_info=job.error)
                self._show(self._user_text(job.error), "error")
            else:
                self._show("cancelled", "info")
        except Exception as exc:  # noqa: BLE001  (a display error must not leave the panel busy)
            log.exception("integrate panel: showing the result failed")
            self._show(self._user_text(exc), "error")

    def preview(self):
        """Start a job that reads frame :attr:`frame` and shows it with its pattern."""
        try:
            raw, poni, mask = self._paths()
        except _EXPECTED_ERRORS as exc:
            self._show(self._user_text(exc), "error")
            return None
        src = functools.partial(_preview_source, raw, poni, index=int(self.frame.value), mask=mask, **self.options())
        return self._start(f"preview of frame {self.frame.value}", src, self._show_preview)

    def _show_preview(self, d):
        img = d["image"]
        rr = [v for _, r, _ in d["rings"] for v in r]
        cc = [v for _, _, c in d["rings"] for v in c]
        pk = [pos for pos, _, _ in d["rings"]]
        pat = np.asarray(d["pattern"], float)
        rad = np.asarray(d["radial"], float)
        with self.fig.batch_update():
            self.fig.data[0].z = _fig.z_rows(np.where(np.isfinite(img), img, np.nan))
            self.fig.data[1].x, self.fig.data[1].y = cc, rr
            self.fig.data[2].x, self.fig.data[2].y = rad.tolist(), pat.tolist()
            self.fig.data[3].x = pk
            self.fig.data[3].y = [float(pat[np.argmin(np.abs(rad - p))]) for p in pk]
            self.fig.layout.xaxis2.title = f"{'2θ' if d['unit'] == 'tth' else 'q'} ({d['units']})"
        self.frame.max = d["n_frames"] - 1
        self._show(f"frame {d['index']} of {d['n_frames']} ({d['frame_shape'][0]}×{d['frame_shape'][1]} px): "
                   f"{len(d['rings'])} rings at " + ", ".join(f"{p:.3g}" for p in pk), "ok")

    def start(self):
        """Start the integration of the whole scan as a background job."""
        from ..integrate import IntegrationOptions, iterate_integration

        try:
            raw, poni, mask = self._paths()
            opts = IntegrationOptions(**self.options())
        except _EXPECTED_ERRORS as exc:
            self._show(self._user_text(exc), "error")
            return None
        out = None
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            out = self.workdir / f"{raw.stem}-{opts.unit}-{opts.method}-{opts.bins}.h5"
        name = Path(self.raw.value).name
        src = functools.partial(iterate_integration, raw, poni, mask=mask, options=opts, out=out,
                                overwrite=out is not None and out.exists())
        return self._start(f"integrating {name}", src, functools.partial(self._take_stack, name=name))

    def _take_stack(self, stack, *, name):
        self.state.set_data(stack, name=f"integrated {name}")
        s = stack.sizes
        self._show(f"integrated {name}: {s['translation']} translations × {s['angle']} angles × "
                   f"{s[stack.dims[-1]]} bins", "ok")
        for cb in list(self.on_done):
            cb(stack)
