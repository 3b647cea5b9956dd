"""Peak profiles, polynomial backgrounds and the :class:`PeakModel` used by every fitter.

API
---
Profiles (area-normalised, ``area`` = integral over x, ``fwhm`` = full width at half maximum,
both in the units of ``x``)::

    gaussian(x, area, position, fwhm)
    lorentzian(x, area, position, fwhm)
    pseudo_voigt(x, area, position, fwhm, eta)      # eta = Lorentzian fraction, 0 ≤ η ≤ 1
    background(x, coeffs)                           # polynomial in the scaled abscissa t

Each works on numpy arrays **and** torch tensors (the same function; the result is of the type
of the inputs, torch when any input is a tensor). Parameters broadcast against ``x`` with NumPy
rules; the usual call is ``x`` of shape ``(n_channels,)`` and parameters of shape ``(..., 1)``,
giving ``(..., n_channels)``. No input checks are made here (these are inner loops);
:class:`PeakModel` checks its inputs.

Background abscissa: ``t = (x − c) / h`` with ``c = (x[0] + x[-1]) / 2`` and
``h = (x[-1] − x[0]) / 2``, i.e. ``t`` runs from −1 to 1 over the given axis (the fitted channel
range), so that the coefficients are on the scale of the data whatever the units of ``x``.
``coeffs[..., k]`` multiplies ``t**k``: ``(..., 1)`` constant, ``(..., 2)`` linear,
``(..., 3)`` quadratic.

:class:`PeakModel` (``PeakModel(n_peaks=1, profile="pseudo_voigt", background="linear")``) is
a small immutable value: ``param_names`` (``["area_0", "position_0", "fwhm_0", "eta_0", "bg_0",
"bg_1"]``: the peaks in order, then the background coefficients), ``n_params``,
``evaluate(x, params)`` with params ``(..., n_params)`` (numpy or torch) → ``(..., n_channels)``,
``default_bounds(x, data)`` → ``(lower, upper)`` and ``initial_guess(x, data)`` →
``(..., n_params)`` estimated from the data (background through the edge channels, position at
the maximum after background removal, FWHM from the half-maximum width, area from the sum).
``param_units(x_units, data_units)`` gives the unit of each parameter.

This is the fitting model; it is independent code from the simulator's
:func:`xrdwidgets.sim.patterns.pseudo_voigt` (the tests compare the two).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..base.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "PROFILES", "BACKGROUNDS", "gaussian", "lorentzian", "pseudo_voigt", "background",
    "background_abscissa", "PeakModel", "param_long_name",
]

_LN2 = math.log(2.0)
#: height × FWHM / area of a Gaussian: 2 √(ln 2 / π)
GAUSS_HEIGHT = 2.0 * math.sqrt(_LN2 / math.pi)
#: height × FWHM / area of a Lorentzian: 2 / π
LORENTZ_HEIGHT = 2.0 / math.pi

#: Profile names and their shape parameters beyond (area, position, fwhm).
PROFILES = {"gaussian": (), "lorentzian": (), "pseudo_voigt": ("eta",)}
#: Background names and their number of polynomial coefficients.
BACKGROUNDS = {"none": 0, "constant": 1, "linear": 2, "quadratic": 3}


def _is_torch(*args) -> bool:
    return any(type(a).__module__.startswith("torch") for a in args)


def _exp(z):
    if _is_torch(z):
        import torch

        return torch.exp(z)
    return np.exp(z)


# ----------------------------------------------------------------------------- profiles
def gaussian(x, area, position, fwhm):
    """Gaussian of integral ``area``, centre ``position`` and full width at half maximum ``fwhm``.

    ``area · 2√(ln2/π)/fwhm · exp(−4 ln2 ((x − position)/fwhm)²)``. numpy or torch; broadcast.
    """
    u = (x - position) / fwhm
    return area * (GAUSS_HEIGHT / fwhm) * _exp(-4.0 * _LN2 * u * u)


def lorentzian(x, area, position, fwhm):
    """Lorentzian (Cauchy) of integral ``area``, centre ``position`` and FWHM ``fwhm``.

    ``area · (2/π)/fwhm / (1 + 4 ((x − position)/fwhm)²)``. numpy or torch; broadcast.
    """
    u = (x - position) / fwhm
    return area * (LORENTZ_HEIGHT / fwhm) / (1.0 + 4.0 * u * u)


def pseudo_voigt(x, area, position, fwhm, eta):
    """Pseudo-Voigt ``η·L + (1 − η)·G`` (both of integral ``area`` and FWHM ``fwhm``).

    Its integral is ``area`` and its FWHM is ``fwhm`` for every ``eta`` in [0, 1]
    (``eta = 0``: Gaussian, ``eta = 1``: Lorentzian). numpy or torch; broadcast.
    """
    u = (x - position) / fwhm
    u2 = u * u
    shape = eta * LORENTZ_HEIGHT / (1.0 + 4.0 * u2) + (1.0 - eta) * GAUSS_HEIGHT * _exp(-4.0 * _LN2 * u2)
    return area * shape / fwhm


def background_abscissa(x):
    """The scaled abscissa ``t = (x − c)/h`` of :func:`background` (−1 … 1 over ``x``)."""
    c = (x[0] + x[-1]) / 2.0
    h = (x[-1] - x[0]) / 2.0
    if not _is_torch(h):
        h = h if h != 0 else 1.0
    return (x - c) / h


def background(x, coeffs):
    """Polynomial background ``Σ_k coeffs[..., k] · t**k`` with ``t`` from :func:`background_abscissa`.

    Parameters
    ----------
    x : array or tensor, shape (n_channels,)
        The spectral axis (the fitted range); the polynomial is in ``t`` ∈ [−1, 1] over it.
    coeffs : array or tensor, shape (..., k)
        k = 1 (constant), 2 (linear) or 3 (quadratic) coefficients, in data units.

    Returns
    -------
    array or tensor, shape (..., n_channels)
    """
    t = background_abscissa(x)
    k = coeffs.shape[-1]
    out = coeffs[..., 0:1] * (t * 0.0 + 1.0)
    p = t
    for i in range(1, k):
        out = out + coeffs[..., i:i + 1] * p
        p = p * t
    return out


# ----------------------------------------------------------------------------- model
#: Words for the parameter kinds (the part of a parameter name before ``_<index>``).
_PARAM_WORDS = {"area": "integrated intensity", "position": "peak position", "fwhm": "FWHM",
                "eta": "Lorentzian fraction η", "bg": "background coefficient"}


def param_long_name(name: str, spectral_dim: str | None = None) -> str:
    """Words for a peak-model parameter: ``"area_0"`` → ``"integrated intensity of peak 0"``.

    Parameters
    ----------
    name : str
        A name of :attr:`PeakModel.param_names` (``area_<i>``, ``position_<i>``, ``fwhm_<i>``,
        ``eta_<i>``, ``bg_<k>``); any other name is returned as it is.
    spectral_dim : str, optional
        Name of the spectral axis, added to position and FWHM (``"peak position (tth) of peak 0"``).

    Returns
    -------
    str
        The ``long_name`` of the parameter's map (``"background coefficient t^1"`` for ``bg_1``).
    """
    base, _, idx = name.rpartition("_")
    if base not in _PARAM_WORDS:
        return name
    words = _PARAM_WORDS[base]
    if spectral_dim and base in ("position", "fwhm"):
        words = f"{words} ({spectral_dim})"
    return f"{words} " + (f"t^{idx}" if base == "bg" else f"of peak {idx}")


@dataclass(frozen=True)
class PeakModel:
    """A sum of ``n_peaks`` peaks of one profile plus a polynomial background.

    Parameters
    ----------
    n_peaks : int
        Number of peaks (≥ 1).
    profile : {"pseudo_voigt", "gaussian", "lorentzian"}
    background : {"linear", "quadratic", "constant", "none"}

    Notes
    -----
    Parameter vector (last axis of ``params``): for each peak ``i`` in order ``area_i``,
    ``position_i``, ``fwhm_i`` (and ``eta_i`` for the pseudo-Voigt), then ``bg_0 … bg_{k−1}``
    (coefficients of ``t**k``, see :func:`background`).
    """

    n_peaks: int = 1
    profile: str = "pseudo_voigt"
    background: str = "linear"

    def __post_init__(self):
        if isinstance(self.n_peaks, bool) or not isinstance(self.n_peaks, (int, np.integer)) or self.n_peaks < 1:
            raise InputError(f"PeakModel: n_peaks must be an integer >= 1, found {self.n_peaks!r}")
        object.__setattr__(self, "n_peaks", int(self.n_peaks))
        if self.profile not in PROFILES:
            raise InputError(f"PeakModel: profile must be one of {tuple(PROFILES)}, found {self.profile!r}")
        if self.background not in BACKGROUNDS:
            raise InputError(
                f"PeakModel: background must be one of {tuple(BACKGROUNDS)}, found {self.background!r}"
            )

    # ------------------------------------------------------------------ layout
    @property
    def peak_param_names(self) -> tuple[str, ...]:
        """Names of one peak's parameters without index: ``("area", "position", "fwhm"[, "eta"])``."""
        return ("area", "position", "fwhm") + PROFILES[self.profile]

    @property
    def n_peak_params(self) -> int:
        return len(self.peak_param_names)

    @property
    def n_background(self) -> int:
        return BACKGROUNDS[self.background]

    @property
    def param_names(self) -> list[str]:
        names = [f"{p}_{i}" for i in range(self.n_peaks) for p in self.peak_param_names]
        return names + [f"bg_{k}" for k in range(self.n_background)]

    @property
    def n_params(self) -> int:
        return self.n_peaks * self.n_peak_params + self.n_background

    def index(self, name: str) -> int:
        """Position of parameter ``name`` in the parameter vector."""
        try:
            return self.param_names.index(name)
        except ValueError:
            raise InputError(f"PeakModel: no parameter {name!r}; parameters are {self.param_names}") from None

    def param_units(self, x_units: str = "", data_units: str = "") -> dict:
        """Unit of each parameter given the units of the abscissa and of the data."""
        units = {}
        for name in self.param_names:
            base = name.rsplit("_", 1)[0]
            if base in ("position", "fwhm"):
                units[name] = x_units
            elif base == "area":
                units[name] = f"{data_units}·{x_units}" if data_units and x_units else (x_units or data_units)
            elif base == "eta":
                units[name] = "1"
            else:
                units[name] = data_units
        return units

    def __repr__(self):
        return f"PeakModel(n_peaks={self.n_peaks}, profile={self.profile!r}, background={self.background!r})"

    # ------------------------------------------------------------------ evaluation
    def _check_params(self, params):
        if params.shape[-1] != self.n_params:
            raise InputError(
                f"{self!r}.evaluate: params must have last axis of length n_params={self.n_params} "
                f"({self.param_names}), found shape {tuple(params.shape)}"
            )

    def peaks(self, x, params):
        """Sum of the peaks only (no background), shape ``params.shape[:-1] + x.shape``."""
        if not _is_torch(x, params):
            params = np.asarray(params, dtype=float)
            x = np.asarray(x, dtype=float)
        self._check_params(params)
        npp = self.n_peak_params
        out = None
        for i in range(self.n_peaks):
            p = params[..., i * npp:(i + 1) * npp]
            a, c, w = p[..., 0:1], p[..., 1:2], p[..., 2:3]
            if self.profile == "gaussian":
                y = gaussian(x, a, c, w)
            elif self.profile == "lorentzian":
                y = lorentzian(x, a, c, w)
            else:
                y = pseudo_voigt(x, a, c, w, p[..., 3:4])
            out = y if out is None else out + y
        return out

    def evaluate(self, x, params):
        """Model values.

        Parameters
        ----------
        x : array or tensor, shape (n_channels,)
            Spectral axis (the fitted range; the background abscissa is scaled over it).
        params : array or tensor, shape (..., n_params)
            Parameters in the order of :attr:`param_names`.

        Returns
        -------
        array or tensor, shape (..., n_channels)
        """
        if not _is_torch(x, params):
            params = np.asarray(params, dtype=float)
            x = np.asarray(x, dtype=float)
        out = self.peaks(x, params)
        if self.n_background:
            out = out + background(x, params[..., self.n_peaks * self.n_peak_params:])
        return out

    # ------------------------------------------------------------------ bounds and guesses
    def default_bounds(self, x, data=None):
        """Default box bounds ``(lower, upper)``, numpy arrays of shape ``(n_params,)``.

        area ∈ [0, 10 × max ∫|data| dx] (upper ``inf`` without ``data``); position ∈ [x_min, x_max];
        fwhm ∈ [½ × channel step, x_max − x_min]; eta ∈ [0, 1]; background coefficients unbounded.
        """
        x = _np1d(x, "x")
        span = float(x.max() - x.min())
        step = float(np.min(np.abs(np.diff(x)))) if x.size > 1 else 1.0
        a_hi = np.inf
        if data is not None:
            d = _as_numpy(data)
            if d.shape[-1] != x.size:
                raise InputError(
                    f"default_bounds: data must have {x.size} channels on its last axis (like x), "
                    f"found shape {d.shape}"
                )
            integral = np.abs(d).sum(axis=-1).max() * step if d.size else 0.0
            a_hi = 10.0 * float(integral) if integral > 0 else np.inf
        lo, hi = [], []
        for _ in range(self.n_peaks):
            lo += [0.0, float(x.min()), 0.5 * step]
            hi += [a_hi, float(x.max()), span if span > 0 else 1.0]
            if self.profile == "pseudo_voigt":
                lo.append(0.0)
                hi.append(1.0)
        lo += [-np.inf] * self.n_background
        hi += [np.inf] * self.n_background
        return np.asarray(lo), np.asarray(hi)

    def initial_guess(self, x, data, positions=None):
        """Initial parameters estimated from the data, one set per pattern.

        Background: line (or constant) through the means of the first and last ~5 % of the
        channels (quadratic term 0). Peaks, one after the other: position at the maximum of
        the data minus background minus the peaks guessed so far (or at ``positions[i]``),
        FWHM from the interpolated half-maximum width around it, area from the sum of the
        background-free data for one peak (height × FWHM for several), η = 0.5.

        Parameters
        ----------
        x : array or tensor, shape (n_channels,)
        data : array or tensor, shape (..., n_channels)
        positions : sequence of float, optional
            Starting positions of the peaks (length ``n_peaks``), e.g. from
            :func:`xrdwidgets.explore.roi.suggest_peaks`.

        Returns
        -------
        array or tensor (type of ``data``), shape (..., n_params)
        """
        import torch

        was_torch = _is_torch(data)
        xt = x if _is_torch(x) else torch.as_tensor(np.array(x, dtype=float))
        dt = data if _is_torch(data) else torch.as_tensor(np.array(data))
        if not dt.is_floating_point():
            dt = dt.double()
        xt = xt.to(dtype=dt.dtype, device=dt.device)
        if xt.ndim != 1 or dt.shape[-1] != xt.shape[0]:
            raise InputError(
                f"initial_guess: x must be 1-D and data (..., n_channels) with n_channels = len(x); "
                f"found x {tuple(xt.shape)}, data {tuple(dt.shape)}"
            )
        if positions is not None:
            positions = [float(p) for p in np.atleast_1d(np.asarray(positions, dtype=float))]
            if len(positions) != self.n_peaks:
                raise InputError(
                    f"initial_guess: positions must give {self.n_peaks} values (n_peaks), found {len(positions)}"
                )
        with torch.no_grad():
            out = self._guess(xt, dt, positions)
        return out if was_torch else out.cpu().numpy()

    def _guess(self, x, data, positions):
        import torch

        n = x.shape[0]
        lead = data.shape[:-1]
        k = max(1, n // 20)
        left = data[..., :k].mean(-1)
        right = data[..., -k:].mean(-1)
        bg = torch.zeros(lead + (self.n_background,), dtype=data.dtype, device=data.device)
        if self.n_background == 1:
            bg[..., 0] = torch.minimum(left, right)
        elif self.n_background >= 2:
            # mean of first/last k channels sits at t ≈ ∓(1 − (k−1)/(n−1))
            tk = 1.0 - (k - 1) / max(n - 1, 1)
            bg[..., 0] = (left + right) / 2
            bg[..., 1] = (right - left) / (2 * tk)
        resid = data - (background(x, bg) if self.n_background else 0.0)
        step = torch.abs(x[1:] - x[:-1]).mean() if n > 1 else torch.ones((), dtype=x.dtype)
        span = (x.max() - x.min()).clamp_min(step)
        lo, hi = self.default_bounds(x.cpu().numpy())
        idx = torch.arange(n, device=data.device)
        peaks = []
        for i in range(self.n_peaks):
            if positions is not None:
                imax = torch.argmin(torch.abs(x - positions[i])).expand(lead)
            else:
                imax = torch.argmax(resid, dim=-1)
            h = torch.gather(resid, -1, imax[..., None])[..., 0].clamp_min(0)
            half = (h / 2)[..., None]
            below = resid < half
            im = imax[..., None]
            li = torch.where(below & (idx < im), idx, torch.full_like(idx, -1)).amax(-1)
            ri = torch.where(below & (idx > im), idx, torch.full_like(idx, n)).amin(-1)
            xl = _crossing(x, resid, li, li + 1, half[..., 0], n)
            xr = _crossing(x, resid, ri, ri - 1, half[..., 0], n)
            fwhm = torch.abs(xr - xl).clamp(min=float(lo[2]), max=float(span))
            pos = x[imax]
            if self.n_peaks == 1:
                area = resid.clamp_min(0).sum(-1) * step
            else:
                area = h * fwhm / (0.5 * (GAUSS_HEIGHT + LORENTZ_HEIGHT))
            area = torch.maximum(area, h * fwhm * 0.5).clamp_min(1e-12 * step)
            p = [area, pos, fwhm]
            if self.profile == "pseudo_voigt":
                p.append(torch.full_like(area, 0.5))
            p = torch.stack(p, -1)
            if self.n_peaks > 1:
                resid = resid - _one_peak(self, x, p)
            peaks.append(p)
        out = torch.cat(peaks + [bg], -1)
        lo_t = torch.as_tensor(lo, dtype=out.dtype, device=out.device)
        hi_t = torch.as_tensor(hi, dtype=out.dtype, device=out.device)
        return torch.clamp(out, lo_t, hi_t)


def _one_peak(model, x, p):
    a, c, w = p[..., 0:1], p[..., 1:2], p[..., 2:3]
    if model.profile == "gaussian":
        return gaussian(x, a, c, w)
    if model.profile == "lorentzian":
        return lorentzian(x, a, c, w)
    return pseudo_voigt(x, a, c, w, p[..., 3:4])


def _crossing(x, y, i_out, i_in, level, n):
    """x where y crosses ``level`` between channel ``i_out`` (below) and ``i_in`` (above)."""
    import torch

    at_edge = (i_out < 0) | (i_out >= n)
    io = i_out.clamp(0, n - 1)
    ii = i_in.clamp(0, n - 1)
    yo = torch.gather(y, -1, io[..., None])[..., 0]
    yi = torch.gather(y, -1, ii[..., None])[..., 0]
    denom = yi - yo
    frac = torch.where(denom > 0, (yi - level) / torch.where(denom > 0, denom, torch.ones_like(denom)),
                       torch.zeros_like(denom)).clamp(0, 1)
    xo, xi = x[io], x[ii]
    return torch.where(at_edge, x[ii], xi + frac * (xo - xi))


def _as_numpy(a):
    if _is_torch(a):
        return a.detach().cpu().numpy()
    return np.asarray(a, dtype=float)


def _np1d(x, name):
    x = _as_numpy(x)
    if x.ndim != 1 or x.size < 1:
        raise InputError(f"{name} must be a non-empty 1-D axis, found shape {x.shape}")
    return x
