"""Reading a fit result: which maps it holds, a map with the no-peak pixels blanked, one pixel's fit.

The functions a viewer of :func:`~xrdwidgets.analysis.fitting.iterate_fit` results calls (the
App's peak-fit tab does): :func:`map_names`, :func:`fit_map` and :func:`pixel_fit`.
"""
from __future__ import annotations

import numpy as np

from ..peaks import PeakModel

__all__ = ["map_names", "fit_map", "pixel_fit"]

#: Maps that describe the fit itself, never blanked where no peak was found.
_QUALITY = ("rwp", "chi2", "n_iter")


def map_names(result) -> list:
    """Names of the numeric maps of a fit result (parameters, their errors, ``rwp``, ``chi2``,
    ``n_iter``; not the boolean ``converged``/``peak_found``), in the result's order."""
    return [v for v in result.data_vars if result[v].ndim >= 2 and result[v].dtype != bool]


def fit_map(result, name: str, *, only_peaks: bool = False):
    """Map ``name`` ``(…, y, x)`` of a fit result; with ``only_peaks`` NaN where ``peak_found`` is
    False (except the fit-quality maps ``rwp``, ``chi2``, ``n_iter``, and when the result has no
    ``peak_found``)."""
    da = result[name]
    if only_peaks and "peak_found" in result and name not in _QUALITY:
        da = da.where(result["peak_found"])
    return da


def pixel_fit(volume, result, model: PeakModel, row: int, col: int, fit_range):
    """Data, fitted model and their spectral axis at one pixel of a volume.

    Parameters
    ----------
    volume : xarray.DataArray
        ``(row dim, column dim, spectral)`` in this order (e.g. ``(y, x, tth)``).
    result : xarray.Dataset or None
        Fit result with ``(row, column)`` maps named by ``model.param_names``; ``None``: no fit yet.
    model : PeakModel
    row, col : int
        Pixel indices along the volume's first two dims.
    fit_range : (float, float)
        Spectral range (units of the spectral coordinate, either order) to return.

    Returns
    -------
    (x, y, fit) : numpy.ndarray, each ``(n_channels,)``
        Spectral coordinate, data, and the model at the fitted parameters (NaN without a result or
        where a parameter is not finite). The residual is ``y - fit``.
    """
    spec = volume.dims[-1]
    lo, hi = fit_range
    sub = volume.isel({volume.dims[0]: row, volume.dims[1]: col}).sel({spec: slice(min(lo, hi), max(lo, hi))})
    x = np.asarray(sub[spec].values, dtype=float)
    y = np.asarray(sub.values, dtype=float)
    fit = np.full_like(y, np.nan)
    if result is not None:
        params = np.array([float(result[n].values[row, col]) for n in model.param_names])
        if np.all(np.isfinite(params)):
            fit = np.asarray(model.evaluate(x, params[None, :]))[0]
    return x, y, fit
