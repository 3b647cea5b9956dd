"""A volume made ready for a per-pixel fit, and the fit's arrays made back into maps.

:class:`PreparedVolume` splits a volume ``(…, y, x, spectral)`` into the fitted
``(pixels, channels)`` array (fit range, mask, non-finite pixels left out), the weights and the
bounds; :func:`result_dataset` puts per-pixel results back into ``(…, y, x)`` maps with units.
Shared by the batched fit (:mod:`~xrdwidgets.analysis.fitting.volume`) and the scipy reference
(:mod:`~xrdwidgets.analysis.fitting.reference`).
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from ... import data as _data
from ...base.errors import DataError
from ..peaks import PeakModel, param_long_name
from .bounds import clip_to_bounds, fit_channels, resolve_bounds
from .jacobian import array_module

log = logging.getLogger(__name__)

__all__ = ["PreparedVolume", "result_dataset"]


class PreparedVolume:
    """Volume split into the fitted (pixels, channels) array and the bookkeeping around it.

    Parameters
    ----------
    volume : xarray.DataArray or Dataset
        ``(…, y, x, spectral)`` in any dim order.
    model : PeakModel
    tth_range, bounds, mask, sigma :
        As in :func:`~xrdwidgets.analysis.fitting.iterate_fit`.
    func : str
        Name of the public function, at the start of every error message.

    Attributes
    ----------
    y : numpy.ndarray, shape ``(n_fitted, n_channels)``
        Data of the fitted pixels in the fit range (the data's float dtype).
    sw : numpy.ndarray ``(n_fitted, n_channels)`` or None
        √weights 1/σ (None: unit weights).
    x : numpy.ndarray, shape ``(n_channels,)``
        Spectral coordinate of the fit range (its units: ``units``).
    pixels : numpy.ndarray
        Flat index into the map (``map_shape``) of each fitted pixel.
    lo, hi : numpy.ndarray, shape ``(n_params,)``
        Bounds (:func:`~xrdwidgets.analysis.fitting.resolve_bounds`).
    """

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
        return clip_to_bounds(p0, self.lo, self.hi)

    def _x_like(self, y):
        if array_module(y) is np:
            return self.x
        import torch

        return torch.as_tensor(np.array(self.x), dtype=y.dtype, device=y.device)



def result_dataset(prep: PreparedVolume, params, stderr, rwp, chi2, converged, n_iter, attrs):
    """Per-pixel results ``(n_fitted, …)`` as a Dataset of maps over ``prep.map_dims``.

    ``params``/``stderr`` are ``(n_fitted, n_params)`` in the parameters' units; ``rwp``,
    ``chi2``, ``converged``, ``n_iter`` are ``(n_fitted,)``. Pixels not fitted are NaN / False / 0.
    ``attrs`` (with ``producer``) become the provenance.
    """
    model = prep.model
    coords = {d: prep.da[d] for d in prep.map_dims}
    n_all = int(np.prod(prep.map_shape))

    def full(values, fill, dtype):
        out = np.full(n_all, fill, dtype=dtype)
        out[prep.pixels] = values
        return out.reshape(prep.map_shape)

    data_units = str(prep.da.attrs.get("units", ""))
    punits = model.param_units(prep.units, data_units)
    ds = xr.Dataset(coords=coords)
    for j, name in enumerate(model.param_names):
        la = param_long_name(name, prep.spec)
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
