"""Pencil-beam XRD-CT acquisition: the simulator's own forward model and the scan's imperfections.

Two forward models produce a sinogram stack ``(translation, angle, tth)``:

* :func:`ray_trace` / :func:`acquire` — a ray tracer in NumPy. For every angle and translation
  the volume is integrated along the pencil-beam line by sampling points with a fine step
  (``sample_step`` ≤ 0.25 pixel, midpoint rule) and interpolating (bilinear, or cubic B-spline
  on a zero-padded, spline-prefiltered volume) — optionally averaged over several sub-rays across
  the beam width (a box beam profile of ``beam_width`` translation steps). The samples of one
  chunk of rays are collected into a sparse ray × pixel weight matrix, so one sparse product
  integrates all channels at once.
* :func:`acquire_analytic` — exact line integrals of phantoms made of shapes
  (:meth:`Phantom.line_integrals`): ``sinogram = Σ_phase chord(phase) ⊗ pattern(phase)``.
  This is the data reconstruction tests should use (no inverse crime).

Both then apply the same measurement model (:func:`measure`): rotation-centre offset and motor
jitter (in the geometry of the rays), air scatter, beam decay following the acquisition time,
and Poisson noise at a chosen dose. The injected truths come back with the data.

Geometry (the same as :mod:`xrdwidgets.ops.projector` and scikit-image's ``radon``)
-----------------------------------------------------------------------------------
* Image axes ``(y, x)`` = (row, column); pixel centres at integer indices; the rotation axis at
  the image centre, index ``((ny - 1) / 2, (nx - 1) / 2)``.
* At angle θ (degrees, counter-clockwise) the translation direction is ``(x, y) = (cos θ, -sin θ)``
  and the beam travels along ``(x, y) = (sin θ, cos θ)``: the ray at signed distance ``p`` from the
  rotation axis passes through ``x = cx + p cos θ + s sin θ``, ``y = cy - p sin θ + s cos θ``;
  ``s`` is the position along the beam, increasing towards the detector, 0 at the rotation axis.
  Equivalently a pixel ``(r, c)`` projects to ``p = (c - cx) cos θ - (r - cy) sin θ``.
* Translation ``i`` of ``n_t`` (step ``translation_step`` pixels) is at
  ``p = (i - (n_t - 1) / 2 - centre_offset - jitter[angle]) · translation_step``: the rotation axis
  sits at ``centre_offset`` steps from the middle of the range, and a positive offset or jitter
  moves the projection towards higher translation indices.
* Line integrals are in pixel units (sum over pixels along the ray), so an image of ``n`` pixels
  scanned with ``n`` translations of one pixel matches ``skimage.transform.radon(image, theta,
  circle=True)`` for odd ``n`` (scikit-image puts the centre at ``n // 2``: half a pixel off for
  even ``n``).

Acquisition order
-----------------
A *line* is one projection (all translations at one angle). ``"raster"``: lines in angle order,
each scanned towards higher translation indices; ``"zigzag"``: alternate lines scanned backwards;
``"interlaced"``: the angles are acquired in ``n_subsets`` interlaced subsets (angle indices
``m, m + k, m + 2k, ...`` for ``m = 0..k-1``), each line forwards; ``"interlaced-zigzag"``: both.
The acquisition index of every point (translation, angle) is returned; decay follows it.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp
import xarray as xr
from scipy import ndimage

from .. import data as _data
from ..data import DataError
from ..geometry import ScanGeometry
from ..base.validators import check_float, check_int

log = logging.getLogger(__name__)

__all__ = [
    "SCAN_ORDERS", "DECAY_KINDS", "ray_trace", "acquisition_order", "beam_decay", "air_scatter",
    "measure", "acquire", "acquire_analytic",
]

#: Accepted values of ``scan_order``.
SCAN_ORDERS = ("raster", "zigzag", "interlaced", "interlaced-zigzag")
#: Named beam-decay models of :func:`beam_decay`.
DECAY_KINDS = ("exponential", "topup")

_PAD3 = 8  # zero padding (pixels) around the volume for cubic B-spline prefiltering


# ============================================================================ ray geometry
def _check_int(name, value, minimum=1):
    return check_int("", name, value, minimum=minimum)


def _check_float(name, value, *, positive=False):
    return check_float("", name, value, minimum=0.0 if positive else None, strict=True)


def _check_angles(angles_deg, name="angles_deg"):
    a = np.asarray(angles_deg, dtype=float).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected a non-empty array of finite angles in degrees, found {angles_deg!r}")
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


def _sample_positions(shape, sample_step, margin):
    """Midpoint-rule positions ``s`` (pixels) along a ray covering the padded image, and step."""
    ny, nx = shape
    half = math.hypot((ny - 1) / 2.0 + margin, (nx - 1) / 2.0 + margin)
    n = max(2, int(math.ceil(2.0 * half / sample_step)))
    h = 2.0 * half / n
    return -half + (np.arange(n) + 0.5) * h, h


def _ray_points(shape, theta_rad, p, s):
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
        raise ValueError(f"order: expected 1 (bilinear) or 3 (cubic B-spline), found {order!r}")
    if y.size and (y0.min() + dys[0] < 0 or y0.max() + dys[-1] >= ny or x0.min() + dxs[0] < 0
                   or x0.max() + dxs[-1] >= nx):
        raise ValueError(f"interpolation_weights: points need neighbours outside the array of shape "
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
    angles = _check_angles(angles_deg)
    n_a = angles.size
    translation_step = _check_float("translation_step", translation_step, positive=True)
    centre_offset = _check_float("centre_offset", centre_offset)
    sample_step = _check_float("sample_step", sample_step, positive=True)
    n_subrays = _check_int("n_subrays", n_subrays)
    beam_width = _check_float("beam_width", beam_width, positive=True)
    if order not in (1, 3):
        raise ValueError(f"order: expected 1 (bilinear) or 3 (cubic B-spline), found {order!r}")
    if n_translations is None:
        n_translations = max(1, int(round(max(ny, nx) / translation_step)))
    n_t = _check_int("n_translations", n_translations)
    if shifts is not None:
        shifts = np.asarray(shifts, float).ravel()
        if shifts.shape != (n_a,) or not np.all(np.isfinite(shifts)):
            raise ValueError(f"shifts: expected {n_a} finite values (one per angle), found shape {shifts.shape}")

    if order == 3:
        coef = _prefilter(vol)
        margin, off = _PAD3 - 2.0, float(_PAD3)
    else:
        coef = np.pad(vol, ((1, 1), (1, 1), (0, 0)))
        margin, off = 1.0, 1.0
    cshape = coef.shape[:2]
    n_pix = cshape[0] * cshape[1]
    flat = coef.reshape(n_pix, nc)
    s, h = _sample_positions((ny, nx), sample_step, margin)

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
        y, x = _ray_points((ny, nx), theta[a0:a1], p_rays[a0:a1], s)  # (na_c, n_rays, K)
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


# ============================================================================ acquisition model
def acquisition_order(n_translations: int, n_angles: int, scan_order: str = "raster", *,
                      n_subsets: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Acquisition index of every point of a pencil-beam scan.

    Parameters
    ----------
    n_translations, n_angles : int
    scan_order : {"raster", "zigzag", "interlaced", "interlaced-zigzag"}
        See the module docstring.
    n_subsets : int
        Number of interlaced angle subsets (interlaced orders only).

    Returns
    -------
    index : numpy.ndarray of int64, shape (n_translations, n_angles)
        Position of point (translation, angle) in the acquisition sequence, 0 … N-1.
    line : numpy.ndarray of int64, shape (n_angles,)
        Position of each projection (angle index, in sorted angle order) in the sequence of lines.
    """
    n_t = _check_int("n_translations", n_translations)
    n_a = _check_int("n_angles", n_angles)
    if scan_order not in SCAN_ORDERS:
        raise ValueError(f"scan_order: expected one of {SCAN_ORDERS}, found {scan_order!r}")
    if scan_order.startswith("interlaced"):
        k = _check_int("n_subsets", n_subsets)
        sequence = np.concatenate([np.arange(m, n_a, k) for m in range(min(k, n_a))])
    else:
        sequence = np.arange(n_a)
    line = np.empty(n_a, np.int64)
    line[sequence] = np.arange(n_a)
    forward = np.ones(n_a, bool)
    if scan_order.endswith("zigzag"):
        forward = line % 2 == 0
    i = np.arange(n_t)[:, None]
    pos = np.where(forward[None, :], i, n_t - 1 - i)
    return (line[None, :] * n_t + pos).astype(np.int64), line


