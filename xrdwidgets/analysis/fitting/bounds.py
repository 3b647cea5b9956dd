"""Fit range and parameter bounds of a peak fit: which channels, and the box every parameter lives in.

:func:`fit_channels` turns a ``tth_range`` into a channel range, :func:`resolve_bounds` the user's
``bounds`` into the box ``(lower, upper)`` of the batched and the scipy fits (open where the model
leaves them open), and :func:`finite_bounds` closes that box from the data for the fits that map
a sigmoid into it (:mod:`~xrdwidgets.analysis.peakfitcnn`, :mod:`~xrdwidgets.analysis.dlsr`).
Bounds are in the parameters' units (spectral-axis units for positions and FWHM).
"""
from __future__ import annotations

import numpy as np

from ...base.errors import DataError, InputError, InputTypeError
from ..peaks import PeakModel
from .jacobian import array_module

__all__ = ["fit_channels", "resolve_bounds", "finite_bounds", "clip_to_bounds"]


def _number_pair(value, name, func):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{func}: {name} must be a pair (min, max) of numbers, found {value!r}") from None
    return lo, hi


def fit_channels(coord, tth_range, *, func="iterate_fit", min_channels=2, units=""):
    """Half-open index range ``(i0, i1)`` of the channels with coordinate in ``tth_range``.

    Raises a :class:`~xrdwidgets.data.DataError` when the range is not (min < max), lies (even
    partly, beyond half a channel step) outside the axis, or holds fewer than ``min_channels``.
    """
    c = np.asarray(coord, dtype=float)
    if tth_range is None:
        i0, i1 = 0, c.size
    else:
        lo, hi = _number_pair(tth_range, "tth_range", func)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise DataError(f"{func}: tth_range must be (min, max) with finite min < max, found {tth_range!r}")
        half = 0.5 * float(np.min(np.abs(np.diff(c)))) if c.size > 1 else 0.0
        cmin, cmax = float(c.min()), float(c.max())
        if lo < cmin - half or hi > cmax + half:
            raise DataError(
                f"{func}: tth_range ({lo:g}, {hi:g}) {units} is outside the spectral axis "
                f"[{cmin:g}, {cmax:g}] {units}".rstrip()
            )
        inside = np.flatnonzero((c >= lo) & (c <= hi))
        if inside.size == 0:
            raise DataError(f"{func}: tth_range ({lo:g}, {hi:g}) holds no channel")
        i0, i1 = int(inside[0]), int(inside[-1]) + 1
    if i1 - i0 < min_channels:
        raise DataError(
            f"{func}: the fit range holds {i1 - i0} channels; the model needs at least {min_channels} "
            "(more channels than parameters)"
        )
    return i0, i1


