"""Sub-step shifts of projections along the translation axis (jitter and centre corrections)."""
from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ..base.errors import DataError
from ._common import check_choice

__all__ = ["INTERPOLATIONS", "shift_projections", "fourier_shift_axis0"]

#: Sub-step shift methods of :func:`shift_projections`.
INTERPOLATIONS = ("fourier", "linear")


def fourier_shift_axis0(x: np.ndarray, shifts) -> np.ndarray:
    """Shift ``x`` along axis 0 by a sub-step amount with a Fourier phase ramp, edge-padded.

    Parameters
    ----------
    x : numpy.ndarray (n, ...)
        Profiles along axis 0 (e.g. translation), any trailing axes.
    shifts : float or array broadcastable to ``x.shape[1:]``
        Shift in samples (translation steps); positive moves the content towards higher indices
        (``out[i] = x[i - shift]``).

    Returns
    -------
    numpy.ndarray
        Same shape as ``x``; outside the measured range the edge values are repeated (nothing
        wraps around).
    """
    n = x.shape[0]
    shifts = np.asarray(shifts, dtype=np.float64)
    pad = int(math.ceil(float(np.abs(shifts).max(initial=0.0)))) + 8 + n // 4
    size = sfft.next_fast_len(n + 2 * pad, real=True)
    xp = np.concatenate([np.repeat(x[:1], pad, axis=0), x,
                         np.repeat(x[-1:], size - n - pad, axis=0)], axis=0)
    f = sfft.rfft(xp, axis=0, workers=-1)
    k = np.arange(f.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
    phase = np.exp(-2j * np.pi * k * shifts[None, ...] / size)
    if size % 2 == 0:  # keep the Nyquist term real (symmetric), as an integer shift would
        phase[-1] = np.cos(np.pi * shifts)
    out = sfft.irfft(f * phase.astype(f.dtype), n=size, axis=0, workers=-1)
    return out[pad:pad + n]


def _linear_shift(x: np.ndarray, shift: float) -> np.ndarray:
    """Shift ``x`` along axis 0 by ``shift`` steps with linear interpolation, edge values outside."""
    n = x.shape[0]
    src = np.arange(n) - float(shift)
    i0 = np.floor(src)
    w = (src - i0).reshape((-1,) + (1,) * (x.ndim - 1))
    i0 = i0.astype(np.int64)
    a = x[np.clip(i0, 0, n - 1)]
    b = x[np.clip(i0 + 1, 0, n - 1)]
    return a * (1.0 - w) + b * w


def shift_projections(values, shifts_steps, *, interpolation: str = "fourier",
                      chunk: int = 256) -> np.ndarray:
    """Shift every projection of a stack along the translation axis by a sub-step amount.

    Parameters
    ----------
    values : array (translation, angle[, channel])
        Sinogram or stack.
    shifts_steps : float or array (angle,)
        Shift per projection in translation steps; positive moves the content towards higher
        translation indices (``out[i] = in[i - shift]``).
    interpolation : {"fourier", "linear"}
        Fourier phase ramp (exact for band-limited profiles; edge-padded so nothing wraps
        around) or linear interpolation (no ringing, slight smoothing). Outside the measured
        range the edge values are repeated.
    chunk : int
        Channels per batch (bounds the working memory of the Fourier shift).

    Returns
    -------
    numpy.ndarray
        Same shape and float dtype as ``values``.
    """
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    x = np.asarray(values)
    if x.ndim not in (2, 3):
        raise DataError(f"values: expected (translation, angle[, channel]), found shape {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    n_a = x.shape[1]
    s = np.broadcast_to(np.asarray(shifts_steps, dtype=np.float64), (n_a,))
    if not np.all(np.isfinite(s)):
        raise DataError("shifts_steps: expected finite shifts (steps)")
    x3 = x if x.ndim == 3 else x[:, :, None]
    out = np.empty(x3.shape, dtype=dtype)
    if interpolation == "fourier":
        for c0 in range(0, x3.shape[2], max(1, int(chunk))):
            c1 = min(x3.shape[2], c0 + max(1, int(chunk)))
            out[:, :, c0:c1] = fourier_shift_axis0(x3[:, :, c0:c1], s[:, None])
    else:
        for j in range(n_a):
            out[:, j, :] = _linear_shift(x3[:, j, :], s[j])
    return out if x.ndim == 3 else out[:, :, 0]
