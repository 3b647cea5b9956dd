"""Slices of volumes and sinogram stacks: images, patterns, decimation and colour limits.

Pure functions, no widgets; they work on both kinds of the data model (:mod:`xrdwidgets.data`):

- a *volume*: image dims ``(y, x)``, one spectral dim → an image is ``(y, x)``;
- a *sinogram stack*: image dims ``(translation, angle)`` → an "image" is one sinogram
  ``(translation, angle)`` (rows = translation, columns = angle).

In both cases ``row`` indexes the first image dim and ``col`` the second (canonical order);
``channel`` indexes the spectral dim.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import xarray as xr

from .. import data as _data
from ..base.progress import Progress
from ..data import DataError

log = logging.getLogger(__name__)

__all__ = [
    "canonical_3d",
    "iterate_stack_overview",
    "stack_overview",
    "channel_index",
    "check_index",
    "decimate",
    "decimation_factors",
    "image_at",
    "image_dims",
    "image_from_values",
    "log_image",
    "nearest_index",
    "pattern_at",
    "percentile_limits",
    "window_attrs",
]


# ---------------------------------------------------------------------------- dims and indices
def canonical_3d(data, func: str) -> xr.DataArray:
    """``data`` as a canonical 3-D DataArray ``(row, col, spectral)``.

    Parameters
    ----------
    data : xarray.DataArray or Dataset
        A volume ``(y, x, spectral)`` or sinogram stack ``(translation, angle, spectral)`` in any
        dim order; optional ``z``/``time`` dims must have been selected away.
    func : str
        Name of the caller, used in error messages.

    Returns
    -------
    xarray.DataArray
        Dims ``(row, col, spectral)`` in this order. Raises
        :class:`~xrdwidgets.data.DataError` for other dims.
    """
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
    da = canonical_3d(data, "image_dims")
    return tuple(da.dims)  # type: ignore[return-value]


def check_index(value, size: int, arg: str, dim: str, func: str) -> int:
    """``value`` as an int index in ``0..size-1`` along ``dim``.

    Parameters
    ----------
    value : int
        The index (a bool or a float is refused).
    size : int
        Length of the dim.
    arg, dim, func : str
        Argument, dim and caller names for the error message.

    Returns
    -------
    int
        The index. Raises :class:`~xrdwidgets.data.DataError` otherwise.
    """
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
    da = canonical_3d(data, "channel_index")
    return nearest_index(da[da.dims[-1]].values, value)



def window_attrs(da: xr.DataArray, i0: int, i1: int) -> dict:
    """Attrs recording the channel window ``[i0, i1)`` (half-open) of ``da``'s last (spectral) dim.

    Returns
    -------
    dict
        ``window_dim``, ``window_lo``/``window_hi`` (coordinate values of the first and last
        channel, in spectral units), ``window_units``, ``window_channels`` ``[i0, i1]``.
    """
    spec = da.dims[-1]
    c = da[spec].values
    return {
        "window_dim": spec,
        "window_lo": float(min(c[i0], c[i1 - 1])),
        "window_hi": float(max(c[i0], c[i1 - 1])),
        "window_units": str(da[spec].attrs.get("units", "")),
        "window_channels": [i0, i1],
    }


def image_from_values(da: xr.DataArray, values: np.ndarray, i0: int, i1: int, summed: bool) -> xr.DataArray:
    """The ``(row, col)`` image of channel window ``[i0, i1)`` of a canonical ``da``.

    Parameters
    ----------
    da : xarray.DataArray
        Canonical ``(row, col, spectral)`` data (see :func:`canonical_3d`).
    values : numpy.ndarray
        ``(row, col)`` values of the image (one channel or the window sum), in the data's units.
    i0, i1 : int
        The window, half-open channel indices.
    summed : bool
        Prefix the long_name with "Σ".

    Returns
    -------
    xarray.DataArray
        ``(row, col)`` with the data's coords and units and the :func:`window_attrs`.
    """
    row, col, _ = da.dims
    units = str(da.attrs.get("units", ""))
    attrs = {
        "units": units,
        "long_name": ("Σ " if summed else "") + str(da.attrs.get("long_name", da.name or "intensity")),
        **window_attrs(da, i0, i1),
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
    da = canonical_3d(data, "image_at")
    k = check_index(channel, da.shape[2], "channel", da.dims[2], "image_at")
    values = np.array(da.isel({da.dims[2]: k}).values)   # a lazy (dask) array loads one channel
    return image_from_values(da, values, k, k + 1, summed=False)



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
    da = canonical_3d(data, "pattern_at")
    r = check_index(row, da.shape[0], "row", da.dims[0], "pattern_at")
    c = check_index(col, da.shape[1], "col", da.dims[1], "pattern_at")
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


def stack_overview(stack, max_size: int = 256):
    """What a sinogram stack looks like: ``(sinogram, pattern, k)``.

    Parameters
    ----------
    stack : xarray.DataArray
        Sinogram stack ``(translation, angle, spectral)`` (+ optional extra dims such as ``z``),
        in memory or lazy (dask).
    max_size : int
        The sinogram is block-averaged to at most this many pixels per axis.

    Returns
    -------
    sinogram : xarray.DataArray
        The strongest channel ``(angle, translation)`` (the first slice of any extra dim), float32.
    pattern : xarray.DataArray
        The mean over every non-spectral dim ``(spectral,)``, float64, ``long_name`` "mean intensity".
    k : int
        Index of the strongest channel of ``pattern`` (NaN channels ignored).

    Reads the whole stack once (a lazy one by blocks): run it in a job (:func:`iterate_stack_overview`).
    """
    spec = _data.spectral_dim(stack)
    extra = [d for d in stack.dims if d not in (_data.TRANSLATION, _data.ANGLE, spec)]
    pattern = stack.mean([d for d in stack.dims if d != spec]).astype(np.float64).compute()
    pattern.attrs.update(long_name="mean intensity", units=stack.attrs.get("units", ""))
    vals = np.nan_to_num(pattern.values, nan=-np.inf)
    k = int(np.argmax(vals))
    sino = stack.isel({spec: k, **{d: 0 for d in extra}}).transpose(_data.ANGLE, _data.TRANSLATION)
    sino = sino.astype(np.float32).compute()
    return decimate(sino, max_size), pattern, k


def iterate_stack_overview(stack, max_size: int = 256):
    """:func:`stack_overview` as a generator for a job: one :class:`~xrdwidgets.base.progress.Progress`
    event, then returns ``(sinogram, pattern, k)``."""
    yield Progress(iteration=0, total=1, metrics={"step": "overview"})
    return stack_overview(stack, max_size)
