"""Channel windows of a spectral axis and their sums: the "ROI image" of a channel range.

Channel *windows* are given either by coordinate values (``by="value"``, the default: every
channel whose coordinate lies in the closed interval ``[lo, hi]``, in the units of the spectral
coordinate, e.g. deg for ``tth``) or by indices (``by="index"``: the half-open range
``lo <= k < hi``, like a Python slice).

:func:`sum_channels` sums a window directly (one BLAS matrix–vector product on the canonical
C-contiguous ``(row, col, spectral)`` layout, no extra memory); :class:`WindowIndex` holds
float64 running sums at every ``block``-th channel so that wide windows of a large volume cost
about the same as narrow ones (the Explorer builds one in the background for large volumes).
"""
from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..data import DataError
from .slicing import canonical_3d, image_from_values, nearest_index

__all__ = ["WindowIndex", "sum_channels", "window_indices", "window_sum"]


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
    edge channels summed directly, whatever the window width. Building it reads the array once
    and holds ``(channels / block + 1) × row × col`` float64. Sums are accumulated in float64,
    so they are at least as exact as :func:`sum_channels`.

    Parameters
    ----------
    array : numpy.ndarray
        ``(row, col, channel)``.
    block : int
        Channels between two stored running sums.
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


def window_sum(data, lo, hi, *, by: str = "value") -> xr.DataArray:
    """Plain sum of a spectral window per pixel (no background): the "ROI image" of a channel range.

    :func:`xrdwidgets.explore.roi.roi_image` adds background subtraction (its result has other
    attrs and name).

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
    da = canonical_3d(data, "window_sum")
    i0, i1 = window_indices(da[da.dims[2]], lo, hi, by=by, name="window_sum")
    if isinstance(da.data, np.ndarray):
        values = sum_channels(da.data, i0, i1)
    else:  # lazy (dask): load only the window
        values = np.asarray(da.isel({da.dims[2]: slice(i0, i1)}).sum(da.dims[2]).values)
    return image_from_values(da, values, i0, i1, summed=i1 - i0 > 1)
