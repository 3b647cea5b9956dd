"""Image and pattern views of volumes and sinogram stacks: pure functions, no widgets.

These are the functions behind :class:`xrdwidgets.widgets.Explorer`; notebook users can call
them directly. They work on both kinds of the data model (:mod:`xrdwidgets.data`):

``volume``          image dims ``(y, x)``, one spectral dim → an image is ``(y, x)``.
``sinogram stack``  image dims ``(translation, angle)`` → an "image" is one sinogram
                    ``(translation, angle)`` (rows = translation, columns = angle).

In both cases ``row`` indexes the first image dim and ``col`` the second (canonical order);
``channel`` indexes the spectral dim. Channel *windows* are given either by coordinate values
(``by="value"``, the default: every channel whose coordinate lies in the closed interval
``[lo, hi]``, in the units of the spectral coordinate, e.g. deg for ``tth``) or by indices
(``by="index"``: the half-open range ``lo <= k < hi``, like a Python slice).

Summing a window (:func:`sum_channels`) needs no precomputed cumulative sum: on the canonical
C-contiguous ``(row, col, spectral)`` layout it is one BLAS matrix–vector product over the
``(row·col, channels)`` view, with no extra memory (measured on 2 cores for a 512×512×2000
float32 volume: 9 ms for 64 channels, 70–120 ms for all 2000 — memory-bound — against
150–210 ms for ``numpy.sum`` over the last axis; see ``benchmarks/bench_explorer.py``, which
also compares a float64 block-prefix-sum index: faster, but 69 MB and 1.6 s to build).

Export helpers write what a view shows: :func:`save_image` (PNG colour-mapped like the view,
or HDF5 with coords/units) and :func:`save_patterns` (``.xy`` columns, HDF5 or PNG plot). They
never replace an existing file unless ``overwrite=True`` and write atomically.
"""
from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from . import data as _data
from .base.atomic import atomic_path
from .data import DataError

log = logging.getLogger(__name__)

__all__ = [
    "WindowIndex",
    "COLORMAPS",
    "IMAGE_FORMATS",
    "MAX_DOWNLOAD_MB",
    "check_download_size",
    "image_bytes",
    "patterns_bytes",
    "result_bytes",
    "PATTERN_FORMATS",
    "axis_label",
    "axis_name",
    "channel_index",
    "channel_text",
    "decimate",
    "decimation_factors",
    "export_name",
    "image_at",
    "image_dims",
    "log_image",
    "nearest_index",
    "pattern_at",
    "percentile_limits",
    "roi_image",
    "save_image",
    "save_patterns",
    "sum_channels",
    "window_indices",
]

#: Colormap names understood by both the widgets (plotly) and the PNG export (matplotlib).
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "gray", "turbo")
#: File formats of :func:`save_image` (by suffix).
IMAGE_FORMATS = ("png", "h5")
#: File formats of :func:`save_patterns` (by suffix).
PATTERN_FORMATS = ("xy", "h5", "png")


# ---------------------------------------------------------------------------- dims and indices
def _canonical(data, func: str) -> xr.DataArray:
    """``data`` as a canonical 3-D DataArray (row, col, spectral); clear error otherwise."""
    try:
        da = _data.as_dataarray(data)
        kind = _data.kind_of(da)
        _data.spectral_dim(da)
    except DataError as exc:
        raise DataError(f"{func}: {exc}") from None
    row, col = _data.SINOGRAM_DIMS if kind == "sinogram" else _data.IMAGE_DIMS
    allowed = {row, col, _data.spectral_dim(da), *_data.EXTRA_DIMS}
    unknown = [d for d in da.dims if d not in allowed]
    if unknown:
        raise DataError(f"{func}: {da.name or 'data'} has unknown dims {tuple(unknown)}; expected "
                        f"({row!r}, {col!r}, spectral) (+ optional {_data.EXTRA_DIMS})")
    da = _data.canonical(da)
    extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
    if extra:
        raise DataError(
            f"{func}: {da.name or 'data'} has extra dims {tuple(extra)} with sizes "
            f"{ {d: da.sizes[d] for d in extra} }; select one slice first, e.g. "
            f"data.isel({extra[0]}=0)"
        )
    return da


