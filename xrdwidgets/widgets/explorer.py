"""Linked image–spectrum explorer of a volume ``(y, x, spectral)``.

Left: the image at the selected channel or the summed channel window (ROI image). Right: the
diffraction pattern of the selected pixel, with overlays of other volumes at the same pixel.
Hover/click on the image picks the pixel; click (or hover) on the pattern picks a channel;
box-select on the pattern or the range slider picks a window.

The widget is a thin view: images, windows and patterns come from :mod:`xrdwidgets.views`.
It sends the browser only what it shows — per pixel update one float32 pattern per visible
trace (binary) in one ``batch_update`` message (17 kB for two 2000-channel patterns; the pixel
marker on the image follows on click, or when a hovering cursor leaves the image), per window update one image block-averaged to at most
``max_image_size`` pixels per axis (float32 rows, binary: 1.09 MB for 512×512). Window sums
use :func:`xrdwidgets.views.sum_channels` (BLAS on the contiguous volume, no index, no extra
memory). ``benchmarks/bench_explorer.py`` measures server time, bytes and browser latency.

Interaction: hover (or click) on the image picks the pixel; click on the pattern picks a
channel, hover on it browses channels while a single channel is shown (never replacing a
multi-channel window; on by default only for images ≤ 256×256 after decimation, since each
hover then re-sends the image); box-select on the pattern (drag) or the range slider picks a
window. The figures have fixed pixel sizes, so they render inside ``Tab``, ``Accordion`` and
``HBox`` (see :mod:`xrdwidgets.widgets._views`).

The same class serves sinogram stacks (:class:`~xrdwidgets.widgets.sinogram_view.SinogramView`):
everything is written in terms of the two image dims ``row``/``col`` of the canonical order.
"""
from __future__ import annotations

import functools
import os
import logging
import threading
import time
from pathlib import Path

import ipywidgets as w
import numpy as np
import traitlets as tl
import xarray as xr

from .. import data as _data
from .. import safety
from .. import explore as _v
from ..data import DataError
from .plotting import (
    IMAGE_SIZE,
    MIME,
    DownloadLink,
    OVERLAY_COLOURS,
    PATTERN_SIZE,
    fixed_box,
    image_figure,
    mirror_state,
    pattern_figure,
    replace_shape,
    updating,
    z_rows,
)
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["Explorer"]


