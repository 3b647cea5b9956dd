"""Reader for nDTomo HDF5 files (``/data`` plus an optional spectral axis): :func:`load_ndtomo`."""
from __future__ import annotations

import h5py
import numpy as np
import xarray as xr

from .. import data as _data
from ..data import SPECTRAL_DIMS, DataError
from ..geometry import ScanGeometry
from ._common import XRDFileError, _as_path
from ._reading import _check_axis, _get_dataset, _nonfinite_note, _note, _open_h5, _read


# ============================================================================ nDTomo
#: nDTomo spectral axis datasets, in order of preference, and the dim each maps to.
NDTOMO_AXES = (("tth", "tth"), ("twotheta", "tth"), ("q", "q"), ("d", "d"),
               ("energy", "energy"), ("Energy", "energy"))
_NDTOMO_SINOGRAM_MARKERS = ("omega", "slow_axis_steps", "fast_axis_steps")
_CORE = {"volume": ("x", "y"), "sinogram": ("translation", "angle")}


def _ndtomo_kind(f, kind, dims, path):
    if kind not in ("auto", "volume", "sinogram"):
        raise DataError(f"kind: expected 'auto', 'volume' or 'sinogram', found {kind!r}")
    from_dims = None
    if dims is not None:
        from_dims = "sinogram" if {"translation", "angle"} <= set(dims) else (
            "volume" if {"x", "y"} <= set(dims) else None)
    if kind != "auto":
        if from_dims and from_dims != kind:
            raise DataError(f"{path}: kind={kind!r} but dims={tuple(dims)} describe a {from_dims}")
        return kind, f"kind={kind!r} given"
    if from_dims:
        return from_dims, f"kind from dims={tuple(dims)}"
    found = [m for m in _NDTOMO_SINOGRAM_MARKERS if m in f]
    if found:
        return "sinogram", f"read as a sinogram stack because the file holds {['/' + m for m in found]}"
    return "volume", ("read as a volume (no /omega, /slow_axis_steps or /fast_axis_steps; pass "
                      "kind='sinogram' for a sinogram file)")


def _ndtomo_dims(kind, dims, shape, path):
    """Dims of ``/data`` with the placeholder ``"spectral"`` for the spectral axis."""
    if dims is None:
        return _CORE[kind] + ("spectral",)
    dims = tuple("spectral" if d in SPECTRAL_DIMS else d for d in dims)
    core = _CORE[kind]
    if len(dims) != len(shape) or sorted(dims) != sorted(core + ("spectral",)):
        raise DataError(f"{path}: dims={dims} must name the {len(shape)} axes of /data (shape "
                        f"{shape}) with {core} and one spectral axis ('spectral' or e.g. 'tth')")
    return dims


def _ndtomo_spectral(f, path, n):
    """``(dim, values, energy_keV, notes)`` from the nDTomo spectral axis datasets."""
    notes, energy_keV, chosen = [], None, None
    found = [(k, dim) for k, dim in NDTOMO_AXES if isinstance(f.get(k), h5py.Dataset)]
    for key, dim in found:
        dset = f[key]
        if dim == "energy" and dset.size == 1 and (dset.ndim == 0 or n != 1):
            e = float(np.ravel(_read(dset, path))[0])
            if 1.0 <= e <= 1000.0:
                energy_keV = e
                notes.append(f"scalar /{key} = {e:g} taken as the beam energy in keV")
            else:
                notes.append(f"scalar /{key} = {e:g} ignored (not a plausible energy in keV)")
            continue
        if chosen is None:
            values = _check_axis(_read(dset, path), key, n, path, what="channels (last axis of /data)")
            chosen = (key, dim, values)
    if chosen is None:
        extra = " (/xaxis found but its quantity is unknown)" if "xaxis" in f else ""
        notes.append(f"no spectral axis (/tth, /twotheta, /q, /d, /energy, /Energy){extra}: "
                     "spectral dim 'channel' = channel index")
        return "channel", np.arange(n), energy_keV, notes
    key, dim, values = chosen
    notes.append(f"spectral axis from /{key} as {dim!r} in {_data.UNITS[dim]} (units assumed)")
    unused = [f"/{k}" for k, d in found if k != key and f[k].ndim == 1 and f[k].size > 1]
    if unused:
        notes.append(f"also found {unused} (not used; convert with .xrd.to(...))")
    return dim, values, energy_keV, notes


