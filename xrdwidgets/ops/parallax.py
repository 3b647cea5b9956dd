"""Differentiable forward operator of pencil-beam XRD-CT with thick-sample parallax, in torch.

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
differ at second order (measured: 0.3 % of the shift at 2θ = 30°, s/L = 0.012; 0.02 % at 8°).
The simulator uses the ``atan`` form, so it is the default.

The pattern a voxel contributes at measured channel ``2θ'_j`` is its own pattern resampled at the
true angle, with the Jacobian (intensity per unit 2θ' — the integrated intensity of a peak is
kept)::

    P'(2θ'_j) = P(2θ(2θ'_j, s)) · |d2θ / d2θ'|

The resampling interpolates on the channel-index axis of the (any strictly increasing, not
necessarily uniform) 2θ axis: the true angle ``2θ(2θ'_j, s)`` (deg) sits at the fractional source
channel ``f = j0 + t`` (``j0`` integer, ``0 ≤ t ≤ 1``), and ``interp`` (constructor option) picks
the kernel:

* ``interp="linear"``: 2 taps ``j0, j0 + 1`` with weights ``1 − t, t``. It acts as a
  2-tap blur of variance ``t (1 − t)`` channel² (up to 0.25 at half-channel shifts): a Gaussian
  peak 1.5 (2) channels FWHM comes out up to 35 % (19 %) broader by a Gaussian fit, and a fit
  through the operator (ParallaxNet) compensates with too-narrow peaks.
* ``interp="cubic"``: Keys cubic convolution with ``a = −0.5`` (Catmull–Rom), 4 taps
  ``j0 − 1 … j0 + 2`` with weights ``(−t³ + 2t² − t) / 2``, ``(3t³ − 5t² + 2) / 2``,
  ``(−3t³ + 4t² + t) / 2``, ``(t³ − t²) / 2``. It reproduces quadratics, so its kernel has zero
  variance: the second moment of a resampled peak is kept (measured within 2 % at 1.5 channels
  FWHM, linear: 28 %); its response still falls at mid frequencies, so the fitted FWHM of a peak
  1.5 (2) channels wide is up to 23 % (9 %) too large. Its negative lobes give small negative
  values next to sharp peaks (ringing, ≈ 2 % of the maximum at 1.5 channels FWHM).
* ``interp="lanczos3"`` (default): Lanczos with ``a = 3``, 6 taps ``j0 − 2 … j0 + 3`` with weights
  ``sinc(d) sinc(d / 3)`` at the tap distances ``d`` (``sinc(x) = sin(πx) / (πx)``), normalised to
  sum 1. A flatter pass band than cubic's: the fitted FWHM of a peak 1.5 (2) channels wide is up
  to 14 % (3 %) too large, 8 % (1.4 %) on average against cubic's 11.5 % (4.6 %); the second
  moment is kept within 1.5 %; ringing ≈ 4 % of the maximum at 1.5 channels FWHM.

Taps beyond the axis ends take the edge channel (replicated edge); true angles outside the axis
contribute 0 (every kernel). Cost of ``"cubic"`` (measured, one CPU thread, 41 px, 41 angles,
240 channels): forward and adjoint ≈ 1.1× linear with the sparse shift matrices (CPU), ≈ 1.6–2×
with the gathers (the path of GPUs), where the shift stage costs one gather per tap;
``"lanczos3"`` ≈ 1.1× cubic on the CPU (forward 0.30 s against 0.27 s on the simulator case of
the tests).

Geometry (that of :class:`~xrdwidgets.ops.projector.ParallelProjector` and of the simulator)
------------------------------------------------------------------------------------------------
* Image ``n × n``, axes ``(y, x)``, one pixel = one translation step = ``pixel_mm``; rotation axis
  at index ``(n − 1) / 2`` on both axes (``cx = cy = (n − 1) / 2``).
* At angle θ (deg, counter-clockwise) the beam runs along ``(x, y) = (sin θ, cos θ)``; translation
  ``i`` of ``n_t`` is the ray at ``p = i − (n_t − 1)/2 − centre_offset`` steps from the axis:
  ``x = cx + p cos θ + s sin θ``, ``y = cy − p sin θ + s cos θ``, with ``s`` the depth (pixels,
  positive towards the detector). A pixel ``(r, c)`` projects to ``p = (c − cx) cos θ − (r − cy) sin θ``
  (scikit-image ``radon`` orientation) and lies at depth ``s = (c − cx) sin θ + (r − cy) cos θ``.

Discretisation ("rotate, shift, integrate")
-------------------------------------------
1. *Shift*: the depth axis is cut into ``K`` bins of ``depth_step`` pixels; for each bin the
   volume's patterns are resampled onto the shifted 2θ grid of that depth (a sparse
   ``(m, K·m)`` matrix of ≤ ``T·K·m`` entries, ``T`` = 2 taps linear, 4 cubic, the same for
   every angle and ray).
2. *Rotate and integrate*: each ray is sampled every ``≤ sample_step`` pixels (0.5) along the
   beam; a sample takes bilinear weights of its four neighbouring pixels and hat weights of its
   two neighbouring depth bins, times the path step (line integrals in pixel units, as
   ``ParallelProjector``). These weights form one sparse ``(n_angles · n_t, P · K)`` matrix
   (``P`` support pixels), built once and kept (``memory_budget``).

The depth step is chosen so that the 2θ shift changes by at most ``max_shift_step`` channels
(0.5) between neighbouring bins (clipped to 1/8 … 8 pixels). With ``distance_mm = inf`` there is
one depth bin and the operator is a ray-driven (bilinear) parallel projector: it equals
``ParallelProjector`` (pixel-driven) up to interpolation (≈ 1–2 % relative on a random image).

Shapes: volume ``(n, n, m)`` (y, x, tth) → sinograms ``(n_translations, n_angles, m)``
(translation, angle, tth), channel axis last, like ``ParallelProjector``. Work is done in
chunks of depth bins (temporaries ``≈ 12 · P · chunk · m`` bytes, ``block_bytes``) and blocks of
angles (``block``: the sparse matrices of one block, ``≈ 16 · 6 · n_t · 2r`` bytes per angle).
The adjoint is the exact transpose, applied in the same chunks; the torch autograd bridge uses it
(vector–Jacobian product), so the operator sits in any torch loss.

Cost (measured, one CPU thread, n = n_t = n_angles = 121, m = 250, circle support, L = 1 m,
0.2 mm step): matrices ≈ 7.4 M entries built once in 5–9 s; forward 0.6–1.6 s, adjoint
0.7–2.5 s (shared, loaded machine) — 5–10× the plain ``ParallelProjector``.

Agreement with the simulator (measured, ``tests/test_parallax_op.py``)
----------------------------------------------------------------------
On a Ni disc + off-centre CeO2 core, 41 px of 0.25 mm, L = 300 mm, 60 keV, 240 channels over
5.3–6.5° (CeO2 peak shifted by up to 8.5 channels), the operator reproduces
:func:`~xrdwidgets.sim.thick_sample.parallax_scan` to 0.7 % relative L2 with ``interp="linear"``,
0.3 % with ``"cubic"``, 0.23 % with ``"lanczos3"`` (0.05 % without parallax); per-ray peak
centroids agree to 0.03 channel (max). The interpolation figures above are from the same tests.
"""
from __future__ import annotations

