"""Analysis tabs of the App: ROI image, ROI pattern and peak fitting.

Thin views over :mod:`xrdwidgets.analysis` and one shared :class:`AppState`:

* :class:`RoiImagePanel` — a channel window of a result volume summed per pixel
  (:func:`~xrdwidgets.explore.roi.roi_image`), with optional background subtraction; the window
  is published in ``state.roi`` for the other tabs.
* :class:`RoiPatternPanel` — a threshold on that ROI image gives a mask; its mean pattern
  (:func:`~xrdwidgets.explore.roi.roi_pattern`) with the suggested peaks
  (:func:`~xrdwidgets.explore.roi.suggest_peaks`) overlaid; the peaks are published too.
* :class:`PeakFitPanel` — the batch peak fit of every pixel
  (:func:`~xrdwidgets.analysis.fitting.iterate_fit`) as a background job: the parameter map fills
  in as the job runs; hovering (or clicking) a pixel of the map shows its data, the fit and the
  residual.

Each panel has one plotly figure (plotly.js travels to the browser once per figure); the
computations of the ROI tabs are cheap views (a window sum, a masked mean), the fit is a job.
"""
from __future__ import annotations

import functools
import html

import ipywidgets as w
import numpy as np

from .. import data as _data
from .. import jobs as _jobs
from .. import explore as _v
from ..analysis.peaks import param_long_name as _param_words   # the live preview's title
from ..explore.roi import BACKGROUNDS as _BACKGROUNDS
from ..analysis.roi_peaks import strongest_window
from ..base.errors import InputError
from . import plotting as _fig
from ._analysis_figures import (error_html as _error, heat_update as _heat_update, need as _need,
                                label_image_axes as _label_image_axes, peakfit_figure, roi_image_figure,
                                roi_pattern_figure)
from .job_view import JobView
from .state import AppState

__all__ = ["RoiImagePanel", "RoiPatternPanel", "PeakFitPanel", "parse_positions", "fit_summary", "map_label"]

_STYLE = {"description_width": "100px"}
#: Width (px) of the peak-fit figure: with its 350-px form it fits a 1280-px window.
_FIT_W = 790


def _current_volume(state: AppState):
    """``(name, volume)`` of the result the panels work on (the current one), or ``(None, None)``.

    The volume is ``(y, x, spectral)``: of a volume with leading ``time``/``z`` dims, the first
    slice (the analysis tabs show one map).
    """
    results = state.results or {}
    if not results:
        return None, None
    name = state.current if state.current in results else list(results)[-1]
    da = _data.as_dataarray(results[name], "volume")
    extra = {d: 0 for d in da.dims[:-3]}
    return name, (da.isel(extra) if extra else da)


