"""Batch peak fitting: every pixel of a volume fitted at once with a vectorised, bounded LM solver.

``iterate_fit(volume, model, ...)`` is a generator (see :mod:`xrdwidgets.base.progress`): it yields
:class:`~xrdwidgets.base.progress.Progress` as pixels finish and returns an :class:`xarray.Dataset`
of parameter maps; :func:`fit_volume` runs it to the end. :func:`fit_volume_scipy` fits the same
model with the same bounds and initial guesses pixel by pixel with
:func:`scipy.optimize.least_squares` (the reference for tests and benchmarks), and
:func:`fit_patterns` is the core for callers that hold ``(n, n_channels)`` arrays.

Solver
------
Levenberg–Marquardt on a working set of pixels in parallel (torch, CPU or GPU), each pixel with
its own damping λ (Nielsen's update: λ ← λ · max(1/3, 1 − (2ρ − 1)³) after a successful step,
λ ← λ·ν, ν ← 2ν after a failed one, ρ = actual / predicted reduction) and Marquardt's scaling
(the damping term is λ·diag(JᵀJ), so steps do not depend on the units of the parameters). The
Jacobian is analytic (``jacobian="analytic"``, the default: one fused pass computes the model,
JᵀJ, Jᵀr and rᵀr); ``"autograd"`` uses ``torch.func.vmap(jacfwd)`` — about 5× slower on CPU,
kept to check new profiles.

The working set (``batch_pixels``) streams through the volume: pixels that finish leave it and
the next pixels take their places, so every sweep works on a full set until the end (no tail
of a few slow pixels holding up a batch). On CPU the default set is small (~1000 pixels at 100
channels) so that its temporaries stay in cache.

Bounds are handled by projection: a trial point is clipped into the box ``[lower, upper]``; a
parameter that sits on a bound while the gradient pushes it outwards is held fixed for that step
(its row and column are removed from the normal equations), so the other parameters still take
full LM steps. ``lower == upper`` fixes a parameter. The gain ratio uses the predicted reduction
of the clipped step.

A pixel stops when (as in MINPACK) the relative reduction of the cost on an accepted step is
below ``ftol``, the accepted step is below ``xtol · (|p| + xtol)`` for every parameter, the
largest cosine between the residual and a free Jacobian column is below ``gtol``, or the next,
lightly damped (λ ≤ 1) step predicts a reduction below ``ftol × cost`` (this saves the last,
confirming evaluation; the parameters then differ from the exact minimum by ~√(ftol·n) standard
errors, 10⁻³ σ at the defaults); also when λ grows beyond 1e16 (no reduction possible within the
floating-point precision, e.g. on noise-free data at the exact solution). All these count as
converged; a pixel that reaches ``max_iter`` or ends with non-finite values is flagged
``converged = False``. For float32 the tolerances are raised to 10 × machine epsilon.

Speed (``benchmarks/bench_peakfit.py``, 256 × 256 pixels × 100 channels, one pseudo-Voigt +
linear background, one CPU thread): ~34 000 pixels/s, 55× scipy's ``least_squares`` pixel loop
with the same analytic Jacobian; parameters agree to ~1e-10 on noise-free data.

Outputs
-------
Maps ``(…, y, x)`` of every parameter (``area_0``, ``position_0``, ``fwhm_0``, ``eta_0``,
``bg_0``, ``bg_1``, …; position and FWHM in the units of the spectral axis, area in
data units × axis units, background coefficients in data units, see
:mod:`xrdwidgets.analysis.peaks` for the scaled background abscissa), their standard errors
``<name>_stderr`` (from (JᵀJ)⁻¹ of the free parameters scaled by the reduced χ², 0 for fixed
ones), ``rwp`` = √(Σ w (y − f)² / Σ w y²)
(a fraction, not %), ``chi2`` = Σ w (y − f)² / (n_channels − n_free_params) with w = 1/σ²
(with the default σ = 1 this is the residual variance, in data units²), ``converged`` and
``n_iter``. Pixels outside ``mask`` or with non-finite data are NaN / not converged.
"""
from __future__ import annotations

import logging
import math
import time
import warnings

import numpy as np
import xarray as xr

from .. import data as _data
from ..data import DataError
from ..base.progress import Progress, run_to_end
from .peaks import GAUSS_HEIGHT, LORENTZ_HEIGHT, PeakModel, background_abscissa

log = logging.getLogger(__name__)

__all__ = ["iterate_fit", "fit_volume", "fit_volume_scipy", "fit_patterns", "model_jacobian",
           "resolve_bounds", "fit_channels", "retry_from_neighbours"]

_LN2 = math.log(2.0)
_LAMBDA_MAX = 1e16
_LAMBDA0 = 1e-3


# ----------------------------------------------------------------------------- model + Jacobian
def _xp(a):
    if type(a).__module__.startswith("torch"):
        import torch

        return torch
    return np


def model_jacobian(model: PeakModel, x, params, *, with_jacobian: bool = True):
    """Model values and analytic Jacobian, numpy or torch.

    Parameters
    ----------
    model : PeakModel
    x : array or tensor, shape (n_channels,)
    params : array or tensor, shape (n, n_params)

    Returns
    -------
    (f, J)
        ``f`` shape (n, n_channels); ``J`` shape (n, n_channels, n_params) (``None`` without
        ``with_jacobian``).
    """
    xp = _xp(params)
    t = background_abscissa(x)
    npp = model.n_peak_params
    f = 0.0
    cols = []
    for i in range(model.n_peaks):
        q = params[:, i * npp:(i + 1) * npp]
        a, c, w = q[:, 0:1], q[:, 1:2], q[:, 2:3]
        if model.profile == "pseudo_voigt":
            eta = q[:, 3:4]
        else:
            eta = 1.0 if model.profile == "lorentzian" else 0.0
        inv_w = 1.0 / w
        u = (x - c) * inv_w
        u2 = u * u
        aw = a * inv_w
        if model.profile == "gaussian":
            g0 = GAUSS_HEIGHT * xp.exp(-4.0 * _LN2 * u2)
            s = g0
            ds = (-4.0 * _LN2) * g0
        elif model.profile == "lorentzian":
            den = 1.0 / (1.0 + 4.0 * u2)
            s = LORENTZ_HEIGHT * den
            ds = -4.0 * s * den
        else:
            den = 1.0 / (1.0 + 4.0 * u2)
            l0 = LORENTZ_HEIGHT * den
            g0 = GAUSS_HEIGHT * xp.exp(-4.0 * _LN2 * u2)
            s = g0 + eta * (l0 - g0)
            ds = -4.0 * (eta * l0 * den + _LN2 * (1.0 - eta) * g0)
        f = f + aw * s
        if with_jacobian:
            awi = aw * inv_w
            cols += [s * inv_w, (-2.0 * awi) * u * ds, -awi * (2.0 * u2 * ds + s)]
            if model.profile == "pseudo_voigt":
                cols.append(aw * (l0 - g0))
    k = model.n_background
    if k:
        b = params[:, model.n_peaks * npp:]
        powers = [t * 0.0 + 1.0]
        for _ in range(1, k):
            powers.append(powers[-1] * t)
        for j in range(k):
            f = f + b[:, j:j + 1] * powers[j]
        if with_jacobian:
            ones = f * 0.0 + 1.0
            cols += [ones * pw for pw in powers]
    if not with_jacobian:
        return f, None
    return f, xp.stack(cols, -1)


