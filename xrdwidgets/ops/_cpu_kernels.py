"""Optional numba kernels: the projector and its adjoint without a stored matrix (CPU).

Used by :class:`~xrdwidgets.ops.projector.ParallelProjector` when numba is installed (the
``fast`` extra) and the data are on the CPU, for single images (no matrix to build) and for
sizes whose sparse matrix does not fit the memory budget. Both kernels use exactly the
projector's hat-function weights; the forward scatters pixel values into the two nearest
translation bins (parallel over angles, so no two threads write the same bin) and the adjoint
gathers them back (parallel over image rows). Channels are the innermost, contiguous axis.

Layouts: sinograms ``(n_angles, n_translations + 3, C)`` with one zero bin on the left and two on
the right (no bounds checks in the loops); images ``(n, n, C)``.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np

log = logging.getLogger(__name__)

try:  # pragma: no cover - availability depends on the environment
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "backproject", "project"]

if HAVE_NUMBA:

    @njit(parallel=True, fastmath=True, cache=True)
    def _bp(sp, cos_t, sin_t, n, shift, col_start, col_stop, out):  # pragma: no cover - jitted
        n_a, m, C = sp.shape
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
                    v0 = row[i0]
                    v1 = row[i0 + 1]
                    o = out[r, col]
                    for k in range(C):
                        o[k] += v0[k] + w * (v1[k] - v0[k])
        return out

    @njit(parallel=True, fastmath=True, cache=True)
    def _fp(img, cos_t, sin_t, shift, col_start, col_stop, sp):  # pragma: no cover - jitted
        n, _, C = img.shape
        n_a, m, _ = sp.shape
        n_t = m - 3
        c = (n - 1) / 2.0
        for a in prange(n_a):
            ca = cos_t[a]
            sa = sin_t[a]
            row = sp[a]
            for r in range(n):
                u0 = shift - (r - c) * sa - c * ca + 1.0
                for col in range(col_start[r], col_stop[r]):
                    u = min(max(u0 + col * ca, 0.0), n_t + 1.0)
                    i0 = int(u)
                    w = u - i0
                    x = img[r, col]
                    b0 = row[i0]
                    b1 = row[i0 + 1]
                    for k in range(C):
                        b0[k] += (1.0 - w) * x[k]
                        b1[k] += w * x[k]
        return sp


@contextmanager
def _threads_like_torch():
    """Run a numba kernel with torch's thread count, and leave torch's count as it was.

    numba's OpenMP threading layer sets the process-wide OpenMP thread count to its own (all
    cores) when it starts; torch shares that OpenMP runtime, so after one numba call a torch set
    to 1 thread (``OMP_NUM_THREADS=1``) would run with all cores — measured 12× slower for a
    small convolution on this 2-core machine when other work competes for the cores.
    """
    import numba
    import torch

    n = torch.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def _trig(angles_deg):
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    return np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)


def backproject(sino, angles_deg, n: int, centre_offset: float, col_start, col_stop) -> np.ndarray:
    """Adjoint of the pixel-driven projector.

    Parameters
    ----------
    sino : numpy.ndarray
        ``(n_translations, n_angles, C)`` float32.
    angles_deg : array
        Angles in degrees.
    n : int
        Image size.
    centre_offset : float
        Rotation axis offset from the middle of the translations, in steps.
    col_start, col_stop : numpy.ndarray
        Per image row, the columns ``[start, stop)`` of the support (others stay zero).

    Returns
    -------
    numpy.ndarray
        ``(n, n, C)`` float32.
    """
    n_t, n_a, C = sino.shape
    sp = np.zeros((n_a, n_t + 3, C), np.float32)
    sp[:, 1:n_t + 1] = np.transpose(sino, (1, 0, 2))
    out = np.zeros((n, n, C), np.float32)
    cos_t, sin_t = _trig(angles_deg)
    with _threads_like_torch():
        _bp(sp, cos_t, sin_t, int(n), (n_t - 1) / 2.0 + float(centre_offset),
            np.asarray(col_start, np.int64), np.asarray(col_stop, np.int64), out)
    return out


def project(img, angles_deg, n_t: int, centre_offset: float, col_start, col_stop) -> np.ndarray:
    """Forward pixel-driven projection (exact transpose of :func:`backproject`).

    Parameters
    ----------
    img : numpy.ndarray
        ``(n, n, C)`` float32; only the support given by ``col_start``/``col_stop`` is read.
    angles_deg : array
        Angles in degrees.
    n_t : int
        Number of translations.
    centre_offset : float
        Rotation axis offset in steps.

    Returns
    -------
    numpy.ndarray
        ``(n_t, n_angles, C)`` float32.
    """
    n, _, C = img.shape
    cos_t, sin_t = _trig(angles_deg)
    sp = np.zeros((cos_t.size, n_t + 3, C), np.float32)
    with _threads_like_torch():
        _fp(np.ascontiguousarray(img, np.float32), cos_t, sin_t, (n_t - 1) / 2.0 + float(centre_offset),
            np.asarray(col_start, np.int64), np.asarray(col_stop, np.int64), sp)
    return np.ascontiguousarray(np.transpose(sp[:, 1:n_t + 1], (1, 0, 2)))
