"""The xarray data model of xrdwidgets: constructors, validation, dims, coords and units.

Two kinds of labelled arrays cross the public surface:

``sinogram stack``
    dims ``translation`` (pencil-beam position), ``angle`` (rotation, deg) and one spectral
    dim; optional ``z`` (sample height) and ``time``. Canonical order:
    ``(time, z, translation, angle, spectral)``.
``volume`` (image stack)
    dims ``y``, ``x`` and one spectral dim; optional ``z`` and ``time``. Canonical order:
    ``(time, z, y, x, spectral)``. Image row index is ``y``, column index is ``x``.

The spectral dim is one of :data:`SPECTRAL_DIMS`: ``tth`` (2θ, deg, the default), ``q`` (1/Å),
``d`` (Å), ``energy`` (keV) or ``channel`` (an uncalibrated index, e.g. one chemical sinogram).

Every dim has a 1-D, strictly monotonic, numeric coordinate carrying ``units`` and
``long_name`` attrs. The scan geometry (:class:`~xrdwidgets.geometry.ScanGeometry`) lives in the
array's ``attrs`` under ``geometry_*`` keys; provenance under ``provenance_*`` keys.

The dim names, units and validation live in :mod:`xrdwidgets.schema` (all re-exported here); this
module builds the arrays. Functions accept any dim order and return canonical order. Errors are
:class:`DataError` (a ``ValueError``) and name the variable, what was expected and what was found.

Plausibility (checked once, in :func:`validate_sinogram_stack` / :func:`validate_volume`, which every constructor and reconstruction calls)
    Rotation angles in degrees that look like radians (all within ±2π+0.001 and spanning at
    least 0.9π: a half or full turn in radians), or that span more than two turns (720°), and
    2θ values below 0° or above 180° are refused with a :class:`DataError` naming the variable,
    the range expected and found. Angles stored in radians (coordinate ``units`` ``"rad"``)
    are converted to degrees; the constructors take ``angle_units="rad"``. A range that is
    right although unusual is accepted after :func:`accept_range` (it marks the coordinate
    with ``attrs["range_checked"] = 1``). Constant data (all values equal, e.g. all zero)
    give a :class:`DataWarning` naming the variable.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from . import conversions as conv
from .base.errors import DataError
from .geometry import ScanGeometry
from .schema import (  # noqa: F401  (the data model's names, importable from here)
    ANGLE, DEG_UNITS, EXTRA_DIMS, IMAGE_DIMS, LONG_NAMES, MAX_ANGLE_SPAN_DEG, PIXEL_UNITS, RAD_UNITS,
    RANGE_CHECKED, SINOGRAM_DIMS, SPECTRAL_DIMS, TIME, TRANSLATION, UNITS, DataWarning, X, Y, Z,
    accept_range, as_dataarray, canonical, get_geometry, kind_of, nonfinite_counts, provenance,
    set_geometry, spectral_dim, validate, validate_sinogram_stack, validate_volume,
)

log = logging.getLogger(__name__)

__all__ = [
    "TRANSLATION", "ANGLE", "X", "Y", "Z", "TIME", "SPECTRAL_DIMS", "EXTRA_DIMS",
    "SINOGRAM_DIMS", "IMAGE_DIMS", "UNITS", "LONG_NAMES", "DataError", "to_numpy",
    "sinogram_stack", "volume", "validate_sinogram_stack", "validate_volume", "validate",
    "kind_of", "spectral_dim", "canonical", "get_geometry", "set_geometry", "convert_spectral",
    "provenance", "as_dataarray", "nonfinite_counts", "accept_range", "DataWarning", "RANGE_CHECKED",
]


# ---------------------------------------------------------------------------- helpers
def to_numpy(data, name):
    """numpy / torch / dask / array-like → array (dask stays lazy); ``name`` is used in the error."""
    if hasattr(data, "detach") and hasattr(data, "cpu"):  # torch tensor, no torch import needed
        data = data.detach().cpu().numpy()
    if hasattr(data, "dask") or type(data).__module__.startswith("dask"):
        return data
    arr = np.asarray(data)
    if arr.dtype == object:
        raise DataError(f"{name}: expected a numeric array, found dtype object")
    return arr


def _coord(dim, values, n, var, *, units=None):
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{var}: coordinate {dim!r} must be 1-D, found shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(
            f"{var}: coordinate {dim!r} has length {arr.shape[0]}, but the data axis {dim!r} has "
            f"length {n}"
        )
    attrs = {"units": units or UNITS.get(dim, "1"), "long_name": LONG_NAMES.get(dim, dim)}
    return xr.Variable((dim,), arr, attrs=attrs)


def _resolve_dims(shape, dims, canonical_dims, var):
    if dims is None:
        if len(shape) != len(canonical_dims):
            raise DataError(
                f"{var}: got a {len(shape)}-D array of shape {shape}; without dims= it must be "
                f"{len(canonical_dims)}-D with dims {canonical_dims}. Pass dims=(...) naming each axis."
            )
        return tuple(canonical_dims)
    dims = tuple(dims)
    if len(dims) != len(shape):
        raise DataError(
            f"{var}: dims {dims} name {len(dims)} axes but the array has shape {shape} "
            f"({len(shape)} axes)"
        )
    return dims


def _spectral_from_kwargs(spectral, spectral_dim, var):
    if spectral_dim not in SPECTRAL_DIMS:
        raise DataError(f"{var}: spectral_dim must be one of {SPECTRAL_DIMS}, found {spectral_dim!r}")
    return spectral


def _build(data, dims, coords_given, core, *, spectral_dim, geometry, name, units, attrs, var):
    arr = to_numpy(data, var)
    if arr.ndim < 3:
        raise DataError(
            f"{var}: expected at least 3 axes {core + (spectral_dim,)}, found shape {tuple(arr.shape)}"
        )
    canon = [d for d in EXTRA_DIMS if d in (dims or ())] + list(core) + [spectral_dim]
    dims = _resolve_dims(tuple(arr.shape), dims, canon, var)
    allowed = set(core) | {spectral_dim} | set(EXTRA_DIMS)
    unknown = [d for d in dims if d not in allowed]
    missing = [d for d in tuple(core) + (spectral_dim,) if d not in dims]
    if unknown or missing:
        raise DataError(
            f"{var}: dims {dims} do not fit; expected {tuple(core) + (spectral_dim,)} "
            f"(+ optional {EXTRA_DIMS}); unknown dims {unknown}, missing {missing}"
            + (" (set spectral_dim= to name the spectral axis)" if missing == [spectral_dim] else "")
        )
    sizes = dict(zip(dims, arr.shape))
    coords = {}
    for dim in dims:
        values = coords_given.get(dim)
        u = None
        if values is None:
            values, u = _default_coord(dim, sizes[dim], geometry)
        coords[dim] = _coord(dim, values, sizes[dim], var, units=u)
    da = xr.DataArray(arr, dims=dims, coords=coords, name=name)
    da.attrs["units"] = units
    da.attrs["long_name"] = "diffracted intensity" if units == "counts" else name
    if geometry is not None:
        da = set_geometry(da, geometry)
    if attrs:
        da.attrs.update(attrs)
    return da


def _default_coord(dim, n, geometry):
    g = geometry or ScanGeometry()
    if dim == ANGLE:
        return g.angles(n), None
    if dim in (TRANSLATION, X, Y):
        pos = g.translations(n)
        if dim == Y:
            pos = pos  # row index increases with y
        return pos, (None if g.translation_step_mm else PIXEL_UNITS)
    if dim == Z:
        return np.arange(n, dtype=float), PIXEL_UNITS
    if dim == TIME:
        return np.arange(n, dtype=float), "frame"
    if dim == "channel":
        return np.arange(n), None
    raise DataError(
        f"no coordinate given for the spectral dim {dim!r} and none can be assumed; pass {dim}=values"
    )


def sinogram_stack(data, *, dims=None, translation=None, angle=None, spectral=None,
                   spectral_dim: str = "tth", z=None, time=None, geometry: ScanGeometry | None = None,
                   name: str = "sinogram", units: str = "counts", attrs: dict | None = None,
                   validate_values: bool = True, angle_units: str = "deg") -> xr.DataArray:
    """Wrap an array as a labelled sinogram stack.

    Parameters
    ----------
    data : array-like (numpy, torch, dask)
        At least 3-D. Without ``dims`` the axis order must be canonical:
        ``(translation, angle, spectral)`` (with leading ``time``/``z`` when given).
    dims : sequence of str, optional
        Name of each axis of ``data`` in its order, e.g. ``("angle", "translation", "tth")``.
    translation : array, optional
        Pencil-beam positions (mm when the geometry's step is known; default: centred steps).
    angle : array, optional
        Rotation angles in degrees (default: evenly spaced over the geometry's angle range).
    spectral : array
        Spectral coordinate in the units of ``spectral_dim`` (required unless ``channel``).
    spectral_dim : {"tth", "q", "d", "energy", "channel"}
    z, time : array, optional
        Coordinates of the optional dims.
    geometry : ScanGeometry, optional
    validate_values : bool
        Check for NaN/inf (skipped for lazy dask data).
    angle_units : {"deg", "rad"}
        Units of ``angle``; radians are converted to degrees (the data model's unit). Angles
        that look like radians while declared degrees are refused (module docstring).

    Returns
    -------
    xarray.DataArray
        Canonical order ``(time, z, translation, angle, spectral)``.
    """
    _spectral_from_kwargs(spectral, spectral_dim, name)
    au = str(angle_units).strip().lower()
    if au in RAD_UNITS:
        if angle is None:
            raise DataError(f"{name}: angle_units={angle_units!r} needs angle= values")
        angle = np.rad2deg(np.asarray(angle, dtype=float))
    elif au not in DEG_UNITS:
        raise DataError(f"{name}: angle_units must be 'deg' or 'rad', found {angle_units!r}")
    coords = {TRANSLATION: translation, ANGLE: angle, spectral_dim: spectral, Z: z, TIME: time}
    da = _build(data, dims, coords, SINOGRAM_DIMS, spectral_dim=spectral_dim, geometry=geometry,
                name=name, units=units, attrs=attrs, var=name)
    return validate_sinogram_stack(da, check_finite=validate_values)


def volume(data, *, dims=None, y=None, x=None, spectral=None, spectral_dim: str = "tth", z=None,
           time=None, geometry: ScanGeometry | None = None, name: str = "volume",
           units: str = "counts", attrs: dict | None = None, validate_values: bool = True) -> xr.DataArray:
    """Wrap an array as a labelled volume / image stack.

    Parameters
    ----------
    data : array-like
        At least 3-D; without ``dims`` in canonical order ``(y, x, spectral)`` (leading
        ``time``/``z`` when given).
    y, x : array, optional
        Pixel-centre positions (mm with a known translation step, else pixels, centred).
    spectral, spectral_dim, z, time, geometry, dims :
        As in :func:`sinogram_stack`.

    Returns
    -------
    xarray.DataArray
        Canonical order ``(time, z, y, x, spectral)``.
    """
    _spectral_from_kwargs(spectral, spectral_dim, name)
    coords = {Y: y, X: x, spectral_dim: spectral, Z: z, TIME: time}
    da = _build(data, dims, coords, IMAGE_DIMS, spectral_dim=spectral_dim, geometry=geometry,
                name=name, units=units, attrs=attrs, var=name)
    return validate_volume(da, check_finite=validate_values)


# ---------------------------------------------------------------------------- validation
# ---------------------------------------------------------------------------- spectral axes
_CONVERTERS = {
    ("tth", "q"): lambda v, lam, tth: conv.tth_to_q(v, lam),
    ("q", "tth"): lambda v, lam, tth: conv.q_to_tth(v, lam),
    ("tth", "d"): lambda v, lam, tth: conv.tth_to_d(v, lam),
    ("d", "tth"): lambda v, lam, tth: conv.d_to_tth(v, lam),
    ("q", "d"): lambda v, lam, tth: conv.q_to_d(v),
    ("d", "q"): lambda v, lam, tth: conv.d_to_q(v),
    ("energy", "d"): lambda v, lam, tth: conv.energy_to_d(v, tth),
    ("energy", "q"): lambda v, lam, tth: conv.energy_to_q(v, tth),
    ("d", "energy"): lambda v, lam, tth: conv.d_to_energy(v, tth),
    ("q", "energy"): lambda v, lam, tth: conv.q_to_energy(v, tth),
}


def convert_spectral(obj, to: str, *, wavelength_A: float | None = None,
                     energy_keV: float | None = None, tth_deg: float | None = None) -> xr.DataArray:
    """Relabel the spectral axis in other units (the intensities are unchanged).

    Parameters
    ----------
    to : {"tth", "q", "d", "energy"}
    wavelength_A, energy_keV : float, optional
        Monochromatic wavelength (Å) or energy (keV); default from the stored geometry.
    tth_deg : float, optional
        Fixed 2θ of an energy-dispersive detector (deg); default from the geometry.

    Returns
    -------
    xarray.DataArray
        Same data, spectral dim renamed to ``to`` with converted coordinate values (d decreases
        where tth increases; it stays strictly monotonic).
    """
    da = as_dataarray(obj)
    src = spectral_dim(da)
    if to == src:
        return da
    key = (src, to)
    if key not in _CONVERTERS:
        raise DataError(f"cannot convert the spectral axis from {src!r} to {to!r}; "
                        f"supported: {sorted(set(k for k in _CONVERTERS))}")
    geom = get_geometry(da)
    if energy_keV is not None:
        wavelength_A = conv.wavelength_from_energy(energy_keV)
    if wavelength_A is None and geom is not None:
        wavelength_A = geom.wavelength_A
    if tth_deg is None and geom is not None:
        tth_deg = geom.ed_tth_deg
    needs_lam = "tth" in key
    needs_tth = "energy" in key
    if needs_lam and wavelength_A is None:
        raise DataError(f"converting {src!r} → {to!r} needs the X-ray energy or wavelength: pass "
                        "wavelength_A= or energy_keV=, or store a ScanGeometry with energy_keV")
    if needs_tth and tth_deg is None:
        raise DataError(f"converting {src!r} → {to!r} needs the detector's fixed 2θ: pass tth_deg= "
                        "or store a ScanGeometry with ed_tth_deg")
    values = np.asarray(_CONVERTERS[key](da[src].values, wavelength_A, tth_deg), dtype=float)
    out = da.rename({src: to})
    out = out.assign_coords({to: xr.Variable((to,), values,
                                             attrs={"units": UNITS[to], "long_name": LONG_NAMES[to]})})
    if wavelength_A is not None and (geom is None or geom.energy_keV is None):
        out = set_geometry(out, (geom or ScanGeometry()).replace(wavelength_A=wavelength_A))
    return out