def _normal_equations(model: PeakModel, x, powers, params, y, sw):
    """Cost ½Σ(w r)², JᵀJ and Jᵀr of a batch with the analytic Jacobian (torch, fused).

    The same maths as :func:`model_jacobian` with fewer passes over memory: constants are
    folded into per-pixel coefficients, temporaries are updated in place, the peak columns and
    the residual are written into one ``(n, n_peak_params + 1, n_channels)`` buffer whose
    batched Gram matrix holds JᵀJ, Jᵀr and rᵀr at once, and — without weights — the
    background columns (the same powers of t for every pixel, ``powers`` ``(k, n_channels)``)
    enter through matrix products instead of per-pixel copies.
    """
    import torch

    n = params.shape[0]
    npp = model.n_peak_params
    npk = model.n_peaks * npp
    nk = model.n_background
    # rows: the peak columns of J, (with weights) the background columns, and the residual last
    n_rows = npk + (nk if sw is not None else 0) + 1
    cols = params.new_empty((n, n_rows, x.shape[0]))
    f = None
    for i in range(model.n_peaks):
        q = params[:, i * npp:(i + 1) * npp]
        a, c, w = q[:, 0:1], q[:, 1:2], q[:, 2:3]
        inv_w = w.reciprocal()
        aw = a * inv_w
        awi = aw * inv_w
        u = (x - c).mul_(inv_w)
        u2 = u * u
        j = i * npp
        if model.profile == "gaussian":
            s = u2.mul(-4.0 * _LN2).exp_().mul_(GAUSS_HEIGHT)
            ds = s * (-4.0 * _LN2)
        elif model.profile == "lorentzian":
            den = u2.mul(4.0).add_(1.0).reciprocal_()
            s = den * LORENTZ_HEIGHT
            ds = s.mul(den).mul_(-4.0)
        else:
            eta = q[:, 3:4]
            e = u2.mul(-4.0 * _LN2).exp_()
            den = u2.mul(4.0).add_(1.0).reciprocal_()
            a1 = (1.0 - eta) * GAUSS_HEIGHT
            a2 = eta * LORENTZ_HEIGHT
            s = torch.addcmul(e * a1, a2, den)
            ds = torch.addcmul(e * (-4.0 * _LN2 * a1), -4.0 * a2, den * den)
            torch.addcmul(den * (aw * LORENTZ_HEIGHT), -(aw * GAUSS_HEIGHT), e, out=cols[:, j + 3])
        fi = s * aw
        f = fi if f is None else f.add_(fi)
        torch.mul(s, inv_w, out=cols[:, j])
        torch.mul(torch.addcmul(s, u2, ds, value=2.0), -awi, out=cols[:, j + 2])
        torch.mul(u.mul_(ds), -2.0 * awi, out=cols[:, j + 1])
    if nk:
        f = torch.addmm(f, params[:, npk:], powers)
    r = cols[:, -1]
    torch.sub(f, y, out=r)
    if sw is not None:
        if nk:
            cols[:, npk:npk + nk] = powers
        cols.mul_(sw[:, None, :])  # weighted J and weighted residual
        npk = npk + nk
        nk = 0
    # one batched product gives JᵀJ (peak block), Jᵀr and rᵀr: r is appended as a last row
    m = cols @ cols.transpose(1, 2)
    cost = 0.5 * m[:, npk, npk]
    if not nk:
        return cost, m[:, :npk, :npk], m[:, :npk, npk]
    jtj = params.new_empty((n, npk + nk, npk + nk))
    jtj[:, :npk, :npk] = m[:, :npk, :npk]
    cross = cols[:, :npk] @ powers.T
    jtj[:, :npk, npk:] = cross
    jtj[:, npk:, :npk] = cross.transpose(1, 2)
    jtj[:, npk:, npk:] = powers @ powers.T
    g = torch.cat([m[:, :npk, npk], r @ powers.T], -1)
    return cost, jtj, g


def _autograd_jacobian(model, x, params):
    import torch

    def single(p):
        return model.evaluate(x, p)

    f = model.evaluate(x, params)
    with warnings.catch_warnings():  # torch.func's own use of torch.jit.script (torch ≥ 2.10)
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
        return f, torch.func.vmap(torch.func.jacfwd(single))(params)


# ----------------------------------------------------------------------------- input handling
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


