"""Motor-jitter correction: each projection shifted so that its centre of mass follows the
sinusoid of a parallel-beam scan.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from ..base.errors import DataError
from ._common import (angle_coord, angles_of, as_stack, channel_sum, check_choice, float_values, robust_std,
                      with_correction)
from .report import JitterResult
from .shift import INTERPOLATIONS, shift_projections

log = logging.getLogger(__name__)

__all__ = ["centre_of_mass", "fit_sinusoid", "correct_jitter"]


def centre_of_mass(summed) -> np.ndarray:
    """Centre of mass of every projection, steps from the middle of the translations.

    Parameters
    ----------
    summed : array (translation, angle)
        Background-free summary sinogram.

    Returns
    -------
    numpy.ndarray (angle,)
    """
    s = np.asarray(summed, dtype=np.float64)
    n_t = s.shape[0]
    tot = s.sum(axis=0)
    bad = np.nonzero(~(tot > 0))[0]
    if bad.size:
        raise DataError(f"stack: projections at angle indices {bad[:10].tolist()} have no positive total "
                        "intensity; a centre of mass needs signal in every projection")
    pos = np.arange(n_t) - (n_t - 1) / 2.0
    return (pos[:, None] * s).sum(axis=0) / tot


def fit_sinusoid(values, angles_deg, *, robust: bool = True, n_iter: int = 10) -> tuple:
    """Fit ``v(θ) = c + a cos θ + b sin θ`` by (Huber-weighted) least squares.

    Parameters
    ----------
    values : array (angle,)
    angles_deg : array (angle,)
        Angles in degrees (any coverage of at least three distinct angles).
    robust : bool
        Iteratively reweighted least squares with Huber weights (k = 2 robust σ) so that a few
        large slips do not bend the fit.

    Returns
    -------
    ((c, a, b), fitted) : (tuple of float, numpy.ndarray (angle,))
    """
    v = np.asarray(values, float)
    th = np.deg2rad(np.asarray(angles_deg, float))
    if v.shape != th.shape or v.size < 3:
        raise DataError(f"fit_sinusoid: expected matching 1-D values and angles with >= 3 angles, found "
                        f"shapes {v.shape} and {th.shape}")
    A = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)
    w = np.ones_like(v)
    for _ in range(n_iter if robust else 1):
        coef, *_ = np.linalg.lstsq(A * w[:, None], v * w, rcond=None)
        r = v - A @ coef
        s = robust_std(r)
        if not robust or s <= 0:
            break
        w_new = np.sqrt(np.minimum(1.0, 2.0 * s / np.maximum(np.abs(r), 1e-300)))
        if np.allclose(w_new, w):
            break
        w = w_new
    return tuple(float(c) for c in coef), A @ coef


def correct_jitter(stack, *, interpolation: str = "fourier", robust: bool = True) -> tuple[xr.DataArray, JitterResult]:
    """Shift each projection so that its centre of mass follows the fitted sinusoid.

    The centre of mass (COM) of the channel-summed projection at angle θ is fitted by
    ``c + a cos θ + b sin θ`` (:func:`fit_sinusoid`); the residual is the motor jitter and every
    channel of that projection is shifted by minus it. The part of the jitter that itself looks
    like a sinusoid (a mean shift or a sample displacement) cannot be told apart from the axis
    position / sample position and is left in place.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Background-free sinogram stack (translation, angle, spectral); remove air first.
    interpolation : {"fourier", "linear"}
        Sub-step shift method, see :func:`.shift_projections`.
    robust : bool
        Huber-weighted fit (resists a few large slips).

    Returns
    -------
    (xarray.DataArray, JitterResult)
    """
    da = as_stack(stack)
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    angles = angles_of(da)
    if angles.size < 4:
        raise DataError(f"stack: the jitter fit needs at least 4 angles, found {angles.size}")
    vals = float_values(da)
    com = centre_of_mass(channel_sum(vals))
    coef, fit = fit_sinusoid(com, angles, robust=robust)
    shifts = fit - com
    out = shift_projections(vals, shifts, interpolation=interpolation)
    report = JitterResult(shifts_steps=angle_coord(da, shifts, "applied projection shift", "steps"),
                          com_steps=angle_coord(da, com, "projection centre of mass", "steps"),
                          sinusoid=coef, axis_offset_steps=coef[0],
                          rms_steps=float(np.sqrt(np.mean(shifts ** 2))), interpolation=interpolation)
    log.info("%s", report.summary())
    params = dict(interpolation=interpolation, robust=robust, sinusoid=list(coef))
    return with_correction(da, out, "jitter", params), report
