"""Sinogram-stack corrections: air scatter, beam decay, motor jitter and centre of rotation.

Every correction works on a whole sinogram stack ``(translation, angle, spectral)`` at once: the
estimate is made from the channel sum (one summary sinogram ``(translation, angle)``) or from a
few edge translations, and the correction is applied to every channel in one vectorised pass.

API
---
Each public correction returns a pair ``(corrected, report)``:

``corrected``
    an :class:`xarray.DataArray` in canonical order ``(translation, angle, spectral)``, same
    coords, attrs updated: provenance (``provenance_*``), the list of corrections applied so far
    (``attrs["corrections"]``, a comma-separated string) and, for the centre, the geometry.
    A :class:`xarray.Dataset` input (e.g. from :func:`xrdwidgets.sim.scan.acquire`) gives its
    ``sinogram`` variable.
``report``
    a small frozen dataclass saying what was found (:class:`AirResult`, :class:`DecayResult`,
    :class:`JitterResult`, :class:`CentreResult`); ``report.summary()`` is a one-line text.

:func:`correct` runs the four in a sensible order (decay → air → jitter → centre) and returns
``(corrected, [report, ...])``. :func:`find_centre` estimates the centre without changing the
data. :func:`detect_edges` and :func:`shift_projections` are the bare-array kernels.

Conventions
-----------
* Translation index ``i`` of ``n_t``; positions and shifts are in translation *steps*.
* Rotation axis: at index ``(n_t - 1) / 2 + centre_offset`` (as :class:`~xrdwidgets.geometry.ScanGeometry`
  and the projector of :mod:`xrdwidgets.ops.projector`).
* A positive shift moves a projection's content towards higher translation indices.
* Centre of mass of a projection in a parallel-beam scan, in steps from the middle of the
  translations: ``COM(θ) = c + a·cos θ + b·sin θ``, the constant ``c`` being the axis offset.
* Stacks with leading ``z`` / ``time`` dims are refused: correct one slice at a time
  (``stack.isel(z=k)``).

The estimates assume background-free data for jitter and centre (remove air first, as
:func:`correct` does) and, for decay from the data, a sample that stays inside the translation
range at every angle (then the total intensity of a projection is the same for every angle).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.fft as sfft
import xarray as xr
from scipy import optimize

from . import data as _data
from .data import DataError
from .geometry import ScanGeometry

log = logging.getLogger(__name__)

__all__ = [
    "centre_candidates", "centre_gallery",
    "AIR_MODES", "STATISTICS", "INTERPOLATIONS", "CENTRE_METHODS", "CENTRE_METRICS", "APPLY_MODES",
    "AirResult", "DecayResult", "JitterResult", "CentreResult",
    "remove_air", "normalise_decay", "correct_jitter", "find_centre", "correct_centre", "correct",
    "detect_edges", "shift_projections", "centre_of_mass", "fit_sinusoid",
]

#: Air-scatter background models of :func:`remove_air`.
AIR_MODES = ("auto", "scaled", "global", "per_angle")
#: Statistics over the edge translations.
STATISTICS = ("mean", "median")
#: Sub-step shift methods of :func:`shift_projections`.
INTERPOLATIONS = ("fourier", "linear")
#: Methods of :func:`find_centre`.
CENTRE_METHODS = ("auto", "opposing", "com", "metric")
#: Image-quality metrics of the FBP search (all minimised).
CENTRE_METRICS = ("tv", "l1", "entropy")
#: How :func:`correct_centre` applies the offset.
APPLY_MODES = ("geometry", "shift")

_PRODUCER = "xrdwidgets.corrections"


# ============================================================================ reports
class _Report:
    """Base of the correction reports: a name and a one-line summary."""

    name: ClassVar[str] = "correction"

    def summary(self) -> str:  # pragma: no cover - overridden
        return self.name


@dataclass(frozen=True, eq=False)
class AirResult(_Report):
    """What :func:`remove_air` found.

    Attributes
    ----------
    edges : (int, int)
        Number of air-only translations used at the low-index and high-index ends.
    detected : bool
        ``True`` when ``edges`` was detected from the data, ``False`` when given.
    mode, statistic : str
        Background model (:data:`AIR_MODES`) and statistic (:data:`STATISTICS`).
    pattern : xarray.DataArray (spectral)
        Estimated air pattern per point, in the stack's units, at the median beam intensity
        (the background subtracted at angle ``j`` is ``scale[j] · pattern``; for
        ``mode="per_angle"`` that holds for the pattern's sum only).
    scale : xarray.DataArray (angle)
        Relative air level of each projection (1 at the median; all 1 for ``mode="global"``).
    n_clipped : int
        Values set to 0 by ``clip=True``.
    """

    name: ClassVar[str] = "air"
    edges: tuple
    detected: bool
    mode: str
    statistic: str
    pattern: xr.DataArray
    scale: xr.DataArray
    n_clipped: int = 0

    def summary(self) -> str:
        return (f"air: {self.mode} {self.statistic} of edges {self.edges}"
                f"{' (detected)' if self.detected else ''}; pattern sum {float(self.pattern.sum()):.4g}, "
                f"scale {float(self.scale.min()):.3f}–{float(self.scale.max()):.3f}"
                + (f", {self.n_clipped} values clipped" if self.n_clipped else ""))


@dataclass(frozen=True, eq=False)
class DecayResult(_Report):
    """What :func:`normalise_decay` found.

    Attributes
    ----------
    factors : xarray.DataArray (angle) or (translation, angle)
        Relative beam intensity the data were divided by (1 at the reference).
    source : str
        ``"totals"`` (projection sums of the data) or ``"monitor"``.
    reference : str
        ``"median"``, ``"first"`` or ``"max"``: where the factors equal 1.
    """

    name: ClassVar[str] = "decay"
    factors: xr.DataArray
    source: str
    reference: str

    def summary(self) -> str:
        f = self.factors.values
        return (f"decay: {self.source} relative to the {self.reference}, factors "
                f"{float(f.min()):.4f}–{float(f.max()):.4f}")


@dataclass(frozen=True, eq=False)
class JitterResult(_Report):
    """What :func:`correct_jitter` found.

    Attributes
    ----------
    shifts_steps : xarray.DataArray (angle)
        Shift applied to each projection, translation steps (positive: towards higher indices);
        minus the measured jitter.
    com_steps : xarray.DataArray (angle)
        Measured centre of mass of each projection, steps from the middle of the translations.
    sinusoid : (float, float, float)
        ``(c, a, b)`` of ``COM(θ) = c + a cos θ + b sin θ`` (steps from the middle).
    axis_offset_steps : float
        The rotation-axis position implied by the fit (``c``), steps from the middle.
    rms_steps : float
        Root mean square of the shifts.
    interpolation : str
        :data:`INTERPOLATIONS` used to shift.
    """

    name: ClassVar[str] = "jitter"
    shifts_steps: xr.DataArray
    com_steps: xr.DataArray
    sinusoid: tuple
    axis_offset_steps: float
    rms_steps: float
    interpolation: str

    def summary(self) -> str:
        s = self.shifts_steps.values
        return (f"jitter: rms {self.rms_steps:.3f} steps, max {float(np.abs(s).max()):.3f}; "
                f"axis from the COM sinusoid at {self.axis_offset_steps:+.3f} steps")


@dataclass(frozen=True, eq=False)
class CentreResult(_Report):
    """What :func:`find_centre` / :func:`correct_centre` found.

    Attributes
    ----------
    offset_steps : float
        Rotation-axis position relative to the middle of the translations, steps (the
        ``centre_offset`` convention of :class:`~xrdwidgets.geometry.ScanGeometry`).
    method : str
        Method that gave ``offset_steps`` (:data:`CENTRE_METHODS` or ``"given"``).
    estimates : dict
        Offset found by each method tried, ``{method: steps}``.
    candidates_steps, scores : numpy.ndarray or None
        The FBP image-metric curve (offsets tried and their metric, lower is better).
    metric : str or None
        Metric of the curve (:data:`CENTRE_METRICS`).
    n_pairs : int
        Opposing projection pairs (θ, θ + 180°) used (0 when not used).
    apply : str or None
        ``"geometry"`` or ``"shift"`` after :func:`correct_centre`; ``None`` from :func:`find_centre`.
    previous_offset_steps : float
        ``centre_offset`` of the geometry stored with the input (0 when none).
    """

    name: ClassVar[str] = "centre"
    offset_steps: float
    method: str
    estimates: dict = field(default_factory=dict)
    candidates_steps: np.ndarray | None = None
    scores: np.ndarray | None = None
    metric: str | None = None
    n_pairs: int = 0
    apply: str | None = None
    previous_offset_steps: float = 0.0

    def summary(self) -> str:
        est = ", ".join(f"{k} {v:+.3f}" for k, v in self.estimates.items())
        return (f"centre: {self.offset_steps:+.3f} steps by {self.method}"
                + (f" ({est})" if est else "") + (f", applied to the {self.apply}" if self.apply else ""))


# ============================================================================ input / output
def _stack(stack, name: str = "stack") -> xr.DataArray:
    """Validated canonical sinogram stack without leading dims."""
    if not isinstance(stack, (xr.DataArray, xr.Dataset)):
        raise DataError(f"{name}: expected an xarray DataArray/Dataset sinogram stack "
                        f"(translation, angle, spectral), found {type(stack).__name__}")
    da = _data.validate_sinogram_stack(_data.as_dataarray(stack, "sinogram"), check_finite="always",
                                       name=name)
    extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
    if extra:
        raise DataError(f"{name}: expected one sinogram stack (translation, angle, spectral), found extra "
                        f"dims {extra} (sizes {dict(da.sizes)}); correct one slice at a time, e.g. "
                        f"{name}.isel({extra[0]}=0)")
    n_t = da.sizes[_data.TRANSLATION]
    if n_t < 4:
        raise DataError(f"{name}: expected at least 4 translations, found {n_t}")
    return da


def _values(da: xr.DataArray) -> np.ndarray:
    """Float array of the stack (float32 stays float32, everything else float64)."""
    v = np.asarray(da.values)
    return v if v.dtype in (np.float32, np.float64) else v.astype(np.float64)


def _summed(values: np.ndarray) -> np.ndarray:
    """Channel sum ``(translation, angle)`` in float64."""
    return values.sum(axis=-1, dtype=np.float64)


def _angles(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da[_data.ANGLE].values, dtype=np.float64)


def _output(da: xr.DataArray, values, step: str, params: dict, *, geometry=None) -> xr.DataArray:
    """A copy of ``da`` with new values, provenance and the list of corrections updated."""
    out = da.copy(data=np.asarray(values, dtype=da.dtype if np.issubdtype(da.dtype, np.floating)
                                  else np.float64))
    attrs = {k: v for k, v in da.attrs.items() if not k.startswith("provenance_")}
    attrs["corrections"] = ",".join(_done(da) + [step])
    params = dict(params, source=da.attrs.get("provenance_producer", ""))
    attrs.update(_data.provenance(f"{_PRODUCER}.{step}", params))
    out.attrs = attrs
    if geometry is not None:
        out = _data.set_geometry(out, geometry)
    return out


def _done(da: xr.DataArray) -> list:
    """Corrections already applied to ``da`` (from ``attrs["corrections"]``)."""
    return [s.strip() for s in str(da.attrs.get("corrections", "")).split(",") if s.strip()]


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, found {value!r}")
    return value


def _angle_coord(da, values, long_name, units):
    return xr.DataArray(np.asarray(values, float), dims=(_data.ANGLE,),
                        coords={_data.ANGLE: da[_data.ANGLE]},
                        attrs={"long_name": long_name, "units": units})


def _angle_range(angles: np.ndarray) -> tuple:
    """``(start, stop)`` of a scan: 180° or 360° from the first angle, by the angles covered."""
    a = np.sort(angles)
    step = float(np.median(np.diff(a))) if a.size > 1 else 0.0
    span = a[-1] - a[0] + step
    return (float(a[0]), float(a[0] + (360.0 if span > 180.0 + 1e-6 else 180.0)))


# ============================================================================ kernels
def _robust_std(x) -> float:
    x = np.asarray(x, float)
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


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
    sigma = _robust_std(norm[low])
    peak = norm.max(axis=1)
    limit = air + max(n_sigma * sigma, threshold * (float(peak.max()) - air))
    empty = peak <= limit
    half = (n_t - 1) // 2
    left = int(np.argmin(empty)) if not empty.all() else half
    right = int(np.argmin(empty[::-1])) if not empty.all() else half
    return min(left, half), min(right, half)


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
        s = _robust_std(r)
        if not robust or s <= 0:
            break
        w_new = np.sqrt(np.minimum(1.0, 2.0 * s / np.maximum(np.abs(r), 1e-300)))
        if np.allclose(w_new, w):
            break
        w = w_new
    return tuple(float(c) for c in coef), A @ coef


def _fourier_shift(x: np.ndarray, shifts) -> np.ndarray:
    """Shift ``x`` along axis 0 by ``shifts`` (broadcast over the other axes), edge-padded."""
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
    _choice("interpolation", interpolation, INTERPOLATIONS)
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
            out[:, :, c0:c1] = _fourier_shift(x3[:, :, c0:c1], s[:, None])
    else:
        for j in range(n_a):
            out[:, j, :] = _linear_shift(x3[:, j, :], s[j])
    return out if x.ndim == 3 else out[:, :, 0]


# ---------------------------------------------------------------------------- centre kernels
def _opposing_pairs(angles: np.ndarray):
    """Pairs (j, k, w): projection j is opposed by ``(1-w)·P_k + w·P_{k+1}`` at θ_j ± 180°.

    Angles ``θ_j + 180°`` inside the measured range are interpolated (a 0–360° scan). Only when
    there are none (a 0–180° scan) the opposite projection one angle step beyond either end of
    the range is extrapolated. Angles must be sorted ascending.
    """
    n = angles.size
    step = float(np.median(np.diff(angles)))

    def pair(j, phi):
        k = int(np.clip(np.searchsorted(angles, phi) - 1, 0, n - 2))
        return j, k, float((phi - angles[k]) / (angles[k + 1] - angles[k]))

    inside = [pair(j, th + 180.0) for j, th in enumerate(angles) if th + 180.0 <= angles[-1] + 1e-9]
    if inside:
        return inside
    ends = [pair(j, th + 180.0) for j, th in enumerate(angles) if th + 180.0 <= angles[-1] + 1.01 * step]
    ends += [pair(j, th - 180.0) for j, th in enumerate(angles) if th - 180.0 >= angles[0] - 1.01 * step]
    return ends


def _opposing_offset(summed: np.ndarray, angles: np.ndarray) -> tuple[float, int]:
    """Axis offset (steps) from projection pairs 180° apart: ``P(θ+180°)(i) = P(θ)(2a - i)``.

    The mirrored projection ``flip(P_j)`` shifted by ``2·offset`` matches its opposite; the
    shift is found by maximising the summed cross-correlation of all pairs (FFT, then a
    continuous Brent search on the Fourier-interpolated correlation).
    """
    order = np.argsort(angles)
    a = angles[order]
    s = summed[:, order]
    if a.size < 2:
        raise DataError(f"stack: the opposing-projection centre needs at least 2 angles, found {a.size}")
    pairs = _opposing_pairs(a)
    if not pairs:
        raise DataError(
            f"stack: angles {a[0]:.4g}–{a[-1]:.4g}° (step {np.median(np.diff(a)):.4g}°) hold no pair of "
            "projections 180° apart (expected a 0–180° scan, stop excluded, or a 0–360° scan); use "
            "method='com' or 'metric'")
    n_t = s.shape[0]
    ref = np.stack([s[::-1, j] for j, _, _ in pairs], axis=1)
    tgt = np.stack([(1 - w) * s[:, k] + w * s[:, k + 1] for _, k, w in pairs], axis=1)
    size = sfft.next_fast_len(2 * n_t, real=True)
    cross = (np.conj(sfft.rfft(tgt, size, axis=0)) * sfft.rfft(ref, size, axis=0)).sum(axis=1)
    weight = np.full(cross.shape, 2.0)
    weight[0] = 1.0
    if size % 2 == 0:
        weight[-1] = 1.0
    k = np.arange(cross.size)

    def corr(d):  # Σ_i shift(ref, d)[i] · tgt[i], as a continuous function of the shift d
        return float(np.sum(weight * np.real(cross * np.exp(-2j * np.pi * k * d / size))))

    # irfft gives Σ_i tgt[i]·ref[i + L] at lag L (circular), i.e. the correlation at shift d = -L
    cc = sfft.irfft(cross, size)
    lags = np.arange(size)
    lags = np.where(lags > size // 2, lags - size, lags)
    ok = np.abs(lags) < n_t
    d0 = -float(lags[ok][np.argmax(cc[ok])])
    res = optimize.minimize_scalar(lambda d: -corr(d), bounds=(d0 - 1.0, d0 + 1.0), method="bounded",
                                   options={"xatol": 1e-4})
    return float(res.x) / 2.0, len(pairs)


def _image_metric(images: np.ndarray, metric: str) -> np.ndarray:
    """Metric of each image of a batch ``(y, x, K)``; lower is better."""
    if metric == "tv":
        gy = np.diff(images, axis=0)[:, :-1]
        gx = np.diff(images, axis=1)[:-1, :]
        return np.sqrt(gy ** 2 + gx ** 2).sum(axis=(0, 1))
    if metric == "l1":
        return np.abs(images).sum(axis=(0, 1))
    lo, hi = float(images.min()), float(images.max())
    out = np.empty(images.shape[-1])
    for k in range(images.shape[-1]):
        h, _ = np.histogram(images[..., k], bins=64, range=(lo, hi))
        p = h[h > 0] / h.sum()
        out[k] = -np.sum(p * np.log(p))
    return out


def _half_turns(angles: np.ndarray) -> list:
    """Index arrays of the 180° halves of a scan (one for a 0–180° scan, two for 0–360°)."""
    a0 = float(np.min(angles))
    rel = angles - a0
    if _angle_range(angles)[1] - _angle_range(angles)[0] <= 180.0:
        return [np.arange(angles.size)]
    return [np.nonzero(rel < 180.0 - 1e-9)[0], np.nonzero(rel >= 180.0 - 1e-9)[0]]


def _metric_scores(summed: np.ndarray, angles: np.ndarray, candidates: np.ndarray, metric: str,
                   device=None) -> np.ndarray:
    """FBP image metric of the summary sinogram for each candidate axis offset (steps).

    The sinogram is zero-padded, shifted by ``-offset`` (Fourier) so that the candidate axis
    sits in the middle, and all candidates are reconstructed as one channel batch with
    :func:`xrdwidgets.recon.fbp.fbp_array` (``centre_offset=0``, Hann-windowed ramp: the metric
    then depends less on where edges fall on the pixel grid). A wrong axis gives the arcs
    ("tuning forks") of inconsistent data over 180°, but over 360° only a blurred double image,
    which these metrics do not penalise: each 180° half of a 0–360° scan is reconstructed on its
    own and the metrics are added.
    """
    from .recon.fbp import fbp_array

    m = int(math.ceil(float(np.abs(candidates).max()))) + 2
    sp = np.pad(summed, ((m, m), (0, 0)))
    batch = _fourier_shift(np.repeat(sp[:, :, None], candidates.size, axis=2), -candidates[None, :])
    batch = batch.astype(np.float32)
    total = np.zeros(candidates.size)
    for idx in _half_turns(angles):
        images = fbp_array(batch[:, idx], angles[idx], filter="hann", centre_offset=0.0, circle=True,
                           device=device)
        total += _image_metric(np.asarray(images, np.float64), metric)
    return total


def _parabola_min(x: np.ndarray, y: np.ndarray) -> float:
    """Sub-grid position of the minimum of ``y(x)`` (parabola through the lowest point)."""
    i = int(np.argmin(y))
    if i == 0 or i == y.size - 1:
        return float(x[i])
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    den = y0 - 2 * y1 + y2
    if den <= 0:
        return float(x[i])
    return float(x[i] + 0.5 * (x[1] - x[0]) * (y0 - y2) / den)


def _metric_search(summed, angles, guess, search, step, metric, device):
    """Grid search of the FBP metric around ``guess``; re-centred once when the minimum is at an end."""
    grid = np.arange(-search, search + step / 2, step)
    cands = guess + grid
    scores = _metric_scores(summed, angles, cands, metric, device)
    for _ in range(2):
        i = int(np.argmin(scores))
        if 0 < i < cands.size - 1:
            break
        log.info("find_centre: metric minimum at the end of the search (%.3f); extending", cands[i])
        more = cands[i] + grid
        cands = np.concatenate([cands, more])
        scores = np.concatenate([scores, _metric_scores(summed, angles, more, metric, device)])
        cands, idx = np.unique(np.round(cands, 9), return_index=True)
        scores = scores[idx]
    return _parabola_min(cands, scores), cands, scores


# ============================================================================ air scatter
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
    da = _stack(stack)
    _choice("mode", mode, AIR_MODES)
    _choice("statistic", statistic, STATISTICS)
    if mode == "auto":
        mode = "global" if "decay" in _done(da) else "scaled"
    vals = _values(da)
    n_t = vals.shape[0]
    (left, right), detected = _edge_indices(edge, n_t, _summed(vals), threshold)
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
                       scale=_angle_coord(da, scale, "relative air level", "1"), n_clipped=n_clipped)
    log.info("%s", report.summary())
    params = dict(edges=[left, right], detected=detected, mode=mode, statistic=statistic, clip=clip)
    return _output(da, out, "air", params), report


# ============================================================================ beam decay
def _reference(values: np.ndarray, reference: str) -> float:
    if reference == "median":
        return float(np.median(values))
    if reference == "first":
        return float(values.flat[0])
    return float(np.max(values))


def _monitor_array(monitor, da) -> np.ndarray:
    n_t, n_a = da.sizes[_data.TRANSLATION], da.sizes[_data.ANGLE]
    if isinstance(monitor, xr.DataArray):
        dims = set(monitor.dims)
        if dims == {_data.ANGLE}:
            arr = monitor.values
        elif dims == {_data.TRANSLATION, _data.ANGLE}:
            arr = monitor.transpose(_data.TRANSLATION, _data.ANGLE).values
        else:
            raise DataError(f"monitor: expected dims ('angle',) or ('translation', 'angle'), found "
                            f"{tuple(monitor.dims)}")
    else:
        arr = np.asarray(monitor)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape not in ((n_a,), (n_t, n_a)):
        raise DataError(f"monitor: expected shape ({n_a},) (per angle) or ({n_t}, {n_a}) (per point, "
                        f"translation × angle), found {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise DataError(f"monitor: expected finite positive values, found {int(np.sum(~np.isfinite(arr)))} "
                        f"non-finite and {int(np.sum(arr <= 0))} non-positive")
    return arr


def normalise_decay(stack, *, monitor=None, reference: str = "median") -> tuple[xr.DataArray, DecayResult]:
    """Divide each projection (or point) by the relative incident-beam intensity.

    Without a monitor the intensity of projection ``j`` is its total ``Σ_{translation, channel}``
    which, for a sample inside the translation range at every angle, is the same for every angle
    of a parallel-beam scan up to the beam intensity.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral).
    monitor : array (angle,) or (translation, angle), or DataArray with those dims, optional
        Incident-beam monitor (e.g. ion-chamber counts) per projection or per point.
    reference : {"median", "first", "max"}
        Factors are relative to the median (robust), the first angle, or the maximum.

    Returns
    -------
    (xarray.DataArray, DecayResult)
        ``stack / factors`` and the report (``factors`` dims (angle) or (translation, angle)).
    """
    da = _stack(stack)
    _choice("reference", reference, ("median", "first", "max"))
    vals = _values(da)
    if monitor is None:
        raw = _summed(vals).sum(axis=0)
        bad = np.nonzero(~(raw > 0))[0]
        if bad.size:
            raise DataError(f"stack: projections at angle indices {bad[:10].tolist()} have no positive total; "
                            "cannot estimate the beam intensity from the data (pass monitor=)")
        source = "totals"
    else:
        raw = _monitor_array(monitor, da)
        source = "monitor"
    factors = raw / _reference(raw, reference)
    scale = factors if factors.ndim == 2 else factors[None, :]
    out = vals / scale[:, :, None].astype(vals.dtype)
    if factors.ndim == 1:
        fda = _angle_coord(da, factors, "relative beam intensity", "1")
    else:
        fda = xr.DataArray(factors, dims=(_data.TRANSLATION, _data.ANGLE),
                           coords={d: da[d] for d in (_data.TRANSLATION, _data.ANGLE)},
                           attrs={"long_name": "relative beam intensity", "units": "1"})
    report = DecayResult(factors=fda, source=source, reference=reference)
    log.info("%s", report.summary())
    return _output(da, out, "decay", dict(source=source, reference=reference)), report


# ============================================================================ jitter
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
        Sub-step shift method, see :func:`shift_projections`.
    robust : bool
        Huber-weighted fit (resists a few large slips).

    Returns
    -------
    (xarray.DataArray, JitterResult)
    """
    da = _stack(stack)
    _choice("interpolation", interpolation, INTERPOLATIONS)
    angles = _angles(da)
    if angles.size < 4:
        raise DataError(f"stack: the jitter fit needs at least 4 angles, found {angles.size}")
    vals = _values(da)
    com = centre_of_mass(_summed(vals))
    coef, fit = fit_sinusoid(com, angles, robust=robust)
    shifts = fit - com
    out = shift_projections(vals, shifts, interpolation=interpolation)
    report = JitterResult(shifts_steps=_angle_coord(da, shifts, "applied projection shift", "steps"),
                          com_steps=_angle_coord(da, com, "projection centre of mass", "steps"),
                          sinusoid=coef, axis_offset_steps=coef[0],
                          rms_steps=float(np.sqrt(np.mean(shifts ** 2))), interpolation=interpolation)
    log.info("%s", report.summary())
    params = dict(interpolation=interpolation, robust=robust, sinusoid=list(coef))
    return _output(da, out, "jitter", params), report