def _resolve_device(device):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DataError(f"iterate_fit: device must be a torch device name such as 'cpu' or 'cuda', "
                        f"found {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataError("iterate_fit: device='cuda' requested but CUDA is not available here")
    return dev


class _Prepared:
    """Volume split into the fitted (pixels, channels) array and the bookkeeping around it."""

    def __init__(self, volume, model, tth_range, bounds, mask, sigma, func):
        if not isinstance(model, PeakModel):
            raise DataError(f"{func}: model must be a PeakModel, found {type(model).__name__}")
        try:
            da = _data.as_dataarray(volume)
        except DataError as exc:
            raise DataError(f"{func}: {exc}") from None
        try:
            _data.validate_volume(da, check_finite=False)
        except DataError as exc:
            raise DataError(f"{func}: {exc}") from None
        da = _data.canonical(da)
        spec = da.dims[-1]
        coord = da[spec]
        units = str(coord.attrs.get("units", ""))
        i0, i1 = fit_channels(coord.values, tth_range, func=func, min_channels=model.n_params + 1, units=units)
        self.da, self.spec, self.units, self.i0, self.i1 = da, spec, units, i0, i1
        self.x = np.asarray(coord.values[i0:i1], dtype=float)
        self.map_dims = tuple(da.dims[:-1])
        self.map_shape = tuple(da.shape[:-1])
        n_pix = int(np.prod(self.map_shape))
        # kept in the data's float dtype (float32 volumes stay float32); batches are converted
        y = np.asarray(da.isel({spec: slice(i0, i1)}).values).reshape(n_pix, -1)
        if not np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.float64)
        finite = np.all(np.isfinite(y), axis=1)
        use = finite.copy()
        if mask is not None:
            use &= self._mask(mask, func)
        if (~finite).any():
            log.warning("%s: %d pixels have NaN/inf data in the fit range; they are not fitted",
                        func, int((~finite).sum()))
        self.pixels = np.flatnonzero(use)
        if self.pixels.size == 0:
            raise DataError(f"{func}: no pixel to fit (the mask selects none, or all data are non-finite)")
        self.y = y[self.pixels]
        self.sw = self._sigma(sigma, y, func)
        self.lo, self.hi = resolve_bounds(model, self.x, self.y, bounds, func=func)
        self.model = model

    def _mask(self, mask, func):
        ydim, xdim = _data.Y, _data.X
        if isinstance(mask, xr.DataArray):
            missing = [d for d in mask.dims if d not in self.map_dims]
            if missing:
                raise DataError(f"{func}: mask dims {mask.dims} must be among the map dims {self.map_dims}")
            m = mask.broadcast_like(self.da.isel({self.spec: 0}, drop=True)).transpose(*self.map_dims).values
        else:
            m = np.asarray(mask)
            shape_yx = (self.da.sizes[ydim], self.da.sizes[xdim])
            if m.shape == shape_yx:
                m = np.broadcast_to(m, self.map_shape)
            elif m.shape != self.map_shape:
                raise DataError(f"{func}: mask must have shape {shape_yx} (y, x) or {self.map_shape} "
                                f"{self.map_dims}, found {m.shape}")
        if m.dtype != bool:
            if not np.all(np.isin(m, (0, 1))):
                raise DataError(f"{func}: mask must be boolean (or 0/1), found dtype {m.dtype}")
            m = m.astype(bool)
        return np.asarray(m).reshape(-1)

    def _sigma(self, sigma, y_all, func):
        """√weights (pixels, channels) or None for unit weights."""
        if sigma is None:
            return None
        if isinstance(sigma, str):
            if sigma != "poisson":
                raise DataError(f"{func}: sigma must be None, 'poisson', a number or an array; found {sigma!r}")
            s = np.sqrt(np.maximum(self.y, 1.0))
        elif isinstance(sigma, xr.DataArray):
            s = sigma.broadcast_like(self.da).transpose(*self.da.dims).isel({self.spec: slice(self.i0, self.i1)})
            s = np.asarray(s.values, dtype=float).reshape(-1, self.x.size)[self.pixels]
        else:
            s = np.asarray(sigma, dtype=float)
            if s.ndim == 0:
                s = np.full_like(self.y, float(s))
            else:
                try:
                    s = np.broadcast_to(s, tuple(self.da.shape)).reshape(-1, self.da.shape[-1])
                except ValueError:
                    raise DataError(f"{func}: sigma of shape {s.shape} does not broadcast against the "
                                    f"volume {tuple(self.da.shape)} {tuple(self.da.dims)}") from None
                s = s[self.pixels, self.i0:self.i1]
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise DataError(f"{func}: sigma must be finite and > 0 everywhere in the fit range")
        return 1.0 / s

    def initial(self, y, positions, initial, xp_like=None):
        """Initial parameters (numpy or torch like ``y``) clipped into the bounds."""
        p0 = self.model.initial_guess(self._x_like(y), y, positions=positions)
        if initial:
            names = self.model.param_names
            for key, value in initial.items():
                targets = [key] if key in names else [n for n in names if n.rsplit("_", 1)[0] == key]
                if not targets:
                    raise DataError(f"initial names unknown parameter {key!r}; parameters are {names}")
                for n in targets:
                    p0[:, names.index(n)] = float(value)
        return _clip(p0, self.lo, self.hi)

    def _x_like(self, y):
        if _xp(y) is np:
            return self.x
        import torch

        return torch.as_tensor(np.array(self.x), dtype=y.dtype, device=y.device)


def _clip(p, lo, hi):
    if _xp(p) is np:
        return np.clip(p, lo, hi)
    import torch

    return torch.clamp(p, torch.as_tensor(lo, dtype=p.dtype, device=p.device),
                       torch.as_tensor(hi, dtype=p.dtype, device=p.device))