def image_dims(data) -> tuple[str, str, str]:
    """``(row_dim, col_dim, spectral_dim)`` of a volume or sinogram stack.

    ``("y", "x", spectral)`` for a volume, ``("translation", "angle", spectral)`` for a
    sinogram stack. Raises :class:`~xrdwidgets.data.DataError` for other dims.
    """
    da = _canonical(data, "image_dims")
    return tuple(da.dims)  # type: ignore[return-value]


def _check_index(value, size: int, arg: str, dim: str, func: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{func}: {arg} must be an integer index along {dim!r}, found {value!r}")
    k = int(value)
    if not 0 <= k < size:
        raise DataError(
            f"{func}: {arg}={k} is out of range for dim {dim!r} of size {size} (valid 0..{size - 1})"
        )
    return k


def nearest_index(coord, value) -> int:
    """Index of the element of a 1-D monotonic ``coord`` nearest to ``value``.

    Parameters
    ----------
    coord : array-like or xarray.DataArray
        Increasing or decreasing coordinate values.
    value : float
        A coordinate value in the same units (values outside the range give the end index).
    """
    c = np.asarray(coord, dtype=float)
    v = float(value)
    if not math.isfinite(v):
        raise DataError(f"nearest_index: value must be finite, found {value!r}")
    if c.size == 0:
        raise DataError("nearest_index: empty coordinate")
    return int(np.argmin(np.abs(c - v)))


def channel_index(data, value) -> int:
    """Index of the spectral channel nearest to the coordinate ``value`` (spectral units)."""
    da = _canonical(data, "channel_index")
    return nearest_index(da[da.dims[-1]].values, value)


def window_indices(coord, lo, hi, *, by: str = "value", name: str = "window") -> tuple[int, int]:
    """Half-open channel range ``(i0, i1)`` of a spectral window.

    Parameters
    ----------
    coord : xarray.DataArray or array-like
        The spectral coordinate (1-D, monotonic; may decrease, e.g. d-spacing).
    lo, hi : float or int
        ``by="value"``: coordinate values (any order); the window holds every channel whose
        coordinate is in ``[min(lo, hi), max(lo, hi)]``, or the single nearest channel when the
        interval falls between two channels. ``by="index"``: indices, half-open ``lo <= k < hi``.
    by : {"value", "index"}
    name : str
        Name used in error messages.

    Returns
    -------
    (int, int)
        ``i0 < i1``; the window is ``coord[i0:i1]``.
    """
    c = np.asarray(coord, dtype=float)
    n = c.size
    dim = getattr(coord, "name", None) or "spectral"
    if by == "index":
        for arg, v in (("lo", lo), ("hi", hi)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise DataError(f"{name}: {arg} must be an integer channel index along {dim!r} "
                                f"when by='index', found {v!r}")
        i0, i1 = int(lo), int(hi)
        if not 0 <= i0 < i1 <= n:
            raise DataError(
                f"{name}: index window must satisfy 0 <= lo < hi <= {n} (half-open, like a slice); "
                f"found lo={i0}, hi={i1}"
            )
        return i0, i1
    if by != "value":
        raise DataError(f"{name}: by must be 'value' or 'index', found {by!r}")
    try:
        a, b = sorted((float(lo), float(hi)))
    except (TypeError, ValueError):
        raise DataError(f"{name}: lo and hi must be numbers, found {lo!r}, {hi!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise DataError(f"{name}: lo and hi must be finite, found {lo!r}, {hi!r}")
    cmin, cmax = float(np.min(c)), float(np.max(c))
    if b < cmin or a > cmax:
        units = getattr(coord, "attrs", {}).get("units", "")
        raise DataError(
            f"{name}: window [{a:g}, {b:g}] {units} lies outside the {dim!r} range "
            f"[{cmin:g}, {cmax:g}] {units}".rstrip()
        )
    inside = np.flatnonzero((c >= a) & (c <= b))
    if inside.size == 0:
        k = nearest_index(c, 0.5 * (a + b))
        return k, k + 1
    return int(inside[0]), int(inside[-1]) + 1


def sum_channels(array: np.ndarray, i0: int, i1: int) -> np.ndarray:
    """Sum of channels ``i0:i1`` of a ``(row, col, channel)`` array → ``(row, col)``.

    On a C-contiguous floating-point array this is one BLAS matrix–vector product over the
    ``(row·col, channel)`` view (multi-threaded, no copy, float accumulation in the array's
    dtype); otherwise a plain ``numpy.sum`` over the last axis. A one-channel window is a copy
    of that channel.
    """
    a = np.asarray(array)
    if a.ndim != 3:
        raise DataError(f"sum_channels: expected a (row, col, channel) array, found shape {a.shape}")
    i0, i1 = int(i0), int(i1)
    if not 0 <= i0 < i1 <= a.shape[2]:
        raise DataError(f"sum_channels: need 0 <= i0 < i1 <= {a.shape[2]}, found i0={i0}, i1={i1}")
    if i1 - i0 == 1:
        return np.array(a[:, :, i0])
    if a.flags.c_contiguous and a.dtype in (np.float32, np.float64):
        flat = a.reshape(-1, a.shape[2])[:, i0:i1]
        return (flat @ np.ones(i1 - i0, dtype=a.dtype)).reshape(a.shape[:2])
    out_dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
    return a[:, :, i0:i1].sum(axis=2, dtype=out_dtype)


class WindowIndex:
    """Float64 running sums at every ``block``-th channel of a ``(row, col, channel)`` array.

    A window sum is then the difference of two stored sums plus at most ``2 × (block − 1)``
    edge channels summed directly, whatever the window width: measured on 512×512×2000 float32,
    p95 60 ms against 172 ms for :func:`sum_channels` (`benchmarks/bench_explorer.py`). Building it
    reads the array once (1.6 s there) and holds ``(channels / block + 1) × row × col`` float64
    (69 MB there). Sums are accumulated in float64, so they are at least as exact as
    :func:`sum_channels`.
    """

    def __init__(self, array: np.ndarray, block: int = 64):
        a = np.asarray(array)
        if a.ndim != 3:
            raise DataError(f"WindowIndex: expected a (row, col, channel) array, found shape {a.shape}")
        if isinstance(block, bool) or int(block) < 1:
            raise DataError(f"WindowIndex: block must be an integer >= 1, found {block!r}")
        self.array, self.block = a, int(block)
        nb = -(-a.shape[2] // self.block)
        self.prefix = np.zeros((nb + 1,) + a.shape[:2])
        for k in range(nb):
            part = sum_channels(a, k * self.block, min(a.shape[2], (k + 1) * self.block))
            np.add(self.prefix[k], part, out=self.prefix[k + 1], dtype=np.float64)

    def window(self, i0: int, i1: int) -> np.ndarray:
        """Sum of channels ``i0:i1`` → ``(row, col)`` in the array's float dtype."""
        a, b = self.array, self.block
        i0, i1 = int(i0), int(i1)
        b0, b1 = -(-i0 // b), i1 // b
        if b1 <= b0:
            return sum_channels(a, i0, i1)
        out = self.prefix[b1] - self.prefix[b0]
        if i0 < b0 * b:
            out += sum_channels(a, i0, b0 * b)
        if b1 * b < i1:
            out += sum_channels(a, b1 * b, i1)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
        return out.astype(dtype, copy=False)


def _spectral_attrs(da: xr.DataArray, i0: int, i1: int) -> dict:
    spec = da.dims[-1]
    c = da[spec].values
    return {
        "window_dim": spec,
        "window_lo": float(min(c[i0], c[i1 - 1])),
        "window_hi": float(max(c[i0], c[i1 - 1])),
        "window_units": str(da[spec].attrs.get("units", "")),
        "window_channels": [i0, i1],
    }


def _image_from(da: xr.DataArray, values: np.ndarray, i0: int, i1: int, summed: bool) -> xr.DataArray:
    row, col, _ = da.dims
    units = str(da.attrs.get("units", ""))
    attrs = {
        "units": units,
        "long_name": ("Σ " if summed else "") + str(da.attrs.get("long_name", da.name or "intensity")),
        **_spectral_attrs(da, i0, i1),
    }
    return xr.DataArray(values, dims=(row, col), coords={row: da[row], col: da[col]},
                        name=da.name, attrs=attrs)


def image_at(data, channel) -> xr.DataArray:
    """The image (or sinogram) at one spectral channel.

    Parameters
    ----------
    data : xarray.DataArray or Dataset
        A volume ``(y, x, spectral)`` or sinogram stack ``(translation, angle, spectral)``,
        any dim order.
    channel : int
        Index along the spectral dim.

    Returns
    -------
    xarray.DataArray
        ``(row, col)`` with the data's coords and units; attrs ``window_*`` record the channel.
    """
    da = _canonical(data, "image_at")
    k = _check_index(channel, da.shape[2], "channel", da.dims[2], "image_at")
    values = np.array(da.isel({da.dims[2]: k}).values)   # a lazy (dask) array loads one channel
    return _image_from(da, values, k, k + 1, summed=False)


def roi_image(data, lo, hi, *, by: str = "value") -> xr.DataArray:
    """Sum of a spectral window: the "ROI image" of a channel range.

    Parameters
    ----------
    data : xarray.DataArray or Dataset
        Volume or sinogram stack (any dim order).
    lo, hi : float or int
        Window, see :func:`window_indices` (``by="value"``: closed interval of coordinate
        values in spectral units; ``by="index"``: half-open index range).
    by : {"value", "index"}

    Returns
    -------
    xarray.DataArray
        ``(row, col)``, the sum over the window's channels (units of the data; long_name
        prefixed with "Σ"); attrs ``window_lo``/``window_hi`` (coordinate values of the first
        and last channel), ``window_channels`` ``[i0, i1]`` (half-open).
    """
    da = _canonical(data, "roi_image")
    i0, i1 = window_indices(da[da.dims[2]], lo, hi, by=by, name="roi_image")
    if isinstance(da.data, np.ndarray):
        values = sum_channels(da.data, i0, i1)
    else:  # lazy (dask): load only the window
        values = np.asarray(da.isel({da.dims[2]: slice(i0, i1)}).sum(da.dims[2]).values)
    return _image_from(da, values, i0, i1, summed=i1 - i0 > 1)


def pattern_at(data, row, col) -> xr.DataArray:
    """The diffraction pattern of one pixel (volume) or one sinogram point.

    Parameters
    ----------
    data : xarray.DataArray or Dataset
        Volume ``(y, x, spectral)`` or sinogram stack ``(translation, angle, spectral)``.
    row : int
        Index along the first image dim (``y`` of a volume, ``translation`` of a sinogram).
    col : int
        Index along the second image dim (``x`` of a volume, ``angle`` of a sinogram).

    Returns
    -------
    xarray.DataArray
        1-D along the spectral dim, with the pixel's ``row``/``col`` coordinates kept as
        scalar coords (e.g. ``pattern.y``, ``pattern.x`` in mm).
    """
    da = _canonical(data, "pattern_at")
    r = _check_index(row, da.shape[0], "row", da.dims[0], "pattern_at")
    c = _check_index(col, da.shape[1], "col", da.dims[1], "pattern_at")
    return da.isel({da.dims[0]: r, da.dims[1]: c})


# ---------------------------------------------------------------------------- display helpers
def decimation_factors(shape, max_size: int = 512) -> tuple[int, int]:
    """Integer block sizes ``(fr, fc)`` so that ``ceil(n / f) <= max_size`` on each axis."""
    if int(max_size) < 1:
        raise DataError(f"decimate: max_size must be >= 1, found {max_size!r}")
    return tuple(max(1, -(-int(n) // int(max_size))) for n in shape[:2])  # type: ignore[return-value]


def _block_mean(a: np.ndarray, f: int, axis: int) -> np.ndarray:
    if f == 1:
        return a
    n = a.shape[axis]
    starts = np.arange(0, n, f)
    sums = np.add.reduceat(a, starts, axis=axis)
    counts = np.minimum(starts + f, n) - starts
    shape = [1] * a.ndim
    shape[axis] = counts.size
    return sums / counts.reshape(shape)


def decimate(image, max_size: int = 512):
    """Block-mean an image down to at most ``max_size`` pixels per axis.

    Each axis is binned by the smallest integer factor ``f`` with ``ceil(n / f) <= max_size``
    (the last block may be partial; it is averaged over its own pixels). No interpolation:
    block means keep the total intensity per area and never invent values.

    Parameters
    ----------
    image : numpy.ndarray or xarray.DataArray
        2-D ``(row, col)``.
    max_size : int
        Largest number of pixels per axis of the result.

    Returns
    -------
    Same type as ``image``. A DataArray gets block-mean coordinates and an attr
    ``decimation = [fr, fc]``. Images already small enough are returned unchanged.
    """
    is_da = isinstance(image, xr.DataArray)
    a = np.asarray(image.values if is_da else image)
    if a.ndim != 2:
        raise DataError(f"decimate: expected a 2-D (row, col) image, found shape {a.shape}")
    fr, fc = decimation_factors(a.shape, max_size)
    if fr == fc == 1:
        return image
    work = a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)
    out = _block_mean(_block_mean(work, fr, 0), fc, 1).astype(work.dtype, copy=False)
    if not is_da:
        return out
    coords = {}
    for d, f in zip(image.dims, (fr, fc)):
        c = image[d]
        vals = _block_mean(np.asarray(c.values, dtype=float), f, 0)
        coords[d] = xr.Variable((d,), vals, attrs=dict(c.attrs))
    attrs = dict(image.attrs)
    attrs["decimation"] = [fr, fc]
    return xr.DataArray(out, dims=image.dims, coords=coords, name=image.name, attrs=attrs)


def percentile_limits(image, percentiles=(1.0, 99.0)) -> tuple[float, float]:
    """Colour limits ``(vmin, vmax)`` at two percentiles of the finite values of ``image``.

    Parameters
    ----------
    image : array-like or xarray.DataArray
    percentiles : (float, float)
        Lower and upper percentile in ``[0, 100]``.

    Returns
    -------
    (float, float)
        ``vmin < vmax`` always (a flat or empty image gets a unit-wide range around its value).
    """
    try:
        p_lo, p_hi = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise DataError(f"percentile_limits: percentiles must be two numbers, found {percentiles!r}") from None
    if not (0.0 <= p_lo <= p_hi <= 100.0):
        raise DataError(f"percentile_limits: percentiles must satisfy 0 <= lo <= hi <= 100, found {percentiles!r}")
    a = np.asarray(getattr(image, "values", image), dtype=float).ravel()
    finite = np.isfinite(a)
    if not finite.all():
        a = a[finite]
    if a.size == 0:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in np.percentile(a, [p_lo, p_hi]))
    if not vmax > vmin:
        half = 0.5 * max(abs(vmin), 1.0) * (1e-3 if vmin else 1.0)
        vmin, vmax = vmin - half, vmax + half
    return vmin, vmax


def log_image(image, floor: float | None = None):
    """``log10`` of an image for display, with values below ``floor`` clipped to it.

    ``floor`` defaults to the smallest positive finite value (1e-12 when none). Returns the
    same type; a DataArray's long_name gets ``log10`` prepended.
    """
    is_da = isinstance(image, xr.DataArray)
    a = np.asarray(image.values if is_da else image)
    if floor is None:
        pos = a[np.isfinite(a) & (a > 0)]
        floor = float(pos.min()) if pos.size else 1e-12
    if not floor > 0:
        raise DataError(f"log_image: floor must be > 0, found {floor!r}")
    with np.errstate(invalid="ignore"):
        out = np.log10(np.maximum(a, np.asarray(floor, dtype=a.dtype if a.dtype.kind == "f" else float)))
    if not is_da:
        return out
    res = image.copy(data=out)
    res.attrs["long_name"] = "log10 " + str(image.attrs.get("long_name", image.name or ""))
    return res


def axis_label(obj) -> str:
    """Axis title from ``long_name`` and ``units`` attrs, e.g. ``"2θ (deg)"``.

    ``obj`` is a coordinate / DataArray. Without a ``long_name`` (or with a bare dimension name as
    long_name, as files from other tools have) a known dimension gets the schema's words
    (:data:`xrdwidgets.data.LONG_NAMES`: ``tth`` → ``"2θ"``), else its ``name``; units are never
    guessed.
    """
    attrs = getattr(obj, "attrs", {}) or {}
    own = str(getattr(obj, "name", "") or "")
    name = str(attrs.get("long_name") or own)
    if name in _data.LONG_NAMES and (name == own or not attrs.get("long_name")):
        name = _data.LONG_NAMES[name]
    units = str(attrs.get("units") or "")
    return f"{name} ({units})" if units and units != "1" else name


def axis_name(obj) -> str:
    """The words of :func:`axis_label` without the units (``"2θ"`` for a ``tth`` coordinate)."""
    units = str((getattr(obj, "attrs", {}) or {}).get("units") or "")
    label = axis_label(obj)
    return label[: -len(units) - 3] if units and units != "1" and label.endswith(f" ({units})") else label


def channel_text(coord, start: int, stop: int) -> str:
    """Which channels ``[start, stop)`` of spectral coordinate ``coord`` are, in words:
    ``"2θ = 3.1 deg (channel 7)"`` or ``"Σ 2θ 3.1–3.4 deg (channels 7–12)"``."""
    n = int(coord.size)
    if not 0 <= start < stop <= n:
        raise ValueError(f"channel_text: channels [{start}, {stop}) outside the {n} of {coord.name!r}")
    units = str(coord.attrs.get("units") or "")
    units = "" if units == "1" else " " + units
    a, b = float(coord.values[start]), float(coord.values[stop - 1])
    name = axis_name(coord)
    if stop - start == 1:
        return f"{name} = {a:.4g}{units} (channel {start})"
    return f"Σ {name} {min(a, b):.4g}–{max(a, b):.4g}{units} (channels {start}–{stop - 1})"


# ---------------------------------------------------------------------------- export
def _fmt(path: Path, allowed, func) -> str:
    suffix = path.suffix.lower().lstrip(".")
    fmt = "h5" if suffix in ("h5", "hdf5", "hdf") else suffix
    if fmt not in allowed:
        raise DataError(f"{func}: cannot write {path.name!r}: format {suffix!r} not supported; "
                        f"use one of {tuple(allowed)}")
    return fmt


def _write_atomic(path: Path, overwrite: bool, write) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file to ``path`` (no clobbering)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent} is not a folder; create it first")
    with atomic_path(path, overwrite=overwrite) as tmp:
        write(tmp)
    log.info("wrote %s", path)
    return path


def _check_cmap(cmap: str, func: str) -> str:
    if cmap not in COLORMAPS:
        raise DataError(f"{func}: cmap must be one of {COLORMAPS}, found {cmap!r}")
    return cmap


def save_image(image: xr.DataArray, path, *, cmap: str = "viridis", limits=None, log: bool = False,
               overwrite: bool = False) -> Path:
    """Write a 2-D image to PNG (colour-mapped, as shown) or HDF5 (values, coords, units).

    Parameters
    ----------
    image : xarray.DataArray
        ``(row, col)``, e.g. from :func:`roi_image` (full resolution, not decimated).
    path : path-like
        ``*.png`` or ``*.h5``/``*.hdf5``. Not replaced unless ``overwrite``.
    cmap : str
        One of :data:`COLORMAPS` (PNG only).
    limits : (float, float), optional
        Colour limits of the PNG in the displayed units (after ``log``); default 1–99 percentiles.
    log : bool
        PNG shows ``log10`` of the image (HDF5 always stores the linear values).
    overwrite : bool

    Returns
    -------
    pathlib.Path
        The written file. The PNG has one pixel per image pixel, row 0 at the top.
    """
    if not isinstance(image, xr.DataArray) or image.ndim != 2:
        raise DataError(f"save_image: expected a 2-D xarray.DataArray, found "
                        f"{type(image).__name__} with shape {getattr(image, 'shape', None)}")
    path = Path(path)
    fmt = _fmt(path, IMAGE_FORMATS, "save_image")
    if fmt == "h5":
        from . import io as _io

        out = image.rename(image.name or "image")
        return _write_atomic(path, overwrite, lambda tmp: _io.save(out, tmp, overwrite=True,
                                                                   producer="xrdwidgets.views.save_image"))
    _check_cmap(cmap, "save_image")
    shown = log_image(image) if log else image
    vmin, vmax = limits if limits is not None else percentile_limits(shown)

    def write(tmp):
        import matplotlib.image as mpimg  # no pyplot: no global state, no backend

        mpimg.imsave(tmp, np.asarray(shown.values, dtype=float), cmap=cmap, vmin=vmin, vmax=vmax,
                     origin="upper", format="png")

    return _write_atomic(path, overwrite, write)


def _patterns_dict(patterns) -> dict:
    if isinstance(patterns, xr.DataArray):
        patterns = {str(patterns.name or "pattern"): patterns}
    if not isinstance(patterns, dict) or not patterns:
        raise DataError("save_patterns: expected a 1-D DataArray or a non-empty dict name → DataArray")
    for k, p in patterns.items():
        if not isinstance(p, xr.DataArray) or p.ndim != 1:
            raise DataError(f"save_patterns: pattern {k!r} must be a 1-D xarray.DataArray, found "
                            f"{type(p).__name__} with shape {getattr(p, 'shape', None)}")
    return patterns


def _same_axis(a: xr.DataArray, b: xr.DataArray) -> bool:
    return a.dims == b.dims and np.array_equal(a[a.dims[0]].values, b[b.dims[0]].values)


def save_patterns(patterns, path, *, overwrite: bool = False) -> Path:
    """Write one or several diffraction patterns to ``.xy``, HDF5 or a PNG plot.

    Parameters
    ----------
    patterns : xarray.DataArray or dict
        A 1-D pattern (spectral dim) or ``{name: pattern}``; the first is the reference.
    path : path-like
        ``*.xy`` (text: spectral coordinate then one intensity column per pattern sharing the
        first pattern's axis — others are skipped with a warning; ``#`` header lines name the
        columns and units), ``*.h5`` (a Dataset, one variable per pattern; patterns on another
        axis get their own dim ``<dim>_<name>``), or ``*.png`` (a line plot).
    overwrite : bool
        Replace an existing file (default: raise ``FileExistsError``).

    Returns
    -------
    pathlib.Path
    """
    pats = _patterns_dict(patterns)
    path = Path(path)
    fmt = _fmt(path, PATTERN_FORMATS, "save_patterns")
    names = list(pats)
    ref = pats[names[0]]
    dim = ref.dims[0]
    if fmt == "xy":
        same = [n for n in names if _same_axis(pats[n], ref)]
        skipped = [n for n in names if n not in same]
        if skipped:
            log.warning("save_patterns: %s not written to %s (different %s axis)", skipped, path.name, dim)
        cols = np.column_stack([np.asarray(ref[dim].values, float)]
                               + [np.asarray(pats[n].values, float) for n in same])
        pos = ", ".join(f"{k}={float(v.values):g} {v.attrs.get('units', '')}".rstrip()
                        for k, v in ref.coords.items() if v.ndim == 0)
        header = "\n".join([
            f"xrdwidgets pattern export{(' at ' + pos) if pos else ''}",
            f"columns: {axis_label(ref[dim])}, " + ", ".join(
                f"{n} ({pats[n].attrs.get('units', '')})" for n in same),
        ])
        return _write_atomic(path, overwrite, lambda tmp: np.savetxt(tmp, cols, fmt="%.8g", header=header))
    if fmt == "h5":
        from . import io as _io

        variables = {}
        for n in names:
            p = pats[n].reset_coords(drop=True)
            if not _same_axis(p, ref):
                p = p.rename({p.dims[0]: f"{p.dims[0]}_{n}"})
            variables[str(n)] = p
        ds = xr.Dataset(variables)
        ds.attrs.update({f"position_{k}": float(v.values) for k, v in ref.coords.items() if v.ndim == 0})
        return _write_atomic(path, overwrite, lambda tmp: _io.save(ds, tmp, overwrite=True,
                                                                   producer="xrdwidgets.views.save_patterns"))

    def write(tmp):
        from matplotlib.figure import Figure  # no pyplot: no global state, no backend

        fig = Figure(figsize=(7, 4), dpi=110, layout="constrained")
        ax = fig.add_subplot()
        for n in names:
            p = pats[n]
            ax.plot(p[p.dims[0]].values, p.values, lw=1, label=str(n))
        ax.set_xlabel(axis_label(ref[dim]))
        ax.set_ylabel(axis_label(ref))
        if len(names) > 1:
            ax.legend()
        fig.savefig(tmp, format="png")

    return _write_atomic(path, overwrite, write)


# ---------------------------------------------------------------------------- downloads
#: Largest payload (MB) the dashboards send to the browser as a download (base64 inside a page
#: message); larger results go to the server's results folder instead.
MAX_DOWNLOAD_MB = 64.0
#: PNG figures of larger images are block-averaged to this many pixels per axis first.
MAX_FIGURE_PIXELS = 2048


def check_download_size(nbytes: int, what: str, limit_mb: float = MAX_DOWNLOAD_MB) -> None:
    """Raise :class:`~xrdwidgets.data.DataError` when ``nbytes`` exceed the download limit."""
    if nbytes > limit_mb * 2**20:
        raise DataError(f"{what} is {nbytes / 2**20:.0f} MB, over the {limit_mb:g} MB download limit; "
                        "save it to the results folder instead")


def _file_bytes(suffix: str, write) -> bytes:
    """Bytes of the file ``write(path)`` writes (into a private temporary folder, then removed)."""
    with tempfile.TemporaryDirectory(prefix="xrdwidgets-download-") as tmp:
        path = Path(tmp) / f"download{suffix}"
        write(path)
        return path.read_bytes()


def image_bytes(image: xr.DataArray, fmt: str = "png", *, cmap: str = "viridis", limits=None,
                log: bool = False, title: str | None = None) -> bytes:
    """A 2-D image as file bytes for a browser download.

    ``fmt="png"``: a figure with axes, labels with units, colour bar and title
    (:func:`xrdwidgets.figures.image_figure_png`; images over :data:`MAX_FIGURE_PIXELS` per axis
    are block-averaged first). ``fmt="h5"``: the full-resolution values with coordinates and units
    (as :func:`save_image`). Raises :class:`DataError` over :data:`MAX_DOWNLOAD_MB`.
    """
    if not isinstance(image, xr.DataArray) or image.ndim != 2:
        raise DataError(f"image_bytes: expected a 2-D xarray.DataArray, found {type(image).__name__}")
    if fmt not in IMAGE_FORMATS:
        raise DataError(f"image_bytes: fmt must be one of {IMAGE_FORMATS}, found {fmt!r}")
    if fmt == "h5":
        check_download_size(image.nbytes, f"image {image.name or ''}".strip())
        return _file_bytes(".h5", lambda p: save_image(image, p))
    from .figures import image_figure_png

    _check_cmap(cmap, "image_bytes")
    return image_figure_png(decimate(image, MAX_FIGURE_PIXELS), cmap=cmap, limits=limits, log=log,
                            title=title)


def patterns_bytes(patterns, fmt: str = "xy", *, title: str | None = None) -> bytes:
    """Patterns (a 1-D DataArray or ``{name: pattern}``) as file bytes for a browser download:
    ``xy`` / ``h5`` as :func:`save_patterns`, ``png`` a plot with labelled axes."""
    pats = _patterns_dict(patterns)
    if fmt not in PATTERN_FORMATS:
        raise DataError(f"patterns_bytes: fmt must be one of {PATTERN_FORMATS}, found {fmt!r}")
    if fmt == "png":
        from .figures import patterns_figure_png

        return patterns_figure_png(pats, title=title)
    return _file_bytes(f".{fmt}", lambda p: save_patterns(pats, p))


def result_bytes(obj, *, producer: str = "xrdwidgets dashboard") -> bytes:
    """A result (DataArray or Dataset, e.g. a reconstructed volume or fitted maps) as the bytes
    of an xrdwidgets HDF5 file (:func:`xrdwidgets.io.save`, with provenance). Raises
    :class:`DataError` over :data:`MAX_DOWNLOAD_MB`."""
    from . import io as _io

    check_download_size(int(obj.nbytes), f"result {getattr(obj, 'name', '') or ''}".strip())
    return _file_bytes(".h5", lambda p: _io.save(obj, p, producer=producer))


def export_name(*parts) -> str:
    """A file-name stem from parts: spaces and unsafe characters replaced, e.g. ``fbp_tth_5.1-5.3``."""
    safe = []
    for p in parts:
        s = "".join(ch if (ch.isalnum() or ch in ".-+") else "_" for ch in str(p))
        if s:
            safe.append(s)
    return "_".join(safe) or "export"