# ============================================================================ centre of rotation
def find_centre(stack, *, method: str = "auto", metric: str = "tv", search: float = 1.5, step: float = 0.25,
                guess: float | None = None, device=None) -> CentreResult:
    """Estimate the rotation-axis position from the data (0–180° and 0–360° scans).

    Methods
    -------
    ``"opposing"``
        Projections 180° apart are mirror images about the axis:
        ``P(θ + 180°)(i) = P(θ)(2a − i)``. For 0–360° scans every pair (θ, θ + 180°) is used
        (interpolated in angle when θ + 180° was not measured); for 0–180° scans the two pairs at
        the ends, the opposite projection being extrapolated linearly one angle step beyond the
        range. The mirror shift is found by the summed cross-correlation of all pairs, sub-step.
    ``"com"``
        The constant ``c`` of the centre-of-mass sinusoid (:func:`fit_sinusoid`).
    ``"metric"``
        Minimum of an FBP image metric of the channel-summed sinogram over candidate offsets
        ``guess ± search`` (grid ``step``, refined by a parabola; the grid is extended when the
        minimum lies at its end). Metrics: ``"tv"`` total variation ``Σ|∇f|``, ``"l1"``
        ``Σ|f|`` (grows with the negative arcs of a wrong centre), ``"entropy"`` histogram
        entropy. Each 180° half of a 0–360° scan is reconstructed on its own.
    ``"auto"``
        0–360° scans: ``"opposing"`` (every pair). 0–180° scans: ``"opposing"`` (or ``"com"``
        when no pair is found) as the start, refined by ``"metric"``.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Background-free sinogram stack (translation, angle, spectral); remove air (and jitter)
        first. The stored geometry's ``centre_offset`` is ignored (only reported).
    method : {"auto", "opposing", "com", "metric"}
    metric : {"tv", "l1", "entropy"}
    search, step : float
        Half-width and step of the metric search, steps.
    guess : float, optional
        Centre of the metric search (default: the ``"opposing"`` estimate, else ``"com"``).
    device : optional
        torch device of the FBP (default CUDA when present).

    Returns
    -------
    CentreResult
        ``offset_steps``: axis position relative to the middle of the translations, steps.
    """
    da = _stack(stack)
    _choice("method", method, CENTRE_METHODS)
    _choice("metric", metric, CENTRE_METRICS)
    if not (search > 0 and step > 0 and step <= search):
        raise ValueError(f"search, step: expected 0 < step <= search, found search={search!r}, step={step!r}")
    angles = _angles(da)
    summed = _summed(_values(da))
    geom = _data.get_geometry(da)
    previous = geom.centre_offset if geom is not None else 0.0
    full_turn = _angle_range(angles)[1] - _angle_range(angles)[0] > 180.0
    estimates, n_pairs = {}, 0
    if method == "opposing" or (method in ("auto", "metric") and guess is None):
        try:
            estimates["opposing"], n_pairs = _opposing_offset(summed, angles)
        except DataError:
            if method == "opposing":
                raise
            log.info("find_centre: no pair of projections 180° apart; starting from the centre of mass")
    if method == "com" or (method != "opposing" and not estimates and guess is None):
        if angles.size < 4:
            raise DataError(f"stack: the centre-of-mass fit needs at least 4 angles, found {angles.size}")
        estimates["com"] = fit_sinusoid(centre_of_mass(summed), angles)[0][0]
    cands = scores = None
    if method == "metric" or (method == "auto" and not (full_turn and "opposing" in estimates)):
        start = guess if guess is not None else next(iter(estimates.values()))
        estimates["metric"], cands, scores = _metric_search(summed, angles, float(start), float(search),
                                                           float(step), metric, device)
    chosen = method if method != "auto" else ("metric" if "metric" in estimates else "opposing")
    report = CentreResult(offset_steps=float(estimates[chosen]), method=chosen, estimates=estimates,
                          candidates_steps=cands, scores=scores, metric=metric if cands is not None else None,
                          n_pairs=n_pairs, previous_offset_steps=float(previous))
    log.info("%s", report.summary())
    return report