# ----------------------------------------------------------------------------- the LM core
def _lm(model, x, load, n_total, lo, hi, *, batch, max_iter, ftol, xtol, gtol, jacobian):
    """Streaming batched LM (torch). Generator of per-sweep dicts; returns numpy result arrays.

    A working set of at most ``batch`` pixels is iterated together; pixels that finish leave it
    and new ones (``load(i0, i1) -> (y, sw or None, p0)`` tensors) take their places, so every
    sweep works on a full batch until the queue is empty. A new pixel's first "step" is the
    evaluation of its initial guess.
    """
    import torch

    dev, dt = x.device, x.dtype
    npar = model.n_params
    lo_t = torch.as_tensor(lo, dtype=dt, device=dev)
    hi_t = torch.as_tensor(hi, dtype=dt, device=dev)
    fixed = lo_t == hi_t
    n_free = int((~fixed).sum())
    dof = max(x.shape[0] - n_free, 1)
    eps = float(torch.finfo(dt).eps)
    tiny = float(torch.finfo(dt).tiny)
    # tolerances below the precision of the dtype would never trigger (float32)
    ftol, xtol, gtol = max(ftol, 10 * eps), max(xtol, 10 * eps), max(gtol, 10 * eps)
    t = background_abscissa(x)
    powers = torch.stack([t ** k for k in range(model.n_background)]) if model.n_background else None

    def evaluate(p, y, sw):
        if jacobian == "analytic":
            return _normal_equations(model, x, powers, p, y, sw)
        f, J = _autograd_jacobian(model, x, p)
        r = f - y
        if sw is not None:
            r = r * sw
            J = J * sw[..., None]
        return 0.5 * (r * r).sum(-1), J.transpose(1, 2) @ J, (J.transpose(1, 2) @ r[..., None])[..., 0]

    out = {
        "params": np.full((n_total, npar), np.nan), "stderr": np.full((n_total, npar), np.nan),
        "rwp": np.full(n_total, np.nan), "chi2": np.full(n_total, np.nan),
        "converged": np.zeros(n_total, dtype=bool), "n_iter": np.zeros(n_total, dtype=np.int32),
    }
    free_f = (~fixed).to(dt)
    fix_diag = torch.diag(1.0 - free_f)

    pending = []
    just_done = []  # (rows, params) finished since the last event

    def finish(sel, st, conv):
        """Record the finished pixels ``sel`` (indices into the working set); statistics later."""
        rows = st["idx"].index_select(0, sel)
        p = st["p"].index_select(0, sel)
        cost = st["cost"].index_select(0, sel)
        ok = conv.index_select(0, sel) & torch.isfinite(cost) & torch.isfinite(p).all(-1)
        rows_np, p_np = rows.cpu().numpy(), p.cpu().numpy()
        out["params"][rows_np] = p_np
        just_done.append((rows_np, p_np))
        pending.append((rows, cost, st["syy"].index_select(0, sel), st["jtj"].index_select(0, sel), ok,
                        st["it"].index_select(0, sel)))
        if sum(len(q[0]) for q in pending) >= 16 * batch:
            flush()

    def flush():
        """Statistics of the recorded pixels, in one vectorised pass."""
        if not pending:
            return
        rows, cost, syy, jtj, ok, it = (torch.cat(z) for z in zip(*pending))
        pending.clear()
        rows = rows.cpu().numpy()
        ssr = 2.0 * cost
        chi2 = ssr / dof
        a = jtj * (free_f[:, None] * free_f[None, :]) + fix_diag
        inv, info = torch.linalg.inv_ex(a)
        var = torch.diagonal(inv, dim1=-2, dim2=-1) * chi2[:, None] * free_f
        var = torch.where((info == 0)[:, None] & (var >= 0), var, torch.full_like(var, float("nan")))
        out["stderr"][rows] = torch.sqrt(var).cpu().numpy()
        out["rwp"][rows] = torch.sqrt(ssr / syy.clamp_min(tiny)).cpu().numpy()
        out["chi2"][rows] = chi2.cpu().numpy()
        out["converged"][rows] = ok.cpu().numpy()
        out["n_iter"][rows] = it.cpu().numpy()

    keys = ("idx", "y", "sw", "p", "jtj", "g", "cost", "lam", "nu", "it", "syy", "trial", "pred")

    def next_step(st):
        """LM step from the current point: trial point, its predicted reduction, convergence flags."""
        p, jtj, g, cost, lam = st["p"], st["jtj"], st["g"], st["cost"], st["lam"]
        # free parameters: not fixed, and not on a bound with the gradient pushing outwards
        ff = (~fixed & ~((p <= lo_t) & (g > 0)) & ~((p >= hi_t) & (g < 0))).to(dt)
        d = torch.diagonal(jtj, dim1=-2, dim2=-1)
        dscale = torch.maximum(d, eps * d.amax(-1, keepdim=True)).clamp_min(tiny)
        a = jtj * (ff[:, :, None] * ff[:, None, :]) + torch.diag_embed(lam[:, None] * dscale * ff + (1.0 - ff))
        rhs = -(g * ff)
        step, info = torch.linalg.solve_ex(a, rhs)
        bad = torch.nonzero(info != 0)[:, 0]
        if bad.numel():  # singular normal equations: least-squares step
            step[bad] = torch.linalg.lstsq(a[bad], rhs[bad][..., None]).solution[..., 0]
        # predicted reduction of the full LM step (convergence test) and of the clipped one (gain ratio)
        pred_full = -((g + 0.5 * (jtj @ step[..., None])[..., 0]) * step).sum(-1)
        trial = torch.clamp(p + step, lo_t, hi_t)
        step = trial - p
        st["trial"] = trial
        st["pred"] = -((g + 0.5 * (jtj @ step[..., None])[..., 0]) * step).sum(-1)
        # done before another evaluation: the largest cosine between the residual and a free
        # Jacobian column is below gtol (MINPACK), or the lightly damped (λ ≤ 1) step promises
        # less than ftol × cost
        norm = torch.sqrt(d.clamp_min(tiny) * (2.0 * cost).clamp_min(tiny)[:, None])
        return (((g.abs() * ff / norm).amax(-1) <= gtol) | (cost <= tiny)
                | ((pred_full <= ftol * cost) & (lam <= 1.0)))

    st = None
    queue = 0
    n_done = 0
    sweep = 0
    while queue < n_total or (st is not None and st["idx"].numel() > 0):
        size = 0 if st is None else st["idx"].numel()
        room = batch - size
        n_fresh = 0
        if queue < n_total and (room >= max(1, batch // 4) or size == 0):
            k = min(room, n_total - queue)
            y_new, sw_new, p0 = load(queue, queue + k)
            yw = y_new if sw_new is None else y_new * sw_new
            p0 = torch.clamp(p0.to(dt), lo_t, hi_t)
            new = {
                "idx": torch.arange(queue, queue + k, device=dev), "y": y_new, "sw": sw_new, "p": p0,
                "jtj": torch.zeros((k, npar, npar), dtype=dt, device=dev),
                "g": torch.zeros((k, npar), dtype=dt, device=dev),
                "cost": torch.full((k,), float("inf"), dtype=dt, device=dev),
                "lam": torch.full((k,), _LAMBDA0, dtype=dt, device=dev),
                "nu": torch.full((k,), 2.0, dtype=dt, device=dev),
                "it": torch.zeros(k, dtype=torch.int32, device=dev),
                "syy": (yw * yw).sum(-1),
                "trial": p0,  # a new pixel's first "step" is the evaluation of its initial guess
                "pred": torch.zeros((k,), dtype=dt, device=dev),
            }
            # new pixels go first: fresh = the first n_fresh rows
            st = new if st is None else {
                key: (None if new[key] is None else torch.cat([new[key], st[key]])) for key in keys}
            queue += k
            n_fresh = k
        sweep += 1
        p, cost, lam, nu, trial, pred = st["p"], st["cost"], st["lam"], st["nu"], st["trial"], st["pred"]
        fresh = torch.zeros(p.shape[0], dtype=torch.bool, device=dev)
        fresh[:n_fresh] = True
        c_new, j_new, g_new = evaluate(trial, st["y"], st["sw"])
        finite = torch.isfinite(c_new)
        actual = cost - c_new
        rho = torch.where(finite & (pred > 0), actual / torch.where(pred > 0, pred, torch.ones_like(pred)),
                          -torch.ones_like(pred))
        accept = finite & (fresh | (rho > 0))
        lam_new = torch.where(fresh, lam, torch.where(
            accept, lam * torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0), lam * nu))
        old = ~fresh
        step = trial - p
        conv = old & accept & ((actual <= ftol * cost) | (step.abs() <= xtol * (p.abs() + xtol)).all(-1))
        conv |= lam_new > _LAMBDA_MAX
        acc = accept[:, None]
        st["p"] = torch.where(acc, trial, p)
        st["cost"] = torch.where(accept, c_new, cost)
        st["jtj"] = torch.where(acc[..., None], j_new, st["jtj"])
        st["g"] = torch.where(acc, g_new, st["g"])
        st["lam"] = lam_new
        st["nu"] = torch.where(accept, torch.full_like(nu, 2.0), nu * 2.0)
        st["it"] = st["it"] + 1
        alive = finite | old
        conv |= alive & next_step(st)
        finished = conv | ~alive | (st["it"] >= max_iter)
        costs = st["cost"][torch.isfinite(st["cost"])]
        loss = float(costs.mean()) if costs.numel() else float("nan")
        fin = torch.nonzero(finished)[:, 0]
        n_fin = int(fin.numel())
        if n_fin:
            finish(fin, st, conv)
            keep = torch.nonzero(~finished)[:, 0]
            st = {key: (None if st[key] is None else st[key].index_select(0, keep)) for key in keys}
            n_done += n_fin
        n_active = int(st["idx"].numel())
        yield {"sweep": sweep, "done": n_done, "active": n_active,
               "loss": loss,
               "idx": st["idx"], "params": st["p"], "finished": list(just_done)}
        just_done.clear()
    flush()
    return out


def fit_patterns(x, data, model: PeakModel | None = None, *, p0=None, bounds=None, positions=None,
                 sigma=None, max_iter: int = 100, ftol: float = 1e-8, xtol: float = 1e-8,
                 gtol: float = 1e-8, device=None, dtype=None, batch_pixels: int | None = None,
                 jacobian: str = "analytic") -> dict:
    """Fit a stack of patterns with the batched LM solver (the core of :func:`iterate_fit`).

    Parameters
    ----------
    x : array, shape (n_channels,)
        Spectral axis of the fitted range.
    data : array or tensor, shape (n, n_channels)
    model : PeakModel, default ``PeakModel()``
    p0 : array, shape (n, n_params), optional
        Starting parameters (default :meth:`PeakModel.initial_guess`).
    bounds, positions, sigma, max_iter, ftol, xtol, gtol, device, dtype, batch_pixels, jacobian :
        As in :func:`iterate_fit`; ``sigma`` is None, a number or an (n, n_channels) array.

    Returns
    -------
    dict of numpy arrays
        ``params`` (n, n_params), ``stderr`` (n, n_params), ``rwp``, ``chi2``, ``converged``,
        ``n_iter`` (n,), and ``param_names``.
    """
    import torch

    model = model or PeakModel()
    if not isinstance(model, PeakModel):
        raise DataError(f"fit_patterns: model must be a PeakModel, found {type(model).__name__}")
    x = np.array(x, dtype=float)
    y_np = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data, dtype=float)
    if x.ndim != 1 or y_np.ndim != 2 or y_np.shape[1] != x.size:
        raise DataError(f"fit_patterns: x must be (n_channels,) and data (n, n_channels); found x "
                        f"{x.shape}, data {y_np.shape}")
    if x.size <= model.n_params:
        raise DataError(f"fit_patterns: {x.size} channels for {model.n_params} parameters; need more channels")
    if not np.all(np.isfinite(y_np)):
        raise DataError("fit_patterns: data must be finite")
    lo, hi = resolve_bounds(model, x, y_np, bounds, func="fit_patterns")
    dev = _resolve_device(device)
    dt = _dtype(dtype)
    sw_np = None
    if sigma is not None:
        try:
            s = np.broadcast_to(np.asarray(sigma, dtype=float), y_np.shape)
        except ValueError:
            raise DataError(f"fit_patterns: sigma of shape {np.shape(sigma)} does not broadcast against "
                            f"data {y_np.shape}") from None
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise DataError("fit_patterns: sigma must be finite and > 0")
        sw_np = 1.0 / s
    if p0 is not None:
        p0 = np.asarray(p0, dtype=float)
        if p0.shape != (y_np.shape[0], model.n_params):
            raise DataError(f"fit_patterns: p0 must have shape {(y_np.shape[0], model.n_params)}, found {p0.shape}")
    xt = torch.as_tensor(x, dtype=dt, device=dev)

    def load(i0, i1):
        y = torch.as_tensor(y_np[i0:i1], dtype=dt, device=dev)
        sw = None if sw_np is None else torch.as_tensor(np.ascontiguousarray(sw_np[i0:i1]), dtype=dt, device=dev)
        if p0 is None:
            start = model.initial_guess(xt, y, positions=positions)
        else:
            start = torch.as_tensor(p0[i0:i1], dtype=dt, device=dev)
        return y, sw, start

    batch = _batch_size(batch_pixels, dev, x.size, model)
    with torch.no_grad():
        res = run_to_end(_lm(model, xt, load, y_np.shape[0], lo, hi, batch=batch, max_iter=_check_iter(max_iter),
                             ftol=ftol, xtol=xtol, gtol=gtol, jacobian=_check_jac(jacobian)))
    res["param_names"] = model.param_names
    return res