import copy
import logging
import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from ..base.validators import check_float
from .projector import LinearOperator, circle_mask, default_device

log = logging.getLogger(__name__)

__all__ = ["FORMULAS", "INTERPS", "ParallaxProjector", "apparent_tth", "true_tth"]

#: Accepted apparent-angle formulas (see the module docstring).
FORMULAS = ("atan", "arcsin")
#: Taps of each accepted 2θ resampling kernel (see the module docstring).
TAPS = {"linear": 2, "cubic": 4, "lanczos3": 6}
#: Accepted 2θ resampling kernels.
INTERPS = tuple(TAPS)


# ---------------------------------------------------------------------------- the physics
def _check_formula(formula):
    if formula not in FORMULAS:
        raise ValueError(f"formula: expected one of {FORMULAS}, found {formula!r}")
    return formula


def _check_interp(interp):
    if not isinstance(interp, str) or interp not in INTERPS:
        raise ValueError(f"ParallaxProjector: interp must be one of {INTERPS}, found {interp!r}")
    return interp


def _taps(f, jac, ok, m, interp):
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
    _check_formula(formula)
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
    _check_formula(formula)
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


# ---------------------------------------------------------------------------- checks
def _positive(name, value, *, allow_inf=False):
    return check_float("ParallaxProjector", name + " (mm)", value, minimum=0.0, strict=True, allow_inf=allow_inf)