def resolve_bounds(model: PeakModel, x, data=None, bounds=None, *, func="iterate_fit"):
    """Bounds ``(lower, upper)`` (numpy, shape (n_params,)) from the defaults and ``bounds``.

    ``bounds`` is ``None`` (the model's :meth:`~PeakModel.default_bounds`), a dict
    ``{name: (lo, hi)}`` overriding some parameters (``None`` in a pair keeps that default, a
    name without index such as ``"eta"`` applies to every peak), or a pair ``(lower, upper)`` of
    sequences of length ``n_params``.
    """
    lo, hi = model.default_bounds(x, data)
    names = model.param_names
    if bounds is None:
        pass
    elif isinstance(bounds, dict):
        for key, pair in bounds.items():
            targets = [key] if key in names else [n for n in names if n.rsplit("_", 1)[0] == key]
            if not targets:
                raise DataError(f"{func}: bounds names unknown parameter {key!r}; parameters are {names}")
            try:
                a, b = pair
            except (TypeError, ValueError):
                raise DataError(f"{func}: bounds[{key!r}] must be a pair (lo, hi), found {pair!r}") from None
            for n in targets:
                j = names.index(n)
                if a is not None:
                    lo[j] = float(a)
                if b is not None:
                    hi[j] = float(b)
    else:
        try:
            lo_given, hi_given = bounds
            lo = np.array(lo_given, dtype=float).reshape(-1)
            hi = np.array(hi_given, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(
                f"{func}: bounds must be None, a dict {{name: (lo, hi)}} or a pair (lower, upper) of "
                f"length-{model.n_params} sequences; found {type(bounds).__name__}"
            ) from None
        if lo.size != model.n_params or hi.size != model.n_params:
            raise DataError(
                f"{func}: bounds (lower, upper) must each have n_params = {model.n_params} values "
                f"({names}), found {lo.size} and {hi.size}"
            )
    bad = [n for n, a, b in zip(names, lo, hi) if np.isnan(a) or np.isnan(b) or a > b]
    if bad:
        detail = ", ".join(f"{n}: ({lo[names.index(n)]:g}, {hi[names.index(n)]:g})" for n in bad)
        raise DataError(f"{func}: bounds must satisfy lower <= upper (no NaN); found {detail}")
    for j, n in enumerate(names):
        base = n.rsplit("_", 1)[0]
        if base == "fwhm" and lo[j] <= 0:
            raise DataError(f"{func}: the lower bound of {n} must be > 0, found {lo[j]:g}")
        if base == "eta" and (lo[j] < 0 or hi[j] > 1):
            raise DataError(f"{func}: bounds of {n} must lie within [0, 1], found ({lo[j]:g}, {hi[j]:g})")
    return lo, hi


def finite_bounds(model: PeakModel, x, data=None, bounds=None, *, func: str = "finite_bounds"):
    """Finite box bounds ``(lower, upper)`` of every parameter (numpy float64 ``(n_params,)``).

    Parameters
    ----------
    model : PeakModel
    x : array (n_channels,)
        The spectral axis of the fitted range.
    data : array (..., n_channels), optional
        Patterns used for the data-derived defaults.
    bounds : dict or (lower, upper), optional
        As :func:`resolve_bounds`: ``{name: (lo, hi)}`` with names
        from ``model.param_names`` (``"position_0"``) or a base name (``"position"``: every peak),
        ``None`` in a pair keeping that default; or two sequences of ``n_params`` values.
        ``lo == hi`` fixes a parameter.
    func : str
        Name of the public function, at the start of every error message.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)

    Notes
    -----
    Defaults: :meth:`PeakModel.default_bounds` (position within ``x``, FWHM from half a channel
    step to the width of ``x``, η in [0, 1]), with the bounds it leaves open closed from the data
    (a sigmoid needs finite ones): area up to twice the largest integral of a pattern's positive
    part, the constant background in ``[−0.1·m, m]`` and higher background terms in ``[−m, m]``
    (``m`` = largest ``|data|``).
    """
    if not isinstance(model, PeakModel):
        raise InputTypeError(f"{func}: model must be a PeakModel, found {type(model).__name__}")
    x = np.asarray(x, dtype=np.float64).ravel()
    lo, hi = resolve_bounds(model, x, None, bounds, func=func)
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    step = float(np.min(np.abs(np.diff(x)))) if x.size > 1 else 1.0
    m, integral = 1.0, step
    if data is not None:
        d = np.asarray(data, dtype=np.float64).reshape(-1, x.size)
        d = d[np.isfinite(d).all(-1)]
        if d.size:
            m = float(np.abs(d).max()) or 1.0
            integral = float(np.clip(d, 0, None).sum(-1).max() * step) or m * step
    for i, name in enumerate(model.param_names):
        base, k = name.rsplit("_", 1)
        if base == "area":
            lo[i] = lo[i] if np.isfinite(lo[i]) else 0.0
            hi[i] = hi[i] if np.isfinite(hi[i]) else 2.0 * integral
        elif base == "bg":
            d_lo, d_hi = (-0.1 * m, m) if k == "0" else (-m, m)
            lo[i] = lo[i] if np.isfinite(lo[i]) else d_lo
            hi[i] = hi[i] if np.isfinite(hi[i]) else max(d_hi, lo[i])
    bad = [f"{n}: [{a!r}, {b!r}]" for n, a, b in zip(model.param_names, lo, hi)
           if not (np.isfinite(a) and np.isfinite(b) and a <= b)]
    if bad:
        raise InputError(f"{func}: bounds must be finite with lower <= upper; found {', '.join(bad)}")
    return lo, hi


def clip_to_bounds(p, lo, hi):
    """Parameters ``p`` ``(n, n_params)`` (numpy or torch) clipped into ``[lo, hi]`` ``(n_params,)``."""
    if array_module(p) is np:
        return np.clip(p, lo, hi)
    import torch

    return torch.clamp(p, torch.as_tensor(lo, dtype=p.dtype, device=p.device),
                       torch.as_tensor(hi, dtype=p.dtype, device=p.device))