def _ndtomo_angles(f, path, n):
    dset = f.get("omega")
    if isinstance(dset, h5py.Dataset) and dset.ndim == 1 and dset.shape[0] == n:
        return _check_axis(_read(dset, path), "omega", n, path, what="angles"), \
            "angles from /omega (deg assumed)"
    why = "no /omega" if dset is None else f"/omega has shape {dset.shape}, not ({n},)"
    return ScanGeometry().angles(n), f"angles assumed evenly spaced over 0–180° ({why})"


def load_ndtomo(path, *, kind: str = "auto", dims=None) -> xr.DataArray:
    """Read an nDTomo HDF5 file: ``/data`` plus an optional spectral axis dataset.

    Parameters
    ----------
    path : str or path-like
    kind : {"auto", "volume", "sinogram"}
        ``"volume"``: ``/data`` is X×Y×channels (nDTomo's chemical-imaging volumes; nDTomo
        shows ``data[:, :, k].T``, so axis 0 is ``x`` (columns) and axis 1 is ``y`` (rows)).
        ``"sinogram"``: ``/data`` is translations×angles×channels (nDTomo's integrated
        sinogram files). ``"auto"`` (default): a sinogram when the file holds nDTomo's scan
        datasets ``/omega``, ``/slow_axis_steps`` or ``/fast_axis_steps``, else a volume.
    dims : tuple of str, optional
        Axis order of ``/data`` when it is not the default, e.g. ``("spectral", "x", "y")``
        (``"spectral"`` or any spectral dim name marks the channel axis).

    Returns
    -------
    xarray.DataArray
        :func:`xrdwidgets.data.volume` ``(y, x, spectral)`` or
        :func:`xrdwidgets.data.sinogram_stack` ``(translation, angle, spectral)``.

    Notes
    -----
    Assumptions, recorded in ``attrs["import_note"]`` and logged: the axis order above; the
    spectral axis is the first of ``/tth``, ``/twotheta`` (→ ``tth``), ``/q``, ``/d``,
    ``/energy``, ``/Energy`` (→ ``energy``) that is 1-D (units deg, 1/Å, Å, keV are assumed;
    without one the dim is ``channel``); a scalar ``/energy`` is the beam energy in keV;
    ``x``, ``y`` and ``translation`` are pixel/step indices centred on the middle (units
    ``px``); sinogram angles come from ``/omega`` when it has one value per angle, else they
    are evenly spaced over 0–180° (end excluded).
    """
    path = _as_path(path)
    with _open_h5(path) as f:
        dset = _get_dataset(f, "data", path, ndim=3)
        kind, why = _ndtomo_kind(f, kind, dims, path)
        dims = _ndtomo_dims(kind, dims, dset.shape, path)
        n_ch = dset.shape[dims.index("spectral")]
        spec_dim, spec, energy_keV, notes = _ndtomo_spectral(f, path, n_ch)
        angle_note = None
        if kind == "sinogram":
            angles, angle_note = _ndtomo_angles(f, path, dset.shape[dims.index("angle")])
        values = _read(dset, path)
    dims = tuple(spec_dim if d == "spectral" else d for d in dims)
    head = f"nDTomo layout: /data {values.shape} {why}; axis order assumed {dims}"
    notes = [head] + notes
    geometry = ScanGeometry(energy_keV=energy_keV) if energy_keV else None
    common = dict(dims=dims, spectral=spec, spectral_dim=spec_dim, geometry=geometry,
                  units="counts", validate_values=False,
                  attrs={"source_file": str(path), "source_dataset": "/data"})
    try:
        if kind == "sinogram":
            notes += [angle_note, "translations in steps centred on the middle (px)"]
            da = _data.sinogram_stack(values, angle=angles, **common)
        else:
            notes.append("x and y in pixels centred on the middle (px)")
            da = _data.volume(values, **common)
    except DataError as exc:
        raise XRDFileError(f"{path}: {exc}") from None
    _nonfinite_note(da.data, notes)
    return _note(da, notes, path)
