"""Linked image–spectrum explorer of a volume ``(y, x, spectral)``: the widget.

Left: the image at the selected channel or the summed channel window (ROI image). Right: the
diffraction pattern of the selected pixel, with overlays of other volumes at the same pixel.

The state (data, pixel, window, overlays) and every computation live in the widget-free
:class:`xrdwidgets.explore.model.ExplorerModel`; :mod:`xrdwidgets.widgets.explorer_figures`
draws it into the plotly figures. This class builds the controls, forwards clicks, hovers and
slider changes to the model and redraws what changed: per pixel one float32 pattern per visible
trace, per window one decimated image (the pixel marker on the image follows on click, or when a
hovering cursor leaves the image).

Interaction: hover (or click) on the image picks the pixel; click on the pattern picks a
channel, hover on it browses channels while a single channel is shown (never replacing a
multi-channel window; on by default only for images ≤ 256×256 after decimation, since each
hover then re-sends the image); box-select on the pattern (drag) or the range slider picks a
window. The figures have fixed pixel sizes, so they render inside ``Tab``, ``Accordion`` and
``HBox`` (see :mod:`xrdwidgets.widgets.plotting`).

The same class serves sinogram stacks (:class:`~xrdwidgets.widgets.sinogram_view.SinogramView`):
everything is written in terms of the two image dims ``row``/``col`` of the canonical order.
"""
from __future__ import annotations

import logging
import time

import traitlets as tl
import xarray as xr

from .. import explore
from ..base.errors import InputTypeError
from ..data import DataError
from ..explore.model import WINDOW_INDEX_MIN, ExplorerModel, results_sources
from . import explorer_figures as figs
from .explorer_controls import ExplorerControls, guarded
from .plotting import IMAGE_SIZE, PATTERN_SIZE, updating
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["Explorer"]


