"""Air-scatter removal: the background measured at sample-free edge translations, subtracted
from every point of the stack.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .. import data as _data
from ..base.errors import DataError
from ._common import (angle_coord, as_stack, channel_sum, check_choice, float_values, robust_std,
                      with_correction)
from .report import AirResult, applied_corrections

log = logging.getLogger(__name__)

__all__ = ["AIR_MODES", "STATISTICS", "detect_edges", "remove_air"]

#: Air-scatter background models of :func:`remove_air`.
AIR_MODES = ("auto", "scaled", "global", "per_angle")
#: Statistics over the edge translations.
STATISTICS = ("mean", "median")


def detect_edges(summed, *, threshold: float = 0.02, n_sigma: float = 5.0) -> tuple[int, int]:
    """Number of air-only (sample-free) translations at both ends of a summary sinogram.

    Parameters
    ----------
    summed : array (translation, angle)
        Channel-summed sinogram (with or without air and decay).
    threshold : float
        A translation holds sample when, at some angle, it rises above the air level by more
        than ``threshold`` of the sinogram's range or ``n_sigma`` noise standard deviations.
    n_sigma : float
        See ``threshold``.

    Returns
    -------
    (left, right) : (int, int)
        Empty translations at the low-index and the high-index end (each < half the
        translations; either may be 0).

    Notes
    -----
    Each projection is first divided by its total (which removes beam decay, as sample and air
    scale alike); the air level is the median over angles of the lowest translation, and the
    noise its robust spread over angles.
    """
    s = np.asarray(summed, dtype=np.float64)
    if s.ndim != 2:
        raise DataError(f"summed: expected a 2-D (translation, angle) array, found shape {s.shape}")
    n_t = s.shape[0]
    tot = s.sum(axis=0)
    tot = np.where(tot > 0, tot, 1.0)
    norm = s / tot[None, :] * n_t
    med = np.median(norm, axis=1)
    low = int(np.argmin(med))
    air = float(med[low])
    sigma = robust_std(norm[low])
    peak = norm.max(axis=1)
    limit = air + max(n_sigma * sigma, threshold * (float(peak.max()) - air))
    empty = peak <= limit
    half = (n_t - 1) // 2
    left = int(np.argmin(empty)) if not empty.all() else half
    right = int(np.argmin(empty[::-1])) if not empty.all() else half
    return min(left, half), min(right, half)


def _edge_indices(edge, n_t, summed, threshold) -> tuple[tuple[int, int], bool]:
    if edge is None:
        left, right = detect_edges(summed, threshold=threshold)
        if left + right == 0:
            raise DataError("stack: found no air-only translation at either end (the sample fills the "
                            "translation range); pass edge=k (translations per side) or edge=(left, right)")
        log.info("remove_air: detected %d + %d air-only edge translations", left, right)
        return (left, right), True
    if np.ndim(edge) == 0:
        edge = (edge, edge)
    try:
        left, right = (int(e) for e in edge)
    except (TypeError, ValueError):
        raise DataError(f"edge: expected None, an int or (left, right), found {edge!r}") from None
    if left < 0 or right < 0 or left + right == 0:
        raise DataError(f"edge: expected non-negative edge widths with at least one translation, found "
                        f"{edge!r}")
    if max(left, right) >= n_t / 2:
        raise DataError(f"edge: expected each edge width < half the translations ({n_t} / 2 = {n_t / 2:g}), "
                        f"found {(left, right)}")
    return (left, right), False


def _stat(x, statistic, axis):
    return np.mean(x, axis=axis) if statistic == "mean" else np.median(x, axis=axis)


def _air_background(values, idx, mode, statistic):
    """(background broadcastable to (n_t, n_a, C), pattern (C,), scale (n_a,), mode used)."""
    edge = values[idx].astype(np.float64)  # (E, n_a, C)
    n_a = edge.shape[1]
    if mode == "scaled":
        e = edge.sum(axis=(0, 2))
        med = float(np.median(e))
        if med > 0 and np.all(e > 0.05 * med):
            scale = e / med
            pattern = _stat((edge / scale[None, :, None]).reshape(-1, edge.shape[2]), statistic, axis=0)
            return scale[None, :, None] * pattern[None, None, :], pattern, scale, mode
        log.info("remove_air: the edge intensity is too weak or noisy to scale per angle; "
                    "using one global pattern")
        mode = "global"
    if mode == "global":
        pattern = _stat(edge.reshape(-1, edge.shape[2]), statistic, axis=0)
        return pattern[None, None, :], pattern, np.ones(n_a), mode
    per = _stat(edge, statistic, axis=0)  # (n_a, C)
    pattern = per.mean(axis=0)
    tot = float(pattern.sum())
    scale = per.sum(axis=1) / tot if tot != 0 else np.ones(n_a)
    return per[None, :, :], pattern, scale, mode


def remove_air(stack, *, edge=None, mode: str = "auto", statistic: str = "mean", clip: bool = False,
               threshold: float = 0.02) -> tuple[xr.DataArray, AirResult]:
    """Subtract the air-scatter background estimated from sample-free edge translations.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral), any dim order.
    edge : None, int or (int, int)
        Air-only translations at the (low-index, high-index) ends; an int for both; ``None``
        detects them from the channel sum (:func:`detect_edges`). Each must be < half the
        translations.
    mode : {"auto", "scaled", "global", "per_angle"}
        ``"scaled"``: one pattern × a per-angle scale (the edge intensity per projection, which
        follows beam decay); ``"global"``: one pattern for all angles (least noise; right once
        the decay is normalised); ``"per_angle"``: a pattern per angle (noisy with narrow
        edges). ``"auto"``: ``"global"`` when ``attrs["corrections"]`` records a decay
        normalisation, else ``"scaled"``.
    statistic : {"mean", "median"}
        Over the edge points (the mean is unbiased for Poisson counts; the median resists
        outliers such as zingers).
    clip : bool
        Set negative results to 0.
    threshold : float
        Detection threshold of :func:`detect_edges`.

    Returns
    -------
    (xarray.DataArray, AirResult)
        Corrected stack (translation, angle, spectral) and the report.
    """
    da = as_stack(stack)
    check_choice("mode", mode, AIR_MODES)
    check_choice("statistic", statistic, STATISTICS)
    if mode == "auto":
        mode = "global" if "decay" in applied_corrections(da) else "scaled"
    vals = float_values(da)
    n_t = vals.shape[0]
    (left, right), detected = _edge_indices(edge, n_t, channel_sum(vals), threshold)
    idx = np.r_[np.arange(left), np.arange(n_t - right, n_t)]
    bg, pattern, scale, mode = _air_background(vals, idx, mode, statistic)
    out = vals - bg.astype(vals.dtype)
    n_clipped = 0
    if clip:
        neg = out < 0
        n_clipped = int(neg.sum())
        out[neg] = 0
    spec = _data.spectral_dim(da)
    pat = xr.DataArray(pattern, dims=(spec,), coords={spec: da[spec]}, name="air",
                       attrs={"long_name": "air-scatter pattern per point", "units": da.attrs.get("units", "1")})
    report = AirResult(edges=(left, right), detected=detected, mode=mode, statistic=statistic, pattern=pat,
                       scale=angle_coord(da, scale, "relative air level", "1"), n_clipped=n_clipped)
    log.info("%s", report.summary())
    params = dict(edges=[left, right], detected=detected, mode=mode, statistic=statistic, clip=clip)
    return with_correction(da, out, "air", params), report
