"""Region-of-interest tools: ROI images with background subtraction, ROI patterns, peak suggestions.

``roi_image``
    sum of a spectral window per pixel, optionally minus a background estimated from the
    window's edge channels → image ``(y, x)`` (or ``(translation, angle)`` for a sinogram
    stack; optional leading ``time``/``z`` dims are kept).
``roi_mask``
    boolean mask from a threshold on an image.
``roi_pattern``
    mean pattern of the pixels of a mask → 1-D over the spectral dim.
``suggest_peaks``
    peak positions of a pattern (:func:`scipy.signal.find_peaks`) in the units of its spectral
    coordinate.

The window sums are those of :func:`xrdwidgets.explore.windows.window_sum` (same window rules:
closed interval of coordinate values with ``by="value"``, half-open index range with
``by="index"``); ``roi_image`` adds the background options and names its result ``roi_<dim>``.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .. import data as _data
from ..data import DataError
from .slicing import window_attrs
from .windows import window_indices, window_sum

log = logging.getLogger(__name__)

__all__ = ["BACKGROUNDS", "roi_image", "roi_mask", "roi_pattern", "suggest_peaks"]

#: Background estimates of :func:`roi_image`.
BACKGROUNDS = ("none", "edges", "linear")


def _prepare(data, func):
    """(DataArray in canonical order, row dim, col dim, spectral dim)."""
    try:
        da = _data.as_dataarray(data)
        kind = _data.kind_of(da)
        spec = _data.spectral_dim(da)
    except DataError as exc:
        raise DataError(f"{func}: {exc}") from None
    row, col = _data.SINOGRAM_DIMS if kind == "sinogram" else _data.IMAGE_DIMS
    allowed = {row, col, spec, *_data.EXTRA_DIMS}
    unknown = [d for d in da.dims if d not in allowed]
    if unknown:
        raise DataError(f"{func}: {da.name or 'data'} has unknown dims {tuple(unknown)}; expected "
                        f"({row!r}, {col!r}, {spec!r}) (+ optional {_data.EXTRA_DIMS})")
    return _data.canonical(da), row, col, spec


def roi_image(data, lo, hi, *, by: str = "value", background: str = "none",
              edge_channels: int = 1) -> xr.DataArray:
    """Integrated intensity of a spectral window per pixel, with optional background subtraction.

    Parameters
    ----------
    data : xarray.DataArray or Dataset
        Volume ``(y, x, spectral)`` or sinogram stack (any dim order; leading ``time``/``z``
        allowed).
    lo, hi : float or int
        The window: coordinate values in spectral units (``by="value"``, closed interval) or
        channel indices (``by="index"``, half-open), see :func:`xrdwidgets.explore.windows.window_indices`.
    by : {"value", "index"}
    background : {"none", "edges", "linear"}
        ``"none"``: plain sum. ``"edges"``: subtract, from every channel, the mean of the
        ``edge_channels`` first and last channels of the window (a flat background per pixel).
        ``"linear"``: subtract the per-pixel straight line (in the spectral coordinate) through
        the means of the first and of the last ``edge_channels`` channels.
    edge_channels : int
        Channels at each end of the window that estimate the background (≥ 1; the window must
        hold at least ``2 × edge_channels`` channels when a background is subtracted).

    Returns
    -------
    xarray.DataArray
        ``(…, y, x)``: Σ over the window of (intensity − background), in the data's units; attrs
        ``long_name``, ``units``, ``window_lo``/``window_hi`` (coordinate values of the first and
        last channel), ``window_channels`` ``[i0, i1]`` (half-open), ``window_units``,
        ``background``.
    """
    da, row, col, spec = _prepare(data, "roi_image")
    if background not in BACKGROUNDS:
        raise DataError(f"roi_image: background must be one of {BACKGROUNDS}, found {background!r}")
    if isinstance(edge_channels, bool) or not isinstance(edge_channels, (int, np.integer)) or edge_channels < 1:
        raise DataError(f"roi_image: edge_channels must be an integer >= 1, found {edge_channels!r}")
    i0, i1 = window_indices(da[spec], lo, hi, by=by, name="roi_image")
    n = i1 - i0
    if background != "none" and n < 2 * edge_channels:
        raise DataError(
            f"roi_image: background={background!r} needs a window of at least 2 × edge_channels = "
            f"{2 * edge_channels} channels, found {n} channels ({spec} index {i0}..{i1 - 1})"
        )
    extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
    if not extra:
        img = window_sum(da, i0, i1, by="index")
        values = img.values.astype(np.float64) if background != "none" else img.values
    else:
        window = da.isel({spec: slice(i0, i1)})
        values = np.asarray(window.sum(spec).values, dtype=np.float64)
    if background != "none":
        c = np.asarray(da[spec].values[i0:i1], dtype=float)
        e = int(edge_channels)
        left = np.asarray(da.isel({spec: slice(i0, i0 + e)}).mean(spec).values, dtype=float)
        right = np.asarray(da.isel({spec: slice(i1 - e, i1)}).mean(spec).values, dtype=float)
        if background == "edges":
            bg_sum = n * 0.5 * (left + right)
        else:
            c_left, c_right = c[:e].mean(), c[-e:].mean()
            frac = (c - c_left) / (c_right - c_left)  # 0 at the left edge mean, 1 at the right
            bg_sum = n * left + (right - left) * frac.sum()
        values = values - bg_sum
        values = values.astype(np.result_type(da.dtype, np.float32), copy=False)
    dims = tuple(extra) + (row, col)
    coords = {d: da[d] for d in dims}
    units = str(da.attrs.get("units", ""))
    name = str(da.attrs.get("long_name", da.name or "intensity"))
    window = window_attrs(da.transpose(*dims, spec), i0, i1)
    attrs = {
        "units": units,
        "long_name": f"Σ {name}" + ("" if background == "none" else f" − {background} background"),
        **window,
        "background": background,
        "edge_channels": int(edge_channels),
    }
    return xr.DataArray(values, dims=dims, coords=coords, name=f"roi_{spec}", attrs=attrs)


def _robust_limits(values, lo=1.0, hi=99.0):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise DataError("no finite values")
    return float(np.percentile(v, lo)), float(np.percentile(v, hi))


def roi_mask(image, threshold=None, *, fraction: float = 0.5, above: bool = True) -> xr.DataArray:
    """Boolean mask of the pixels of ``image`` above (or below) a threshold.

    Parameters
    ----------
    image : xarray.DataArray or array-like
        2-D image ``(y, x)`` (e.g. from :func:`roi_image`).
    threshold : float, optional
        Absolute threshold in the image's units. Default: ``p1 + fraction × (p99 − p1)`` with
        ``p1``/``p99`` the 1st/99th percentiles of the image (robust to outliers).
    fraction : float
        Position of the default threshold within the robust range, 0–1.
    above : bool
        ``True``: mask = image > threshold; ``False``: mask = image < threshold.

    Returns
    -------
    xarray.DataArray
        Boolean ``(y, x)`` (the image's coords); attrs ``threshold``, ``n_pixels``.
    """
    if not isinstance(image, xr.DataArray):
        arr = np.asarray(image)
        if arr.ndim != 2:
            raise DataError(f"roi_mask: image must be 2-D (y, x), found shape {arr.shape}")
        image = xr.DataArray(arr, dims=("y", "x"))
    img = image
    if img.ndim != 2:
        raise DataError(f"roi_mask: image must be 2-D (y, x), found dims {img.dims} with shape {img.shape}")
    if threshold is None:
        if not 0 <= float(fraction) <= 1:
            raise DataError(f"roi_mask: fraction must be within [0, 1], found {fraction!r}")
        try:
            p1, p99 = _robust_limits(img.values)
        except DataError:
            raise DataError("roi_mask: image has no finite values") from None
        threshold = p1 + float(fraction) * (p99 - p1)
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise DataError(f"roi_mask: threshold must be finite, found {threshold!r}")
    vals = np.asarray(img.values, dtype=float)
    mask = (vals > threshold) if above else (vals < threshold)
    out = xr.DataArray(mask, dims=img.dims, coords=img.coords, name="mask")
    out.attrs.update({"threshold": threshold, "above": bool(above), "n_pixels": int(mask.sum()),
                      "long_name": f"ROI mask ({'>' if above else '<'} {threshold:.4g})"})
    return out


def roi_pattern(data, mask=None, *, threshold=None, image=None, fraction: float = 0.5,
                above: bool = True) -> xr.DataArray:
    """Mean diffraction pattern of the pixels in a mask.

    Parameters
    ----------
    data : xarray.DataArray or Dataset
        Volume ``(y, x, spectral)`` (any order; leading ``time``/``z`` are kept in the result).
    mask : boolean array or xarray.DataArray ``(y, x)``, optional
        The pixels to average. Without a mask, one is made by :func:`roi_mask` from ``image``
        (default: the total intensity, sum over all channels) with ``threshold``/``fraction``/
        ``above``.
    threshold, image, fraction, above :
        See :func:`roi_mask`; used only when ``mask`` is None.

    Returns
    -------
    xarray.DataArray
        ``(…, spectral)``: the mean over the masked pixels, in the data's units; attrs
        ``n_pixels`` and ``long_name``.
    """
    da, row, col, spec = _prepare(data, "roi_pattern")
    shape = (da.sizes[row], da.sizes[col])
    if mask is None:
        if image is None:
            image = window_sum(da, 0, da.sizes[spec], by="index") if da.ndim == 3 else \
                da.sum(spec).mean([d for d in da.dims if d in _data.EXTRA_DIMS])
        mask = roi_mask(image, threshold, fraction=fraction, above=above)
    if isinstance(mask, xr.DataArray):
        if set(mask.dims) != {row, col}:
            raise DataError(f"roi_pattern: mask must have dims ({row!r}, {col!r}), found {mask.dims}")
        m = np.asarray(mask.transpose(row, col).values)
    else:
        m = np.asarray(mask)
    if m.shape != shape:
        raise DataError(f"roi_pattern: mask must have shape {shape} ({row}, {col}) like the data, "
                        f"found {m.shape}")
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))):
            raise DataError(f"roi_pattern: mask must be boolean (or 0/1), found dtype {m.dtype}")
        m = m.astype(bool)
    n = int(m.sum())
    if n == 0:
        raise DataError("roi_pattern: the mask selects no pixels; lower the threshold or draw a larger ROI")
    if da.ndim == 3 and isinstance(da.data, np.ndarray):
        values = da.data[m].mean(axis=0, dtype=np.float64)
        out = xr.DataArray(values, dims=(spec,), coords={spec: da[spec]})
    else:
        sel = xr.DataArray(m, dims=(row, col))
        out = da.where(sel).mean((row, col), dtype=np.float64)
    out.name = "roi_pattern"
    out.attrs.update({
        "units": da.attrs.get("units", ""),
        "long_name": f"mean {da.attrs.get('long_name', da.name or 'intensity')} of {n} pixels",
        "n_pixels": n,
    })
    return out


def suggest_peaks(pattern, *, prominence=None, relative_prominence: float = 0.05,
                  max_peaks: int | None = None, min_distance=None) -> xr.DataArray:
    """Peak positions of a pattern, found with :func:`scipy.signal.find_peaks`.

    Parameters
    ----------
    pattern : xarray.DataArray
        1-D over a spectral dim (e.g. from :func:`roi_pattern` or
        :func:`xrdwidgets.explore.slicing.pattern_at`). A plain 1-D array is taken over channel indices.
    prominence : float, optional
        Minimum prominence in the pattern's units. Default: the larger of
        ``relative_prominence × (max − p5)`` (p5 = 5th percentile: the robust range of the
        pattern) and 4 × the noise level (from the median absolute second difference).
    relative_prominence : float
        See ``prominence``.
    max_peaks : int, optional
        Keep only the most prominent peaks.
    min_distance : float, optional
        Minimum distance between peaks, in the units of the spectral coordinate.

    Returns
    -------
    xarray.DataArray
        ``position`` over dim ``peak`` (sorted by position), in the spectral units (attr
        ``units``), with coords ``prominence``, ``height`` and ``channel`` (index).
    """
    from scipy.signal import find_peaks

    if isinstance(pattern, xr.DataArray):
        if pattern.ndim != 1:
            raise DataError(f"suggest_peaks: pattern must be 1-D (spectral), found dims {pattern.dims}")
        dim = pattern.dims[0]
        coord = np.asarray(pattern[dim].values, dtype=float) if dim in pattern.coords else \
            np.arange(pattern.size, dtype=float)
        units = pattern[dim].attrs.get("units", "") if dim in pattern.coords else "channel"
    else:
        pattern = np.asarray(pattern, dtype=float)
        if pattern.ndim != 1:
            raise DataError(f"suggest_peaks: pattern must be 1-D, found shape {pattern.shape}")
        dim, coord, units = "channel", np.arange(pattern.size, dtype=float), "channel"
    y = np.asarray(pattern, dtype=float)
    if y.size < 3:
        raise DataError(f"suggest_peaks: pattern needs at least 3 channels, found {y.size}")
    if not np.all(np.isfinite(y)):
        raise DataError(f"suggest_peaks: pattern has {int(np.sum(~np.isfinite(y)))} NaN/inf values")
    if prominence is None:
        p5 = float(np.percentile(y, 5))
        noise = 1.4826 * float(np.median(np.abs(np.diff(y, 2)))) / np.sqrt(6.0)
        prominence = max(float(relative_prominence) * (float(y.max()) - p5), 4.0 * noise)
        if prominence <= 0:
            prominence = np.finfo(float).tiny
    kwargs = {"prominence": float(prominence)}
    if min_distance is not None:
        step = float(np.median(np.abs(np.diff(coord))))
        kwargs["distance"] = max(1.0, float(min_distance) / step)
    idx, props = find_peaks(y, **kwargs)
    prom = props["prominences"]
    if max_peaks is not None and idx.size > int(max_peaks):
        keep = np.sort(np.argsort(prom)[::-1][: int(max_peaks)])
        idx, prom = idx[keep], prom[keep]
    order = np.argsort(coord[idx])
    idx, prom = idx[order], prom[order]
    log.debug("suggest_peaks: %d peaks with prominence >= %.4g", idx.size, prominence)
    return xr.DataArray(
        coord[idx], dims=("peak",),
        coords={"prominence": ("peak", prom), "height": ("peak", y[idx]), "channel": ("peak", idx)},
        name="position",
        attrs={"units": units, "long_name": f"peak position ({dim})", "min_prominence": float(prominence)},
    )