class Explorer(ExplorerControls, tl.HasTraits):
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
        this Explorer wrote it (see :class:`xrdwidgets.base.safety.ExportPlace`). Without one: any
        folder (default: the working directory).
    data_dir : path-like, optional
        The data folder (default: ``$XRDWIDGETS_DATA_DIR``, else none).
    name : str, optional
        Label of the main volume (default: its ``name`` or the state's current key).
    max_image_size : int
        The image sent to the browser is block-averaged to at most this many pixels per axis.
    cmap : str
        One of :data:`xrdwidgets.explore.COLORMAPS`.
    percentiles : (float, float)
        Colour limits at these percentiles of the shown image.
    log : bool
        Show ``log10`` of the image.
    image_size, pattern_size : (int, int)
        Figure sizes in pixels (fixed; see :mod:`xrdwidgets.widgets.plotting`).

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
    model : xrdwidgets.explore.model.ExplorerModel
        The state and computations behind the view.

    Notes
    -----
    Selection methods: :meth:`select_pixel` (indices), :meth:`select_channel` (index),
    :meth:`select_window` (coordinate values by default, ``by="index"`` for indices).
    """

    KIND = "volume"
    #: AppState traits followed when a state is given.
    STATE_TRAITS = ("results", "current", "truth")
    #: Data with at least this many channels × pixels get a window index (built in the background).
    WINDOW_INDEX_MIN = WINDOW_INDEX_MIN

    pixel = tl.Tuple(tl.Int(), tl.Int(), default_value=(0, 0))
    window = tl.Tuple(tl.Int(), tl.Int(), default_value=(0, 1))

    def __init__(self, volume=None, *, compare: dict | None = None, state: AppState | None = None,
                 export_dir=None, data_dir=None, name: str | None = None, max_image_size: int = 512,
                 cmap: str = "viridis", percentiles=(1.0, 99.0), log: bool = False,
                 image_size=IMAGE_SIZE, pattern_size=PATTERN_SIZE):
        super().__init__()
        if state is not None and not isinstance(state, AppState):
            raise InputTypeError(f"{type(self).__name__}: state must be an AppState, found {type(state).__name__}")
        explore.check_cmap(cmap, type(self).__name__)
        self.model = ExplorerModel(self.KIND, max_image_size=max_image_size, data_dir=data_dir,
                                   index_min=self.WINDOW_INDEX_MIN)
        self.max_image_size = self.model.max_image_size
        self.exports = self.model.exports
        default = "" if self.exports.confined else "."
        self.export_dir = str(export_dir) if export_dir is not None else default
        self.state = state
        self.timings = {"pattern": float("nan"), "image": float("nan")}
        self._image_size = tuple(image_size)
        self._pattern_size = tuple(pattern_size)
        self._busy = False            # suppresses trait observers while the data change
        self._busy_slider = False     # suppresses the slider observer while we move it
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

    # ------------------------------------------------------------------ data
    @property
    def volume(self) -> xr.DataArray | None:
        """The main data, canonical ``(row, col, spectral)``."""
        return self.model.da

    @property
    def name(self) -> str:
        """Label of the main data."""
        return self.model.name

    @property
    def compare(self) -> dict:
        """``{name: DataArray}`` of the overlay candidates (canonical)."""
        return {k: da for k, (da, _) in self.model.compare.items()}

    @property
    def dims(self) -> tuple[str, str, str]:
        """``(row_dim, col_dim, spectral_dim)``."""
        self.model.require()
        return tuple(self.model.da.dims)  # type: ignore[return-value]

    @property
    def overlays(self) -> tuple:
        """Names of the visible overlays (set to choose)."""
        return tuple(self.w_overlays.value)

    @overlays.setter
    def overlays(self, names):
        unknown = [n for n in names if n not in self.model.compare]
        if unknown:
            raise DataError(f"overlays: unknown names {unknown}; available {list(self.model.compare)}")
        self.w_overlays.value = tuple(names)

    @property
    def image(self) -> xr.DataArray | None:
        """The full-resolution image of the window (sum over its channels)."""
        return self.model.image

    @property
    def _window_index(self):
        return self.model.window_index

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
        m = self.model
        old = m.set_data(volume, name=name, compare=compare, strict=strict)
        self.download.clear()       # a link of the previous volume would be stale
        self._busy = True
        try:
            self.pixel, self.window = m.default_selection(old)
            self._setup_figures()
        finally:
            self._busy = False
        self._render_image()
        self._render_pattern()
        self._say(f"{m.name}: " + ", ".join(f"{d}={n}" for d, n in m.da.sizes.items()))

    def set_compare(self, compare: dict | None):
        """Replace the overlay volumes (``{name: volume}``); all are shown."""
        self.model.set_compare(compare)
        self._busy = True
        try:
            self._setup_pattern_traces()
        finally:
            self._busy = False
        self._render_pattern()

    # ------------------------------------------------------------------ figures
    def _setup_figures(self):
        n = self.model.arr.shape[2]
        figs.set_image_axes(self.image_fig, self.model)
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
        self.w_hover_map.value = self.model.hover_browses_channels()

    def _setup_pattern_traces(self):
        """(Re)build the pattern traces and the overlay chooser."""
        compare = self.model.compare
        figs.pattern_traces(self.pattern_fig, self.model)
        for tr in self.pattern_fig.data:
            tr.on_click(self._on_pattern_click)
            tr.on_hover(self._on_pattern_hover)
            tr.on_selection(self._on_pattern_select)
        prev = set(self.w_overlays.options)
        keep = [n for n in self.w_overlays.value if n in compare]
        new = [n for n in compare if n not in prev]
        # empty selection first: a message carrying new options *and* an index into them may reach
        # the browser's SelectMultiple view index-first ("Cannot set properties of undefined
        # (setting 'selected')" in the console, the selection not shown)
        self.w_overlays.value = ()
        self.w_overlays.options = list(compare)
        self.w_overlays.value = tuple(keep + new)
        self.w_overlays.disabled = not compare

    # ------------------------------------------------------------------ selection API
    @property
    def channel(self) -> int | None:
        """Selected channel index when the window is one channel wide, else ``None``."""
        return self.model.channel

    @property
    def pattern(self) -> xr.DataArray:
        """Pattern of the main data at :attr:`pixel`."""
        return self.model.pattern()

    @property
    def patterns(self) -> dict:
        """``{name: pattern}``: main data and visible overlays at :attr:`pixel`."""
        return self.model.patterns()

    def select_pixel(self, row: int, col: int):
        """Select a pixel by indices: ``(y, x)`` of a volume (``(translation, angle)`` of a
        sinogram); shows its pattern."""
        self.pixel = self.model.pixel_of(row, col)

    def select_channel(self, channel: int):
        """Select one spectral channel by index; shows its image."""
        self.window = self.model.channel_window(channel)

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
        self.window = self.model.window_of(lo, hi, by=by)

    @tl.validate("pixel", "window")
    def _validate_pair(self, proposal):
        return tuple(int(v) for v in proposal["value"])

    @tl.observe("pixel")
    def _pixel_changed(self, change):
        self.model.pixel = change["new"]
        if not self._busy and self.model.da is not None:
            self._render_pattern()

    @tl.observe("window")
    def _window_changed(self, change):
        self.model.window = change["new"]
        if not self._busy and self.model.da is not None:
            self._render_image()

    # ------------------------------------------------------------------ rendering
    def _render_pattern(self):
        """Send the patterns at the pixel (one batch per figure) and move the marker."""
        if self.model.da is None or self._busy:
            return
        t0 = time.perf_counter()
        figs.draw_patterns(self.pattern_fig, self.model)
        if self._hovering:               # the cursor marks the pixel; the marker follows on leave
            self._marker_stale = True
        else:
            self._move_marker()
        self.timings["pattern"] = time.perf_counter() - t0

    def _move_marker(self):
        self._marker_stale = False
        figs.draw_marker(self.image_fig, self.model)

    def _render_image(self):
        """Compute the window image, decimate, and send it with its colour limits."""
        m = self.model
        if m.da is None or self._busy:
            return
        t0 = time.perf_counter()
        image = m.compute_image()
        shown, self._limits = m.display_image(image, log=self.w_log.value,
                                              percentiles=self.w_percentiles.value)
        self.shown_image = shown
        fr, fc = shown.attrs.get("decimation", (1, 1))
        title = f"{m.name}: {m.window_text()}" + (f" · binned {fr}×{fc}" if (fr, fc) != (1, 1) else "")
        figs.draw_image(self.image_fig, m, shown, self._limits, title,
                        new_coords=self._coords_changed(shown))
        self._show_window_on_pattern()
        self.timings["image"] = time.perf_counter() - t0

    def _coords_changed(self, shown) -> bool:
        key = (self.model.name, shown.shape, shown.dims,
               float(shown[shown.dims[0]].values[0]), float(shown[shown.dims[1]].values[0]),
               float(shown[shown.dims[0]].values[-1]), float(shown[shown.dims[1]].values[-1]))
        changed = key != getattr(self, "_coords_key", None)
        self._coords_key = key
        return changed

    def _show_window_on_pattern(self):
        """Shade the window on the pattern plot and sync the range slider."""
        figs.draw_window(self.pattern_fig, self.model)
        i0, i1 = self.window
        self._busy_slider = True
        try:
            self.w_window.value = (i0, i1 - 1)
        finally:
            self._busy_slider = False
        self.w_window_label.value = (f"<span style='font-size:12px;white-space:nowrap'>"
                                     f"{self.model.window_text()}</span>")

    # ------------------------------------------------------------------ callbacks
    def _point_to_pixel(self, points):
        if not points.xs:
            return None
        return self.model.pixel_at(points.xs[0], points.ys[0])

    @guarded
    def _on_image_click(self, trace, points, state=None):
        rc = self._point_to_pixel(points)
        if rc is not None:
            self.select_pixel(*rc)

    @guarded
    def _on_image_hover(self, trace, points, state=None):
        if self.w_hover.value:
            self._hovering = True
            try:
                self._on_image_click(trace, points, state)
            finally:
                self._hovering = False

    @guarded
    def _on_image_unhover(self, trace, points, state=None):
        if self._marker_stale and self.model.da is not None:
            self._move_marker()

    def _point_to_channel(self, points):
        if not points.xs or points.xs[0] is None:
            return None
        return self.model.channel_at(points.xs[0])

    @guarded
    def _on_pattern_click(self, trace, points, state=None):
        k = self._point_to_channel(points)
        if k is not None:
            self.select_channel(k)

    @guarded
    def _on_pattern_hover(self, trace, points, state=None):
        # hover browses single channels; it never replaces a selected multi-channel window
        if self.w_hover_map.value and self.channel is not None:
            self._on_pattern_click(trace, points, state)

    @guarded
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

    @guarded
    def _on_state(self, change=None):
        name, main, compare = self._state_sources(self.state)
        if main is None:
            what = ("no data to explore yet: run a reconstruction in the Reconstruct tab" if self.state.stack is not None
                    else "no data yet: open, upload or simulate a scan in the Data tab")
            self._say(what)
            if self.model.da is None:
                with updating(self.image_fig):
                    self.image_fig.layout.title.text = what
                    self.image_fig.data[0].z = [[None]]
                with updating(self.pattern_fig):
                    self.pattern_fig.layout.title.text = "the pattern of the pixel under the cursor appears here"
            return
        self._set(main, name=name, compare=compare, strict=False)

    def _state_sources(self, state: AppState):
        """``(name, main, compare)`` from the state: current result + the others (+ truth)."""
        return results_sources(state.results, state.current, state.truth)