def _tth_axis(tth_deg):
    t = np.asarray(tth_deg, float).ravel()
    if t.size < 1 or not np.all(np.isfinite(t)):
        raise ValueError(f"ParallaxProjector: tth_deg must be a non-empty finite 2θ axis in degrees, "
                         f"found {tth_deg!r}")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("ParallaxProjector: tth_deg must be strictly increasing (degrees)")
    if np.any(t <= 0) or np.any(t >= 180):
        raise ValueError(f"ParallaxProjector: tth_deg must lie in (0, 180) degrees, found "
                         f"[{t.min():.4g}, {t.max():.4g}]")
    return t


def _to_torch_csr(m: sp.csr_matrix, device) -> torch.Tensor:
    idx = np.int32 if m.nnz < 2**31 and max(m.shape) < 2**31 else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(idx)), torch.from_numpy(m.indices.astype(idx)),
            torch.from_numpy(m.data.astype(np.float32, copy=False)), size=m.shape, device=device,
            check_invariants=False)


class _Apply(torch.autograd.Function):
    """Autograd bridge: forward of ``op`` with its exact adjoint as the backward (and vice versa)."""

    @staticmethod
    def forward(ctx, x, op, adjoint):
        ctx.op, ctx.adjoint = op, adjoint
        return op._adjoint(x) if adjoint else op._forward(x)

    @staticmethod
    def backward(ctx, g):
        op = ctx.op
        return (op._forward(g) if ctx.adjoint else op._adjoint(g)), None, None


