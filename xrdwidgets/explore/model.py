"""The state and the computations of the linked image–spectrum explorer, without widgets.

:class:`ExplorerModel` holds what the explorer shows — the data, the overlay volumes, the
selected pixel and channel window — and computes from it, with the public functions of
:mod:`xrdwidgets.explore`, what a view draws: the window image, its display version (decimated,
``log10``, colour limits), the patterns at the pixel, titles, file names, exports and download
bytes. :class:`xrdwidgets.widgets.Explorer` draws this state into plotly figures and forwards
clicks and slider changes to it; a notebook or a test can drive the model alone.

Everything is written in terms of the canonical order ``(row, col, spectral)``: ``(y, x,
spectral)`` for a volume, ``(translation, angle, spectral)`` for a sinogram stack.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr

from .. import data as _data
from ..base import safety
from ..base.errors import InputError
from ..data import DataError
from .export import (
    IMAGE_FORMATS,
    PATTERN_FORMATS,
    export_name,
    image_bytes,
    patterns_bytes,
    result_bytes,
    save_image,
    save_patterns,
)
from .labels import axis_name
from .slicing import (
    canonical_3d,
    check_index,
    decimate,
    decimation_factors,
    image_from_values,
    log_image,
    nearest_index,
    pattern_at,
    percentile_limits,
)
from .windows import WindowIndex, sum_channels, window_indices

log = logging.getLogger(__name__)

__all__ = ["ExplorerModel", "results_sources"]

#: Data with at least this many channels × pixels get a :class:`WindowIndex`, built in the background.
WINDOW_INDEX_MIN = 64 * 2**20

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    """One worker thread shared by all models for background indexing (created on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xrdwidgets-window-index")
        return _executor


def results_sources(results: dict, current: str | None, truth=None) -> tuple[str, object, dict]:
    """``(name, main, compare)`` for exploring reconstruction results.

    Parameters
    ----------
    results : dict
        ``{name: volume}`` of results ``(y, x, spectral)``.
    current : str or None
        The result to show; the last one when it is not a key of ``results``.
    truth : xarray.Dataset, optional
        Ground truth of simulated data; its ``volume`` becomes the overlay ``"truth"``, scaled by
        its ``scale`` attr (counts per unit of the true volume) into the units of the results.

    Returns
    -------
    (str, xarray.DataArray or None, dict)
        Name and data of the main volume (``("", None, {})`` without results), and the other
        results (+ ``"truth"``) as overlays.
    """
    results = dict(results or {})
    if not results:
        return "", None, {}
    name = current if current in results else list(results)[-1]
    compare = {k: v for k, v in results.items() if k != name}
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


class ExplorerModel:
    """Selection state and computations of the linked image–spectrum explorer.

    Parameters
    ----------
    kind : {"volume", "sinogram"}
        What the main data must be: a volume ``(y, x, spectral)`` or a sinogram stack
        ``(translation, angle, spectral)``.
    max_image_size : int
        Display images are block-averaged to at most this many pixels per axis.
    data_dir : path-like, optional
        The data folder confining exports (see :class:`xrdwidgets.base.safety.ExportPlace`;
        default ``$XRDWIDGETS_DATA_DIR``, else none).
    index_min : int
        Data with at least this many elements get a :class:`~xrdwidgets.explore.windows.WindowIndex`
        (built in a background worker; until it is ready windows are summed directly).

    Attributes
    ----------
    da : xarray.DataArray or None
        The main data, canonical ``(row, col, spectral)``, in memory.
    arr : numpy.ndarray or None
        Its C-contiguous values.
    compare : dict
        ``{name: (DataArray, ndarray)}`` of the overlay candidates (canonical, same image size).
    name : str
        Label of the main data.
    pixel : (int, int)
        Selected ``(row, col)`` indices.
    window : (int, int)
        Selected channel window, half-open indices ``(i0, i1)``.
    overlays : tuple of str
        Names of the visible overlays.
    image : xarray.DataArray or None
        The last full-resolution window image (:meth:`compute_image`).
    exports : xrdwidgets.base.safety.ExportPlace
        Where exports may be written.
    """

    def __init__(self, kind: str = "volume", *, max_image_size: int = 512, data_dir=None,
                 index_min: int = WINDOW_INDEX_MIN):
        if kind not in ("volume", "sinogram"):
            raise InputError(f"ExplorerModel: kind must be 'volume' or 'sinogram', found {kind!r}")
        decimation_factors((1, 1), max_image_size)  # validates max_image_size
        self.kind = kind
        self.max_image_size = int(max_image_size)
        self.index_min = int(index_min)
        try:
            root = safety.data_root(data_dir)
        except NotADirectoryError:      # misconfigured: exports are refused, never unconfined
            root = Path(data_dir if data_dir is not None else os.environ[safety.DATA_DIR_ENV])
        self.exports = safety.ExportPlace(root)
        self.da: xr.DataArray | None = None
        self.arr: np.ndarray | None = None
        self.compare: dict = {}
        self.name = ""
        self.pixel = (0, 0)
        self.window = (0, 1)
        self.overlays: tuple = ()
        self.image: xr.DataArray | None = None
        self._index: Future | None = None

    # ------------------------------------------------------------------ data
    def require(self):
        """Raise ``RuntimeError`` when no data are loaded."""
        if self.da is None:
            raise RuntimeError(f"{type(self).__name__}: no data loaded yet (call set_volume)")

    def load(self, obj, what: str) -> tuple[xr.DataArray, np.ndarray]:
        """Canonical DataArray + C-contiguous numpy array of a volume / stack of this model's kind."""
        if isinstance(obj, xr.Dataset):
            try:
                obj = _data.as_dataarray(obj, self.kind)
            except DataError as exc:
                raise DataError(f"{what}: {exc}") from None
        da = canonical_3d(obj, what)
        if _data.kind_of(da) != self.kind:
            raise DataError(f"{what}: expected a {self.kind}, found dims {tuple(da.dims)}")
        arr = np.ascontiguousarray(da.values)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"{what}: expected a real numeric dtype, found {arr.dtype}")
        return da.copy(data=arr) if arr is not da.data else da, arr

    def check_compare(self, compare: dict | None, *, strict: bool) -> dict:
        """``{name: (DataArray, ndarray)}`` of the overlays that fit the main data's image size.

        ``strict``: raise :class:`~xrdwidgets.data.DataError` for one that does not fit (else it
        is skipped with a log message).
        """
        out = {}
        for key, obj in (compare or {}).items():
            if obj is None:
                continue
            try:
                da, arr = self.load(obj, f"compare[{key!r}]")
                if da.shape[:2] != self.da.shape[:2]:
                    raise DataError(
                        f"compare[{key!r}]: image size {dict(zip(da.dims[:2], da.shape[:2]))} differs "
                        f"from the main data's {dict(zip(self.da.dims[:2], self.da.shape[:2]))}"
                    )
            except DataError:
                if strict:
                    raise
                log.info("overlay %r skipped (incompatible)", key, exc_info=True)
                continue
            out[str(key)] = (da, arr)
        return out

    def set_data(self, volume, *, name: str | None = None, compare: dict | None = None,
                 strict: bool = True) -> xr.DataArray | None:
        """Load new main data (and overlays; ``None`` keeps those whose image size still fits).

        Returns the previous main data (or ``None``); on an error nothing changes. The selection
        is not touched: :meth:`default_selection` proposes one.
        """
        da, arr = self.load(volume, "set_volume")
        old_da, old_arr, old_compare = self.da, self.arr, self.compare
        self.da, self.arr = da, arr
        try:
            if compare is not None:
                self.compare = self.check_compare(compare, strict=strict)
            else:
                self.compare = {k: v for k, v in self.compare.items() if v[0].shape[:2] == da.shape[:2]}
        except DataError:
            self.da, self.arr, self.compare = old_da, old_arr, old_compare
            raise
        self._start_index(arr)
        self.name = str(name or da.name or self.kind)
        return old_da

    def set_compare(self, compare: dict | None):
        """Replace the overlay candidates (``{name: data}``, same image size; all visible)."""
        self.require()
        self.compare = self.check_compare(compare, strict=True)

    def _start_index(self, arr):
        self._index = None
        if arr is None or arr.size < self.index_min or arr.shape[2] < 4 * 64:
            return
        self._index = _background().submit(WindowIndex, arr)

    @property
    def window_index(self) -> WindowIndex | None:
        """The :class:`~xrdwidgets.explore.windows.WindowIndex` of the main data once built."""
        fut = self._index
        if fut is None or not fut.done():
            return None
        try:
            index = fut.result()
        except Exception:  # pragma: no cover - the direct sum keeps working
            log.exception("explorer: window index not built")
            self._index = None
            return None
        return index if index.array is self.arr else None

    # ------------------------------------------------------------------ selection
    def default_selection(self, old: xr.DataArray | None) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(pixel, window)`` for newly loaded data.

        Keeps the current pixel and window (by coordinate values) where they still fit the data;
        otherwise the brightest pixel of the channel sum (inside the sample, not the middle, which
        may be air or a hole) and the brightest channel of the mean pattern.
        """
        rows, cols, n = self.arr.shape
        flat = self.arr.reshape(-1, n)
        ones_dtype = flat.dtype if flat.dtype.kind == "f" else float
        pixel = self.pixel
        r, c = pixel
        if old is None or not (r < rows and c < cols):
            total = flat @ np.ones(n, dtype=ones_dtype)
            k = int(np.nanargmax(total)) if np.isfinite(total).any() else (rows // 2) * cols + cols // 2
            pixel = (k // cols, k % cols)
        spec = self.da[self.da.dims[2]]
        i0, i1 = self.window
        if old is not None and old.dims[2] == spec.name and i1 <= old.shape[2]:
            oc = old[old.dims[2]].values
            try:
                return pixel, window_indices(spec, oc[i0], oc[i1 - 1], by="value")
            except DataError:
                pass
        mean = np.ones(flat.shape[0], dtype=ones_dtype) @ flat
        k = int(np.nanargmax(mean)) if np.isfinite(mean).any() else 0
        return pixel, (k, k + 1)

    def pixel_of(self, row, col) -> tuple[int, int]:
        """Validated ``(row, col)`` indices (``(y, x)`` of a volume)."""
        self.require()
        rd, cd = self.da.dims[:2]
        return (check_index(row, self.arr.shape[0], "row", rd, "select_pixel"),
                check_index(col, self.arr.shape[1], "col", cd, "select_pixel"))

    def channel_window(self, channel) -> tuple[int, int]:
        """The one-channel window ``(k, k + 1)`` of a validated channel index."""
        self.require()
        k = check_index(channel, self.arr.shape[2], "channel", self.da.dims[2], "select_channel")
        return k, k + 1

    def window_of(self, lo, hi, *, by: str = "value") -> tuple[int, int]:
        """Half-open channel window of ``[lo, hi]`` (spectral units, ``by="value"``) or of the
        index range ``lo <= k < hi`` (``by="index"``)."""
        self.require()
        return window_indices(self.da[self.da.dims[2]], lo, hi, by=by, name="select_window")

    def pixel_at(self, x: float, y: float) -> tuple[int, int]:
        """``(row, col)`` nearest to a point of the image in coordinate units (``x`` along col)."""
        row, col = self.da.dims[:2]
        return nearest_index(self.da[row].values, y), nearest_index(self.da[col].values, x)

    def channel_at(self, x: float) -> int:
        """Channel nearest to a spectral coordinate value ``x``."""
        return nearest_index(self.da[self.da.dims[2]].values, x)

    @property
    def channel(self) -> int | None:
        """Selected channel index when the window is one channel wide, else ``None``."""
        i0, i1 = self.window
        return i0 if i1 - i0 == 1 else None

    # ------------------------------------------------------------------ computations
    def compute_image(self) -> xr.DataArray:
        """The full-resolution ``(row, col)`` image of :attr:`window` (sum over its channels, in
        the data's units); also kept as :attr:`image`."""
        self.require()
        i0, i1 = self.window
        index = self.window_index
        summed = index.window(i0, i1) if index is not None else sum_channels(self.arr, i0, i1)
        self.image = image_from_values(self.da, summed, i0, i1, summed=i1 - i0 > 1)
        return self.image

    def display_image(self, image: xr.DataArray, *, log: bool = False,
                      percentiles=(1.0, 99.0)) -> tuple[xr.DataArray, tuple[float, float]]:
        """``(shown, limits)``: ``image`` block-averaged to :attr:`max_image_size` (and ``log10``
        when ``log``) with its colour limits at ``percentiles``."""
        shown = decimate(image, self.max_image_size)
        if log:
            shown = log_image(shown)
        return shown, percentile_limits(shown, percentiles)

    def pattern(self) -> xr.DataArray:
        """Pattern of the main data at :attr:`pixel`."""
        self.require()
        return pattern_at(self.da, *self.pixel)

    def patterns(self) -> dict:
        """``{name: pattern}``: main data and visible overlays at :attr:`pixel`."""
        out = {self.name: self.pattern()}
        for nm in self.overlays:
            out[nm] = pattern_at(self.compare[nm][0], *self.pixel)
        return out

    def hover_browses_channels(self) -> bool:
        """Whether hovering the pattern should browse channels by default: only for display images
        ≤ 256×256 (each hover re-sends the image)."""
        fr, fc = decimation_factors(self.arr.shape, self.max_image_size)
        return -(-self.arr.shape[0] // fr) * -(-self.arr.shape[1] // fc) <= 256 * 256

    # ------------------------------------------------------------------ words
    def window_text(self) -> str:
        """The window in words, e.g. ``"2θ 5.1–5.3 deg (channels 40–49, Σ 10)"``."""
        spec = self.da[self.da.dims[2]]
        i0, i1 = self.window
        a, b = float(spec.values[i0]), float(spec.values[i1 - 1])
        units = spec.attrs.get("units", "")
        units = "" if units in ("1", "") else units      # dimensionless (a channel index): no unit
        label = axis_name(spec)
        if label == spec.name == "channel" and i1 - i0 == 1:
            return f"channel {i0}" + (f" (= {f'{a:.5g} {units}'.strip()})" if a != i0 else "")
        if i1 - i0 == 1:
            return f"{label} = {a:.5g} {units} (channel {i0})"
        return f"{label} {min(a, b):.5g}–{max(a, b):.5g} {units} (channels {i0}–{i1 - 1}, Σ {i1 - i0})"

    def pixel_text(self) -> str:
        """The pixel in words, e.g. ``"y = 1.2 mm, x = 0.4 mm · pixel (12, 7)"``."""
        r, c = self.pixel
        row, col, _spec = self.da.dims
        yr = float(self.da[row].values[r])
        xc = float(self.da[col].values[c])
        ur = self.da[row].attrs.get("units", "")
        uc = self.da[col].attrs.get("units", "")
        return f"{row} = {yr:.4g} {ur}, {col} = {xc:.4g} {uc} · pixel ({r}, {c})"

    def stem(self, what: str) -> str:
        """File-name stem of an export: ``"image"`` names the window, else the pixel."""
        row, col, spec = self.da.dims
        if what == "image":
            s = self.da[spec]
            i0, i1 = self.window
            a, b = sorted((float(s.values[i0]), float(s.values[i1 - 1])))
            rng = f"{a:.5g}" if i1 - i0 == 1 else f"{a:.5g}-{b:.5g}"
            return export_name(self.name, spec, rng + str(s.attrs.get("units", "")))
        r, c = self.pixel
        return export_name(self.name, f"{row}{r}", f"{col}{c}")

    # ------------------------------------------------------------------ export
    def _target(self, what, fmt, folder, overwrite):
        folder = self.exports.folder(folder)
        return self.exports.target(folder, f"{self.stem(what)}.{fmt}", overwrite)

    def export_image(self, fmt: str, folder, *, cmap: str, limits, log: bool,
                     overwrite: bool = False) -> Path:
        """Write :attr:`image` (PNG colour-mapped as shown, or HDF5) into ``folder``."""
        self.require()
        if fmt not in IMAGE_FORMATS:
            raise DataError(f"export_image: fmt must be one of {IMAGE_FORMATS}, found {fmt!r}")
        path, overwrite = self._target("image", fmt, folder, overwrite)
        out = save_image(self.image, path, cmap=cmap, limits=limits, log=log, overwrite=overwrite)
        self.exports.wrote(out)
        return out

    def export_pattern(self, fmt: str, folder, *, overwrite: bool = False) -> Path:
        """Write :meth:`patterns` (``.xy``, HDF5 or PNG) into ``folder``."""
        self.require()
        if fmt not in PATTERN_FORMATS:
            raise DataError(f"export_pattern: fmt must be one of {PATTERN_FORMATS}, found {fmt!r}")
        path, overwrite = self._target("pattern", fmt, folder, overwrite)
        out = save_patterns(self.patterns(), path, overwrite=overwrite)
        self.exports.wrote(out)
        return out

    def download_bytes(self, what: str, fmt: str, *, cmap: str = "viridis", limits=None,
                       log: bool = False, title: str | None = None) -> tuple[str, bytes]:
        """``(file name, bytes)`` of ``"image"`` (PNG figure or HDF5), ``"pattern"`` (``fmt`` of
        :data:`~xrdwidgets.explore.PATTERN_FORMATS`) or ``"result"`` (the main data, HDF5)."""
        self.require()
        if what == "image":
            data = image_bytes(self.image, fmt, cmap=cmap, limits=limits, log=log,
                               title=f"{self.name}: {self.window_text()}")
        elif what == "pattern":
            data = patterns_bytes(self.patterns(), fmt, title=title)
        elif what == "result":
            data = result_bytes(self.da.rename(self.da.name or export_name(self.name)),
                                producer="xrdwidgets Explorer download")
            return f"{export_name(self.name)}.h5", data
        else:
            raise DataError(f"download_bytes: what must be image, pattern or result, found {what!r}")
        return f"{self.stem(what)}.{fmt}", data
