"""What every correction shares: the stack in (validated), the stack out (provenance and the list
of corrections applied) and small helpers. Used by the modules of :mod:`xrdwidgets.corrections`.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .. import data as _data
from ..base.errors import DataError, InputError
from .report import applied_corrections

__all__ = ["PRODUCER", "as_stack", "float_values", "channel_sum", "angles_of", "with_correction",
           "check_choice", "angle_coord", "angle_range", "robust_std"]

#: Producer prefix of the provenance attrs (``xrdwidgets.corrections.<step>``).
PRODUCER = "xrdwidgets.corrections"


def as_stack(stack, name: str = "stack") -> xr.DataArray:
    """Validated canonical sinogram stack without leading dims.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral), any dim order; a Dataset gives its
        ``sinogram`` variable.
    name : str
        Argument name used in error messages.

    Returns
    -------
    xarray.DataArray
        ``(translation, angle, spectral)``, finite, at least 4 translations.
    """
    if not isinstance(stack, (xr.DataArray, xr.Dataset)):
        raise DataError(f"{name}: expected an xarray DataArray/Dataset sinogram stack "
                        f"(translation, angle, spectral), found {type(stack).__name__}")
    da = _data.validate_sinogram_stack(_data.as_dataarray(stack, "sinogram"), check_finite="always",
                                       name=name)
    extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
    if extra:
        raise DataError(f"{name}: expected one sinogram stack (translation, angle, spectral), found extra "
                        f"dims {extra} (sizes {dict(da.sizes)}); correct one slice at a time, e.g. "
                        f"{name}.isel({extra[0]}=0)")
    n_t = da.sizes[_data.TRANSLATION]
    if n_t < 4:
        raise DataError(f"{name}: expected at least 4 translations, found {n_t}")
    return da


def float_values(da: xr.DataArray) -> np.ndarray:
    """Float array of the stack (float32 stays float32, everything else float64)."""
    v = np.asarray(da.values)
    return v if v.dtype in (np.float32, np.float64) else v.astype(np.float64)


def channel_sum(values: np.ndarray) -> np.ndarray:
    """Channel sum ``(translation, angle)`` in float64."""
    return values.sum(axis=-1, dtype=np.float64)


def angles_of(da: xr.DataArray) -> np.ndarray:
    """Rotation angles of a stack, degrees, float64 ``(angle,)``."""
    return np.asarray(da[_data.ANGLE].values, dtype=np.float64)


def with_correction(da: xr.DataArray, values, step: str, params: dict, *, geometry=None) -> xr.DataArray:
    """A copy of ``da`` with new values, provenance and the list of corrections updated.

    Parameters
    ----------
    da : xarray.DataArray
        Canonical stack (translation, angle, spectral), as from :func:`as_stack`.
    values : array (translation, angle, spectral)
        Corrected values.
    step : str
        Name of the correction (``"air"``, ``"decay"``, ``"jitter"``, ``"centre"``), appended to
        ``attrs["corrections"]`` and the provenance producer.
    params : dict
        Parameters recorded in the provenance.
    geometry : ScanGeometry, optional
        New scan geometry to store.

    Returns
    -------
    xarray.DataArray
    """
    out = da.copy(data=np.asarray(values, dtype=da.dtype if np.issubdtype(da.dtype, np.floating)
                                  else np.float64))
    attrs = {k: v for k, v in da.attrs.items() if not k.startswith("provenance_")}
    attrs["corrections"] = ",".join(applied_corrections(da) + [step])
    params = dict(params, source=da.attrs.get("provenance_producer", ""))
    attrs.update(_data.provenance(f"{PRODUCER}.{step}", params))
    out.attrs = attrs
    if geometry is not None:
        out = _data.set_geometry(out, geometry)
    return out


def check_choice(name, value, options):
    """``value`` when it is one of ``options``; else an
    :class:`~xrdwidgets.base.errors.InputError` naming ``name``."""
    if value not in options:
        raise InputError(f"{name}: expected one of {options}, found {value!r}")
    return value


def angle_coord(da, values, long_name, units):
    """A float DataArray ``(angle,)`` on the angles of ``da`` with ``long_name`` and ``units``."""
    return xr.DataArray(np.asarray(values, float), dims=(_data.ANGLE,),
                        coords={_data.ANGLE: da[_data.ANGLE]},
                        attrs={"long_name": long_name, "units": units})


def angle_range(angles: np.ndarray) -> tuple:
    """``(start, stop)`` of a scan: 180° or 360° from the first angle, by the angles covered."""
    a = np.sort(angles)
    step = float(np.median(np.diff(a))) if a.size > 1 else 0.0
    span = a[-1] - a[0] + step
    return (float(a[0]), float(a[0] + (360.0 if span > 180.0 + 1e-6 else 180.0)))


def robust_std(x) -> float:
    """Standard deviation from the median absolute deviation (1.4826 · MAD) of ``x``."""
    x = np.asarray(x, float)
    return float(1.4826 * np.median(np.abs(x - np.median(x))))
