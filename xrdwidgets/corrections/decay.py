"""Beam-decay normalisation: each projection (or point) divided by the relative incident-beam
intensity, from the projection totals or a monitor.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .. import data as _data
from ..base.errors import DataError
from ._common import angle_coord, as_stack, channel_sum, check_choice, float_values, with_correction
from .report import DecayResult

log = logging.getLogger(__name__)

__all__ = ["DECAY_REFERENCES", "normalise_decay"]

#: Where the decay factors equal 1 (:func:`normalise_decay`'s ``reference``).
DECAY_REFERENCES = ("median", "first", "max")


def _reference(values: np.ndarray, reference: str) -> float:
    if reference == "median":
        return float(np.median(values))
    if reference == "first":
        return float(values.flat[0])
    return float(np.max(values))


def _monitor_array(monitor, da) -> np.ndarray:
    n_t, n_a = da.sizes[_data.TRANSLATION], da.sizes[_data.ANGLE]
    if isinstance(monitor, xr.DataArray):
        dims = set(monitor.dims)
        if dims == {_data.ANGLE}:
            arr = monitor.values
        elif dims == {_data.TRANSLATION, _data.ANGLE}:
            arr = monitor.transpose(_data.TRANSLATION, _data.ANGLE).values
        else:
            raise DataError(f"monitor: expected dims ('angle',) or ('translation', 'angle'), found "
                            f"{tuple(monitor.dims)}")
    else:
        arr = np.asarray(monitor)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape not in ((n_a,), (n_t, n_a)):
        raise DataError(f"monitor: expected shape ({n_a},) (per angle) or ({n_t}, {n_a}) (per point, "
                        f"translation × angle), found {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise DataError(f"monitor: expected finite positive values, found {int(np.sum(~np.isfinite(arr)))} "
                        f"non-finite and {int(np.sum(arr <= 0))} non-positive")
    return arr


def normalise_decay(stack, *, monitor=None, reference: str = "median") -> tuple[xr.DataArray, DecayResult]:
    """Divide each projection (or point) by the relative incident-beam intensity.

    Without a monitor the intensity of projection ``j`` is its total ``Σ_{translation, channel}``
    which, for a sample inside the translation range at every angle, is the same for every angle
    of a parallel-beam scan up to the beam intensity.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral).
    monitor : array (angle,) or (translation, angle), or DataArray with those dims, optional
        Incident-beam monitor (e.g. ion-chamber counts) per projection or per point.
    reference : {"median", "first", "max"}
        Factors are relative to the median (robust), the first angle, or the maximum.

    Returns
    -------
    (xarray.DataArray, DecayResult)
        ``stack / factors`` and the report (``factors`` dims (angle) or (translation, angle)).
    """
    da = as_stack(stack)
    check_choice("reference", reference, DECAY_REFERENCES)
    vals = float_values(da)
    if monitor is None:
        raw = channel_sum(vals).sum(axis=0)
        bad = np.nonzero(~(raw > 0))[0]
        if bad.size:
            raise DataError(f"stack: projections at angle indices {bad[:10].tolist()} have no positive total; "
                            "cannot estimate the beam intensity from the data (pass monitor=)")
        source = "totals"
    else:
        raw = _monitor_array(monitor, da)
        source = "monitor"
    factors = raw / _reference(raw, reference)
    scale = factors if factors.ndim == 2 else factors[None, :]
    out = vals / scale[:, :, None].astype(vals.dtype)
    if factors.ndim == 1:
        fda = angle_coord(da, factors, "relative beam intensity", "1")
    else:
        fda = xr.DataArray(factors, dims=(_data.TRANSLATION, _data.ANGLE),
                           coords={d: da[d] for d in (_data.TRANSLATION, _data.ANGLE)},
                           attrs={"long_name": "relative beam intensity", "units": "1"})
    report = DecayResult(factors=fda, source=source, reference=reference)
    log.info("%s", report.summary())
    return with_correction(da, out, "decay", dict(source=source, reference=reference)), report
