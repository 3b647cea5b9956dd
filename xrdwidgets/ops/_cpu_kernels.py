"""Optional numba kernel for the CPU back-projection of a few channels.

Used by :class:`~xrdwidgets.ops.projector.ParallelProjector` when numba is installed (the
``fast`` extra) and the data are on the CPU; otherwise torch's ``grid_sample`` does the same
sampling. The kernel computes exactly the projector's adjoint (hat-function interpolation along
the translation axis), pixel row by pixel row in parallel.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

try:  # pragma: no cover - availability depends on the environment
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "backproject_rows"]

if HAVE_NUMBA:

    @njit(parallel=True, fastmath=True, cache=True)
    def _bp(sp, cos_t, sin_t, n, shift, col_start, col_stop, out):  # pragma: no cover - jitted
        n_a, m = sp.shape
        n_t = m - 3
        c = (n - 1) / 2.0
        for r in prange(n):
            y = r - c
            c0 = col_start[r]
            c1 = col_stop[r]
            for a in range(n_a):
                ca = cos_t[a]
                u0 = shift - y * sin_t[a] - c * ca + 1.0
                row = sp[a]
                for col in range(c0, c1):
                    u = min(max(u0 + col * ca, 0.0), n_t + 1.0)
                    i0 = int(u)
                    w = u - i0
                    out[r, col] += row[i0] + w * (row[i0 + 1] - row[i0])
        return out


def backproject_rows(sino_at: np.ndarray, angles_deg, n: int, centre_offset: float,
                     col_start: np.ndarray, col_stop: np.ndarray) -> np.ndarray:
    """Adjoint of the pixel-driven projector for one sinogram.

    Parameters
    ----------
    sino_at : numpy.ndarray
        ``(n_angles, n_translations)`` float32 (angle-major).
    angles_deg : array
        Angles in degrees.
    n : int
        Image size.
    centre_offset : float
        Rotation axis offset from the middle of the translations, in steps.
    col_start, col_stop : numpy.ndarray
        Per image row, the range of columns in the support (others stay zero).

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float32 back-projection.
    """
    n_a, n_t = sino_at.shape
    sp = np.zeros((n_a, n_t + 3), np.float32)  # one zero bin left, two right: no bounds checks
    sp[:, 1:n_t + 1] = sino_at
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    out = np.zeros((n, n), np.float32)
    shift = (n_t - 1) / 2.0 + float(centre_offset)
    _bp(sp, np.cos(th).astype(np.float32), np.sin(th).astype(np.float32), int(n), shift,
        col_start.astype(np.int64), col_stop.astype(np.int64), out)
    return out
