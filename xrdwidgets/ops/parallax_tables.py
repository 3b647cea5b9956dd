"""The tables of the parallax operator (:class:`~xrdwidgets.ops.parallax.ParallaxProjector`):
the 2θ shift seen from each depth and its resampling taps, and the ray-sampling matrices.

Physics
-------
A voxel at depth ``s`` along the beam (mm, from the rotation axis, positive towards the
detector) is ``L − s`` from a flat detector at ``L = distance_mm``. Its Debye–Scherrer ring of
true angle 2θ has radius ``(L − s) tan 2θ``; azimuthal integration calibrated at ``L`` reads it
at the *apparent* angle

* ``formula="atan"`` (default, exact for a flat detector normal to the beam)::

      2θ' = atan((L − s) / L · tan 2θ)

* ``formula="arcsin"`` (the form of the issue)::

      2θ' = 2θ + arcsin(sin 2θ · u / R_s),   R_s = L / cos 2θ,   u = −s

  (``u`` is the offset from the rotation axis *against* the beam, i.e. away from the detector).

Both give ``Δ2θ ≈ −(s / L) sin 2θ cos 2θ`` to first order — a voxel nearer the detector is seen
at lower 2θ, as in the independent simulator :func:`xrdwidgets.sim.thick_sample.parallax_scan` — and
differ at second order. The simulator uses the ``atan`` form, so it is the default.

The pattern a voxel contributes at measured channel ``2θ'_j`` is its own pattern resampled at the
true angle, with the Jacobian (intensity per unit 2θ' — the integrated intensity of a peak is
kept)::

    P'(2θ'_j) = P(2θ(2θ'_j, s)) · |d2θ / d2θ'|

The resampling interpolates on the channel-index axis of the (any strictly increasing, not
necessarily uniform) 2θ axis: the true angle ``2θ(2θ'_j, s)`` (deg) sits at the fractional source
channel ``f = j0 + t`` (``j0`` integer, ``0 ≤ t ≤ 1``), and ``interp`` picks the kernel
(:func:`resampling_taps`):

* ``interp="linear"``: 2 taps ``j0, j0 + 1`` with weights ``1 − t, t``: a 2-tap blur of
  variance ``t (1 − t)`` channel² (up to 0.25 at half-channel shifts), which broadens narrow
  peaks; a fit through the operator (ParallaxNet) compensates with too-narrow peaks.
* ``interp="cubic"``: Keys cubic convolution with ``a = −0.5`` (Catmull–Rom), 4 taps
  ``j0 − 1 … j0 + 2`` with weights ``(−t³ + 2t² − t) / 2``, ``(3t³ − 5t² + 2) / 2``,
  ``(−3t³ + 4t² + t) / 2``, ``(t³ − t²) / 2``. It reproduces quadratics, so its kernel has zero
  variance: the second moment of a resampled peak is kept; its negative lobes give small
  negative values next to sharp peaks (ringing).
* ``interp="lanczos3"`` (default): Lanczos with ``a = 3``, 6 taps ``j0 − 2 … j0 + 3`` with weights
  ``sinc(d) sinc(d / 3)`` at the tap distances ``d`` (``sinc(x) = sin(πx) / (πx)``), normalised to
  sum 1: a flatter pass band than cubic's.

Taps beyond the axis ends take the edge channel (replicated edge); true angles outside the axis
contribute 0 (every kernel). Measured widths, ringing and costs of the kernels:
``docs/notes/tables-recon.md``.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from ..base.errors import InputError

__all__ = ["FORMULAS", "INTERPS", "TAPS", "apparent_tth", "true_tth", "check_formula", "check_interp",
           "resampling_taps", "auto_depth_step", "shift_taps", "rotation_matrices"]

#: Accepted apparent-angle formulas (see the module docstring).
FORMULAS = ("atan", "arcsin")
#: Taps of each accepted 2θ resampling kernel (see the module docstring).
TAPS = {"linear": 2, "cubic": 4, "lanczos3": 6}
#: Accepted 2θ resampling kernels.
INTERPS = tuple(TAPS)


def check_formula(formula):
    """``formula`` if it is one of :data:`FORMULAS`, else an :class:`InputError`."""
    if formula not in FORMULAS:
        raise InputError(f"formula: expected one of {FORMULAS}, found {formula!r}")
    return formula


def check_interp(interp):
    """``interp`` if it is one of :data:`INTERPS`, else an :class:`InputError`."""
    if not isinstance(interp, str) or interp not in INTERPS:
        raise InputError(f"ParallaxProjector: interp must be one of {INTERPS}, found {interp!r}")
    return interp


def resampling_taps(f, jac, ok, m, interp):
    """Source channels and weights of the 2θ resampling, each ``(T, *f.shape)``.

    ``f``: fractional source channel (finite where ``ok``); ``jac``: ``d2θ / d2θ'``; ``m`` ≥ 2
    channels. Taps beyond ``[0, m − 1]`` are clamped to the edge (their weights add up there
    once the matrix's duplicates are summed); positions outside the axis (``~ok``) weigh 0.
    """
    j0 = np.clip(np.floor(f), 0, m - 2).astype(np.int64)
    t = f - j0
    if interp == "linear":
        offsets = (0, 1)
        kern = (1.0 - t, t)
    elif interp == "cubic":  # Keys cubic convolution, a = -0.5 (Catmull-Rom)
        t2, t3 = t * t, t * t * t
        offsets = (-1, 0, 1, 2)
        kern = (0.5 * (-t3 + 2.0 * t2 - t), 0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
                0.5 * (-3.0 * t3 + 4.0 * t2 + t), 0.5 * (t3 - t2))
    else:  # Lanczos, a = 3: sinc(d)·sinc(d/3) at the tap distances d, normalised to sum 1
        offsets = (-2, -1, 0, 1, 2, 3)
        raw = [np.sinc(o - t) * np.sinc((o - t) / 3.0) for o in offsets]
        total = sum(raw)
        kern = tuple(r / total for r in raw)
    idx = np.stack([np.clip(j0 + o, 0, m - 1) for o in offsets])
    w = np.stack([np.where(ok, k * jac, 0.0) for k in kern])
    return idx, w


def apparent_tth(tth_deg, depth_mm, distance_mm, formula: str = "atan"):
    """Apparent 2θ' (deg) of a reflection at true ``tth_deg`` from a voxel at ``depth_mm``.

    Parameters
    ----------
    tth_deg : array
        True 2θ in degrees.
    depth_mm : array
        Depth ``s`` along the beam from the rotation axis, mm, positive towards the detector.
    distance_mm : float
        Rotation axis to detector distance ``L`` in mm (``inf``: no parallax).
    formula : {"atan", "arcsin"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray
        2θ' in degrees (broadcast shape).
    """
    check_formula(formula)
    t = np.deg2rad(np.asarray(tth_deg, float))
    s = np.asarray(depth_mm, float)
    L = float(distance_mm)
    t, s = np.broadcast_arrays(t, s)
    if math.isinf(L):
        return np.rad2deg(t).copy()
    if formula == "atan":
        return np.rad2deg(np.arctan2((L - s) * np.sin(t), L * np.cos(t)))
    return np.rad2deg(t + np.arcsin(np.clip(np.sin(t) * np.cos(t) * (-s) / L, -1.0, 1.0)))


def true_tth(apparent_deg, depth_mm, distance_mm, formula: str = "atan", *, jacobian: bool = False):
    """Inverse of :func:`apparent_tth`: the true 2θ (deg) seen at ``apparent_deg`` from ``depth_mm``.

    ``atan``: ``2θ = atan(L / (L − s) · tan 2θ')`` in closed form; ``arcsin``: fixed-point
    iteration ``2θ ← 2θ' − arcsin(sin 2θ cos 2θ · u / L)`` (contraction factor ``~|s|/L``) to
    1e-13 rad.

    Parameters
    ----------
    apparent_deg, depth_mm, distance_mm, formula :
        As :func:`apparent_tth` (``depth_mm`` must be below ``distance_mm``).
    jacobian : bool
        Also return ``d2θ / d2θ'`` (dimensionless).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, numpy.ndarray) with ``jacobian=True``
    """
    check_formula(formula)
    a = np.deg2rad(np.asarray(apparent_deg, float))
    s = np.asarray(depth_mm, float)
    a, s = np.broadcast_arrays(a, s)
    L = float(distance_mm)
    if math.isinf(L):
        t, jac = a.copy(), np.ones(a.shape)
    elif formula == "atan":
        c = L / (L - s)
        ta = np.tan(a)
        t = np.arctan2(L * np.sin(a), (L - s) * np.cos(a))
        jac = c / np.cos(a) ** 2 / (1.0 + (c * ta) ** 2)
    else:
        k = -s / L  # u / L
        t = a.copy()
        for _ in range(60):
            t_new = a - np.arcsin(np.clip(0.5 * k * np.sin(2 * t), -1.0, 1.0))
            done = np.max(np.abs(t_new - t), initial=0.0) < 1e-13
            t = t_new
            if done:
                break
        # 2θ' = F(2θ) = 2θ + arcsin(k/2 · sin 4θ):  F' = 1 + k cos 4θ / sqrt(1 − (k/2 · sin 4θ)²)
        fp = 1.0 + k * np.cos(2 * t) / np.sqrt(np.maximum(1e-300, 1.0 - (0.5 * k * np.sin(2 * t)) ** 2))
        jac = 1.0 / fp
    t = np.rad2deg(t)
    return (t, jac) if jacobian else t


def auto_depth_step(tth, pixel_mm: float, distance_mm: float, target) -> float:
    """Depth bin (pixels) over which the 2θ shift changes by at most ``target`` channels.

    Parameters
    ----------
    tth : numpy.ndarray (m,)
        The 2θ axis, degrees, strictly increasing.
    pixel_mm, distance_mm : float
        Pixel size and rotation axis to detector distance, mm.
    target : float
        Largest change of the shift between neighbouring bins, channels (> 0).

    Returns
    -------
    float
        The bin size in pixels, clipped to 1/8 … 8 (8 for a single channel).
    """
    try:
        target = float(target)
    except (TypeError, ValueError):
        target = math.nan
    if not (target > 0) or not math.isfinite(target):
        raise InputError(f"ParallaxProjector: max_shift_step must be a positive number of channels, "
                         f"found {target!r}")
    if tth.size < 2:
        return 8.0
    t = np.deg2rad(tth)
    width = np.deg2rad(np.gradient(tth))                       # local channel width, rad
    rate = pixel_mm / distance_mm * np.abs(np.sin(2 * t)) / 2.0 / width  # channels per pixel
    return float(np.clip(target / max(rate.max(), 1e-12), 0.125, 8.0))


def shift_taps(tth, depth_mm, distance_mm: float, formula: str, interp: str):
    """Per depth bin ``k`` and measured channel ``j``: the ``T`` source channels and weights.

    Parameters
    ----------
    tth : numpy.ndarray (m,)
        The 2θ axis, degrees.
    depth_mm : numpy.ndarray (K,)
        Depth of each bin, mm (positive towards the detector).
    distance_mm : float
        Rotation axis to detector distance, mm.
    formula, interp : str
        See the module docstring.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``idx`` int64 and ``w`` float64, both ``(T, K, m)`` with ``T = TAPS[interp]``. One
        channel: the tap of ``j0`` weighs 1 (no shift modelled).
    """
    m, K = tth.size, depth_mm.size
    T = TAPS[interp]
    if m == 1:  # one channel: nothing to interpolate between, no shift modelled
        idx = np.zeros((T, K, 1), np.int64)
        w = np.zeros((T, K, 1))
        w[T // 2 - 1] = 1.0                    # the tap of j0
        return idx, w
    true, jac = true_tth(tth[None, :], depth_mm[:, None], distance_mm, formula, jacobian=True)
    f = np.interp(true, tth, np.arange(m, dtype=float), left=np.nan, right=np.nan)   # (K, m)
    ok = np.isfinite(f)
    return resampling_taps(np.where(ok, f, 0.0), jac, ok, m, interp)                  # (T, K, m)


def rotation_matrices(angles_deg, *, n: int, n_translations: int, support, r_max: float, n_depth: int,
                      depth_step: float, s_min: float, sample_step: float, centre_offset: float,
                      chunks) -> list:
    """Per depth chunk, a CSR ``(n_a · n_t, P · Kc)``: (pixel, depth bin) → ray.

    Row ``a · n_t + t``; column ``p · Kc + (k − k0)`` for support pixel ``p`` and depth bin
    ``k`` of the chunk ``[k0, k0 + Kc)``. Each ray is sampled every ``δ ≤ sample_step``
    pixels along the beam; a sample takes bilinear weights of its 4 neighbouring pixels
    (zero outside the image / support), hat weights of its 2 neighbouring depth bins, times
    the path step ``δ`` (line integrals in pixel units).

    Parameters
    ----------
    angles_deg : numpy.ndarray (n_a,)
        Rotation angles, degrees.
    n, n_translations : int
        Image size (pixels) and number of translations ``n_t``.
    support : (numpy.ndarray, numpy.ndarray)
        Row and column indices of the ``P`` support pixels.
    r_max : float
        Largest distance of a support pixel from the rotation axis, pixels.
    n_depth, depth_step, s_min : int, float, float
        Depth bins ``K``, their size and the depth of bin 0, pixels (``n_depth`` 1: no parallax).
    sample_step : float
        Largest step between ray samples, pixels.
    centre_offset : float
        Rotation axis offset, translation steps.
    chunks : list of (int, int)
        Depth chunks ``[k0, k1)``.

    Returns
    -------
    list of scipy.sparse.csr_matrix
        One per depth chunk.
    """
    n_t, K = n_translations, n_depth
    c = (n - 1) / 2.0
    rr, cc = support
    P = rr.size
    pix_id = np.full((n + 2, n + 2), -1, np.int64)            # padded: index -1 .. n
    pix_id[rr + 1, cc + 1] = np.arange(P)
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    na = th.size
    half = r_max + 1.5
    if K == 1:
        n_s = max(2, math.ceil(2 * half / sample_step))
        step = 2 * half / n_s
    else:
        step = depth_step / math.ceil(depth_step / sample_step)
        n_s = math.ceil(2 * half / step)
    s_pos = -half + (np.arange(n_s) + 0.5) * step               # sample depths (pixels)
    if K == 1:
        bins = [(np.zeros(n_s, np.int64), np.ones(n_s))]
    else:
        q = (s_pos - s_min) / depth_step
        k0 = np.floor(q).astype(np.int64)
        f = q - k0
        bins = [(k0, 1.0 - f), (k0 + 1, f)]
    p_ray = np.arange(n_t, dtype=np.float64) - (n_t - 1) / 2.0 - centre_offset
    rows_all, cols_all, vals_all = [], [], []
    per = max(1, int(400_000 // max(1, n_t * n_s)))            # angles per sub-block (bounded temporaries)
    for a0 in range(0, na, per):
        a1 = min(na, a0 + per)
        cos = np.cos(th[a0:a1])[:, None, None]
        sin = np.sin(th[a0:a1])[:, None, None]
        pp = p_ray[None, :, None]
        ss = s_pos[None, None, :]
        x = c + pp * cos + ss * sin                               # (na_s, n_t, n_s)
        y = c - pp * sin + ss * cos
        inside = (x > -1) & (x < n) & (y > -1) & (y < n) & (pp ** 2 + ss ** 2 <= half ** 2)
        a_idx, t_idx, s_idx = np.nonzero(inside)
        xs, ys = x[inside], y[inside]
        x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
        fx, fy = xs - x0, ys - y0
        row = (a_idx + a0) * n_t + t_idx
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            for dx, wx in ((0, 1.0 - fx), (1, fx)):
                pid = pix_id[y0 + dy + 1, x0 + dx + 1]
                ok = pid >= 0
                w_px = (wy * wx * step)[ok]
                for kk, wk in bins:
                    w = w_px * wk[s_idx[ok]]
                    keep = w > 0
                    rows_all.append(row[ok][keep])
                    cols_all.append(pid[ok][keep] * K + kk[s_idx[ok]][keep])
                    vals_all.append(w[keep])
        # merge duplicates now to bound memory
        if sum(v.size for v in vals_all) > 4_000_000 or a1 == na:
            M = sp.csr_matrix((np.concatenate(vals_all), (np.concatenate(rows_all), np.concatenate(cols_all))),
                              shape=(na * n_t, P * K))
            M.sum_duplicates()
            M = M.tocoo()
            rows_all, cols_all, vals_all = [M.row.astype(np.int64)], [M.col.astype(np.int64)], [M.data]
    rows, cols, vals = rows_all[0], cols_all[0], vals_all[0].astype(np.float32)
    pid, ks = cols // K, cols % K
    out = []
    for k0_, k1_ in chunks:
        kc = k1_ - k0_
        sel = (ks >= k0_) & (ks < k1_)
        W = sp.csr_matrix((vals[sel], (rows[sel], pid[sel] * kc + (ks[sel] - k0_))), shape=(na * n_t, P * kc))
        W.sum_duplicates()
        out.append(W)
    return out