def _guarded(method):
    """Run a widget callback; on error show it in the status line instead of raising."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            log.warning("%s: %s", method.__name__, exc, exc_info=not isinstance(exc, (DataError, OSError)))
            self._say(f"⚠ {exc}")
    return wrapper


class Explorer(tl.HasTraits):
    """Linked image–spectrum view of a volume (or, in a subclass, a sinogram stack).

    Parameters
    ----------
    volume : xarray.DataArray or Dataset, optional
        ``(y, x, spectral)`` in any dim order (spectral one of ``tth``, ``q``, ``d``,
        ``energy``, ``channel``); optional ``z``/``time`` dims must be selected away first.
        The data are loaded into memory once (no copy when already canonical and C-contiguous).
    compare : dict, optional
        ``{name: volume}`` of other volumes with the same ``(y, x)`` sizes (their spectral axes
        may differ), overlaid on the pattern plot at the same pixel, e.g.
        ``{"SIRT": vol2, "truth": vol3}``.
    state : AppState, optional
        Follow ``state.results`` / ``state.current``: the current result is shown, the other
        results (and ``state.truth["volume"]`` when it has the same size) are overlays.
    export_dir : path-like, optional
        Folder of the export buttons, created when missing. With a data folder (``data_dir``,
        always the case in the served app): a sub-folder of ``<data folder>/results/``
        (default: that folder itself), confined to it, and an existing file is replaced only if
        this Explorer wrote it (see :class:`xrdwidgets.safety.ExportPlace`). Without one: any
        folder (default: the working directory).
    data_dir : path-like, optional
        The data folder (default: ``$XRDWIDGETS_DATA_DIR``, else none).
    name : str, optional
        Label of the main volume (default: its ``name`` or the state's current key).
    max_image_size : int
        The image sent to the browser is block-averaged to at most this many pixels per axis.
    cmap : str
        One of :data:`xrdwidgets.views.COLORMAPS`.
    percentiles : (float, float)
        Colour limits at these percentiles of the shown image.
    log : bool
        Show ``log10`` of the image.
    image_size, pattern_size : (int, int)
        Figure sizes in pixels (fixed; see :mod:`xrdwidgets.widgets._views`).

    Attributes
    ----------
    pixel : (int, int)
        Selected ``(row, col)`` indices: ``(y, x)`` for a volume. Observable trait.
    window : (int, int)
        Selected channel window, half-open indices ``(i0, i1)``. Observable trait.
    channel : int or None
        The selected channel when the window is one channel wide.
    image : xarray.DataArray
        The full-resolution image of the window (sum over its channels).
    shown_image : xarray.DataArray
        What the browser shows: ``image`` decimated (and ``log10`` when ``log`` is on).
    pattern : xarray.DataArray
        Pattern of the main volume at ``pixel``.
    patterns : dict
        ``{name: pattern}`` of the main volume and the visible overlays.
    timings : dict
        Server-side seconds of the last ``"pattern"`` and ``"image"`` update.
    widget : ipywidgets.VBox
        The container to display.

    Notes
    -----
    Selection methods: :meth:`select_pixel` (indices), :meth:`select_channel` (index),
    :meth:`select_window` (coordinate values by default, ``by="index"`` for indices).
    """

    KIND = "volume"
    #: AppState traits followed when a state is given.
    STATE_TRAITS = ("results", "current", "truth")

    pixel = tl.Tuple(tl.Int(), tl.Int(), default_value=(0, 0))
    window = tl.Tuple(tl.Int(), tl.Int(), default_value=(0, 1))

    def __init__(self, volume=None, *, compare: dict | None = None, state: AppState | None = None,
                 export_dir=None, data_dir=None, name: str | None = None, max_image_size: int = 512,
                 cmap: str = "viridis", percentiles=(1.0, 99.0), log: bool = False,
                 image_size=IMAGE_SIZE, pattern_size=PATTERN_SIZE):
        super().__init__()
        if state is not None and not isinstance(state, AppState):
            raise TypeError(f"{type(self).__name__}: state must be an AppState, found {type(state).__name__}")
        _v.check_cmap(cmap, type(self).__name__)
        _v.decimation_factors((1, 1), max_image_size)  # validates max_image_size
        self.max_image_size = int(max_image_size)
        try:
            root = safety.data_root(data_dir)
        except NotADirectoryError:      # misconfigured: exports are refused, never unconfined
            root = Path(data_dir if data_dir is not None else os.environ[safety.DATA_DIR_ENV])
        self.exports = safety.ExportPlace(root)
        default = "" if self.exports.confined else "."
        self.export_dir = str(export_dir) if export_dir is not None else default
        self.state = state
        self.timings = {"pattern": float("nan"), "image": float("nan")}
        self._image_size = tuple(image_size)
        self._pattern_size = tuple(pattern_size)
        self._da: xr.DataArray | None = None
        self._arr: np.ndarray | None = None
        self._window_index = None
        self._compare: dict = {}
        self._name = ""
        self._busy = False            # suppresses trait observers while the data change
        self._busy_slider = False     # suppresses the slider observer while we move it
        self.image = None
        self.shown_image = None
        self._limits = (0.0, 1.0)
        self._build_widgets(cmap, percentiles, log)
        if state is not None:
            state.observe(self._on_state, names=list(self.STATE_TRAITS))
        if volume is not None:
            self.set_volume(volume, name=name, compare=compare)
        elif state is not None:
            self._on_state()
        elif compare:
            raise DataError(f"{type(self).__name__}: compare given without a volume")
        else:
            self._say("no data yet")

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def close(self):
        """Stop following the state and close the widgets."""
        if self.state is not None:
            self.state.unobserve(self._on_state, names=list(self.STATE_TRAITS))

        def _close(wd):
            for child in getattr(wd, "children", ()):
                _close(child)
            wd.close()

        _close(self.widget)

    # ------------------------------------------------------------------ widgets
    def _build_widgets(self, cmap, percentiles, log_on):
        iw, ih = self._image_size
        pw, ph = self._pattern_size
        self.image_fig = image_figure(width=iw, height=ih, cmap=cmap, equal_aspect=self.KIND == "volume")
        self.pattern_fig = pattern_figure(width=pw, height=ph)
        heat = self.image_fig.data[0]
        heat.on_click(self._on_image_click)
        heat.on_hover(self._on_image_hover)
        heat.on_unhover(self._on_image_unhover)
        self._hovering = False           # a hover is being handled: the marker waits
        self._marker_stale = False       # the marker is not on self.pixel yet

        small = {"layout": w.Layout(width="auto"), "indent": False}
        self.w_window = w.IntRangeSlider(value=(0, 0), min=0, max=1, description="window",
                                         continuous_update=False, readout=False,
                                         layout=w.Layout(width=f"{iw + pw - 300}px"))
        self.w_window_label = w.HTML()
        self.w_cmap = w.Dropdown(options=list(_v.COLORMAPS), value=cmap, description="colormap",
                                 layout=w.Layout(width="190px"))
        self.w_log = w.Checkbox(value=bool(log_on), description="log image", **small)
        self.w_percentiles = w.FloatRangeSlider(value=tuple(percentiles), min=0, max=100, step=0.5,
                                                description="limits %", continuous_update=False,
                                                readout_format=".1f", layout=w.Layout(width="300px"))
        self.w_log_pattern = w.Checkbox(value=False, description="log pattern", **small)
        self.w_hover = w.Checkbox(value=True, description="hover → pattern", **small)
        self.w_hover_map = w.Checkbox(value=False, description="hover → image", **small)
        self.w_overlays = w.SelectMultiple(options=[], value=[], description="overlay", rows=3,
                                           layout=w.Layout(width="260px"))
        self.w_export_dir = w.Text(value=str(self.export_dir), description="folder",
                                   placeholder=f"{safety.RESULTS_FOLDER}/…" if self.exports.confined else "",
                                   layout=w.Layout(width="300px"))
        self.w_image_fmt = w.Dropdown(options=list(_v.IMAGE_FORMATS), value="png",
                                      layout=w.Layout(width="70px"))
        self.w_pattern_fmt = w.Dropdown(options=list(_v.PATTERN_FORMATS), value="xy",
                                        layout=w.Layout(width="70px"))
        self.w_overwrite = w.Checkbox(value=False, description="overwrite", **small)
        self.w_save_image = w.Button(description="save image", icon="save",
                                     layout=w.Layout(width="120px"))
        self.w_save_pattern = w.Button(description="save pattern", icon="save",
                                       layout=w.Layout(width="130px"))
        self.w_status = w.HTML(layout=w.Layout(width="auto"))
        self.w_dl_image = w.Button(description="image", icon="download", tooltip="download the image "
                                   "(PNG with axes and colour bar, or HDF5 values) to this browser",
                                   layout=w.Layout(width="90px"))
        self.w_dl_pattern = w.Button(description="pattern", icon="download", tooltip="download the "
                                     "pattern(s) at the pixel (.xy, HDF5 or PNG) to this browser",
                                     layout=w.Layout(width="100px"))
        self.w_dl_result = w.Button(description="result", icon="download", tooltip="download the "
                                    "whole volume shown as HDF5 (with coordinates and provenance)",
                                    layout=w.Layout(width="95px"))
        self.download = DownloadLink()
        for b, what in ((self.w_dl_image, "image"), (self.w_dl_pattern, "pattern"), (self.w_dl_result, "result")):
            b.add_class(f"xrdw-dl-{what}")
            b.on_click(lambda _, what=what: self._download_clicked(what))

        self.w_window.observe(self._on_window_slider, names="value")
        self.w_cmap.observe(self._on_cmap, names="value")
        self.w_log.observe(lambda _: self._render_image(), names="value")
        self.w_percentiles.observe(self._on_percentiles, names="value")
        self.w_log_pattern.observe(self._on_log_pattern, names="value")
        self.w_overlays.observe(lambda _: self._render_pattern(), names="value")
        self.w_export_dir.observe(self._on_export_dir, names="value")
        self.w_save_image.on_click(lambda _: self._export_clicked("image"))
        self.w_save_pattern.on_click(lambda _: self._export_clicked("pattern"))

        figures = w.HBox([fixed_box(self.image_fig, iw, ih), fixed_box(self.pattern_fig, pw, ph)],
                         layout=w.Layout(flex_flow="row nowrap", width="auto"))
        display_row = w.HBox([self.w_cmap, self.w_log, self.w_percentiles, self.w_log_pattern,
                              self.w_hover, self.w_hover_map],
                             layout=w.Layout(flex_flow="row wrap", align_items="center"))
        export_row = w.HBox([self.w_export_dir, self.w_save_image, self.w_image_fmt,
                             self.w_save_pattern, self.w_pattern_fmt, self.w_overwrite],
                            layout=w.Layout(flex_flow="row wrap", align_items="center"))
        download_row = w.HBox([w.HTML("<small>download:</small>"), self.w_dl_image, self.w_dl_pattern,
                               self.w_dl_result, self.download.widget],
                              layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.widget = w.VBox([
            figures,
            w.HBox([self.w_window, self.w_window_label], layout=w.Layout(align_items="center")),
            w.HBox([w.VBox([display_row, download_row, export_row]), self.w_overlays],
                   layout=w.Layout(flex_flow="row wrap")),
            self.w_status,
        ], layout=w.Layout(width=f"{iw + pw + 30}px", flex="0 0 auto"))
        self.widget.add_class("xrdwidgets-explorer")

    def _say(self, text: str):
        self.w_status.value = f"<span style='font-size:12px;color:#444'>{text}</span>"

    # ------------------------------------------------------------------ data
    @property
    def volume(self) -> xr.DataArray | None:
        """The main data, canonical ``(row, col, spectral)``."""
        return self._da

    @property
    def name(self) -> str:
        """Label of the main data."""
        return self._name

    @property
    def compare(self) -> dict:
        """``{name: DataArray}`` of the overlay candidates (canonical)."""
        return {k: da for k, (da, _) in self._compare.items()}

    @property
    def dims(self) -> tuple[str, str, str]:
        """``(row_dim, col_dim, spectral_dim)``."""
        self._require()
        return tuple(self._da.dims)  # type: ignore[return-value]

    @property
    def overlays(self) -> tuple:
        """Names of the visible overlays (set to choose)."""
        return tuple(self.w_overlays.value)

    @overlays.setter
    def overlays(self, names):
        unknown = [n for n in names if n not in self._compare]
        if unknown:
            raise DataError(f"overlays: unknown names {unknown}; available {list(self._compare)}")
        self.w_overlays.value = tuple(names)

    def _load(self, obj, what: str):
        """Canonical DataArray + C-contiguous numpy array of a volume / stack."""
        if isinstance(obj, xr.Dataset):
            try:
                obj = _data.as_dataarray(obj, self.KIND)
            except DataError as exc:
                raise DataError(f"{what}: {exc}") from None
        da = _v.canonical_3d(obj, what)
        if _data.kind_of(da) != self.KIND:
            raise DataError(f"{what}: expected a {self.KIND}, found dims {tuple(da.dims)}")
        arr = np.ascontiguousarray(da.values)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"{what}: expected a real numeric dtype, found {arr.dtype}")
        return da.copy(data=arr) if arr is not da.data else da, arr

    def _check_compare(self, compare, *, strict: bool) -> dict:
        out = {}
        for key, obj in (compare or {}).items():
            if obj is None:
                continue
            try:
                da, arr = self._load(obj, f"compare[{key!r}]")
                if da.shape[:2] != self._da.shape[:2]:
                    raise DataError(
                        f"compare[{key!r}]: image size {dict(zip(da.dims[:2], da.shape[:2]))} differs "
                        f"from the main data's {dict(zip(self._da.dims[:2], self._da.shape[:2]))}"
                    )
            except DataError:
                if strict:
                    raise
                log.info("overlay %r skipped (incompatible)", key, exc_info=True)
                continue
            out[str(key)] = (da, arr)
        return out

    def set_volume(self, volume, *, name: str | None = None, compare: dict | None = None):
        """Show new data; keeps the pixel and window where they still fit.

        Parameters
        ----------
        volume : xarray.DataArray or Dataset
            See the class parameters.
        name : str, optional
            Label (default: ``volume.name``).
        compare : dict, optional
            New overlays; ``None`` keeps the current ones when their image size still fits.
        """
        self._set(volume, name=name, compare=compare, strict=True)

    def _set(self, volume, *, name, compare, strict):
        da, arr = self._load(volume, "set_volume")
        if hasattr(self, "download"):
            self.download.clear()       # a link of the previous volume would be stale
        old_da, old_arr, old_compare = self._da, self._arr, self._compare
        self._da, self._arr = da, arr
        try:
            if compare is not None:
                self._compare = self._check_compare(compare, strict=strict)
            else:
                self._compare = {k: v for k, v in self._compare.items() if v[0].shape[:2] == da.shape[:2]}
        except DataError:
            self._da, self._arr, self._compare = old_da, old_arr, old_compare
            raise
        old = old_da
        self._start_window_index(arr)
        self._name = str(name or da.name or self.KIND)
        self._busy = True
        try:
            self._reset_selection(old)
            self._setup_figures()
        finally:
            self._busy = False
        self._render_image()
        self._render_pattern()
        self._say(f"{self._name}: " + ", ".join(f"{d}={n}" for d, n in da.sizes.items()))

    def set_compare(self, compare: dict | None):
        """Replace the overlay volumes (``{name: volume}``); all are shown."""
        self._require()
        self._compare = self._check_compare(compare, strict=True)
        self._busy = True
        try:
            self._setup_pattern_traces()
        finally:
            self._busy = False
        self._render_pattern()

    def _require(self):
        if self._da is None:
            raise RuntimeError(f"{type(self).__name__}: no data loaded yet (call set_volume)")

    def _reset_selection(self, old):
        rows, cols, n = self._arr.shape
        r, c = self.pixel
        if old is None or not (r < rows and c < cols):
            # start on the brightest pixel (channel sum; inside the sample), not on the middle,
            # which may be air or a hole
            flat = self._arr.reshape(-1, n)
            total = flat @ np.ones(n, dtype=flat.dtype if flat.dtype.kind == "f" else float)
            k = int(np.nanargmax(total)) if np.isfinite(total).any() else (rows // 2) * cols + cols // 2
            self.pixel = (k // cols, k % cols)
        spec = self._da[self._da.dims[2]]
        i0, i1 = self.window
        if old is not None and old.dims[2] == spec.name and i1 <= old.shape[2]:
            oc = old[old.dims[2]].values
            try:
                self.window = _v.window_indices(spec, oc[i0], oc[i1 - 1], by="value")
                return
            except DataError:
                pass
        # default: the brightest channel of the mean pattern
        flat = self._arr.reshape(-1, n)
        mean = np.ones(flat.shape[0], dtype=flat.dtype if flat.dtype.kind == "f" else float) @ flat
        k = int(np.nanargmax(mean)) if np.isfinite(mean).any() else 0
        self.window = (k, k + 1)

    # ------------------------------------------------------------------ figures
    def _setup_figures(self):
        row, col, _spec = self._da.dims
        n = self._arr.shape[2]
        with updating(self.image_fig):
            self.image_fig.layout.xaxis.title.text = _v.axis_label(self._da[col])
            self.image_fig.layout.yaxis.title.text = _v.axis_label(self._da[row])
        self._busy_slider = True
        try:
            self.w_window.value = (0, 0)
            self.w_window.max = max(n - 1, 1)
            self.w_window.value = (self.window[0], self.window[1] - 1)
            self.w_window.disabled = n < 2
        finally:
            self._busy_slider = False
        self._setup_pattern_traces()
        # hover on the pattern re-sends the image: on by default only for small images
        fr, fc = _v.decimation_factors(self._arr.shape, self.max_image_size)
        self.w_hover_map.value = -(-self._arr.shape[0] // fr) * -(-self._arr.shape[1] // fc) <= 256 * 256

    def _setup_pattern_traces(self):
        """(Re)build the pattern traces: main first, then one per overlay candidate."""
        fig = self.pattern_fig
        spec = self._da.dims[2]
        names = [self._name] + list(self._compare)
        arrays = [self._da] + [da for da, _ in self._compare.values()]
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
        prev = set(self.w_overlays.options)
        keep = [n for n in self.w_overlays.value if n in self._compare]
        new = [n for n in self._compare if n not in prev]
        with updating(fig):
            fig.data = ()
            fig.add_traces(traces)
            fig.layout.xaxis.title.text = _v.axis_label(self._da[spec])
            fig.layout.yaxis.title.text = _v.axis_label(self._da)
            fig.layout.showlegend = len(traces) > 1
        for tr in fig.data:
            tr.on_click(self._on_pattern_click)
            tr.on_hover(self._on_pattern_hover)
            tr.on_selection(self._on_pattern_select)
        # empty selection first: a message carrying new options *and* an index into them may reach
        # the browser's SelectMultiple view index-first ("Cannot set properties of undefined
        # (setting 'selected')" in the console, the selection not shown)
        self.w_overlays.value = ()
        self.w_overlays.options = list(self._compare)
        self.w_overlays.value = tuple(keep + new)
        self.w_overlays.disabled = not self._compare

    # ------------------------------------------------------------------ selection API
    @property
    def channel(self) -> int | None:
        """Selected channel index when the window is one channel wide, else ``None``."""
        i0, i1 = self.window
        return i0 if i1 - i0 == 1 else None

    @property
    def pattern(self) -> xr.DataArray:
        """Pattern of the main data at :attr:`pixel`."""
        self._require()
        return _v.pattern_at(self._da, *self.pixel)

    @property
    def patterns(self) -> dict:
        """``{name: pattern}``: main data and visible overlays at :attr:`pixel`."""
        out = {self._name: self.pattern}
        for nm in self.overlays:
            out[nm] = _v.pattern_at(self._compare[nm][0], *self.pixel)
        return out

    def select_pixel(self, row: int, col: int):
        """Select a pixel by indices: ``(y, x)`` of a volume (``(translation, angle)`` of a
        sinogram); shows its pattern."""
        self._require()
        rd, cd = self._da.dims[:2]
        r = _v.check_index(row, self._arr.shape[0], "row", rd, "select_pixel")
        c = _v.check_index(col, self._arr.shape[1], "col", cd, "select_pixel")
        self.pixel = (r, c)

    def select_channel(self, channel: int):
        """Select one spectral channel by index; shows its image."""
        self._require()
        k = _v.check_index(channel, self._arr.shape[2], "channel", self._da.dims[2], "select_channel")
        self.window = (k, k + 1)

    def select_window(self, lo, hi, *, by: str = "value"):
        """Select a channel window; shows the summed (ROI) image.

        Parameters
        ----------
        lo, hi : float or int
            ``by="value"`` (default): coordinate values in the spectral units (e.g. 2θ in
            deg), closed interval, any order. ``by="index"``: half-open index range
            ``lo <= k < hi``.
        by : {"value", "index"}
        """
        self._require()
        spec = self._da[self._da.dims[2]]
        self.window = _v.window_indices(spec, lo, hi, by=by, name="select_window")

    @tl.validate("pixel", "window")
    def _validate_pair(self, proposal):
        return tuple(int(v) for v in proposal["value"])

    @tl.observe("pixel")
    def _pixel_changed(self, change):
        if not self._busy and self._da is not None:
            self._render_pattern()

    @tl.observe("window")
    def _window_changed(self, change):
        if not self._busy and self._da is not None:
            self._render_image()

    # ------------------------------------------------------------------ rendering
    def _render_pattern(self):
        """Send the patterns at the pixel (one batch per figure) and move the marker."""
        if self._da is None or self._busy:
            return
        t0 = time.perf_counter()
        r, c = self.pixel
        row, col, _spec = self._da.dims
        visible = set(self.overlays)
        yr = float(self._da[row].values[r])
        xc = float(self._da[col].values[c])
        ur = self._da[row].attrs.get("units", "")
        uc = self._da[col].attrs.get("units", "")
        title = f"{row} = {yr:.4g} {ur}, {col} = {xc:.4g} {uc} · pixel ({r}, {c})"
        fig = self.pattern_fig
        with updating(fig):
            fig.data[0].y = np.asarray(self._arr[r, c], dtype=np.float32)
            for i, (nm, (_, arr)) in enumerate(self._compare.items(), start=1):
                on = nm in visible
                if on:
                    fig.data[i].y = np.asarray(arr[r, c], dtype=np.float32)
                if fig.data[i].visible != on:
                    fig.data[i].visible = on
            fig.layout.title.text = title
        if self._hovering:               # the cursor marks the pixel; the marker follows on leave
            self._marker_stale = True
        else:
            self._move_marker()
        self.timings["pattern"] = time.perf_counter() - t0

    def _move_marker(self):
        """Put the image's pixel marker on :attr:`pixel`.

        Any layout change plotly's widget sends (even of one shape) makes plotly.js recompute and
        redraw the heatmap: 70–80 ms of the browser's main thread for 512×512 in headless Chromium,
        during which the next hover waits. So hovers leave the marker alone (the cursor shows the
        pixel) and it moves when the cursor leaves the image, on click and on ``select_pixel``.
        """
        self._marker_stale = False
        r, c = self.pixel
        row, col, _spec = self._da.dims
        with updating(self.image_fig):
            replace_shape(self.image_fig, 0, xanchor=float(self._da[col].values[c]),
                          yanchor=float(self._da[row].values[r]), visible=True)

    def _window_text(self) -> str:
        spec = self._da[self._da.dims[2]]
        i0, i1 = self.window
        a, b = float(spec.values[i0]), float(spec.values[i1 - 1])
        units = spec.attrs.get("units", "")
        units = "" if units in ("1", "") else units      # dimensionless (a channel index): no unit
        label = _v.axis_name(spec)
        if label == spec.name == "channel" and i1 - i0 == 1:
            return f"channel {i0}" + (f" (= {f'{a:.5g} {units}'.strip()})" if a != i0 else "")
        if i1 - i0 == 1:
            return f"{label} = {a:.5g} {units} (channel {i0})"
        return f"{label} {min(a, b):.5g}–{max(a, b):.5g} {units} (channels {i0}–{i1 - 1}, Σ {i1 - i0})"

    #: Volumes with at least this many channels × pixels get a window index (built in the background).
    WINDOW_INDEX_MIN = 64 * 2**20

    def _start_window_index(self, arr):
        """Build a :class:`~xrdwidgets.views.WindowIndex` of ``arr`` in a background thread (large
        volumes only); until it is ready, windows are summed directly. The thread only computes
        numpy arrays and sets one attribute: it touches no widget."""
        self._window_index = None
        if arr is None or arr.size < self.WINDOW_INDEX_MIN or arr.shape[2] < 4 * 64:
            return

        def build():
            try:
                index = _v.WindowIndex(arr)
            except Exception:  # pragma: no cover - the direct sum keeps working
                log.exception("explorer: window index not built")
                return
            if self._arr is arr:
                self._window_index = index

        threading.Thread(target=build, name="xrdwidgets-window-index", daemon=True).start()

    def _render_image(self):
        """Compute the window image, decimate, and send it with its colour limits."""
        if self._da is None or self._busy:
            return
        t0 = time.perf_counter()
        i0, i1 = self.window
        index = self._window_index
        summed = index.window(i0, i1) if index is not None and index.array is self._arr \
            else _v.sum_channels(self._arr, i0, i1)
        image = _v.image_from_values(self._da, summed, i0, i1, summed=i1 - i0 > 1)
        self.image = image
        shown = _v.decimate(image, self.max_image_size)
        if self.w_log.value:
            shown = _v.log_image(shown)
        self.shown_image = shown
        self._limits = _v.percentile_limits(shown, self.w_percentiles.value)
        row, col = shown.dims
        fr, fc = shown.attrs.get("decimation", (1, 1))
        text = self._window_text()
        title = f"{self._name}: {text}" + (f" · binned {fr}×{fc}" if (fr, fc) != (1, 1) else "")
        rl, cl = _v.axis_label(self._da[row]), _v.axis_label(self._da[col])
        # one Plotly.update message; z as binary float32 rows (see _views: "Heatmap payload")
        restyle = {"z": [z_rows(shown.values)], "zmin": self._limits[0], "zmax": self._limits[1],
                   "colorbar.title.text": _v.axis_label(shown)}
        if self._coords_changed(shown):
            restyle.update({
                "x": [np.asarray(shown[col].values, dtype=float)],
                "y": [np.asarray(shown[row].values, dtype=float)],
                "hovertemplate": f"{cl}: %{{x:.4g}}<br>{rl}: %{{y:.4g}}<br>value: %{{z:.4g}}<extra></extra>",
            })
        self.image_fig.plotly_update(restyle_data=restyle, relayout_data={"title.text": title},
                                     trace_indexes=[0])
        mirror_state(self.image_fig)
        self._show_window_on_pattern()
        self.timings["image"] = time.perf_counter() - t0

    def _coords_changed(self, shown) -> bool:
        key = (self._name, shown.shape, shown.dims,
               float(shown[shown.dims[0]].values[0]), float(shown[shown.dims[1]].values[0]),
               float(shown[shown.dims[0]].values[-1]), float(shown[shown.dims[1]].values[-1]))
        changed = key != getattr(self, "_coords_key", None)
        self._coords_key = key
        return changed

    def _show_window_on_pattern(self):
        """Shade the window on the pattern plot and sync the range slider."""
        spec = self._da[self._da.dims[2]].values
        i0, i1 = self.window
        step = abs(float(spec[1] - spec[0])) if spec.size > 1 else 1.0
        a, b = sorted((float(spec[i0]), float(spec[i1 - 1])))
        with updating(self.pattern_fig):
            # one channel: the whole axis is the window, no shading (it would fill the plot)
            replace_shape(self.pattern_fig, 0, x0=a - step / 2, x1=b + step / 2, visible=spec.size > 1)
        self._busy_slider = True
        try:
            self.w_window.value = (i0, i1 - 1)
        finally:
            self._busy_slider = False
        self.w_window_label.value = f"<span style='font-size:12px;white-space:nowrap'>{self._window_text()}</span>"

    # ------------------------------------------------------------------ callbacks
    def _point_to_pixel(self, points):
        if not points.xs:
            return None
        row, col = self._da.dims[:2]
        return (_v.nearest_index(self._da[row].values, points.ys[0]),
                _v.nearest_index(self._da[col].values, points.xs[0]))

    @_guarded
    def _on_image_click(self, trace, points, state=None):
        rc = self._point_to_pixel(points)
        if rc is not None:
            self.select_pixel(*rc)

    @_guarded
    def _on_image_hover(self, trace, points, state=None):
        if self.w_hover.value:
            self._hovering = True
            try:
                self._on_image_click(trace, points, state)
            finally:
                self._hovering = False

    @_guarded
    def _on_image_unhover(self, trace, points, state=None):
        if self._marker_stale and self._da is not None:
            self._move_marker()

    def _point_to_channel(self, points):
        if not points.xs or points.xs[0] is None:
            return None
        return _v.nearest_index(self._da[self._da.dims[2]].values, points.xs[0])

    @_guarded
    def _on_pattern_click(self, trace, points, state=None):
        k = self._point_to_channel(points)
        if k is not None:
            self.select_channel(k)

    @_guarded
    def _on_pattern_hover(self, trace, points, state=None):
        # hover browses single channels; it never replaces a selected multi-channel window
        if self.w_hover_map.value and self.channel is not None:
            self._on_pattern_click(trace, points, state)

    @_guarded
    def _on_pattern_select(self, trace, points, selector=None):
        if self.pattern_fig.data and trace is not self.pattern_fig.data[0] and selector is not None:
            return                      # plotly calls every trace with the same box: act once
        xr_ = getattr(selector, "xrange", None)
        if xr_ is not None and len(xr_) == 2 and None not in xr_:
            lo, hi = xr_
        elif points.xs:
            lo, hi = min(points.xs), max(points.xs)
        else:
            return
        # The shaded rectangle shows the window; remove plotly's selection box in the browser
        # so that the next drag draws a new window instead of moving the old box. The box
        # lives only in the browser (plotly.py does not know it), hence the direct message,
        # sent before the (larger) image so that it arrives before the user's next drag.
        send = getattr(self.pattern_fig, "_send_relayout_msg", None)
        if send is not None:
            send({"selections": []})
        self.select_window(lo, hi, by="value")

    @_guarded
    def _on_window_slider(self, change):
        if getattr(self, "_busy_slider", False) or self._da is None:
            return
        a, b = change["new"]
        self.window = (int(a), int(b) + 1)

    @_guarded
    def _on_cmap(self, change):
        with updating(self.image_fig):
            self.image_fig.data[0].colorscale = change["new"]

    @_guarded
    def _on_percentiles(self, change):
        if self.shown_image is None:
            return
        self._limits = _v.percentile_limits(self.shown_image, change["new"])
        with updating(self.image_fig):
            self.image_fig.data[0].zmin, self.image_fig.data[0].zmax = self._limits

    @_guarded
    def _on_log_pattern(self, change):
        with updating(self.pattern_fig):
            self.pattern_fig.layout.yaxis.type = "log" if change["new"] else "linear"

    def _on_export_dir(self, change):
        self.export_dir = str(change["new"])

    @_guarded
    def _on_state(self, change=None):
        name, main, compare = self._state_sources(self.state)
        if main is None:
            what = ("no data to explore yet: run a reconstruction in the Reconstruct tab" if self.state.stack is not None
                    else "no data yet: open, upload or simulate a scan in the Data tab")
            self._say(what)
            if self._da is None:
                with updating(self.image_fig):
                    self.image_fig.layout.title.text = what
                    self.image_fig.data[0].z = [[None]]
                with updating(self.pattern_fig):
                    self.pattern_fig.layout.title.text = "the pattern of the pixel under the cursor appears here"
            return
        self._set(main, name=name, compare=compare, strict=False)

    def _state_sources(self, state: AppState):
        """``(name, main, compare)`` from the state: current result + the others (+ truth)."""
        results = dict(state.results or {})
        if not results:
            return "", None, {}
        name = state.current if state.current in results else list(results)[-1]
        compare = {k: v for k, v in results.items() if k != name}
        truth = state.truth
        if isinstance(truth, xr.Dataset) and "volume" in truth.data_vars:
            scale = float(truth.attrs.get("scale", 1.0) or 1.0)  # simulator: counts per volume unit
            if scale != 1.0:   # in the units of the reconstruction (counts), as plotted
                tv = truth["volume"] * scale
                units = getattr(results[name], "attrs", {}).get("units", "")
                tv.attrs = {**truth["volume"].attrs, "units": units,
                            "long_name": f"true intensity × dose scale {scale:.4g}"}
            else:
                tv = truth["volume"]
            compare.setdefault("truth", tv)
        return name, results[name], compare

    # ------------------------------------------------------------------ export
    def _stem(self, what: str) -> str:
        row, col, spec = self._da.dims
        if what == "image":
            s = self._da[spec]
            i0, i1 = self.window
            a, b = sorted((float(s.values[i0]), float(s.values[i1 - 1])))
            rng = f"{a:.5g}" if i1 - i0 == 1 else f"{a:.5g}-{b:.5g}"
            return _v.export_name(self._name, spec, rng + str(s.attrs.get("units", "")))
        r, c = self.pixel
        return _v.export_name(self._name, f"{row}{r}", f"{col}{c}")

    def _target(self, what, fmt, folder, overwrite):
        folder = self.exports.folder(folder if folder is not None else self.export_dir)
        return self.exports.target(folder, f"{self._stem(what)}.{fmt}", overwrite)

    def export_image(self, fmt: str = "png", *, folder=None, overwrite: bool = False) -> Path:
        """Write the current full-resolution image (PNG as shown: colormap, log, limits; or
        HDF5 with coords and units) into ``folder`` (default :attr:`export_dir`).

        The file name says what it holds, e.g. ``fbp_tth_5.1-5.3deg.png``. An existing file
        is never replaced unless ``overwrite`` (``FileExistsError``).
        """
        self._require()
        if fmt not in _v.IMAGE_FORMATS:
            raise DataError(f"export_image: fmt must be one of {_v.IMAGE_FORMATS}, found {fmt!r}")
        path, overwrite = self._target("image", fmt, folder, overwrite)
        limits = self._limits if self.shown_image is not None else None
        out = _v.save_image(self.image, path, cmap=self.w_cmap.value, limits=limits,
                            log=self.w_log.value, overwrite=overwrite)
        self.exports.wrote(out)
        return out

    def export_pattern(self, fmt: str = "xy", *, folder=None, overwrite: bool = False) -> Path:
        """Write the patterns at the current pixel (main + visible overlays) as ``.xy``,
        HDF5 or PNG into ``folder`` (default :attr:`export_dir`), e.g. ``fbp_y12_x7.xy``.
        Never replaces a file unless ``overwrite``."""
        self._require()
        if fmt not in _v.PATTERN_FORMATS:
            raise DataError(f"export_pattern: fmt must be one of {_v.PATTERN_FORMATS}, found {fmt!r}")
        path, overwrite = self._target("pattern", fmt, folder, overwrite)
        out = _v.save_patterns(self.patterns, path, overwrite=overwrite)
        self.exports.wrote(out)
        return out

    def download_bytes(self, what: str) -> tuple[str, bytes]:
        """``(file name, bytes)`` of a download: ``"image"`` (format of the image dropdown: PNG
        figure with axes, colour bar and title, or HDF5), ``"pattern"`` (format of the pattern
        dropdown) or ``"result"`` (the whole volume shown, HDF5)."""
        self._require()
        if what == "image":
            fmt = self.w_image_fmt.value
            limits = self._limits if self.shown_image is not None else None
            data = _v.image_bytes(self.image, fmt, cmap=self.w_cmap.value, limits=limits,
                                  log=self.w_log.value, title=f"{self._name}: {self._window_text()}")
        elif what == "pattern":
            fmt = self.w_pattern_fmt.value
            data = _v.patterns_bytes(self.patterns, fmt, title=self.pattern_fig.layout.title.text)
        elif what == "result":
            fmt = "h5"
            data = _v.result_bytes(self._da.rename(self._da.name or _v.export_name(self._name)),
                                   producer="xrdwidgets Explorer download")
            return f"{_v.export_name(self._name)}.h5", data
        else:
            raise DataError(f"download_bytes: what must be image, pattern or result, found {what!r}")
        return f"{self._stem(what)}.{fmt}", data

    @_guarded
    def _download_clicked(self, what: str):
        self.download.clear()
        name, data = self.download_bytes(what)
        self.download.offer(name, data, MIME.get(name.rsplit(".", 1)[-1], "application/octet-stream"))
        self._say(f"ready: {name} — click the link to save it")

    @_guarded
    def _export_clicked(self, what: str):
        self._require()
        try:
            if what == "image":
                path = self.export_image(self.w_image_fmt.value, overwrite=self.w_overwrite.value)
            else:
                path = self.export_pattern(self.w_pattern_fmt.value, overwrite=self.w_overwrite.value)
        except FileExistsError as exc:
            if self.w_overwrite.value:     # refused although asked: the message says why
                self._say(f"⚠ {exc}")
            else:
                shown = self.exports.shown(Path(exc.args[0].split(" exists")[0]))
                self._say(f"⚠ {shown} exists: not replaced (tick “overwrite” to replace)")
            return
        self._say(f"saved {self.exports.shown(path)}")