def centre_candidates(around: float, *, n: int = 7, step: float = 1.0) -> np.ndarray:
    """``n`` axis offsets (steps) centred on ``around``, ``step`` apart (a gallery row)."""
    n = int(n)
    if n < 1 or n > 41:
        raise ValueError(f"n: expected 1 to 41 candidates, found {n}")
    if not (math.isfinite(float(step)) and float(step) > 0):
        raise ValueError(f"step: expected a positive number of steps, found {step!r}")
    if not math.isfinite(float(around)):
        raise ValueError(f"around: expected a finite offset, found {around!r}")
    return float(around) + float(step) * (np.arange(n) - (n - 1) / 2)


def centre_gallery(stack, candidates, *, channels: tuple | None = None, filter: str = "hann",
                   max_size: int = 256, device=None) -> xr.DataArray:
    """Reconstructions of one channel window at each candidate rotation-axis offset, to choose
    the centre by eye (tomopy's "write_center" gallery, for a sinogram stack).

    A wrong axis blurs points into arcs ("tuning forks") and doubles edges; the right one gives
    the sharpest image. Make a coarse row around :func:`find_centre`'s estimate
    (:func:`centre_candidates` with ``step=1``), then a finer one around the chosen offset.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral), air removed preferably.
    candidates : sequence of float
        Axis offsets from the middle of the translations, steps (1 to 41 of them).
    channels : (int, int), optional
        Half-open index window of spectral channels summed before reconstruction (default: all;
        a window on a strong peak gives sharper edges).
    filter : str
        FBP filter (:data:`xrdwidgets.ops.FILTERS`; ``"hann"`` keeps noise down).
    max_size : int
        Images larger than this per axis are block-averaged (the gallery is for the eye).
    device : optional
        torch device (default CUDA when present).

    Returns
    -------
    xarray.DataArray
        ``(centre, y, x)``: one image per candidate, in the sinogram's units per step; coordinate
        ``centre`` (steps) and the ``channels`` window in ``attrs``.
    """
    from .recon.fbp import fbp_array
    from .explore import decimate

    da = _stack(stack)
    cands = np.atleast_1d(np.asarray(candidates, dtype=np.float64))
    if cands.ndim != 1 or not (1 <= cands.size <= 41) or not np.all(np.isfinite(cands)):
        raise ValueError(f"candidates: expected 1 to 41 finite offsets (steps), found {candidates!r}")
    spec = _data.spectral_dim(da)
    n_c = da.sizes[spec]
    lo, hi = (0, n_c) if channels is None else (int(channels[0]), int(channels[1]))
    if not (0 <= lo < hi <= n_c):
        raise ValueError(f"channels: expected a window 0 <= lo < hi <= {n_c} of {spec}, found {channels!r}")
    n_t = da.sizes[_data.TRANSLATION]
    if np.abs(cands).max() >= n_t / 2:
        raise ValueError(f"candidates: offsets must lie within ±{n_t / 2:g} steps (half the "
                         f"{n_t} translations), found {cands.min():g} to {cands.max():g}")
    summed = da.isel({spec: slice(lo, hi)}).transpose(_data.TRANSLATION, _data.ANGLE, spec).values
    summed = np.asarray(summed, np.float64).sum(axis=-1).astype(np.float32)
    angles = _angles(da)
    images = np.stack([np.asarray(fbp_array(summed, angles, filter=filter, centre_offset=float(c),
                                            circle=True, device=device), np.float32) for c in cands])
    geom = _data.get_geometry(da)
    step_mm = float(getattr(geom, "translation_step_mm", None) or 0.0) if geom is not None else 0.0
    pos = (np.arange(n_t) - (n_t - 1) / 2) * (step_mm or 1.0)
    units = "mm" if step_mm else "steps"
    out = xr.DataArray(images, dims=("centre", "y", "x"),
                       coords={"centre": ("centre", cands, {"long_name": "axis offset", "units": "steps"}),
                               "y": ("y", pos, {"units": units}), "x": ("x", pos, {"units": units})},
                       name="centre_gallery",
                       attrs={"long_name": "FBP of the channel window", "channels": [lo, hi],
                              "units": str(da.attrs.get("units", ""))})
    if n_t > max_size:
        out = xr.concat([decimate(out.isel(centre=k), max_size) for k in range(cands.size)], dim="centre")
    return out


