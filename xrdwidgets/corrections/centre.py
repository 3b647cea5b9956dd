"""Centre of rotation: find the rotation-axis offset (opposing projections, centre-of-mass
sinusoid, FBP image metric), a gallery of reconstructions at candidate offsets to choose it by
eye, and :func:`correct_centre` to store or apply it.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import scipy.fft as sfft
import xarray as xr
from scipy import optimize

from .. import data as _data
from ..base.errors import DataError, InputError, InputTypeError
from ..base.progress import Progress
from ..geometry import ScanGeometry
from ._common import (angle_range, angles_of, as_stack, channel_sum, check_choice, float_values,
                      with_correction)
from .jitter import centre_of_mass, fit_sinusoid
from .report import CentreResult
from .shift import INTERPOLATIONS, fourier_shift_axis0, shift_projections

log = logging.getLogger(__name__)

__all__ = ["CENTRE_METHODS", "CENTRE_METRICS", "APPLY_MODES", "find_centre", "centre_candidates",
           "centre_gallery", "iterate_centre_gallery", "correct_centre"]

#: Methods of :func:`find_centre`.
CENTRE_METHODS = ("auto", "opposing", "com", "metric")
#: Image-quality metrics of the FBP search (all minimised).
CENTRE_METRICS = ("tv", "l1", "entropy")
#: How :func:`correct_centre` applies the offset.
APPLY_MODES = ("geometry", "shift")


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
    if angle_range(angles)[1] - angle_range(angles)[0] <= 180.0:
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
    from ..recon.fbp import fbp_array

    m = int(math.ceil(float(np.abs(candidates).max()))) + 2
    sp = np.pad(summed, ((m, m), (0, 0)))
    batch = fourier_shift_axis0(np.repeat(sp[:, :, None], candidates.size, axis=2), -candidates[None, :])
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
        The constant ``c`` of the centre-of-mass sinusoid (:func:`.fit_sinusoid`).
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
    da = as_stack(stack)
    check_choice("method", method, CENTRE_METHODS)
    check_choice("metric", metric, CENTRE_METRICS)
    if not (search > 0 and step > 0 and step <= search):
        raise InputError(f"search, step: expected 0 < step <= search, found search={search!r}, step={step!r}")
    angles = angles_of(da)
    summed = channel_sum(float_values(da))
    geom = _data.get_geometry(da)
    previous = geom.centre_offset if geom is not None else 0.0
    full_turn = angle_range(angles)[1] - angle_range(angles)[0] > 180.0
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
        raise InputError(f"n: expected 1 to 41 candidates, found {n}")
    if not (math.isfinite(float(step)) and float(step) > 0):
        raise InputError(f"step: expected a positive number of steps, found {step!r}")
    if not math.isfinite(float(around)):
        raise InputError(f"around: expected a finite offset, found {around!r}")
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
    from ..recon.fbp import fbp_array
    from ..explore import decimate

    da = as_stack(stack)
    cands = np.atleast_1d(np.asarray(candidates, dtype=np.float64))
    if cands.ndim != 1 or not (1 <= cands.size <= 41) or not np.all(np.isfinite(cands)):
        raise InputError(f"candidates: expected 1 to 41 finite offsets (steps), found {candidates!r}")
    spec = _data.spectral_dim(da)
    n_c = da.sizes[spec]
    lo, hi = (0, n_c) if channels is None else (int(channels[0]), int(channels[1]))
    if not (0 <= lo < hi <= n_c):
        raise InputError(f"channels: expected a window 0 <= lo < hi <= {n_c} of {spec}, found {channels!r}")
    n_t = da.sizes[_data.TRANSLATION]
    if np.abs(cands).max() >= n_t / 2:
        raise InputError(f"candidates: offsets must lie within ±{n_t / 2:g} steps (half the "
                         f"{n_t} translations), found {cands.min():g} to {cands.max():g}")
    summed = da.isel({spec: slice(lo, hi)}).transpose(_data.TRANSLATION, _data.ANGLE, spec).values
    summed = np.asarray(summed, np.float64).sum(axis=-1).astype(np.float32)
    angles = angles_of(da)
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


def iterate_centre_gallery(stack, *, around: float | None = None, n: int = 7, step: float = 1.0,
                           channels: tuple | None = None, filter: str = "hann", max_size: int = 256,
                           device=None):
    """Generator: the centre estimate (unless given) and a :func:`centre_gallery` row around it.

    Yields a :class:`~xrdwidgets.base.progress.Progress` before each stage (``metrics["step"]``
    says which) and returns ``(around, gallery)``; run it in a job, or to the end with
    :func:`xrdwidgets.base.progress.run_to_end`.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral), air removed preferably.
    around : float, optional
        Centre of the row, axis offset in steps from the middle of the translations; default
        :func:`find_centre`'s estimate.
    n, step : int, float
        Candidates of the row and their spacing, steps (:func:`centre_candidates`); candidates
        at or beyond half the translations from the middle are left out.
    channels : (int, int), optional
        Half-open index window of spectral channels summed before reconstruction (default: all).
    filter, max_size, device
        As :func:`centre_gallery`.

    Returns
    -------
    (float, xarray.DataArray)
        ``around`` (steps) and the gallery ``(centre, y, x)`` of :func:`centre_gallery`.
    """
    da = as_stack(stack)
    yield Progress(iteration=0, total=2, metrics={"step": "estimating the centre"})
    if around is None:
        around = find_centre(da).offset_steps
    yield Progress(iteration=1, total=2, metrics={"step": "reconstructing the candidates"})
    cands = centre_candidates(around, n=n, step=step)
    n_t = da.sizes[_data.TRANSLATION]
    cands = cands[np.abs(cands) < n_t / 2]
    gallery = centre_gallery(da, cands, channels=channels, filter=filter, max_size=max_size,
                             device=device)
    yield Progress(iteration=2, total=2, metrics={"step": "done"})
    return float(around), gallery


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
    da = as_stack(stack)
    check_choice("apply", apply, APPLY_MODES)
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    geom = _data.get_geometry(da)
    previous = geom.centre_offset if geom is not None else 0.0
    if offset is None:
        report = find_centre(da, **find_kwargs)
    else:
        if find_kwargs:
            raise InputTypeError(f"correct_centre: {sorted(find_kwargs)} apply to the search, not to a given offset")
        try:
            off = float(offset)
        except (TypeError, ValueError):
            raise DataError(f"offset: expected a number of translation steps, found {offset!r}") from None
        if not math.isfinite(off):
            raise DataError(f"offset: expected a finite number of translation steps, found {offset!r}")
        report = CentreResult(offset_steps=off, method="given", previous_offset_steps=float(previous))
    report = dataclasses.replace(report, apply=apply)
    base = geom or ScanGeometry(angle_range_deg=angle_range(angles_of(da)))
    vals = float_values(da)
    if apply == "geometry":
        new_geom = base.replace(centre_offset=report.offset_steps)
    else:
        vals = shift_projections(vals, -report.offset_steps, interpolation=interpolation)
        new_geom = base.replace(centre_offset=0.0)
    params = dict(offset_steps=report.offset_steps, method=report.method, apply=apply)
    return with_correction(da, vals, "centre", params, geometry=new_geom), report
