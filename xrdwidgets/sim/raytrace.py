"""The simulator's ray tracer: pencil-beam line integrals of an image stack by fine sampling.

Geometry conventions (angles, translations, the rotation axis) are those of
:mod:`xrdwidgets.sim.scan`. :func:`ray_trace` is the forward model of :func:`~xrdwidgets.sim.scan.acquire`;
the ray helpers (:func:`ray_offsets`, :func:`sample_positions`, :func:`ray_points`,
:func:`interpolation_weights`) are shared with the thick-sample and raw-frame simulators.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from ..base.errors import InputError
from ..base.validators import check_float, check_int
from ..data import DataError

log = logging.getLogger(__name__)

__all__ = ["ray_trace", "ray_offsets", "interpolation_weights"]

_PAD3 = 8  # zero padding (pixels) around the volume for cubic B-spline prefiltering


# ============================================================================ ray geometry
def check_count(name, value, minimum=1):
    """``value`` as an int >= ``minimum`` (a count of rays, angles, sub-rays...); ``InputError`` naming ``name``."""
    return check_int("", name, value, minimum=minimum)


def check_number(name, value, *, positive=False):
    """``value`` as a finite float (> 0 with ``positive``); ``InputError`` naming ``name``."""
    return check_float("", name, value, minimum=0.0 if positive else None, strict=True)


def check_angles(angles_deg, name="angles_deg"):
    """``angles_deg`` as a non-empty 1-D float array of finite angles (degrees)."""
    a = np.asarray(angles_deg, dtype=float).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise InputError(f"{name}: expected a non-empty array of finite angles in degrees, found {angles_deg!r}")
    return a


def ray_offsets(n_translations: int, *, translation_step: float = 1.0, centre_offset: float = 0.0,
                shifts=None, n_angles: int = 1) -> np.ndarray:
    """Signed distance of every ray from the rotation axis, in pixels.

    Parameters
    ----------
    n_translations : int
    translation_step : float
        Translation step in pixels.
    centre_offset : float
        Rotation-axis position relative to the middle of the translation range, in steps.
    shifts : array (n_angles,), optional
        Extra per-angle shift in steps (motor jitter), same sign as ``centre_offset``.
    n_angles : int
        Used when ``shifts`` is ``None``.

    Returns
    -------
    numpy.ndarray, shape (n_translations, n_angles)
        ``p[i, j] = (i - (n_t - 1)/2 - centre_offset - shifts[j]) · translation_step``.
    """
    shifts = np.zeros(n_angles) if shifts is None else np.asarray(shifts, float).ravel()
    i = np.arange(n_translations, dtype=float) - (n_translations - 1) / 2.0
    return (i[:, None] - centre_offset - shifts[None, :]) * translation_step


def sample_positions(shape, sample_step, margin):
    """Midpoint-rule positions ``s`` (pixels) along a ray covering the padded image, and step."""
    ny, nx = shape
    half = math.hypot((ny - 1) / 2.0 + margin, (nx - 1) / 2.0 + margin)
    n = max(2, int(math.ceil(2.0 * half / sample_step)))
    h = 2.0 * half / n
    return -half + (np.arange(n) + 0.5) * h, h


def ray_points(shape, theta_rad, p, s):
    """(y, x) of sample points: ``p`` (..., n_rays) per angle ``theta`` (...,), ``s`` (K,).

    Returns arrays of shape ``theta.shape + p.shape[-1:] + (K,)``.
    """
    ny, nx = shape
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    c = np.cos(theta_rad)[..., None, None]
    sn = np.sin(theta_rad)[..., None, None]
    pp = p[..., :, None]
    x = cx + pp * c + s * sn
    y = cy - pp * sn + s * c
    return y, x


def _bspline3(t):
    """Cubic B-spline weights of the 4 neighbours ``floor-1 .. floor+2`` for fraction ``t``."""
    t2 = t * t
    t3 = t2 * t
    return ((1 - t) ** 3 / 6.0, (3 * t3 - 6 * t2 + 4) / 6.0, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0,
            t3 / 6.0)


def interpolation_weights(y, x, shape, order: int = 1):
    """Pixel indices and weights that interpolate an image at points ``(y, x)``.

    Parameters
    ----------
    y, x : array (N,)
        Row and column positions in pixels of the array the weights index; every neighbour must
        lie inside the array (pad it first).
    shape : (ny, nx)
        Shape of that array (for ``order=3``: the array of cubic B-spline coefficients).
    order : {1, 3}
        1: bilinear (4 neighbours); 3: cubic B-spline (16 neighbours, apply the weights to spline
        coefficients, as ``scipy.ndimage.map_coordinates(..., prefilter=False)`` does).

    Returns
    -------
    pixel : numpy.ndarray of int64, shape (N, K)
        Flat pixel index ``row * nx + col`` of each neighbour.
    weight : numpy.ndarray, shape (N, K)
    """
    ny, nx = shape
    y = np.asarray(y, float).ravel()
    x = np.asarray(x, float).ravel()
    y0 = np.floor(y)
    x0 = np.floor(x)
    fy = y - y0
    fx = x - x0
    y0 = y0.astype(np.int64)
    x0 = x0.astype(np.int64)
    if order == 1:
        dys, wys = (0, 1), (1 - fy, fy)
        dxs, wxs = (0, 1), (1 - fx, fx)
    elif order == 3:
        dys, wys = (-1, 0, 1, 2), _bspline3(fy)
        dxs, wxs = (-1, 0, 1, 2), _bspline3(fx)
    else:
        raise InputError(f"order: expected 1 (bilinear) or 3 (cubic B-spline), found {order!r}")
    if y.size and (y0.min() + dys[0] < 0 or y0.max() + dys[-1] >= ny or x0.min() + dxs[0] < 0
                   or x0.max() + dxs[-1] >= nx):
        raise InputError(f"interpolation_weights: points need neighbours outside the array of shape "
                         f"{(ny, nx)}; pad it (y in [{y.min():.3g}, {y.max():.3g}], "
                         f"x in [{x.min():.3g}, {x.max():.3g}])")
    base = y0 * nx + x0
    offs = np.array([dy * nx + dx for dy in dys for dx in dxs], dtype=np.int64)
    pixel = base[:, None] + offs[None, :]
    wy = np.stack(wys, axis=1)
    wx = np.stack(wxs, axis=1)
    weight = (wy[:, :, None] * wx[:, None, :]).reshape(y.size, -1)
    return pixel, weight


def _prefilter(vol3):
    """Zero-pad by :data:`_PAD3` and compute cubic B-spline coefficients over (y, x).

    The image is taken as zero beyond its edge (as ``map_coordinates(mode="grid-constant")``);
    the padding is wide enough for the mirror boundary of the prefilter not to matter.
    """
    pad = ((_PAD3, _PAD3), (_PAD3, _PAD3), (0, 0))
    c = np.pad(vol3, pad)
    c = ndimage.spline_filter1d(c, order=3, axis=0, mode="mirror")
    return ndimage.spline_filter1d(c, order=3, axis=1, mode="mirror")


def _as_image_stack(volume, name="volume"):
    """array (ny, nx) or (ny, nx, C) → float64 (ny, nx, C), squeeze flag."""
    arr = np.asarray(volume, dtype=np.float64)
    if arr.ndim == 2:
        return arr[:, :, None], True
    if arr.ndim == 3:
        return arr, False
    raise DataError(f"{name}: expected an image (y, x) or a volume (y, x, channel), found shape {arr.shape}")


def ray_trace(volume, angles_deg, *, n_translations: int | None = None, translation_step: float = 1.0,
              centre_offset: float = 0.0, shifts=None, sample_step: float = 0.25, order: int = 1,
              n_subrays: int = 1, beam_width: float = 1.0, max_entries: int = 3_000_000) -> np.ndarray:
    """Pencil-beam line integrals of an image or a volume by ray tracing (NumPy).

    Parameters
    ----------
    volume : array, shape (ny, nx) or (ny, nx, C)
        Image stack, axes ``(y, x[, channel])``; pixel centres at integer indices.
    angles_deg : array (n_angles,)
        Rotation angles in degrees (any values: 0–180, 0–360, unsorted).
    n_translations : int, optional
        Default ``max(ny, nx) / translation_step`` rounded.
    translation_step : float
        Translation step in pixels.
    centre_offset : float
        Rotation-axis position relative to the middle of the translation range, in steps.
    shifts : array (n_angles,), optional
        Per-angle translation shift in steps (motor jitter), same sign as ``centre_offset``.
    sample_step : float
        Step along the ray in pixels (≤ 0.25 recommended); adjusted down to tile the ray.
    order : {1, 3}
        Interpolation: bilinear (zeros outside) or cubic B-spline.
    n_subrays : int
        Sub-rays across the beam, evenly spread over ``beam_width`` steps (box profile), averaged.
    beam_width : float
        Beam width in translation steps (used when ``n_subrays > 1``).
    max_entries : int
        Bound on the sparse entries built at once (memory ≈ 40 bytes per entry).

    Returns
    -------
    numpy.ndarray, shape (n_translations, n_angles[, C])
        Line integrals in pixel units (value × pixels), float64. See the module docstring for the
        geometry.
    """
    vol, squeeze = _as_image_stack(volume)
    ny, nx, nc = vol.shape
    angles = check_angles(angles_deg)
    n_a = angles.size
    translation_step = check_number("translation_step", translation_step, positive=True)
    centre_offset = check_number("centre_offset", centre_offset)
    sample_step = check_number("sample_step", sample_step, positive=True)
    n_subrays = check_count("n_subrays", n_subrays)
    beam_width = check_number("beam_width", beam_width, positive=True)
    if order not in (1, 3):
        raise InputError(f"order: expected 1 (bilinear) or 3 (cubic B-spline), found {order!r}")
    if n_translations is None:
        n_translations = max(1, int(round(max(ny, nx) / translation_step)))
    n_t = check_count("n_translations", n_translations)
    if shifts is not None:
        shifts = np.asarray(shifts, float).ravel()
        if shifts.shape != (n_a,) or not np.all(np.isfinite(shifts)):
            raise InputError(f"shifts: expected {n_a} finite values (one per angle), found shape {shifts.shape}")

    if order == 3:
        coef = _prefilter(vol)
        margin, off = _PAD3 - 2.0, float(_PAD3)
    else:
        coef = np.pad(vol, ((1, 1), (1, 1), (0, 0)))
        margin, off = 1.0, 1.0
    cshape = coef.shape[:2]
    n_pix = cshape[0] * cshape[1]
    flat = coef.reshape(n_pix, nc)
    s, h = sample_positions((ny, nx), sample_step, margin)

    p = ray_offsets(n_t, translation_step=translation_step, centre_offset=centre_offset,
                    shifts=shifts, n_angles=n_a)  # (n_t, n_a)
    sub = ((np.arange(n_subrays) + 0.5) / n_subrays - 0.5) * beam_width * translation_step
    # rays of angle j: (n_t * n_subrays,), translation-major
    p_rays = (p.T[:, :, None] + sub[None, None, :]).reshape(n_a, n_t * n_subrays)
    theta = np.deg2rad(angles)
    k = 4 if order == 1 else 16
    per_angle = n_t * n_subrays * s.size * k
    chunk = max(1, int(max_entries // max(per_angle, 1)))
    out = np.empty((n_t, n_a, nc))
    lo_y, hi_y = -margin, ny - 1 + margin
    lo_x, hi_x = -margin, nx - 1 + margin
    trans_of_ray = np.repeat(np.arange(n_t), n_subrays)
    for a0 in range(0, n_a, chunk):
        a1 = min(n_a, a0 + chunk)
        n_rows = (a1 - a0) * n_t
        y, x = ray_points((ny, nx), theta[a0:a1], p_rays[a0:a1], s)  # (na_c, n_rays, K)
        row = (np.arange(a1 - a0)[:, None] * n_t + trans_of_ray[None, :])[..., None]
        inside = (y > lo_y) & (y < hi_y) & (x > lo_x) & (x < hi_x)
        ri = np.broadcast_to(row, y.shape)[inside]
        pix, w = interpolation_weights(y[inside] + off, x[inside] + off, cshape, order)
        w *= h / n_subrays
        A = sp.csr_matrix((w.ravel(), (np.repeat(ri, k), pix.ravel())), shape=(n_rows, n_pix))
        res = A @ flat  # (n_rows, nc), row = local_angle * n_t + translation
        out[:, a0:a1, :] = res.reshape(a1 - a0, n_t, nc).transpose(1, 0, 2)
    log.debug("ray_trace: %dx%dx%d volume, %d translations x %d angles, %d samples/ray, order %d",
              ny, nx, nc, n_t, n_a, s.size, order)
    return out[..., 0] if squeeze else out