def correct_centre(stack, *, offset: float | None = None, apply: str = "geometry",
                   interpolation: str = "fourier", **find_kwargs) -> tuple[xr.DataArray, CentreResult]:
    """Find (or take) the rotation-axis offset and apply it.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral).
    offset : float, optional
        Axis offset in steps from the middle of the translations; default :func:`find_centre`.
    apply : {"geometry", "shift"}
        ``"geometry"``: store the offset as the geometry's ``centre_offset`` (which FBP and the
        projector honour), data unchanged. ``"shift"``: shift every projection by ``-offset`` so
        that the axis sits in the middle (geometry ``centre_offset`` = 0); ``|offset|`` steps at
        one end are lost and the edge values repeated at the other.
    interpolation : {"fourier", "linear"}
        Shift method for ``apply="shift"``.
    **find_kwargs
        Passed to :func:`find_centre` (``method``, ``metric``, ``search``, ``step``, ``device``).

    Returns
    -------
    (xarray.DataArray, CentreResult)
    """
    da = _stack(stack)
    _choice("apply", apply, APPLY_MODES)
    _choice("interpolation", interpolation, INTERPOLATIONS)
    geom = _data.get_geometry(da)
    previous = geom.centre_offset if geom is not None else 0.0
    if offset is None:
        report = find_centre(da, **find_kwargs)
    else:
        if find_kwargs:
            raise TypeError(f"correct_centre: {sorted(find_kwargs)} apply to the search, not to a given offset")
        try:
            off = float(offset)
        except (TypeError, ValueError):
            raise DataError(f"offset: expected a number of translation steps, found {offset!r}") from None
        if not math.isfinite(off):
            raise DataError(f"offset: expected a finite number of translation steps, found {offset!r}")
        report = CentreResult(offset_steps=off, method="given", previous_offset_steps=float(previous))
    report = dataclasses.replace(report, apply=apply)
    base = geom or ScanGeometry(angle_range_deg=_angle_range(_angles(da)))
    vals = _values(da)
    if apply == "geometry":
        new_geom = base.replace(centre_offset=report.offset_steps)
    else:
        vals = shift_projections(vals, -report.offset_steps, interpolation=interpolation)
        new_geom = base.replace(centre_offset=0.0)
    params = dict(offset_steps=report.offset_steps, method=report.method, apply=apply)
    return _output(da, vals, "centre", params, geometry=new_geom), report