def beam_decay(time, kind="exponential", *, strength: float = 0.2, period: float = 0.25) -> np.ndarray:
    """Relative incident-beam intensity against normalised acquisition time.

    Parameters
    ----------
    time : array
        Acquisition time as a fraction of the whole scan, 0 (start) … 1 (end).
    kind : {"exponential", "topup"} or callable
        ``"exponential"``: ``(1 - strength) ** time`` (a fraction ``strength`` lost by the end);
        ``"topup"``: saw-tooth, ``(1 - strength) ** frac(time / period)`` (refilled every
        ``period``); a callable ``f(time) -> factor`` is used as given.
    strength : float
        Fraction of intensity lost (0 ≤ strength < 1).
    period : float
        Top-up period as a fraction of the scan.

    Returns
    -------
    numpy.ndarray
        Factors (1 = full beam), same shape as ``time``.
    """
    t = np.asarray(time, float)
    if callable(kind):
        f = np.asarray(kind(t), float)
        if f.shape != t.shape or not np.all(np.isfinite(f)) or np.any(f <= 0):
            raise ValueError(f"decay: the callable must return finite positive factors of shape {t.shape}, "
                             f"found shape {f.shape}")
        return f
    strength = _check_float("decay_strength", strength)
    if not 0 <= strength < 1:
        raise ValueError(f"decay_strength: expected 0 <= strength < 1, found {strength!r}")
    if kind == "exponential":
        return (1.0 - strength) ** t
    if kind == "topup":
        period = _check_float("decay_period", period, positive=True)
        return (1.0 - strength) ** np.mod(t / period, 1.0)
    raise ValueError(f"decay: expected one of {DECAY_KINDS}, a callable, or an array of factors, found {kind!r}")


