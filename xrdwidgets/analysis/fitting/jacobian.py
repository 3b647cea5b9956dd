"""The peak model's values and its Jacobian for the batched fit (numpy or torch).

:func:`model_jacobian` gives the model and its analytic Jacobian (numpy or torch),
:func:`normal_equations` the fused cost, JᵀJ and Jᵀr of a batch that the solver
(:mod:`~xrdwidgets.analysis.fitting.solver`) iterates on, and :func:`autograd_jacobian` the same
Jacobian by ``torch.func`` (kept to check new profiles). Axis order: parameters ``(n, n_params)``,
patterns ``(n, n_channels)``, Jacobians ``(n, n_channels, n_params)``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..peaks import GAUSS_HEIGHT, LORENTZ_HEIGHT, PeakModel, background_abscissa

__all__ = ["model_jacobian", "normal_equations", "autograd_jacobian", "array_module"]

_LN2 = math.log(2.0)


def array_module(a):
    """``torch`` for a torch tensor, else ``numpy``."""
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
    xp = array_module(params)
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


def normal_equations(model: PeakModel, x, powers, params, y, sw):
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


def autograd_jacobian(model, x, params):
    """Model ``(n, n_channels)`` and Jacobian ``(n, n_channels, n_params)`` by ``torch.func.vmap(jacfwd)``."""
    import torch

    def single(p):
        return model.evaluate(x, p)

    f = model.evaluate(x, params)
    with warnings.catch_warnings():  # torch.func's own use of torch.jit.script (torch ≥ 2.10)
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
        return f, torch.func.vmap(torch.func.jacfwd(single))(params)