# ---------------------------------------------------------------------------- the operator
class ParallaxProjector(LinearOperator):
    """Pencil-beam projector with thick-sample parallax: volume ``(y, x, tth)`` → sinograms.

    Parameters
    ----------
    n : int
        Image size (``n × n`` pixels of one translation step).
    angles_deg : array
        Rotation angles in degrees (any set; 0–180° data alone is enough: the shift of a voxel
        at 180° + θ is the mirror of that at θ and the operator models both).
    tth_deg : array (m,)
        Strictly increasing 2θ axis in degrees, shared by the volume and the sinograms.
    distance_mm : float
        Rotation axis to detector distance in mm (``inf``: no parallax, the plain projector).
    pixel_mm : float
        Pixel size = translation step, mm.
    n_translations : int, optional
        Number of translations (default ``n``).
    centre_offset : float
        Rotation axis position from the middle of the translations, in steps (as
        ``ParallelProjector``).
    mask : bool or array (n, n)
        Image support (``True``: the inscribed circle); pixels outside are ignored (forward) and
        zero (adjoint).
    formula : {"atan", "arcsin"}
        Apparent-angle formula (module docstring).
    interp : {"lanczos3", "cubic", "linear"}
        Kernel of the 2θ resampling on the channel-index axis (module docstring):
        ``"lanczos3"`` (default; 6 taps), ``"cubic"`` (Keys / Catmull–Rom, 4 taps) or
        ``"linear"`` (2 taps, the cheapest with the gathers of GPUs). Linear interpolation
        broadens peaks only 1–2 channels wide and ParallaxNet then fits them too narrow.
        ``benchmarks/bench_parallax.py --small`` (one thread): ParallaxNet's mean
        ``|FWHM ratio − 1|`` 0.04 with lanczos3 (ratios 0.87–1.04), 0.06 with cubic (0.85–1.00),
        0.10 with linear (0.79–1.00); per epoch lanczos3 and cubic cost the same there
        (0.57 s); linear took 0.56 s against cubic's 0.59 s in an earlier pair of runs.
    depth_step : float, optional
        Depth bin size in pixels (default: from ``max_shift_step``).
    max_shift_step : float
        Largest change of the 2θ shift between neighbouring depth bins, in channels (default
        0.5), used when ``depth_step`` is not given.
    sample_step : float
        Largest step between ray samples along the beam, pixels (default 0.5).
    block : int, optional
        Angles per block of sparse matrices (bounds their memory); default from ``block_bytes``.
    block_bytes : int
        Target bytes of one angle block's matrices and of one depth chunk's temporaries
        (default 256 MiB).
    device : optional
        torch device (default CUDA when present).
    memory_budget : int
        Bytes of sparse rotation matrices kept between applications (default 1 GiB); blocks over
        it are rebuilt on each application.

    Notes
    -----
    ``op(vol)`` maps ``(n, n, m)`` to ``(n_t, n_angles, m)``; ``op.T(sino)`` is the exact
    adjoint. numpy in → numpy out; torch in → torch out, differentiable through autograd.
    :meth:`select_channels` gives the operator of a channel sub-range (sharing the rotation
    matrices), for channel batching.
    """

    _force_gather = False  # tests: use the gather path (that of GPUs) on the CPU too

    def __init__(self, n: int, angles_deg, tth_deg, distance_mm: float, pixel_mm: float, *,
                 n_translations: int | None = None, centre_offset: float = 0.0, mask=False,
                 formula: str = "atan", interp: str = "lanczos3", depth_step: float | None = None,
                 max_shift_step: float = 0.5,
                 sample_step: float = 0.5,
                 block: int | None = None, device=None, memory_budget: int = 2**30,
                 block_bytes: int = 256 * 2**20):
        try:
            n_int = int(n)
        except (TypeError, ValueError):
            n_int = -1
        if n_int != n or n_int < 1:
            raise ValueError(f"ParallaxProjector: n must be an integer >= 1, found {n!r}")
        angles = np.asarray(angles_deg, dtype=np.float64).ravel()
        if angles.size == 0 or not np.all(np.isfinite(angles)):
            raise ValueError(f"ParallaxProjector: angles_deg must be a non-empty finite array, found {angles_deg!r}")
        tth = _tth_axis(tth_deg)
        L = _positive("distance_mm", distance_mm, allow_inf=True)
        px = _positive("pixel_mm", pixel_mm)
        n_t = n_int if n_translations is None else n_translations
        if int(n_t) != n_t or int(n_t) < 1:
            raise ValueError(f"ParallaxProjector: n_translations must be an integer >= 1, found {n_translations!r}")
        try:
            off = float(centre_offset)
        except (TypeError, ValueError):
            off = math.nan
        if not math.isfinite(off):
            raise ValueError(f"ParallaxProjector: centre_offset must be a finite number (steps), found {centre_offset!r}")
        self.formula = _check_formula(formula)
        self.interp = _check_interp(interp)
        if mask is True:
            mask_arr = circle_mask(n_int)
        elif mask is False or mask is None:
            mask_arr = None
        else:
            mask_arr = np.asarray(mask, bool)
            if mask_arr.shape != (n_int, n_int):
                raise ValueError(f"ParallaxProjector: mask must have shape {(n_int, n_int)}, found {mask_arr.shape}")
        self.n = n_int
        self.n_translations = int(n_t)
        self.angles_deg = angles
        self.distance_mm = L
        self.pixel_mm = px
        self.centre_offset = off
        self.mask = mask_arr
        self.device = torch.device(device) if device is not None else default_device()
        self.memory_budget = int(memory_budget)
        sup = np.nonzero(mask_arr) if mask_arr is not None else np.nonzero(np.ones((n_int, n_int), bool))
        self._support = (sup[0].astype(np.int64), sup[1].astype(np.int64))
        c = (n_int - 1) / 2.0
        r_max = float(np.sqrt((self._support[0] - c) ** 2 + (self._support[1] - c) ** 2).max())
        self._r_max = r_max
        self.sample_step = _positive("sample_step", sample_step)
        if math.isfinite(L) and L <= (r_max + 1.0) * px:
            raise ValueError(f"ParallaxProjector: distance_mm ({L} mm) must be beyond the sample "
                             f"(its pixels reach {(r_max + 0.5) * px:.4g} mm from the axis)")
        # depth bins (one when there is no parallax)
        m = tth.size
        if math.isinf(L):
            self.depth_step, self._s_min, self.n_depth = math.inf, 0.0, 1
        else:
            if depth_step is None:
                depth_step = self._auto_depth_step(tth, max_shift_step)
            self.depth_step = _positive("depth_step", depth_step)
            nk = math.floor((r_max + 1.5) / self.depth_step) + 2
            self._s_min = -nk * self.depth_step      # bin k sits at s_min + k·depth_step (pixels)
            self.n_depth = 2 * nk + 1
        P = self._support[0].size
        # depth chunks bound the shifted-volume temporary (P · chunk · m floats, ~3 copies)
        per_bin = 12 * P * max(m, 1)
        self._chunk = max(1, min(self.n_depth, int(block_bytes) // per_bin))
        self._chunks = [(k, min(self.n_depth, k + self._chunk)) for k in range(0, self.n_depth, self._chunk)]
        # angle blocks bound the rotation matrices (~6 entries per pixel and angle, 8 bytes each, ×2)
        if block is None:
            per_angle = 16 * self.n_translations * (2 * r_max + 3) * (3 if self.n_depth == 1 else 6)
            block = max(1, min(angles.size, int(block_bytes) // max(1, per_angle)))
        if isinstance(block, bool) or int(block) != block or int(block) < 1:
            raise ValueError(f"ParallaxProjector: block must be an integer >= 1 (angles per block), found {block!r}")
        self.block = int(block)
        self._blocks = [(a, min(angles.size, a + self.block)) for a in range(0, angles.size, self.block)]
        self._cache: dict = {}
        self._set_channels(tth)
        log.debug("ParallaxProjector n=%d angles=%d translations=%d channels=%d L=%g mm px=%g mm "
                  "depth bins=%d (step %.3g px, chunks of %d) angle blocks=%d", n_int, angles.size,
                  self.n_translations, m, L, px, self.n_depth, self.depth_step, self._chunk, len(self._blocks))

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_geometry(cls, geometry, n: int, angles_deg, tth_deg, *, distance_mm=None, pixel_mm=None,
                      **kwargs) -> ParallaxProjector:
        """Operator of a :class:`~xrdwidgets.geometry.ScanGeometry` (distance, step, centre).

        ``distance_mm`` / ``pixel_mm`` override ``geometry.distance_mm`` /
        ``geometry.translation_step_mm``; other keywords go to the constructor.
        """
        L = distance_mm if distance_mm is not None else getattr(geometry, "distance_mm", None)
        px = pixel_mm if pixel_mm is not None else getattr(geometry, "translation_step_mm", None)
        if L is None:
            raise ValueError("ParallaxProjector.from_geometry: no detector distance: give distance_mm= or "
                             "store geometry_distance_mm in the stack's attrs")
        if px is None:
            raise ValueError("ParallaxProjector.from_geometry: no translation step: give pixel_mm= or store "
                             "geometry_translation_step_mm in the stack's attrs")
        kwargs.setdefault("centre_offset", getattr(geometry, "centre_offset", 0.0) if geometry is not None else 0.0)
        return cls(n, angles_deg, tth_deg, L, px, **kwargs)

    @classmethod
    def from_stack(cls, stack, *, n: int | None = None, distance_mm=None, pixel_mm=None,
                   **kwargs) -> ParallaxProjector:
        """Operator of a sinogram stack ``(translation, angle, tth)``: its angles, 2θ axis and geometry.

        Parameters
        ----------
        stack : xarray.DataArray or Dataset
            Sinogram stack with a ``tth`` axis (degrees) and ``geometry_*`` attrs
            (``distance_mm``, ``translation_step_mm``, ``centre_offset``).
        n : int, optional
            Image size (default: the number of translations).
        distance_mm, pixel_mm : float, optional
            Override the stored geometry.
        **kwargs
            Passed to the constructor (``mask``, ``device``, ``formula``, ``interp``, ...).
        """
        from .. import data as _data

        da = _data.validate_sinogram_stack(stack, check_finite=False)
        spec = _data.spectral_dim(da)
        if spec != "tth":
            raise ValueError(f"ParallaxProjector.from_stack: the parallax model needs a 2θ axis 'tth' in "
                             f"degrees, found spectral dim {spec!r} (convert with xrdwidgets.data.convert_spectral)")
        n_t = da.sizes[_data.TRANSLATION]
        kwargs.setdefault("n_translations", n_t)
        return cls.from_geometry(_data.get_geometry(da), n_t if n is None else n, da[_data.ANGLE].values,
                                 da["tth"].values, distance_mm=distance_mm, pixel_mm=pixel_mm, **kwargs)

    def select_channels(self, channels) -> ParallaxProjector:
        """The operator of a channel sub-range (a ``slice`` or increasing index array).

        Shares the rotation matrices with ``self`` (no rebuild). Signal shifting into the
        sub-range from channels outside it is not modelled — hence overlapping channel batches
        (:mod:`xrdwidgets.recon.batching`).
        """
        tth = np.asarray(self.tth_deg[channels], float).ravel()
        new = copy.copy(self)
        new._set_channels(_tth_axis(tth))
        return new

    def _auto_depth_step(self, tth, target):
        """Depth bin (pixels) over which the 2θ shift changes by at most ``target`` channels."""
        try:
            target = float(target)
        except (TypeError, ValueError):
            target = math.nan
        if not (target > 0) or not math.isfinite(target):
            raise ValueError(f"ParallaxProjector: max_shift_step must be a positive number of channels, "
                             f"found {target!r}")
        if tth.size < 2:
            return 8.0
        t = np.deg2rad(tth)
        width = np.deg2rad(np.gradient(tth))                       # local channel width, rad
        rate = self.pixel_mm / self.distance_mm * np.abs(np.sin(2 * t)) / 2.0 / width  # channels per pixel
        return float(np.clip(target / max(rate.max(), 1e-12), 0.125, 8.0))

    # ------------------------------------------------------------------ spectral shift tables
    def _set_channels(self, tth):
        """Per depth bin ``k`` and measured channel ``j``: the ``T`` source channels and weights.

        ``T`` = 2 (``interp="linear"``), 4 (``"cubic"``) or 6 (``"lanczos3"``). Kept per depth
        chunk: on the CPU a torch CSR pair ``(S, Sᵀ)``, ``S`` of shape ``(m, Kc·m)``; elsewhere
        (or with ``_force_gather``) the tensors ``(idx (T, Kc·m) int64, w (T, Kc·m) float32)``.
        """
        self.tth_deg = tth
        m = tth.size
        K = self.n_depth
        self.depth_mm = (self._s_min + np.arange(K) * self.depth_step) * self.pixel_mm if K > 1 else np.zeros(1)
        self._no_shift = K == 1
        if self._no_shift:
            self._shift = None
            return
        T = TAPS[self.interp]
        if m == 1:  # one channel: nothing to interpolate between, no shift modelled
            idx = np.zeros((T, K, 1), np.int64)
            w = np.zeros((T, K, 1))
            w[T // 2 - 1] = 1.0                    # the tap of j0
        else:
            true, jac = true_tth(tth[None, :], self.depth_mm[:, None], self.distance_mm, self.formula,
                                 jacobian=True)
            f = np.interp(true, tth, np.arange(m, dtype=float), left=np.nan, right=np.nan)   # (K, m)
            ok = np.isfinite(f)
            idx, w = _taps(np.where(ok, f, 0.0), jac, ok, m, self.interp)                  # (T, K, m)
        dev = self.device
        # CPU: one sparse (m, Kc·m) matrix per chunk (dense @ CSR products, fastest there);
        # other devices: gathers (index_select / index_add_), supported everywhere
        self._use_sparse_shift = dev.type == "cpu" and not self._force_gather
        self._shift = []
        for k0, k1 in self._chunks:
            a = np.ascontiguousarray(idx[:, k0:k1]).reshape(T, -1)
            b = np.ascontiguousarray(w[:, k0:k1]).reshape(T, -1)
            if self._use_sparse_shift:
                q = np.arange(a.shape[1])
                S = sp.csr_matrix((b.ravel(), (a.ravel(), np.tile(q, T))), shape=(m, a.shape[1]))
                S.sum_duplicates()
                self._shift.append((_to_torch_csr(S, dev), _to_torch_csr(S.T.tocsr(), dev)))
            else:
                self._shift.append((torch.as_tensor(a, dtype=torch.int64, device=dev),
                                    torch.as_tensor(b, dtype=torch.float32, device=dev)))

    def _shifted(self, V, c):
        """Shifted copies of the volume ``V`` (P, m) for the depth bins of chunk ``c``: (P·Kc, m)."""
        if self._no_shift:
            return V
        if self._use_sparse_shift:
            S, _ = self._shift[c]
            return torch.mm(V, S).view(-1, V.shape[1])
        idx, w = self._shift[c]
        U = V.index_select(1, idx[0]) * w[0]
        for i in range(1, idx.shape[0]):
            U += V.index_select(1, idx[i]) * w[i]
        return U.view(-1, V.shape[1])

    def _unshift_add(self, acc, Ubar, c):
        """Adjoint of :meth:`_shifted`: ``acc (P, m) += Sᵀ Ubar`` for chunk ``c``."""
        if self._no_shift:
            acc += Ubar
            return
        Ub = Ubar.view(acc.shape[0], -1)
        if self._use_sparse_shift:
            _, ST = self._shift[c]
            acc += torch.mm(Ub, ST)
            return
        idx, w = self._shift[c]
        for i in range(idx.shape[0]):
            acc.index_add_(1, idx[i], Ub * w[i])

    # ------------------------------------------------------------------ shapes
    @property
    def n_channels(self) -> int:
        """Number of 2θ channels ``m``."""
        return int(self.tth_deg.size)

    @property
    def domain_shape(self) -> tuple:
        """Volume shape ``(n, n, m)`` (y, x, tth)."""
        return (self.n, self.n, self.n_channels)

    @property
    def range_shape(self) -> tuple:
        """Sinogram shape ``(n_translations, n_angles, m)`` (translation, angle, tth)."""
        return (self.n_translations, self.angles_deg.size, self.n_channels)

    # ------------------------------------------------------------------ rotation matrices
    def _block(self, b):
        """Per depth chunk, the ``(W, Wᵀ)`` torch CSR pair of angle block ``b``."""
        if b in self._cache:
            return self._cache[b]
        a0, a1 = self._blocks[b]
        mats = self._rotation_matrices(self.angles_deg[a0:a1])
        pairs = [(_to_torch_csr(W, self.device), _to_torch_csr(W.T.tocsr(), self.device)) for W in mats]
        nnz = sum(W.nnz for W in mats)
        used = sum(16 * W.values().numel() for v in self._cache.values() for W, _ in v)
        if used + 16 * nnz <= self.memory_budget:
            self._cache[b] = pairs
        elif not getattr(self, "_warned", False):
            self._warned = True
            log.warning("ParallaxProjector: rotation matrices over memory_budget (%.2f GiB); angle blocks are "
                        "rebuilt on every application (slow in loops: raise memory_budget)",
                        self.memory_budget / 2**30)
        return pairs

    def _rotation_matrices(self, angles_deg):
        """Per depth chunk, a CSR ``(n_a · n_t, P · Kc)``: (pixel, depth bin) → ray.

        Row ``a · n_t + t``; column ``p · Kc + (k − k0)`` for support pixel ``p`` and depth bin
        ``k`` of the chunk ``[k0, k0 + Kc)``. Each ray is sampled every ``δ ≤ sample_step``
        pixels along the beam; a sample takes bilinear weights of its 4 neighbouring pixels
        (zero outside the image / support), hat weights of its 2 neighbouring depth bins, times
        the path step ``δ`` (line integrals in pixel units).
        """
        n, n_t, K = self.n, self.n_translations, self.n_depth
        c = (n - 1) / 2.0
        rr, cc = self._support
        P = rr.size
        pix_id = np.full((n + 2, n + 2), -1, np.int64)            # padded: index -1 .. n
        pix_id[rr + 1, cc + 1] = np.arange(P)
        th = np.deg2rad(np.asarray(angles_deg, np.float64))
        na = th.size
        half = self._r_max + 1.5
        if K == 1:
            n_s = max(2, math.ceil(2 * half / self.sample_step))
            step = 2 * half / n_s
        else:
            step = self.depth_step / math.ceil(self.depth_step / self.sample_step)
            n_s = math.ceil(2 * half / step)
        s_pos = -half + (np.arange(n_s) + 0.5) * step               # sample depths (pixels)
        if K == 1:
            bins = [(np.zeros(n_s, np.int64), np.ones(n_s))]
        else:
            q = (s_pos - self._s_min) / self.depth_step
            k0 = np.floor(q).astype(np.int64)
            f = q - k0
            bins = [(k0, 1.0 - f), (k0 + 1, f)]
        p_ray = np.arange(n_t, dtype=np.float64) - (n_t - 1) / 2.0 - self.centre_offset
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
        for k0_, k1_ in self._chunks:
            kc = k1_ - k0_
            sel = (ks >= k0_) & (ks < k1_)
            W = sp.csr_matrix((vals[sel], (rows[sel], pid[sel] * kc + (ks[sel] - k0_))), shape=(na * n_t, P * kc))
            W.sum_duplicates()
            out.append(W)
        return out

    # ------------------------------------------------------------------ application
    def _check(self, x, shape, what):
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"ParallaxProjector {what}: expected shape {tuple(shape)}, found {tuple(x.shape)}")

    def _forward(self, x):
        self._check(x, self.domain_shape, "forward (volume (y, x, tth))")
        dtype = x.dtype
        n, m, n_t = self.n, self.n_channels, self.n_translations
        rr, cc = self._support
        V = x.reshape(n * n, m).to(torch.float32)
        if self.mask is not None:
            V = V[torch.as_tensor(rr * n + cc, device=V.device)]
        V = V.contiguous()
        out = torch.zeros((self.angles_deg.size * n_t, m), dtype=torch.float32, device=x.device)
        for c in range(len(self._chunks)):
            U = self._shifted(V, c)
            for b, (a0, a1) in enumerate(self._blocks):
                W, _ = self._block(b)[c]
                out[a0 * n_t:a1 * n_t] += torch.sparse.mm(W, U)
        return out.view(self.angles_deg.size, n_t, m).transpose(0, 1).to(dtype)

    def _adjoint(self, y):
        self._check(y, self.range_shape, "adjoint (sinogram (translation, angle, tth))")
        dtype = y.dtype
        n, m, n_t = self.n, self.n_channels, self.n_translations
        Y = y.to(torch.float32).transpose(0, 1).reshape(self.angles_deg.size * n_t, m)
        acc = torch.zeros((self._support[0].size, m), dtype=torch.float32, device=y.device)
        for c in range(len(self._chunks)):
            Ubar = None
            for b, (a0, a1) in enumerate(self._blocks):
                _, WT = self._block(b)[c]
                part = torch.sparse.mm(WT, Y[a0 * n_t:a1 * n_t])
                Ubar = part if Ubar is None else Ubar.add_(part)
            self._unshift_add(acc, Ubar, c)
        if self.mask is None:
            out = acc
        else:
            out = torch.zeros((n * n, m), dtype=torch.float32, device=y.device)
            out[torch.as_tensor(self._support[0] * n + self._support[1], device=y.device)] = acc
        return out.reshape(n, n, m).to(dtype)

    def _apply(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        return _Apply.apply(t, self, adjoint)

    def __call__(self, vol):
        """Forward projection of a volume ``(n, n, m)`` (y, x, tth) → ``(n_t, n_angles, m)``."""
        return self._call(vol, False)

    def adjoint(self, sino):
        """Adjoint (back-projection with the inverse shifts) of ``(n_t, n_angles, m)`` → ``(n, n, m)``."""
        return self._call(sino, True)

    def __repr__(self):
        return (f"ParallaxProjector(n={self.n}, angles={self.angles_deg.size}, channels={self.n_channels}, "
                f"distance_mm={self.distance_mm}, pixel_mm={self.pixel_mm}, "
                f"n_translations={self.n_translations}, centre_offset={self.centre_offset}, "
                f"formula={self.formula!r}, interp={self.interp!r}, depth_step={self.depth_step:.4g}, "
                f"device='{self.device}')")