def air_scatter(tth, *, amplitude: float = 1.0, width_deg: float | None = None,
                floor: float = 0.15) -> np.ndarray:
    """A smooth air-scatter pattern, stronger at low 2θ.

    ``amplitude · (floor + (1 - floor) · exp(-(tth - min(tth)) / width_deg))``; the maximum is
    ``amplitude`` at the lowest 2θ.

    Parameters
    ----------
    tth : array (n_tth,)
        2θ in degrees.
    width_deg : float, optional
        Decay width in degrees (default: a third of the 2θ range).
    """
    t = np.asarray(tth, float).ravel()
    if t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(f"tth: expected a non-empty finite array of 2θ (deg), found {tth!r}")
    span = float(t.max() - t.min())
    w = width_deg if width_deg is not None else (span / 3.0 if span > 0 else 1.0)
    w = _check_float("width_deg", w, positive=True)
    return float(amplitude) * (floor + (1.0 - floor) * np.exp(-(t - t.min()) / w))


def _resolve_decay(decay, time_point, index_line_mean, n_t, n_a, *, strength, period, per_point):
    """Per-point decay factors (n_t, n_a)."""
    if decay is None:
        return np.ones((n_t, n_a))
    if isinstance(decay, str) or callable(decay):
        t = time_point if per_point else np.broadcast_to(index_line_mean[None, :], (n_t, n_a))
        return np.array(beam_decay(t, decay, strength=strength, period=period), dtype=float)
    arr = np.asarray(decay, float)
    if arr.shape == (n_a,):
        arr = np.broadcast_to(arr[None, :], (n_t, n_a))
    if arr.shape != (n_t, n_a):
        raise ValueError(f"decay: expected a model name {DECAY_KINDS}, a callable, {n_a} factors (one per "
                         f"angle) or ({n_t}, {n_a}) per point, found shape {np.shape(decay)}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("decay: factors must be finite and > 0")
    return np.array(arr)


def measure(project, n_translations: int, angles_deg, spectral, *, scan_order: str = "raster",
            n_subsets: int = 4, dose: float | None = None, seed=0, decay=None, decay_strength: float = 0.2,
            decay_period: float = 0.25, decay_per_point: bool = False, air=None, jitter=0.0,
            centre_offset: float = 0.0, keep_truth: bool = True) -> dict:
    """Apply the measurement model to a projector; return plain arrays and the truths.

    Parameters
    ----------
    project : callable
        ``project(offsets)`` with ``offsets`` (n_angles,) in steps (centre offset + jitter) returns
        the noise-free sample signal, shape (n_translations, n_angles, n_spectral).
    n_translations : int
    angles_deg : array (n_angles,)
    spectral : array (n_spectral,)
        Spectral coordinate (2θ in degrees for the default air pattern).
    scan_order, n_subsets :
        See :func:`acquisition_order`.
    dose : float, optional
        Poisson noise: expected counts at the brightest point of the noise-free measurement. The
        output (and every truth) is then in counts; ``None``: no noise, volume units.
    seed : int or numpy.random.Generator
        Seeds jitter and noise (``numpy.random.default_rng(seed)``).
    decay : None, "exponential", "topup", callable, array (n_angles,) or (n_t, n_angles)
        Incident-beam intensity versus acquisition time (see :func:`beam_decay`); it multiplies
        sample signal and air scatter.
    decay_strength, decay_period :
        Parameters of the named decay models.
    decay_per_point : bool
        Evaluate the decay at each point's acquisition time (else one factor per projection, at
        the mean time of its line).
    air : None, float or array (n_spectral,)
        Air scatter added to every point: a float is the peak of :func:`air_scatter` relative to
        the brightest point of the ideal sinogram; an array is the pattern itself (volume units).
    jitter : float or array (n_angles,)
        Motor jitter in steps: a float is the standard deviation of a normal random shift per
        projection; an array gives the shifts.
    centre_offset : float
        Rotation-axis position relative to the middle of the translation range, in steps.
    keep_truth : bool
        Also return ``clean`` (noise-free measurement) and ``ideal`` (no jitter, no offset, no air,
        no decay, no noise), in the output's units.

    Returns
    -------
    dict of arrays
        ``sinogram``, ``clean``, ``ideal`` (n_t, n_a, n_s); ``decay_point``, ``acquisition_index``
        (n_t, n_a); ``decay``, ``jitter``, ``line_index`` (n_a,); ``air`` (n_s,); ``scale`` (counts
        per volume unit, 1 without noise).
    """
    angles = _check_angles(angles_deg)
    n_t = _check_int("n_translations", n_translations)
    n_a = angles.size
    spectral = np.asarray(spectral, float).ravel()
    centre_offset = _check_float("centre_offset", centre_offset)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    index, line = acquisition_order(n_t, n_a, scan_order, n_subsets=n_subsets)
    if np.ndim(jitter) == 0:
        sd = _check_float("jitter", jitter)
        if sd < 0:
            raise ValueError(f"jitter: expected a standard deviation >= 0 (steps), found {jitter!r}")
        jit = rng.normal(0.0, sd, n_a) if sd > 0 else np.zeros(n_a)
    else:
        jit = np.asarray(jitter, float).ravel()
        if jit.shape != (n_a,) or not np.all(np.isfinite(jit)):
            raise ValueError(f"jitter: expected a number (std, steps) or {n_a} finite shifts, "
                             f"found shape {np.shape(jitter)}")
    offsets = centre_offset + jit
    signal = project(offsets)
    if signal.shape != (n_t, n_a, spectral.size):
        raise DataError(f"project: expected shape {(n_t, n_a, spectral.size)}, found {signal.shape}")
    need_ideal = keep_truth or (air is not None and np.ndim(air) == 0)
    if need_ideal:
        ideal = signal if not np.any(offsets) else project(np.zeros(n_a))
    # air scatter
    if air is None:
        air_pat = np.zeros(spectral.size)
    elif np.ndim(air) == 0:
        amp = _check_float("air", air)
        air_pat = air_scatter(spectral, amplitude=amp * float(np.max(ideal, initial=0.0)))
    else:
        air_pat = np.asarray(air, float).ravel()
        if air_pat.shape != spectral.shape or not np.all(np.isfinite(air_pat)):
            raise ValueError(f"air: expected a number or a finite pattern of {spectral.size} values, "
                             f"found shape {np.shape(air)}")
    # decay versus acquisition time
    total = n_t * n_a
    t_point = (index + 0.5) / total
    t_line = t_point.mean(axis=0)
    dec = _resolve_decay(decay, t_point, t_line, n_t, n_a, strength=decay_strength,
                         period=decay_period, per_point=decay_per_point)
    clean = dec[:, :, None] * (signal + air_pat[None, None, :])
    if dose is not None:
        dose = _check_float("dose", dose, positive=True)
        peak = float(clean.max())
        if peak <= 0:
            raise DataError("dose: the noise-free measurement is zero everywhere; nothing to scale")
        scale = dose / peak
        clean = clean * scale
        sino = rng.poisson(clean).astype(np.float64)
    else:
        scale = 1.0
        sino = clean
    out = {"sinogram": sino, "decay_point": dec, "decay": dec.mean(axis=0), "jitter": jit,
           "air": air_pat * scale, "acquisition_index": index, "line_index": line, "scale": scale}
    if keep_truth:
        out["clean"] = clean if dose is not None else clean.copy()
        out["ideal"] = ideal * scale
    return out


def _volume_input(volume, name="volume"):
    """(ny, nx, C) array, spectral name and coordinate, geometry, from an array or xarray."""
    if isinstance(volume, (xr.DataArray, xr.Dataset)):
        da = _data.validate_volume(_data.as_dataarray(volume, "volume"), name=name)
        extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
        if extra:
            raise DataError(f"{name}: expected a single volume (y, x, spectral), found extra dims {extra}; "
                            f"select one, e.g. volume.isel({extra[0]}=0)")
        sdim = _data.spectral_dim(da)
        return (np.asarray(da.values, float), sdim, np.asarray(da[sdim].values, float),
                _data.get_geometry(da), da.attrs.get("units", "1"))
    arr = np.asarray(volume, float)
    if arr.ndim != 3:
        raise DataError(f"{name}: expected a DataArray/Dataset volume or an array (y, x, channel), "
                        f"found shape {arr.shape}")
    return arr, "channel", np.arange(arr.shape[2], dtype=float), None, "1"


def _resolve_angles(angles, n_angles, angle_range_deg):
    if angles is not None:
        a = _check_angles(angles, "angles")
        if a.size > 1 and not np.all(np.diff(a) > 0):
            raise ValueError("angles: expected strictly increasing angles (deg); the acquisition "
                             "sequence is set by scan_order, not by the angle coordinate")
        # recorded range: 180° from the first angle, or 360° when the angles span more than 180°
        span = 180.0 if a[-1] - a[0] < 180.0 else 360.0
        return a, (float(a[0]), float(a[0] + span))
    if n_angles is None:
        raise ValueError("give angles= (deg) or n_angles= (with angle_range_deg=(0, 180) or (0, 360))")
    n = _check_int("n_angles", n_angles)
    g = ScanGeometry(angle_range_deg=angle_range_deg)
    return g.angles(n), g.angle_range_deg


def _to_dataset(res, angles, spectral, sdim, geometry, units, producer, params, extra_attrs=None):
    """Wrap :func:`measure` output as an xarray Dataset (sinogram + truths)."""
    n_t = res["sinogram"].shape[0]
    units = "counts" if params.get("dose") is not None else units
    kw = dict(angle=angles, spectral=spectral, spectral_dim=sdim, geometry=geometry, units=units)
    sino = _data.sinogram_stack(res["sinogram"], name="sinogram", **kw)
    if geometry is None or geometry.translation_step_mm is None:
        sino["translation"].attrs["units"] = _data.PIXEL_UNITS
    coords = {c: sino[c] for c in sino.coords}
    ta = ("translation", "angle")
    tas = ("translation", "angle", sdim)
    dv = {"sinogram": sino}
    for k in ("clean", "ideal"):
        if k in res:
            dv[k] = xr.DataArray(res[k], dims=tas, coords=coords,
                                 attrs={"units": units, "long_name": {"clean": "noise-free measurement",
                                        "ideal": "ideal sinogram (no jitter, offset, air, decay, noise)"}[k]})
    dv["air"] = xr.DataArray(res["air"], dims=(sdim,), attrs={"units": units, "long_name": "air scatter (before decay)"})
    dv["decay"] = xr.DataArray(res["decay"], dims=("angle",), attrs={"units": "1", "long_name": "beam decay factor per projection"})
    dv["decay_point"] = xr.DataArray(res["decay_point"], dims=ta, attrs={"units": "1", "long_name": "beam decay factor per point"})
    dv["jitter"] = xr.DataArray(res["jitter"], dims=("angle",), attrs={"units": "steps", "long_name": "motor jitter (projection shift)"})
    dv["acquisition_index"] = xr.DataArray(res["acquisition_index"], dims=ta,
                                           attrs={"units": "1", "long_name": "acquisition order of each point"})
    dv["line_index"] = xr.DataArray(res["line_index"], dims=("angle",), attrs={"units": "1", "long_name": "acquisition order of each projection"})
    attrs = {k: v for k, v in sino.attrs.items() if k.startswith("geometry_")}
    attrs.update({"scale": float(res["scale"]), "centre_offset": float(params.get("centre_offset", 0.0)),
                  "scan_order": str(params.get("scan_order", "raster")), "n_translations": int(n_t)})
    attrs.update(extra_attrs or {})
    attrs.update(_data.provenance(producer, params))
    ds = xr.Dataset(dv, coords=coords, attrs=attrs)
    ds["sinogram"].attrs.update(_data.provenance(producer, params))
    return ds


def _params(**kw):
    """JSON-friendly record of the scan parameters (arrays and callables summarised)."""
    seed, decay, air, jitter = kw["seed"], kw["decay"], kw["air"], kw["jitter"]
    kw["seed"] = int(seed) if isinstance(seed, (int, np.integer)) else None
    kw["decay"] = decay if decay is None or isinstance(decay, str) else "custom"
    kw["air"] = float(air) if air is not None and np.ndim(air) == 0 else (None if air is None else "pattern")
    kw["jitter"] = float(jitter) if np.ndim(jitter) == 0 else "array"
    return kw


def _output_geometry(geometry, angle_range, centre_offset, translation_step):
    g = geometry or ScanGeometry()
    step_mm = None if g.translation_step_mm is None else g.translation_step_mm * translation_step
    return g.replace(angle_range_deg=angle_range, centre_offset=centre_offset, translation_step_mm=step_mm)


def acquire(volume, *, angles=None, n_angles: int | None = None, angle_range_deg=(0.0, 180.0),
            n_translations: int | None = None, translation_step: float = 1.0, scan_order: str = "raster",
            n_subsets: int = 4, dose: float | None = None, seed=0, decay=None, decay_strength: float = 0.2,
            decay_period: float = 0.25, decay_per_point: bool = False, air=None, jitter=0.0,
            centre_offset: float = 0.0, sample_step: float = 0.25, order: int = 1, n_subrays: int = 1,
            keep_truth: bool = True, geometry: ScanGeometry | None = None) -> xr.Dataset:
    """Simulate a pencil-beam XRD-CT scan of a volume by ray tracing.

    Parameters
    ----------
    volume : xarray.DataArray or Dataset (y, x, spectral), or array (y, x, channel)
        The sample, e.g. ``chemical_phantom(...)`` (its ``volume`` variable is used). The pixel
        size is the volume's ``translation_step_mm`` geometry when given.
    angles : array, optional
        Strictly increasing angles in degrees; or ``n_angles`` over ``angle_range_deg``
        (``(0, 180)`` or ``(0, 360)``, stop excluded).
    n_translations : int, optional
        Default: image width / ``translation_step``.
    translation_step : float
        Translation step in volume pixels.
    scan_order, n_subsets, dose, seed, decay, decay_strength, decay_period, decay_per_point, air,
    jitter, centre_offset, keep_truth :
        The measurement model, see :func:`measure`.
    sample_step, order, n_subrays :
        Ray tracing, see :func:`ray_trace`.
    geometry : ScanGeometry, optional
        Default: the volume's geometry. The output's geometry gets the angle range, centre offset
        and translation step (mm) of this scan.

    Returns
    -------
    xarray.Dataset
        ``sinogram`` (translation, angle, spectral) — the measurement (counts when ``dose``);
        truths: ``clean``, ``ideal`` (same dims), ``air`` (spectral), ``decay`` and ``jitter``
        (angle), ``decay_point`` and ``acquisition_index`` (translation, angle), ``line_index``
        (angle); attrs: geometry, ``scale``, ``centre_offset``, ``scan_order``, provenance.
    """
    vol, sdim, spectral, vgeom, units = _volume_input(volume)
    ang, arange = _resolve_angles(angles, n_angles, angle_range_deg)
    ny, nx, _ = vol.shape
    translation_step = _check_float("translation_step", translation_step, positive=True)
    if n_translations is None:
        n_translations = max(1, int(round(max(ny, nx) / translation_step)))
    n_t = _check_int("n_translations", n_translations)

    def project(offsets):
        return ray_trace(vol, ang, n_translations=n_t, translation_step=translation_step,
                         shifts=offsets, sample_step=sample_step, order=order, n_subrays=n_subrays)

    params = _params(n_translations=n_t, n_angles=ang.size, angle_range_deg=arange,
                     translation_step=translation_step, scan_order=scan_order, n_subsets=n_subsets, dose=dose,
                     seed=seed, decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                     decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                     sample_step=sample_step, order=order, n_subrays=n_subrays)
    res = measure(project, n_t, ang, spectral, scan_order=scan_order, n_subsets=n_subsets, dose=dose,
                  seed=seed, decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                  decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                  keep_truth=keep_truth)
    geom = _output_geometry(geometry or vgeom, arange, centre_offset, translation_step)
    return _to_dataset(res, ang, spectral, sdim, geom, units, "xrdwidgets.sim.scan.acquire", params)


def _phase_patterns(names, tth, patterns, energy_keV, size_nm):
    """(n_phase, n_tth) reference patterns: given, or computed from the phase names."""
    if patterns is not None:
        if isinstance(patterns, xr.DataArray):
            if "phase" not in patterns.dims:
                raise DataError(f"patterns: expected dims ('phase', spectral), found {patterns.dims}")
            return np.stack([np.asarray(patterns.sel(phase=n).values, float).ravel() for n in names])
        if isinstance(patterns, dict):
            missing = [n for n in names if n not in patterns]
            if missing:
                raise ValueError(f"patterns: no pattern for phases {missing}; found keys {list(patterns)}")
            return np.stack([np.asarray(patterns[n], float).ravel() for n in names])
        arr = np.asarray(patterns, float)
        if arr.ndim != 2 or arr.shape[0] != len(names):
            raise ValueError(f"patterns: expected a dict, a DataArray (phase, tth) or an array "
                             f"({len(names)}, n_tth), found shape {arr.shape}")
        return arr
    if energy_keV is None:
        raise ValueError("acquire_analytic: give patterns= or energy_keV= (to compute powder patterns "
                         "of the named phases)")
    from .chemical import reference_patterns
    return reference_patterns(names, tth, energy_keV=energy_keV, size_nm=size_nm)


def _pixel_phantoms(phantoms, n):
    """dict of Phantom / Shape / PixelPhantom → dict of objects with pixel-unit line integrals, n."""
    if not isinstance(phantoms, dict) or not phantoms:
        raise ValueError(f"phantoms: expected a non-empty dict phase name -> Phantom, found {type(phantoms).__name__}")
    out, sizes = {}, set()
    for name, ph in phantoms.items():
        if hasattr(ph, "in_pixels") and not hasattr(ph, "pixel_size"):
            if n is None:
                raise ValueError(f"phantoms[{name!r}]: a Phantom in image units needs n= (the image size in "
                                 "pixels; translations and line integrals are in pixels)")
            ph = ph.in_pixels(_check_int("n", n))
        if not hasattr(ph, "line_integrals"):
            raise ValueError(f"phantoms[{name!r}]: expected a Phantom, Shape or PixelPhantom, found "
                             f"{type(ph).__name__}")
        if hasattr(ph, "n"):
            sizes.add(int(ph.n))
        out[str(name)] = ph
    if len(sizes) > 1:
        raise ValueError(f"phantoms: PixelPhantoms of different sizes {sorted(sizes)}; use one grid")
    return out, (sizes.pop() if sizes else n)


def acquire_analytic(phantoms: dict, tth, *, n: int | None = None, patterns=None,
                     energy_keV: float | None = None, size_nm: float = 50.0, angles=None,
                     n_angles: int | None = None, angle_range_deg=(0.0, 180.0), n_translations: int | None = None,
                     translation_step: float = 1.0, scan_order: str = "raster", n_subsets: int = 4,
                     dose: float | None = None, seed=0, decay=None, decay_strength: float = 0.2,
                     decay_period: float = 0.25, decay_per_point: bool = False, air=None, jitter=0.0,
                     centre_offset: float = 0.0, keep_truth: bool = True,
                     geometry: ScanGeometry | None = None) -> xr.Dataset:
    """Simulate a scan with exact line integrals of shape phantoms (one per phase).

    ``sinogram[t, a, :] = Σ_phase chord_phase(p_t, angle_a) · pattern[phase]`` with the exact
    line integrals of :mod:`xrdwidgets.sim.shapes` in pixel units (the phantom seen on an ``n × n``
    grid, :meth:`Phantom.in_pixels`), then the measurement model of :func:`measure`. It matches
    :func:`acquire` of the chemical phantom built from the phantoms' rasters up to discretisation.

    Parameters
    ----------
    phantoms : dict[str, Phantom | Shape | PixelPhantom]
        Phase name → its fraction phantom (values = volume fractions).
    tth : array (n_tth,)
        2θ in degrees.
    n : int, optional
        Image size in pixels (needed for Phantom / Shape values; a PixelPhantom carries it).
    patterns : dict, DataArray (phase, tth) or array (n_phase, n_tth), optional
        Pattern of each phase; default :func:`~xrdwidgets.sim.chemical.reference_patterns` of the
        phase names at ``energy_keV`` and ``size_nm`` (each peaking at 1, as ``chemical_phantom``).
    n_translations : int, optional
        Default ``n / translation_step``.
    angles, n_angles, angle_range_deg, translation_step, scan_order, n_subsets, dose, seed, decay,
    decay_strength, decay_period, decay_per_point, air, jitter, centre_offset, keep_truth, geometry :
        As in :func:`acquire` / :func:`measure`.

    Returns
    -------
    xarray.Dataset
        As :func:`acquire`; also ``patterns`` (phase, tth).
    """
    phantoms, n = _pixel_phantoms(phantoms, n)
    names = list(phantoms)
    tth = np.asarray(tth, float).ravel()
    pats = _phase_patterns(names, tth, patterns, energy_keV, size_nm)
    if pats.shape != (len(names), tth.size):
        raise ValueError(f"patterns: expected shape {(len(names), tth.size)}, found {pats.shape}")
    ang, arange = _resolve_angles(angles, n_angles, angle_range_deg)
    translation_step = _check_float("translation_step", translation_step, positive=True)
    if n_translations is None:
        if n is None:
            raise ValueError("n_translations: give the number of translations (or n, the image size)")
        n_translations = max(1, int(round(n / translation_step)))
    n_t = _check_int("n_translations", n_translations)

    def project(offsets):
        p = ray_offsets(n_t, translation_step=translation_step, shifts=offsets, n_angles=ang.size)
        chords = np.empty((n_t, ang.size, len(names)))
        if np.allclose(offsets, offsets[0]):
            for k, name in enumerate(names):
                chords[:, :, k] = phantoms[name].line_integrals(p[:, 0], ang)
        else:
            for j in range(ang.size):
                for k, name in enumerate(names):
                    chords[:, j, k] = phantoms[name].line_integrals(p[:, j], ang[j:j + 1])[:, 0]
        return chords @ pats

    params = _params(phases=names, n=n, n_translations=n_t, n_angles=ang.size, angle_range_deg=arange,
                     translation_step=translation_step, scan_order=scan_order, n_subsets=n_subsets, dose=dose,
                     seed=seed, decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                     decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                     energy_keV=energy_keV, size_nm=size_nm)
    res = measure(project, n_t, ang, tth, scan_order=scan_order, n_subsets=n_subsets, dose=dose, seed=seed,
                  decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                  decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                  keep_truth=keep_truth)
    g = geometry or ScanGeometry(energy_keV=energy_keV)
    geom = _output_geometry(g, arange, centre_offset, translation_step)
    ds = _to_dataset(res, ang, tth, "tth", geom, "1", "xrdwidgets.sim.scan.acquire_analytic", params)
    ds["patterns"] = xr.DataArray(pats, dims=("phase", "tth"), coords={"phase": names, "tth": ds["tth"]},
                                  attrs={"units": "1", "long_name": "reference pattern per phase"})
    return ds
