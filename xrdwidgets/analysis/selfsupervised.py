"""Shared parts of the self-supervised peak fits (PeakFitCNN, DLSR): parameter space, maps, checks.

A self-supervised fit predicts normalised parameters ``u ∈ [0, 1]`` that :class:`ParamSpace`
maps into the finite bounds (:func:`~xrdwidgets.analysis.fitting.finite_bounds`);
:func:`select_channels` cuts the fit range, :func:`maps_dataset` makes the ``(y, x)`` maps, and
:func:`check_resume` / :func:`check_common` check a resumed checkpoint and the training
arguments. Used by :mod:`~xrdwidgets.analysis.peakfitcnn` and :mod:`~xrdwidgets.analysis.dlsr`.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import xarray as xr

from .. import data as _data
from ..base.errors import InputTypeError, StateError
from .fitting import fit_channels
from .peaks import PeakModel, param_long_name

__all__ = ["ParamSpace", "select_channels", "maps_dataset", "content_hash", "check_resume", "check_common"]


class ParamSpace:
    """Maps between normalised parameters ``u ∈ [0, 1]`` and the peak model's parameters.

    Positions are handled relative to the middle ``c`` of the spectral axis (``x − c`` and
    ``position − c``), so float32 keeps their precision whatever the axis' offset; the background
    is unchanged by the shift (its abscissa is scaled over the axis).

    Parameters
    ----------
    model : PeakModel
    x : array (n_channels,)
        Spectral axis of the fitted range.
    lower, upper : array (n_params,)
        Finite bounds (:func:`~xrdwidgets.analysis.fitting.finite_bounds`).
    device : torch device
    """

    def __init__(self, model: PeakModel, x, lower, upper, device):
        self.model = model
        self.x = np.asarray(x, dtype=np.float64)
        self.centre = 0.5 * (self.x[0] + self.x[-1])
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.is_pos = np.array([n.startswith("position_") for n in model.param_names])
        shift = np.where(self.is_pos, self.centre, 0.0)
        self._shift = shift
        self.device = torch.device(device)
        self.x_rel = torch.as_tensor(self.x - self.centre, dtype=torch.float32, device=self.device)
        self.lo_rel = torch.as_tensor(self.lower - shift, dtype=torch.float32, device=self.device)
        self.span = torch.as_tensor(self.upper - self.lower, dtype=torch.float32, device=self.device)

    def params(self, u: torch.Tensor) -> torch.Tensor:
        """Normalised ``u (..., n_params)`` → model parameters (positions relative to the centre)."""
        return self.lo_rel + self.span * u

    def evaluate(self, u: torch.Tensor) -> torch.Tensor:
        """Patterns ``(..., n_channels)`` of normalised parameters ``u (..., n_params)``."""
        return self.model.evaluate(self.x_rel, self.params(u))

    def physical(self, u) -> np.ndarray:
        """Normalised ``u`` → parameters in their units (float64 numpy, absolute positions)."""
        u = u.detach().double().cpu().numpy() if isinstance(u, torch.Tensor) else np.asarray(u, np.float64)
        return self.lower + (self.upper - self.lower) * u

    def normalised(self, params, eps: float = 1e-4) -> np.ndarray:
        """Parameters in their units → ``u``, clipped to ``[eps, 1 − eps]`` (float64 numpy)."""
        p = np.asarray(params, dtype=np.float64)
        return np.clip((p - self.lower) / (self.upper - self.lower), eps, 1.0 - eps)


def select_channels(da: xr.DataArray, tth_range, *, caller: str, model: PeakModel):
    """Restrict ``da`` to the channels with ``min ≤ coordinate ≤ max`` of its spectral axis.

    Returns ``(selected DataArray, spectral dim name, spectral values float64)``; a ValueError
    (:class:`~xrdwidgets.data.DataError`) when the range is malformed, lies outside the axis or
    keeps no more channels than the model has parameters.
    """
    sdim = _data.spectral_dim(da)
    coord = np.asarray(da[sdim].values, dtype=np.float64)
    i0, i1 = fit_channels(coord, tth_range, func=caller, min_channels=model.n_params + 1,
                          units=str(da[sdim].attrs.get("units", "")))
    da = da.isel({sdim: slice(i0, i1)})
    return da, sdim, coord[i0:i1].copy()


def maps_dataset(params: np.ndarray, model: PeakModel, y, x, *, spectral: np.ndarray, spectral_dim: str,
                 spectral_units: str, data_units: str, lower, upper, producer: str, parameters: dict,
                 residual: np.ndarray | None = None, rwp: np.ndarray | None = None,
                 attrs: dict | None = None) -> xr.Dataset:
    """Parameter maps ``(y, x, n_params)`` as a Dataset of ``(y, x)`` variables.

    Variables are named by ``model.param_names`` (as :func:`xrdwidgets.analysis.fitting.fit_volume`
    names them) with ``units``/``long_name``; ``residual`` (RMS of data − model, data units) and
    ``rwp`` (√(Σ(y − f)² / Σy²), a fraction) are added when given. Attrs: ``model``,
    ``param_names``, ``fit_dim``, ``fit_range``, ``fit_range_units``, ``lower_bounds``,
    ``upper_bounds`` (as the fitting module's) and provenance.
    """
    units = model.param_units(spectral_units, data_units)
    coords = {"y": y, "x": x}
    ds = xr.Dataset(coords=coords)
    for i, name in enumerate(model.param_names):
        la = param_long_name(name, spectral_dim)
        ds[name] = xr.DataArray(np.asarray(params[..., i], np.float64), dims=("y", "x"),
                                attrs={"units": units[name], "long_name": la})
    if residual is not None:
        ds["residual"] = xr.DataArray(np.asarray(residual, np.float64), dims=("y", "x"),
                                      attrs={"units": data_units, "long_name": "RMS residual (data − model)"})
    if rwp is not None:
        ds["rwp"] = xr.DataArray(np.asarray(rwp, np.float64), dims=("y", "x"),
                                 attrs={"units": "1", "long_name": "profile R factor Rwp (fraction)"})
    spectral = np.asarray(spectral, np.float64)
    ds.attrs.update({
        "model": repr(model), "param_names": list(model.param_names), "fit_dim": spectral_dim,
        "fit_range": [float(spectral.min()), float(spectral.max())], "fit_range_units": spectral_units,
        "lower_bounds": [float(v) for v in lower], "upper_bounds": [float(v) for v in upper],
    })
    ds.attrs.update(attrs or {})
    ds.attrs.update(_data.provenance(producer, parameters))
    return ds


def content_hash(*arrays) -> str:
    """Hex digest (blake2b, 128 bits) of the arrays' float32 bytes: identifies the data of a checkpoint."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()


def check_resume(caller: str, checkpoint, key: str, info: dict, ignore=()):
    """Refuse a training checkpoint made for another problem (``checkpoint[key] != info``).

    Keys in ``ignore`` are not compared (checked later by the caller).
    """
    if checkpoint is None:
        return
    if not isinstance(checkpoint, dict):
        raise InputTypeError(f"{caller}: checkpoint must be a dict (e.g. torch.load(path)) or None, "
                        f"found {type(checkpoint).__name__}")
    made = checkpoint.get(key)
    if made is None:
        raise StateError(f"{caller}: checkpoint was not made by {caller} (no {key!r} entry)")
    made = {k: v for k, v in made.items() if k not in ignore} if isinstance(made, dict) else {"info": made}
    info = {k: v for k, v in info.items() if k not in ignore}
    if made != info:
        diffs = [f"{k}={made.get(k, '<unset>')!r} in the checkpoint, {info.get(k, '<unset>')!r} now"
                 for k in sorted(set(made) | set(info)) if made.get(k, "<unset>") != info.get(k, "<unset>")]
        raise StateError(f"{caller}: the checkpoint belongs to another fit ({'; '.join(diffs)}); resume with "
                         "the data and parameters it was made with, or start afresh (checkpoint=None)")


def check_common(caller, *, epochs, lr, seed, preview_every, checkpoint_every, patience):
    """Checked training arguments as a dict (:func:`xrdwidgets.recon.training.training_config`)."""
    from ..recon.training import training_config

    return training_config(caller, epochs=epochs, lr=lr, seed=seed, preview_every=preview_every,
                           checkpoint_every=checkpoint_every, patience=patience)