def parse_positions(text: str) -> list[float]:
    """Peak positions from text such as ``"3.1, 3.6"`` (numbers only; nothing is evaluated)."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise InputError(f"peak positions must be numbers separated by commas, found {part!r}") from None
        if not np.isfinite(v):
            raise InputError(f"peak positions must be finite, found {part!r}")
        out.append(v)
    return out


class RoiImagePanel:
    """Channel-window image of the current result with optional background subtraction."""

    def __init__(self, state: AppState):
        self.state = state
        self.image = None
        self.window = w.IntRangeSlider(description="channels", min=0, max=1, value=(0, 1),
                                       continuous_update=False, style=_STYLE, layout=w.Layout(width="95%"))
        self.window_label = w.HTML()
        self.background = w.ToggleButtons(options=_BACKGROUNDS, value="none", description="background",
                                          style={**_STYLE, "button_width": "70px"})
        self.edge_channels = w.BoundedIntText(value=2, min=1, max=50, description="edge channels", style=_STYLE)
        self.message = w.HTML()
        self.fig = roi_image_figure()
        for wd in (self.window, self.background, self.edge_channels):
            wd.observe(lambda _: self.update(), "value")
        state.observe(self._on_results, ["results", "current"])
        self.downloads = _fig.DownloadBar({"map PNG": lambda: self.download_bytes("png"),
                                           "map HDF5": lambda: self.download_bytes("h5")})
        controls = w.VBox([self.window, self.window_label, self.background, self.edge_channels, self.message,
                           self.downloads.widget], layout=w.Layout(width="420px"))
        self.widget = w.HBox([controls, _fig.fixed_box(self.fig, 520, 460)])
        self.widget.add_class("xrdw-roi-image-panel")
        self._on_results()

    def _on_results(self, *_):
        name, vol = _current_volume(self.state)
        if vol is None:
            self.message.value = "<i>no reconstruction yet: run one in the Reconstruct tab</i>"
            return
        n = vol.sizes[vol.dims[-1]]
        roi = self.state.roi or {}
        # start on the strongest peak of the mean pattern, ± 4 % of the axis
        lo, hi = roi["channels"] if "channels" in roi else strongest_window(vol)
        lo, hi = int(np.clip(lo, 0, n - 1)), int(np.clip(hi, lo + 1, n))
        with self.window.hold_trait_notifications():
            self.window.max = n
            self.window.value = (lo, hi)
        self.update()

    def update(self):
        """Recompute the ROI image from the widgets and publish the window in ``state.roi``."""
        from ..explore.roi import roi_image

        name, vol = _current_volume(self.state)
        if vol is None:
            return None
        spec = vol.dims[-1]
        lo, hi = self.window.value
        hi = max(hi, lo + 1)
        c = vol[spec]
        units = c.attrs.get("units", "")
        self.window_label.value = (f"<small>{hi - lo} channels, {_v.axis_label(c).split(' (')[0]} "
                                   f"{float(c[lo]):.4g}–{float(c[hi - 1]):.4g} {units}</small>")
        try:
            img = roi_image(vol, lo, hi, by="index", background=self.background.value,
                            edge_channels=int(self.edge_channels.value))
        except ValueError as exc:
            self.message.value = _error(str(exc))
            return None
        self.message.value = ""
        self.image = img
        shown = _v.decimate(img, 512)
        self._title = (f"{name}: {img.attrs['long_name']}, {_v.axis_label(c).split(' (')[0]} "
                       f"{float(c[lo]):.4g}–{float(c[hi - 1]):.4g} {units}")
        self._source = (name, lo, hi)
        _heat_update(self.fig, 0, shown, title=self._title)
        _label_image_axes(self.fig, shown)
        self.state.roi = {**(self.state.roi or {}), "source": name, "channels": (lo, hi),
                          "range": (float(c[lo]), float(c[hi - 1])), "background": self.background.value,
                          "edge_channels": int(self.edge_channels.value)}
        return img

    def download_bytes(self, fmt: str) -> tuple[str, bytes]:
        """``(file name, bytes)`` of the ROI image: ``"png"`` (figure with axes and colour bar)
        or ``"h5"`` (values with coordinates)."""
        img = _need(self.image, "no ROI image (run a reconstruction first)")
        name, lo, hi = self._source
        stem = _v.export_name(name, "roi", f"ch{lo}-{hi - 1}")
        return f"{stem}.{fmt}", _v.image_bytes(img, fmt, title=self._title)

    def _ipython_display_(self):  # pragma: no cover
        from IPython.display import display

        display(self.widget)


class RoiPatternPanel:
    """Mask by a threshold on the ROI image → mean pattern with suggested peaks."""

    def __init__(self, state: AppState):
        self.state = state
        self.pattern = None
        self.peaks = None
        self.fraction = w.FloatSlider(value=0.5, min=0.0, max=0.99, step=0.01, description="threshold",
                                      continuous_update=False, style=_STYLE, readout_format=".2f")
        self.fraction.tooltip = "fraction of the ROI image's robust range (1st–99th percentile)"
        self.above = w.ToggleButtons(options=[("above", True), ("below", False)], value=True,
                                     description="keep pixels", style={**_STYLE, "button_width": "60px"})
        self.prominence = w.BoundedFloatText(value=0.05, min=0.001, max=1.0, step=0.01,
                                             description="prominence", style=_STYLE)
        self.prominence.tooltip = "minimum peak prominence relative to the pattern's robust range"
        self.message = w.HTML()
        self.peak_list = w.HTML()
        self.fig = roi_pattern_figure()
        for wd in (self.fraction, self.above, self.prominence):
            wd.observe(self._on_change, "value")
        state.observe(self._on_change, ["roi", "results", "current"])
        self.downloads = _fig.DownloadBar({"pattern .xy": lambda: self.download_bytes("xy"),
                                           "pattern PNG": lambda: self.download_bytes("png")})
        controls = w.VBox([self.fraction, self.above, self.prominence, self.peak_list, self.message,
                           self.downloads.widget], layout=w.Layout(width="330px"))
        self.widget = w.HBox([controls, _fig.fixed_box(self.fig, 900, 420)])
        self.widget.add_class("xrdw-roi-pattern-panel")
        self._busy = False
        self.update()

    def _on_change(self, change=None):
        if self._busy:  # our own publication of the peaks
            return
        self.update()

    def update(self):
        """Mask, mean pattern and peaks from the widgets; peaks published in ``state.roi``."""
        from ..analysis.roi_peaks import masked_pattern_peaks

        name, vol = _current_volume(self.state)
        roi = self.state.roi or {}
        if vol is None:
            self.message.value = "<i>no reconstruction yet</i>"
            return None
        spec = vol.dims[-1]
        lo, hi = roi.get("channels", (0, vol.sizes[spec]))
        try:
            found = masked_pattern_peaks(vol, (lo, hi), background=roi.get("background", "none"),
                                         edge_channels=roi.get("edge_channels", 1), fraction=self.fraction.value,
                                         above=self.above.value, relative_prominence=self.prominence.value)
        except ValueError as exc:
            self.message.value = _error(str(exc))
            return None
        self.message.value = ""
        img, pattern, peaks, heights = found["image"], found["pattern"], found["peaks"], found["heights"]
        self.pattern, self.peaks = pattern, peaks
        m = np.asarray(found["mask"].values, dtype=bool)
        shown = np.where(m, np.asarray(img.values, dtype=np.float32), np.nan)
        units = vol[spec].attrs.get("units", "")
        pos = np.asarray(peaks.values, dtype=float)
        with _fig.updating(self.fig):
            self.fig.data[1].x = np.asarray(vol[spec].values, dtype=float)
            self.fig.data[1].y = np.asarray(pattern.values, dtype=float)
            self.fig.data[2].x = pos
            self.fig.data[2].y = heights
            self.fig.layout.xaxis2.title = _v.axis_label(vol[spec])
            self.fig.layout.yaxis2.title = _v.axis_label(pattern) or "mean intensity"
        shown_img = _v.decimate(img.copy(data=shown), 512)
        _heat_update(self.fig, 0, shown_img)
        _label_image_axes(self.fig, shown_img, colorbar_trace=None)
        self.peak_list.value = (f"<small>{int(m.sum())} pixels; suggested peaks ({units}): "
                                + (", ".join(f"{p:.4g}" for p in pos) or "none") + "</small>")
        self._busy = True
        try:
            self.state.roi = {**roi, "peaks": [float(p) for p in pos], "mask_fraction": float(self.fraction.value)}
        finally:
            self._busy = False
        return pattern

    def download_bytes(self, fmt: str) -> tuple[str, bytes]:
        """``(file name, bytes)`` of the mean pattern of the mask (``"xy"``, ``"h5"`` or ``"png"``)."""
        pat = _need(self.pattern, "no ROI pattern (run a reconstruction first)")
        name = (self.state.roi or {}).get("source", "roi")
        stem = _v.export_name(name, "roi_pattern")
        return f"{stem}.{fmt}", _v.patterns_bytes({"mean of mask": pat}, fmt,
                                                  title=f"{name}: mean pattern of the mask")

    def _ipython_display_(self):  # pragma: no cover
        from IPython.display import display

        display(self.widget)


def map_label(result, name: str) -> str:
    """Human words for map ``name`` of a fit result: its ``long_name`` (``"integrated intensity of
    peak 0"`` for ``area_0``, ``"weighted-profile R factor Rwp (fraction)"`` for ``rwp``); a standard
    error is named after its parameter's words."""
    if name.endswith("_stderr") and name[:-7] in result:
        return "standard error of " + map_label(result, name[:-7])
    text = str(result[name].attrs.get("long_name") or name)
    for dim, words in _data.LONG_NAMES.items():   # "FWHM (tth)" → "FWHM (2θ)"
        text = text.replace(f"({dim})", f"({words})")
    return text


def fit_summary(result) -> str:
    """One line on a fit result: pixels not converged (after retries), pixels with a peak."""
    a = result.attrs
    n = int(a.get("n_fitted", 0))
    bad = n - int(a.get("n_converged", n))
    parts = [f"{bad} of {n} pixels did not converge"
             + (f" ({int(a['n_retried'])} improved by neighbour-seeded retries)" if a.get("n_retried") else "")]
    if "n_peak_found" in a:
        parts.append(f"{int(a['n_peak_found'])} with a significant peak (area ≥ {a.get('significance', 3):g} σ)")
    return "<small>" + "; ".join(parts) + "</small>"


class PeakFitPanel:
    """Batch peak fitting of every pixel as a background job, with a linked map / pattern view."""

    def __init__(self, state: AppState, *, queue=True):
        from ..analysis.peaks import BACKGROUNDS, PROFILES

        self.state = state
        self.queue = queue
        self.job: _jobs.Job | None = None
        self.result = None
        self._volume = None
        self._model = None
        self.profile = w.Dropdown(options=list(PROFILES), value="pseudo_voigt", description="profile", style=_STYLE)
        self.n_peaks = w.BoundedIntText(value=1, min=1, max=6, description="peaks", style=_STYLE)
        self.background = w.Dropdown(options=[b for b in BACKGROUNDS if b != "none"] or list(BACKGROUNDS),
                                     value="linear", description="background", style=_STYLE)
        self.fit_range = w.FloatRangeSlider(description="fit range", min=0.0, max=1.0, value=(0.0, 1.0), step=0.001,
                                            continuous_update=False, readout_format=".3f", style=_STYLE,
                                            layout=w.Layout(width="390px"))
        self.positions = w.Text(value="", description="positions", placeholder="e.g. 3.10, 3.58", style=_STYLE)
        self.positions.tooltip = "starting peak positions (spectral units), comma-separated; empty: data maxima"
        self.fwhm_max = w.BoundedFloatText(value=0.0, min=0.0, max=1e6, step=0.01, description="max FWHM",
                                           style=_STYLE)
        self.fwhm_max.tooltip = "upper bound of every FWHM (spectral units); 0: the model's default"
        self.max_iter = w.BoundedIntText(value=100, min=1, max=10000, description="max iterations", style=_STYLE)
        self.start_button = w.Button(description="Fit", button_style="success", icon="play")
        self.view = JobView(status="<i>no fit yet</i>", status_line=False, errors=False, buttons=[self.start_button])
        self.cancel_button, self.progress = self.view.cancel_button, self.view.progress
        self.status, self.error = self.view.status, self.view.error
        self.map_param = w.Dropdown(options=[], description="map", style=_STYLE)
        self.blank_no_peak = w.Checkbox(value=False, indent=False,
                                        description="blank pixels without a significant peak")
        self.blank_no_peak.observe(self._show_map, "value")
        for wd in (self.profile, self.n_peaks, self.background, self.positions, self.fwhm_max,
                   self.max_iter):
            wd.layout.width = "330px"
        # map names are words ("standard error of integrated intensity of peak 0"): a short label, a wide menu
        self.map_param.style.description_width = "36px"
        self.map_param.layout.width = "395px"
        self.fig = peakfit_figure(_FIT_W)
        self.fig.data[0].on_hover(self._on_map_point)
        self.fig.data[0].on_click(self._on_map_point)
        self.start_button.on_click(lambda _: self.start())
        self.map_param.observe(self._show_map, "value")
        state.observe(self._on_roi, ["roi", "results", "current"])
        for wd, cls in ((self.start_button, "xrdw-fit-start"), (self.cancel_button, "xrdw-fit-cancel"),
                        (self.status, "xrdw-fit-status"), (self.error, "xrdw-fit-error")):
            wd.add_class(cls)
        self.downloads = _fig.DownloadBar({"map PNG": lambda: self.download_bytes("png"),
                                           "maps HDF5": lambda: self.download_bytes("h5")})
        controls = w.VBox([self.profile, self.n_peaks, self.background, self.fit_range, self.positions,
                           self.fwhm_max, self.max_iter, w.HBox([self.start_button, self.cancel_button]),
                           self.progress, self.status, self.error, self.map_param, self.blank_no_peak,
                           self.downloads.widget],
                          layout=w.Layout(width="400px", overflow="hidden"))
        self.widget = w.HBox([controls, _fig.fixed_box(self.fig, _FIT_W, 430)])
        self.widget.add_class("xrdw-peakfit-panel")
        self._on_roi()

    # ------------------------------------------------------------------ form
    def _on_roi(self, *_):
        if self.job is not None and not self.job.done:
            return
        name, vol = _current_volume(self.state)
        if vol is None:
            return
        spec = vol.dims[-1]
        c = np.asarray(vol[spec].values, dtype=float)
        step = float(abs(c[1] - c[0])) if c.size > 1 else 1.0
        roi = self.state.roi or {}
        lo, hi = roi.get("range", (float(c.min()), float(c.max())))
        with self.fit_range.hold_trait_notifications():
            self.fit_range.min, self.fit_range.max = float(c.min()), float(c.max())
            self.fit_range.step = step
            self.fit_range.value = (max(float(c.min()), lo), min(float(c.max()), hi))
        peaks = [p for p in roi.get("peaks", []) if lo <= p <= hi]
        if peaks:
            self.positions.value = ", ".join(f"{p:.4g}" for p in peaks[:6])
            self.n_peaks.value = len(peaks[:6])

    def options(self) -> dict:
        """The keyword arguments of :func:`~xrdwidgets.analysis.fitting.iterate_fit` given by the form
        (``model`` included); raises ``ValueError`` with a message for the user."""
        from ..analysis.fitting import fit_arguments

        return fit_arguments(n_peaks=self.n_peaks.value, profile=self.profile.value,
                             background=self.background.value, fit_range=self.fit_range.value,
                             positions=parse_positions(self.positions.value), fwhm_max=self.fwhm_max.value,
                             max_iter=self.max_iter.value)

    # ------------------------------------------------------------------ job
    def start(self) -> _jobs.Job | None:
        """Start the fit of the current result as a background job (returns it)."""
        from ..analysis.fitting import iterate_fit

        self.error.value = ""
        name, vol = _current_volume(self.state)
        if vol is None:
            self.error.value = _error("no reconstruction to fit: run one in the Reconstruct tab")
            return None
        try:
            opts = self.options()
            model = opts.pop("model")
            iterate_fit(vol, model, **opts)   # checks the arguments now (the volume is read in the job)
        except (ValueError, TypeError) as exc:
            self.error.value = _error(str(exc))
            return None
        self._volume, self._model, self.result, self._shown_result = vol, model, None, None
        self.job = _jobs.run(functools.partial(iterate_fit, vol, model, **opts), name=f"fit {name}",
                             queue=self.queue, params={"source": name, **{k: v for k, v in opts.items()}})
        return self.view.watch(self.job, on_progress=self._on_event, on_done=self._on_done)

    def cancel(self):
        self.view.cancel()

    def _on_event(self, ev: _jobs.JobEvent):
        """Runs in the job's dispatcher thread (after the view's progress bar): sets traits only."""
        p = ev.progress
        if p is not None:
            if p.preview is not None and np.ndim(p.preview) == 2:
                ref = self._volume.isel({self._volume.dims[-1]: 0}, drop=True)
                self.fig.data[0].showscale = True
                self.fig.update_xaxes(visible=True, row=1, col=1)
                self.fig.update_yaxes(visible=True, row=1, col=1)
                _label_image_axes(self.fig, ref, colorbar_trace=None)
                _heat_update(self.fig, 0, _v.decimate(ref.copy(data=np.asarray(p.preview, np.float32)), 512),
                             title=f"{_param_words(self._model.param_names[0])} (fitting…)", annotation=0)
            done = (p.metrics or {}).get("pixels_done")
            total = (p.metrics or {}).get("pixels_total")
            px = f", {done}/{total} pixels" if done is not None and total else ""
            self.status.value = f"<b>{ev.job.name}</b> {ev.state.value}{px}, {ev.job.elapsed:.1f} s"

    def _on_done(self, ev: _jobs.JobEvent):
        self.status.value = f"<b>{ev.job.name}</b> {ev.state.value}: {html.escape(ev.job.message)}"
        if ev.state is _jobs.State.DONE:
            res = ev.job.result
            self.status.value += "<br>" + fit_summary(res)
            maps = [v for v in res.data_vars if res[v].ndim >= 2 and res[v].dtype != bool]
            self._shown_result = res
            self.map_param.options = [(map_label(res, m), m) for m in maps]
            self.map_param.value = maps[0] if maps else None
            self._show_map()
            self.result = res   # last: a reader that sees the result sees its map drawn
        elif ev.state is _jobs.State.FAILED:
            self.error.value = _error(ev.job.message)

    # ------------------------------------------------------------------ views
    def _show_map(self, *_):
        res = getattr(self, "_shown_result", None)
        if res is None or not self.map_param.value:
            return
        from ..analysis.fitting import fit_map

        da = fit_map(res, self.map_param.value, only_peaks=self.blank_no_peak.value)
        units = da.attrs.get("units", "")
        shown = _v.decimate(da.astype(np.float32), 512)
        self.fig.data[0].showscale = True
        self.fig.update_xaxes(visible=True, row=1, col=1)
        self.fig.update_yaxes(visible=True, row=1, col=1)
        _heat_update(self.fig, 0, shown,
                     title=map_label(res, self.map_param.value) + (f" ({units})" if units else ""), annotation=0)
        _label_image_axes(self.fig, shown)

    def download_bytes(self, fmt: str) -> tuple[str, bytes]:
        """``(file name, bytes)``: ``"png"`` the map shown (figure with axes and colour bar),
        ``"h5"`` every fitted map (and the fit quality) with coordinates and provenance."""
        res = _need(self.result, "no fit yet (press Fit)")
        source = (self.job.params or {}).get("source", "fit") if self.job is not None else "fit"
        if fmt == "h5":
            return f"{_v.export_name(source, 'peakfit')}.h5", _v.result_bytes(res, producer="xrdwidgets peak fitting")
        param = _need(self.map_param.value, "no map chosen")
        da = res[param].astype(np.float32)
        return (f"{_v.export_name(source, 'peakfit', param)}.png",
                _v.image_bytes(da, "png", title=f"{source}: fitted {param}"))

    def _on_map_point(self, trace, points, state=None):
        if not points.xs or self._volume is None:
            return
        vol = self._volume
        row, col = vol.dims[:2]
        r = _v.nearest_index(vol[row].values, points.ys[0])
        c = _v.nearest_index(vol[col].values, points.xs[0])
        self.show_pixel(r, c)

    def show_pixel(self, r: int, c: int):
        """Show the data, the fit and the residual at pixel (row ``r``, column ``c``)."""
        vol, model = self._volume, self._model
        if vol is None or model is None:
            return
        from ..analysis.fitting import pixel_fit

        spec = vol.dims[-1]
        x, y, fit = pixel_fit(vol, self.result, model, r, c, self.fit_range.value)
        with _fig.updating(self.fig):
            self.fig.data[1].x, self.fig.data[1].y = x, y
            self.fig.data[2].x, self.fig.data[2].y = x, fit
            self.fig.data[3].x, self.fig.data[3].y = x, y - fit
            self.fig.layout.annotations[1].text = f"pixel ({vol.dims[0]} {r}, {vol.dims[1]} {c}): data, fit, residual"
            self.fig.layout.xaxis2.title = _v.axis_label(vol[spec])
            self.fig.layout.yaxis2.title = _v.axis_label(vol) or "intensity"
            self.fig.layout.xaxis2.visible = self.fig.layout.yaxis2.visible = True

    def _ipython_display_(self):  # pragma: no cover
        from IPython.display import display

        display(self.widget)
