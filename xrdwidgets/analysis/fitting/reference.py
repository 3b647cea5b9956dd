"""The reference fit: :func:`scipy.optimize.least_squares` pixel by pixel, same model and bounds.

:func:`fit_volume_scipy` fits what :func:`~xrdwidgets.analysis.fitting.iterate_fit` fits (same
initial guesses, bounds and weights) one pixel at a time; tests and benchmarks compare the
batched solver against it.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import xarray as xr

from ...base.errors import DataError
from ..peaks import PeakModel
from .jacobian import model_jacobian
from .prepare import PreparedVolume, result_dataset

log = logging.getLogger(__name__)

__all__ = ["fit_volume_scipy"]


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
    prep = PreparedVolume(volume, model, tth_range, bounds, mask, sigma, func)
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
    ds = result_dataset(prep, params, stderr, rwp, chi2, converged, nfev, attrs)
    ds["n_iter"].attrs["long_name"] = "function evaluations"
    ds.attrs.update({"solver": attrs["solver"], "device": "cpu", "elapsed_s": elapsed})
    return ds


def _inside(q, lo, hi):
    """``q`` moved strictly inside (lo, hi) (scipy's trf/dogbox need an interior start)."""
    span = np.where(np.isfinite(hi - lo), hi - lo, np.abs(q) + 1.0)
    margin = 1e-10 * np.maximum(span, 1e-300)
    return np.clip(q, lo + margin, hi - margin)