def _batch_size(batch_pixels, dev, n_channels, model):
    """Working-set size: small enough for the CPU caches on CPU, large on a GPU."""
    if batch_pixels is None:
        if dev.type == "cpu":
            return max(256, min(4096, (800 * 2**10) // (8 * n_channels)))
        return max(4096, (512 * 2**20) // (8 * n_channels * (model.n_params + 8)))
    if isinstance(batch_pixels, bool) or not isinstance(batch_pixels, (int, np.integer)) or batch_pixels < 1:
        raise DataError(f"iterate_fit: batch_pixels must be an integer >= 1, found {batch_pixels!r}")
    return int(batch_pixels)


def _dtype(dtype):
    import torch

    if dtype is None:
        return torch.float64
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.float64):
        raise DataError(f"iterate_fit: dtype must be torch.float32 or torch.float64, found {dtype!r}")
    return dtype


def _check_iter(max_iter):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise DataError(f"iterate_fit: max_iter must be an integer >= 1, found {max_iter!r}")
    return int(max_iter)


def _check_jac(jacobian):
    if jacobian not in ("analytic", "autograd"):
        raise DataError(f"iterate_fit: jacobian must be 'analytic' or 'autograd', found {jacobian!r}")
    return jacobian


# ----------------------------------------------------------------------------- result assembly
def _result_dataset(prep: _Prepared, params, stderr, rwp, chi2, converged, n_iter, attrs):
    model = prep.model
    coords = {d: prep.da[d] for d in prep.map_dims}
    n_all = int(np.prod(prep.map_shape))

    def full(values, fill, dtype):
        out = np.full(n_all, fill, dtype=dtype)
        out[prep.pixels] = values
        return out.reshape(prep.map_shape)

    data_units = str(prep.da.attrs.get("units", ""))
    punits = model.param_units(prep.units, data_units)
    long = {"area": "integrated intensity", "position": f"peak position ({prep.spec})",
            "fwhm": f"FWHM ({prep.spec})", "eta": "Lorentzian fraction η", "bg": "background coefficient"}
    ds = xr.Dataset(coords=coords)
    for j, name in enumerate(model.param_names):
        base, idx = name.rsplit("_", 1)
        la = f"{long[base]} {'t^' + idx if base == 'bg' else 'of peak ' + idx}"
        ds[name] = xr.DataArray(full(params[:, j], np.nan, float), dims=prep.map_dims,
                                attrs={"units": punits[name], "long_name": la})
        ds[f"{name}_stderr"] = xr.DataArray(full(stderr[:, j], np.nan, float), dims=prep.map_dims,
                                            attrs={"units": punits[name], "long_name": f"standard error of {name}"})
    ds["rwp"] = xr.DataArray(full(rwp, np.nan, float), dims=prep.map_dims,
                             attrs={"units": "1", "long_name": "weighted-profile R factor Rwp (fraction)"})
    chi2_units = "1" if attrs.get("sigma") else (f"({data_units})²" if data_units else "1")
    ds["chi2"] = xr.DataArray(full(chi2, np.nan, float), dims=prep.map_dims,
                              attrs={"units": chi2_units, "long_name": "reduced χ²"})
    ds["converged"] = xr.DataArray(full(converged, False, bool), dims=prep.map_dims,
                                   attrs={"long_name": "fit converged"})
    ds["n_iter"] = xr.DataArray(full(n_iter, 0, np.int32), dims=prep.map_dims,
                                attrs={"units": "1", "long_name": "solver iterations"})
    x = prep.x
    ds.attrs.update({
        "model": repr(model),
        "param_names": list(model.param_names),
        "fit_dim": prep.spec,
        "fit_range": [float(x.min()), float(x.max())],
        "fit_range_units": prep.units,
        "fit_channels": [prep.i0, prep.i1],
        "background_abscissa": (f"t = ({prep.spec} - {(x[0] + x[-1]) / 2:.8g}) / {(x[-1] - x[0]) / 2:.8g}"),
        "lower_bounds": [float(v) for v in prep.lo],
        "upper_bounds": [float(v) for v in prep.hi],
        "n_fitted": int(prep.pixels.size),
        "n_converged": int(np.sum(converged)),
    })
    ds.attrs.update(_data.provenance(attrs.pop("producer"), attrs))
    return ds


# ----------------------------------------------------------------------------- public API
def iterate_fit(volume, model: PeakModel | None = None, *, tth_range=None, bounds=None, positions=None,
                initial: dict | None = None, sigma=None, mask=None, max_iter: int = 100,
                ftol: float = 1e-8, xtol: float = 1e-8, gtol: float = 1e-8, device=None, dtype=None,
                batch_pixels: int | None = None, jacobian: str = "analytic", preview: str | None = None,
                retries: int = 1, significance: float = 3.0):
    """Fit a peak model to every pixel of a volume; generator of progress events.

    Parameters
    ----------
    volume : xarray.DataArray or Dataset
        Volume ``(y, x, spectral)`` in any dim order, optionally with leading ``time``/``z``
        (every map pixel of every slice is fitted).
    model : PeakModel, default ``PeakModel()`` (one pseudo-Voigt + linear background)
    tth_range : (float, float), optional
        Fit range in the units of the spectral coordinate (deg for ``tth``; the name is kept for
        every spectral dim). Channels with coordinate in [min, max] are fitted; default all.
        Must lie within the axis.
    bounds : None, dict or (lower, upper)
        See :func:`resolve_bounds`; e.g. ``{"eta": (0, 0)}`` fixes a Gaussian shape and
        ``{"position_0": (3.2, 3.4)}`` narrows a position.
    positions : sequence of float, optional
        Starting peak positions (length ``n_peaks``), e.g. from
        :func:`~xrdwidgets.explore.roi.suggest_peaks`; default: the data maxima.
    initial : dict, optional
        ``{name: value}`` starting values that replace the data-driven guesses.
    sigma : None, "poisson", float or array
        Standard deviation of the data (broadcast against the volume): weights 1/σ². ``None``:
        unit weights; ``"poisson"``: σ = √max(y, 1).
    mask : boolean array or DataArray ``(y, x)`` (or the full map shape), optional
        Pixels to fit; others are NaN in the result.
    max_iter : int
        LM iterations per pixel at most.
    ftol, xtol, gtol : float
        Convergence tolerances (see module notes).
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    dtype : torch.float64 (default) or torch.float32
    batch_pixels : int, optional
        Size of the working set of pixels iterated together (default: ~0.8 MB of data per
        temporary on CPU, so that they stay in cache — 1024 pixels at 100 channels; ~0.5 GB of
        temporaries on a GPU). Pixels that finish leave the set and the next ones take their place.
    jacobian : {"analytic", "autograd"}
    preview : str, optional
        Parameter shown in each event's ``preview`` (default the first area).
    retries : int
        Rounds of neighbour-seeded retries (:func:`retry_from_neighbours`): a pixel that did not
        converge is fitted again from the median parameters of its converged neighbours (3 × 3;
        else of all converged pixels); the retry is kept when it converged or lowered the cost.
        0: none.
    significance : float
        A pixel "has a peak" (map ``peak_found``) when every peak's area is positive and at least
        ``significance`` standard errors; elsewhere the fitted position and width mean little.

    Yields
    ------
    Progress
        After each solver sweep (one LM iteration of the working set) in which pixels finished:
        ``iteration`` = pixels finished so far, ``total`` = pixels to fit; ``loss`` = mean cost
        ½Σ w r² of the working set in that sweep; ``metrics``: ``sweep``, ``pixels_done``,
        ``pixels_total``, ``active`` (pixels in the working set), ``elapsed_s``; ``preview``: the
        ``(y, x)`` map of the preview parameter (of the ``time``/``z`` slice being fitted) filled
        so far, NaN where not yet started.

    Returns
    -------
    xarray.Dataset
        Maps over the volume's non-spectral dims: every parameter, ``<name>_stderr``, ``rwp``,
        ``chi2``, ``converged``, ``n_iter``, ``peak_found``; attrs record the model, fit range,
        bounds, provenance, ``n_converged``, ``n_not_converged``, ``n_retried``, ``n_peak_found``.
    """
    import torch

    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or not 0 <= retries <= 10:
        raise DataError(f"iterate_fit: retries must be an integer 0 to 10, found {retries!r}")
    if not (isinstance(significance, (int, float)) and math.isfinite(significance) and significance >= 0):
        raise DataError(f"iterate_fit: significance must be a number >= 0, found {significance!r}")

    model = model or PeakModel()
    prep = _Prepared(volume, model, tth_range, bounds, mask, sigma, "iterate_fit")
    max_iter = _check_iter(max_iter)
    jacobian = _check_jac(jacobian)
    dev = _resolve_device(device)
    dt = _dtype(dtype)
    jprev = model.index(preview or model.param_names[0])
    n_fit, n_ch = prep.y.shape
    batch = _batch_size(batch_pixels, dev, n_ch, model)
    ny, nx = prep.map_shape[-2:]
    prev_map = np.full(int(np.prod(prep.map_shape)), np.nan)
    xt = torch.as_tensor(np.array(prep.x), dtype=dt, device=dev)
    t0 = time.perf_counter()
    log.info("iterate_fit: %d pixels × %d channels, %s, working set %d on %s", n_fit, n_ch, model, batch, dev)

    def load(i0, i1):
        y = torch.as_tensor(prep.y[i0:i1], dtype=dt, device=dev)
        sw = None if prep.sw is None else torch.as_tensor(prep.sw[i0:i1], dtype=dt, device=dev)
        return y, sw, prep.initial(y, positions, initial)

    gen = _lm(model, xt, load, n_fit, prep.lo, prep.hi, batch=batch, max_iter=max_iter, ftol=ftol, xtol=xtol,
              gtol=gtol, jacobian=jacobian)
    last_done = 0
    with torch.no_grad():
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                res = stop.value
                break
            if ev["done"] == last_done:
                continue
            last_done = ev["done"]
            # preview: finished pixels, then the current estimates of the working set
            for rows, p_done in ev["finished"]:
                prev_map[prep.pixels[rows]] = p_done[:, jprev]
            if ev["active"]:
                prev_map[prep.pixels[ev["idx"].cpu().numpy()]] = ev["params"][:, jprev].cpu().numpy()
                first = int(prep.pixels[int(ev["idx"][0])])
            else:
                first = int(prep.pixels[-1])
            plane = first // (ny * nx)
            yield Progress(
                iteration=ev["done"], total=n_fit, loss=ev["loss"],
                metrics={"sweep": ev["sweep"], "pixels_done": ev["done"], "pixels_total": n_fit,
                         "active": ev["active"], "elapsed_s": time.perf_counter() - t0},
                preview=prev_map.reshape(-1, ny, nx)[plane].copy(),
            )
    n_retried = 0
    for _ in range(int(retries)):
        if res["converged"].all():
            break
        kept = retry_from_neighbours(res, prep.pixels, prep.map_shape, lambda y_rows, p0: _lm(
            model, xt, _subset_loader(prep, y_rows, p0, dt, dev), len(y_rows), prep.lo, prep.hi, batch=batch,
            max_iter=max_iter, ftol=ftol, xtol=xtol, gtol=gtol, jacobian=jacobian))
        n_retried += kept
        if not kept:
            break
    if n_retried:   # the preview of the final maps (retried pixels changed)
        prev_map[prep.pixels] = res["params"][:, jprev]
        plane = int(prep.pixels[-1]) // (ny * nx)
        yield Progress(iteration=n_fit, total=n_fit, loss=None,
                       metrics={"pixels_done": n_fit, "pixels_total": n_fit, "retried": n_retried,
                                "elapsed_s": time.perf_counter() - t0},
                       preview=prev_map.reshape(-1, ny, nx)[plane].copy())
    elapsed = time.perf_counter() - t0
    n_conv = int(res["converged"].sum())
    log.info("iterate_fit: %d/%d pixels converged in %.3g s (%.0f pixels/s)", n_conv, n_fit, elapsed,
             n_fit / max(elapsed, 1e-9))
    if n_conv < n_fit:
        log.warning("iterate_fit: %d of %d pixels did not converge within max_iter=%d",
                    n_fit - n_conv, n_fit, max_iter)
    attrs = {"producer": "xrdwidgets.analysis.fitting.iterate_fit", "solver": "batched Levenberg-Marquardt (torch)",
             "device": str(dev), "dtype": str(dt), "max_iter": max_iter, "ftol": ftol, "xtol": xtol,
             "gtol": gtol, "jacobian": jacobian, "batch_pixels": batch,
             "sigma": None if sigma is None else str(sigma)[:40],
             "positions": None if positions is None else [float(v) for v in np.atleast_1d(positions)],
             "elapsed_s": elapsed}
    ds = _result_dataset(prep, res["params"], res["stderr"], res["rwp"], res["chi2"], res["converged"],
                         res["n_iter"], attrs)
    ds.attrs.update({"solver": attrs["solver"], "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                     "batch_pixels": batch, "elapsed_s": elapsed, "n_retried": int(n_retried)})
    _add_peak_found(ds, model, significance)
    return ds


def _subset_loader(prep, rows, p0, dt, dev):
    """``load(i0, i1)`` for :func:`_lm` over the fitted pixels ``rows`` started at ``p0``."""
    import torch

    def load(i0, i1):
        r = rows[i0:i1]
        y = torch.as_tensor(prep.y[r], dtype=dt, device=dev)
        sw = None if prep.sw is None else torch.as_tensor(prep.sw[r], dtype=dt, device=dev)
        p = torch.as_tensor(p0[i0:i1], dtype=dt, device=dev)
        return y, sw, _clip(p, prep.lo, prep.hi)

    return load


def retry_from_neighbours(res: dict, pixels, map_shape, refit) -> int:
    """Fit the non-converged pixels again from their converged neighbours' parameters.

    Parameters
    ----------
    res : dict
        Per fitted pixel ``params`` (n, n_params), ``stderr``, ``rwp``, ``chi2``, ``converged``,
        ``n_iter`` (updated in place where a retry is kept).
    pixels : numpy.ndarray
        Flat index into the map (``map_shape``, last two axes ``(y, x)``) of each fitted pixel.
    refit : callable
        ``refit(rows, p0)`` → a :func:`_lm`-style generator over the fitted pixels ``rows``
        started at ``p0`` (n, n_params); its return value has the arrays of ``res``.

    Returns
    -------
    int
        Pixels whose retry was kept (converged, or a lower χ² than before).
    """
    bad = np.nonzero(~res["converged"])[0]
    good = res["converged"] & np.all(np.isfinite(res["params"]), axis=1)
    if bad.size == 0 or not good.any():
        return 0
    ny, nx = map_shape[-2:]
    n_all = int(np.prod(map_shape))
    npar = res["params"].shape[1]
    full = np.full((n_all, npar), np.nan)
    full[pixels[good]] = res["params"][good]
    full = full.reshape(-1, ny, nx, npar)
    fallback = np.nanmedian(res["params"][good], axis=0)
    seeds = np.empty((bad.size, npar))
    for k, i in enumerate(bad):
        plane, rem = divmod(int(pixels[i]), ny * nx)
        r, c = divmod(rem, nx)
        block = full[plane, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].reshape(-1, npar)
        block = block[np.all(np.isfinite(block), axis=1)]
        seeds[k] = np.median(block, axis=0) if len(block) else fallback
    gen = refit(bad, seeds)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            new = stop.value
            break
    old_chi2 = np.where(np.isfinite(res["chi2"][bad]), res["chi2"][bad], np.inf)
    new_chi2 = np.where(np.isfinite(new["chi2"]), new["chi2"], np.inf)
    keep = new["converged"] | (new_chi2 < old_chi2)
    for key in ("params", "stderr", "rwp", "chi2", "converged"):
        res[key][bad[keep]] = new[key][keep]
    res["n_iter"][bad[keep]] = res["n_iter"][bad[keep]] + new["n_iter"][keep]
    log.info("iterate_fit: retried %d non-converged pixels from their neighbours; kept %d, %d now converged",
             bad.size, int(keep.sum()), int(new["converged"][keep].sum()))
    return int(keep.sum())


def _add_peak_found(ds: xr.Dataset, model: PeakModel, significance: float) -> None:
    """Map ``peak_found``: every peak's area > 0 and >= ``significance`` standard errors."""
    areas = [n for n in model.param_names if n.startswith("area_")]
    found = None
    for n in areas:
        a, e = ds[n].values, ds[f"{n}_stderr"].values
        ok = np.isfinite(a) & (a > 0) & (np.isfinite(e) & (a >= significance * e))
        found = ok if found is None else (found & ok)
    if found is None:
        return
    ds["peak_found"] = xr.DataArray(found, dims=ds[areas[0]].dims,
                                    attrs={"long_name": f"significant peak (area ≥ {significance:g} σ)"})
    ds.attrs["n_peak_found"] = int(found.sum())
    ds.attrs["significance"] = float(significance)
    ds.attrs["n_not_converged"] = int(ds.attrs.get("n_fitted", 0)) - int(ds.attrs.get("n_converged", 0))


def fit_volume(volume, model: PeakModel | None = None, callback=None, **kwargs) -> xr.Dataset:
    """Run :func:`iterate_fit` to the end and return its Dataset of maps.

    ``callback(progress)`` is called on every :class:`~xrdwidgets.base.progress.Progress` event.
    Keyword arguments are those of :func:`iterate_fit`.
    """
    return run_to_end(iterate_fit(volume, model, **kwargs), callback)


# ----------------------------------------------------------------------------- scipy reference
def fit_volume_scipy(volume, model: PeakModel | None = None, *, tth_range=None, bounds=None, positions=None,
                     initial: dict | None = None, sigma=None, mask=None, ftol: float = 1e-8, xtol: float = 1e-8,
                     gtol: float = 1e-8, max_nfev: int | None = None, jac: str = "analytic",
                     method: str = "trf") -> xr.Dataset:
    """Reference fit: :func:`scipy.optimize.least_squares` pixel by pixel, same model and bounds.

    The arguments mean what they mean in :func:`iterate_fit` (same initial guesses, same bounds,
    same weights); ``jac`` is ``"analytic"`` (the same analytic Jacobian) or a scipy finite-
    difference scheme (``"2-point"``, ``"3-point"``); ``method`` ``"trf"`` or ``"dogbox"``
    (bounded). Fixed parameters (lower == upper) are left out of the optimisation. Use ``mask``
    to fit a subset — one pixel takes milliseconds.

    Returns
    -------
    xarray.Dataset
        As :func:`iterate_fit`; ``n_iter`` holds the number of function evaluations and
        ``converged`` scipy's ``success`` flag.
    """
    from scipy.optimize import least_squares

    model = model or PeakModel()
    func = "fit_volume_scipy"
    prep = _Prepared(volume, model, tth_range, bounds, mask, sigma, func)
    if jac not in ("analytic", "2-point", "3-point"):
        raise DataError(f"{func}: jac must be 'analytic', '2-point' or '3-point', found {jac!r}")
    if method not in ("trf", "dogbox"):
        raise DataError(f"{func}: method must be 'trf' or 'dogbox' (bounded solvers), found {method!r}")
    x = prep.x
    lo, hi = prep.lo, prep.hi
    free = lo < hi
    n_fit, npar = prep.y.shape[0], model.n_params
    prep.y = prep.y.astype(np.float64, copy=False)
    p0_all = prep.initial(prep.y, positions, initial)
    params = np.full((n_fit, npar), np.nan)
    stderr = np.full((n_fit, npar), np.nan)
    rwp = np.full(n_fit, np.nan)
    chi2 = np.full(n_fit, np.nan)
    converged = np.zeros(n_fit, dtype=bool)
    nfev = np.zeros(n_fit, dtype=np.int32)
    dof = max(x.size - int(free.sum()), 1)
    t0 = time.perf_counter()
    for i in range(n_fit):
        y = prep.y[i]
        w = None if prep.sw is None else prep.sw[i]
        full = p0_all[i].copy()

        def fun(q, y=y, w=w, full=full):
            full[free] = q
            f, _ = model_jacobian(model, x, full[None], with_jacobian=False)
            r = f[0] - y
            return r if w is None else r * w

        def jacobian(q, y=y, w=w, full=full):
            full[free] = q
            _, J = model_jacobian(model, x, full[None])
            J = J[0][:, free]
            return J if w is None else J * w[:, None]

        # least_squares needs a start strictly inside the box
        q0 = _inside(full[free], lo[free], hi[free])
        sol = least_squares(fun, q0, jac=jacobian if jac == "analytic" else jac, bounds=(lo[free], hi[free]),
                            method=method, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev, x_scale="jac")
        p = full.copy()
        p[free] = sol.x
        params[i] = p
        r = sol.fun
        ssr = float(r @ r)
        yw = y if w is None else y * w
        rwp[i] = math.sqrt(ssr / max(float(yw @ yw), np.finfo(float).tiny))
        chi2[i] = ssr / dof
        converged[i] = bool(sol.success)
        nfev[i] = sol.nfev
        try:
            cov = np.linalg.inv(sol.jac.T @ sol.jac) * chi2[i]
            err = np.full(npar, np.nan)
            err[free] = np.sqrt(np.where(np.diag(cov) >= 0, np.diag(cov), np.nan))
            err[~free] = 0.0
            stderr[i] = err
        except np.linalg.LinAlgError:
            pass
    elapsed = time.perf_counter() - t0
    log.info("fit_volume_scipy: %d pixels in %.3g s (%.0f pixels/s)", n_fit, elapsed, n_fit / max(elapsed, 1e-9))
    attrs = {"producer": "xrdwidgets.analysis.fitting.fit_volume_scipy", "solver": f"scipy least_squares ({method})",
             "ftol": ftol, "xtol": xtol, "gtol": gtol, "jac": jac,
             "sigma": None if sigma is None else str(sigma)[:40], "elapsed_s": elapsed}
    ds = _result_dataset(prep, params, stderr, rwp, chi2, converged, nfev, attrs)
    ds["n_iter"].attrs["long_name"] = "function evaluations"
    ds.attrs.update({"solver": attrs["solver"], "device": "cpu", "elapsed_s": elapsed})
    return ds


def _inside(q, lo, hi):
    """``q`` moved strictly inside (lo, hi) (scipy's trf/dogbox need an interior start)."""
    span = np.where(np.isfinite(hi - lo), hi - lo, np.abs(q) + 1.0)
    margin = 1e-10 * np.maximum(span, 1e-300)
    return np.clip(q, lo + margin, hi - margin)
