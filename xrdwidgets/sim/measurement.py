"""The measurement model of a pencil-beam scan: acquisition order, beam decay, air scatter,
centre offset and motor jitter, Poisson noise (:func:`measure`).

The acquisition orders are described in :mod:`xrdwidgets.sim.scan`.
"""
from __future__ import annotations

import logging

import numpy as np

from ..base.errors import InputError
from ..data import DataError
from .raytrace import check_angles, check_count, check_number

log = logging.getLogger(__name__)

__all__ = ["SCAN_ORDERS", "DECAY_KINDS", "acquisition_order", "beam_decay", "air_scatter", "measure"]

#: Accepted values of ``scan_order``.
SCAN_ORDERS = ("raster", "zigzag", "interlaced", "interlaced-zigzag")
#: Named beam-decay models of :func:`beam_decay`.
DECAY_KINDS = ("exponential", "topup")


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
    n_t = check_count("n_translations", n_translations)
    n_a = check_count("n_angles", n_angles)
    if scan_order not in SCAN_ORDERS:
        raise InputError(f"scan_order: expected one of {SCAN_ORDERS}, found {scan_order!r}")
    if scan_order.startswith("interlaced"):
        k = check_count("n_subsets", n_subsets)
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
            raise InputError(f"decay: the callable must return finite positive factors of shape {t.shape}, "
                             f"found shape {f.shape}")
        return f
    strength = check_number("decay_strength", strength)
    if not 0 <= strength < 1:
        raise InputError(f"decay_strength: expected 0 <= strength < 1, found {strength!r}")
    if kind == "exponential":
        return (1.0 - strength) ** t
    if kind == "topup":
        period = check_number("decay_period", period, positive=True)
        return (1.0 - strength) ** np.mod(t / period, 1.0)
    raise InputError(f"decay: expected one of {DECAY_KINDS}, a callable, or an array of factors, found {kind!r}")


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
        raise InputError(f"tth: expected a non-empty finite array of 2θ (deg), found {tth!r}")
    span = float(t.max() - t.min())
    w = width_deg if width_deg is not None else (span / 3.0 if span > 0 else 1.0)
    w = check_number("width_deg", w, positive=True)
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
        raise InputError(f"decay: expected a model name {DECAY_KINDS}, a callable, {n_a} factors (one per "
                         f"angle) or ({n_t}, {n_a}) per point, found shape {np.shape(decay)}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError("decay: factors must be finite and > 0")
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
    angles = check_angles(angles_deg)
    n_t = check_count("n_translations", n_translations)
    n_a = angles.size
    spectral = np.asarray(spectral, float).ravel()
    centre_offset = check_number("centre_offset", centre_offset)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    index, line = acquisition_order(n_t, n_a, scan_order, n_subsets=n_subsets)
    if np.ndim(jitter) == 0:
        sd = check_number("jitter", jitter)
        if sd < 0:
            raise InputError(f"jitter: expected a standard deviation >= 0 (steps), found {jitter!r}")
        jit = rng.normal(0.0, sd, n_a) if sd > 0 else np.zeros(n_a)
    else:
        jit = np.asarray(jitter, float).ravel()
        if jit.shape != (n_a,) or not np.all(np.isfinite(jit)):
            raise InputError(f"jitter: expected a number (std, steps) or {n_a} finite shifts, "
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
        amp = check_number("air", air)
        air_pat = air_scatter(spectral, amplitude=amp * float(np.max(ideal, initial=0.0)))
    else:
        air_pat = np.asarray(air, float).ravel()
        if air_pat.shape != spectral.shape or not np.all(np.isfinite(air_pat)):
            raise InputError(f"air: expected a number or a finite pattern of {spectral.size} values, "
                             f"found shape {np.shape(air)}")
    # decay versus acquisition time
    total = n_t * n_a
    t_point = (index + 0.5) / total
    t_line = t_point.mean(axis=0)
    dec = _resolve_decay(decay, t_point, t_line, n_t, n_a, strength=decay_strength,
                         period=decay_period, per_point=decay_per_point)
    clean = dec[:, :, None] * (signal + air_pat[None, None, :])
    if dose is not None:
        dose = check_number("dose", dose, positive=True)
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