# ============================================================================ pipeline
def _options(name, value) -> dict | None:
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    raise TypeError(f"{name}: expected True, False or a dict of keyword arguments, found {value!r}")


def correct(stack, *, air=True, decay=True, jitter=True, centre=True) -> tuple[xr.DataArray, list]:
    """Run the corrections in order: decay → air → jitter → centre.

    * Beam decay first: air scatter follows the incident beam as the sample signal does, so the
      projection totals (sample + air) measure the beam whether or not air was removed; after
      it the air pattern is the same at every angle and is estimated from all angles at once
      (``mode="global"``, the least noisy).
    * Air next: the centres of mass of the jitter fit and the centre search need
      background-free projections.
    * Jitter before the centre: the opposing-projection and FBP searches need consistent
      projections.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral).
    air, decay, jitter, centre : bool or dict
        ``False`` skips a step; ``True`` runs it with defaults; a dict gives its keyword arguments,
        e.g. ``air={"edge": 3}``, ``decay={"monitor": i0}``, ``centre={"apply": "shift"}``
        (see :func:`remove_air`, :func:`normalise_decay`, :func:`correct_jitter`,
        :func:`correct_centre`).

    Returns
    -------
    (xarray.DataArray, list)
        The corrected stack and the reports of the steps run, in order.
    """
    steps = [("decay", decay, normalise_decay), ("air", air, remove_air),
             ("jitter", jitter, correct_jitter), ("centre", centre, correct_centre)]
    plan = [(fn, _options(name, value)) for name, value, fn in steps]
    da = _stack(stack)
    reports = []
    for fn, kwargs in plan:
        if kwargs is None:
            continue
        da, report = fn(da, **kwargs)
        reports.append(report)
    return da, reports
