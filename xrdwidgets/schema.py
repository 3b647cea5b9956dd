"""The schema of the data model: dim names, units, and the validation of sinogram stacks and volumes.

The model is described in :mod:`xrdwidgets.data` (which re-exports everything here): dims
``translation``, ``angle`` (sinograms) or ``y``, ``x`` (volumes), one spectral dim, optional
``z`` and ``time``; 1-D strictly monotonic numeric coordinates with ``units`` and ``long_name``;
scan geometry in ``geometry_*`` attrs. This module holds the constants, the accessors
(:func:`as_dataarray`, :func:`kind_of`, :func:`spectral_dim`, :func:`canonical`, the geometry
attrs) and :func:`validate`; the constructors are in :mod:`xrdwidgets.data`.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import warnings

import numpy as np
import xarray as xr

from ._version import __version__
from .base.errors import DataError
from .geometry import ScanGeometry

log = logging.getLogger(__name__)

__all__ = [
    "TRANSLATION", "ANGLE", "X", "Y", "Z", "TIME", "SPECTRAL_DIMS", "EXTRA_DIMS",
    "SINOGRAM_DIMS", "IMAGE_DIMS", "UNITS", "LONG_NAMES", "PIXEL_UNITS", "MAX_ANGLE_SPAN_DEG", "DEG_UNITS", "RAD_UNITS",
    "validate_sinogram_stack", "validate_volume", "validate",
    "kind_of", "spectral_dim", "canonical", "get_geometry", "set_geometry",
    "provenance", "as_dataarray", "nonfinite_counts", "accept_range", "DataWarning", "RANGE_CHECKED",
]

TRANSLATION = "translation"
ANGLE = "angle"
X = "x"
Y = "y"
Z = "z"
TIME = "time"
#: Accepted names of the spectral dim (the first is the default).
SPECTRAL_DIMS = ("tth", "q", "d", "energy", "channel")
#: Optional leading dims, in canonical order.
EXTRA_DIMS = (TIME, Z)
SINOGRAM_DIMS = (TRANSLATION, ANGLE)
IMAGE_DIMS = (Y, X)

#: Units of every coordinate.
UNITS = {
    "tth": "deg", "q": "1/Å", "d": "Å", "energy": "keV", "channel": "1",
    ANGLE: "deg", TRANSLATION: "mm", X: "mm", Y: "mm", Z: "mm", TIME: "s",
}
LONG_NAMES = {
    "tth": "2θ", "q": "q", "d": "d-spacing", "energy": "photon energy", "channel": "channel",
    ANGLE: "rotation angle", TRANSLATION: "translation", X: "x", Y: "y", Z: "z", TIME: "time",
}
#: Unit used for position coords when no physical step is known (steps / pixels).
PIXEL_UNITS = "px"

_DEFAULT_NAMES = {"sinogram": "sinogram", "volume": "volume"}


#: Coordinate attribute set by :func:`accept_range`: its unusual range is meant.
RANGE_CHECKED = "range_checked"
#: Accepted ``units`` of angles in degrees and in radians.
DEG_UNITS = ("deg", "degree", "degrees", "°")
RAD_UNITS = ("rad", "radian", "radians")
#: Most rotation a sinogram's angles may span (two turns) unless accepted.
MAX_ANGLE_SPAN_DEG = 720.0


class DataWarning(UserWarning):
    """Data that are valid but probably not what was meant (e.g. all values equal)."""





# ---------------------------------------------------------------------------- access
def as_dataarray(obj, kind: str | None = None) -> xr.DataArray:
    """The main DataArray of ``obj``.

    A Dataset gives its ``sinogram`` or ``volume`` variable (by ``kind``), or its only variable.
    """
    if isinstance(obj, xr.DataArray):
        return obj
    if isinstance(obj, xr.Dataset):
        names = [_DEFAULT_NAMES[kind]] if kind else list(_DEFAULT_NAMES.values())
        for n in names:
            if n in obj.data_vars:
                return obj[n]
        if len(obj.data_vars) == 1:
            return obj[next(iter(obj.data_vars))]
        raise DataError(
            f"Dataset has variables {list(obj.data_vars)}; expected one named {names} or a single "
            "variable. Select one, e.g. ds['name']."
        )
    raise DataError(f"expected an xarray DataArray or Dataset, found {type(obj).__name__}")


def spectral_dim(obj) -> str:
    """Name of the spectral dim of ``obj`` (one of :data:`SPECTRAL_DIMS`)."""
    da = as_dataarray(obj)
    found = [d for d in da.dims if d in SPECTRAL_DIMS]
    if len(found) != 1:
        raise DataError(
            f"{da.name or 'data'}: expected exactly one spectral dim among {SPECTRAL_DIMS}, "
            f"found dims {tuple(da.dims)}"
        )
    return found[0]


def kind_of(obj) -> str:
    """``"sinogram"`` or ``"volume"`` from the dims of ``obj``."""
    da = as_dataarray(obj)
    dims = set(da.dims)
    if set(SINOGRAM_DIMS) <= dims:
        return "sinogram"
    if set(IMAGE_DIMS) <= dims:
        return "volume"
    raise DataError(
        f"{da.name or 'data'}: dims {tuple(da.dims)} are neither a sinogram stack "
        f"(need {SINOGRAM_DIMS} + spectral) nor a volume (need {IMAGE_DIMS} + spectral)"
    )


def canonical(obj) -> xr.DataArray:
    """``obj`` transposed to canonical dim order (no copy of the data)."""
    da = as_dataarray(obj)
    core = SINOGRAM_DIMS if kind_of(da) == "sinogram" else IMAGE_DIMS
    order = [d for d in EXTRA_DIMS if d in da.dims] + list(core) + [spectral_dim(da)]
    return da.transpose(*order) if tuple(da.dims) != tuple(order) else da


def get_geometry(obj) -> ScanGeometry | None:
    """The :class:`ScanGeometry` stored in ``obj.attrs`` (``None`` if absent)."""
    return ScanGeometry.from_attrs(obj.attrs)


def set_geometry(obj, geometry: ScanGeometry | None):
    """A shallow copy of ``obj`` with ``geometry`` written into its attrs (old keys replaced)."""
    out = obj.copy(deep=False)
    out.attrs = {k: v for k, v in obj.attrs.items() if not k.startswith("geometry_")}
    if geometry is not None:
        if not isinstance(geometry, ScanGeometry):
            raise DataError(f"geometry: expected a ScanGeometry, found {type(geometry).__name__}")
        out.attrs.update(geometry.to_attrs())
    return out


def provenance(producer: str, parameters: dict | None = None) -> dict:
    """``provenance_*`` attrs: software version, producer, JSON parameters, UTC time."""
    return {
        "provenance_software": f"xrdwidgets {__version__}",
        "provenance_producer": str(producer),
        "provenance_parameters": json.dumps(parameters or {}, default=str, sort_keys=True),
        "provenance_created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------- constructors
def nonfinite_counts(da: xr.DataArray) -> tuple[int, int]:
    """``(n_nan, n_inf)`` of a DataArray (computes lazily-loaded data)."""
    if not np.issubdtype(da.dtype, np.floating) and not np.issubdtype(da.dtype, np.complexfloating):
        return 0, 0
    v = da.data
    n_nan = int(np.isnan(v).sum())
    n_inf = int(np.isinf(v).sum())
    return n_nan, n_inf


def _is_lazy(da):
    return not isinstance(da.data, np.ndarray)


def accept_range(obj, dim: str):
    """A shallow copy of ``obj`` whose coordinate ``dim`` is marked as meant to have its range.

    For a range the plausibility checks refuse although it is right (e.g. angles in degrees
    that span only 3–6°, or a scan of more than two turns): sets
    ``attrs["range_checked"] = 1`` on the coordinate. Values are not changed.
    """
    if dim not in obj.coords:
        raise DataError(f"accept_range: {getattr(obj, 'name', None) or 'data'} has no coordinate {dim!r}")
    var = obj[dim].variable.copy(deep=False)
    var.attrs = {**var.attrs, RANGE_CHECKED: 1}
    return obj.assign_coords({dim: var})


def _range_refused(var, dim, found, expected, hint):
    return DataError(f"{var}: coordinate {dim!r} {found}; expected {expected}. {hint} If the values "
                     f"are right, accept them with xrdwidgets.data.accept_range(data, {dim!r})")


def _check_angles(da, var):
    """Angles in degrees and plausible; radians (declared by ``units``) converted."""
    c = da.coords[ANGLE]
    units = str(c.attrs.get("units", "deg")).strip().lower()
    if units in RAD_UNITS:
        log.info("%s: angles given in radians; converted to degrees", var)
        attrs = {**c.attrs, "units": "deg"}
        da = da.assign_coords({ANGLE: (ANGLE, np.rad2deg(np.asarray(c.values, float)), attrs)})
        c = da.coords[ANGLE]
    elif units not in DEG_UNITS:
        raise DataError(f"{var}: coordinate 'angle' has units {c.attrs.get('units')!r}; expected "
                        "'deg' (or 'rad', converted)")
    if c.attrs.get(RANGE_CHECKED) or c.size < 2:
        return da
    v = np.asarray(c.values, float)
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo
    if max(abs(lo), abs(hi)) <= 2 * np.pi + 1e-3 and span >= 0.9 * np.pi:
        raise _range_refused(
            var, ANGLE, f"spans {lo:.4g} to {hi:.4g} (declared degrees), which looks like radians",
            "rotation angles in degrees (e.g. 0 to 180)",
            "Convert them (np.rad2deg), set the coordinate's units to 'rad', or pass angle_units='rad' "
            "to the constructor.")
    if span > MAX_ANGLE_SPAN_DEG + 1e-6:
        raise _range_refused(
            var, ANGLE, f"spans {lo:.6g} to {hi:.6g}° ({span / 360:.1f} turns)",
            f"at most {MAX_ANGLE_SPAN_DEG:.0f}° (two turns) of rotation",
            "Check the angle source (a counter in other units? several scans appended?).")
    return da


def _check_tth(da, var):
    c = da.coords["tth"]
    units = str(c.attrs.get("units", "deg")).strip().lower()
    if units not in DEG_UNITS or c.attrs.get(RANGE_CHECKED) or c.size == 0:
        return
    v = np.asarray(c.values, float)
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 or hi > 180:
        raise _range_refused(var, "tth", f"spans {lo:.6g} to {hi:.6g}°", "2θ within 0 to 180°",
                             "Is the axis in other units (q in 1/Å: spectral_dim='q'; radians)?")


def _warn_if_constant(da, var):
    if da.size < 2:
        return
    lo, hi = da.data.min(), da.data.max()
    if lo == hi:
        warnings.warn(f"{var}: all {da.size} values are {float(lo):g} (constant data): nothing to "
                      "reconstruct or fit; check the file and the variable", DataWarning,
                      stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside xrdwidgets (a warning points at the user's line)."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("xrdwidgets"):
        frame, level = frame.f_back, level + 1
    return level


def _validate(obj, kind, *, check_finite, name):
    da = as_dataarray(obj, kind)
    var = name or da.name or kind
    core = SINOGRAM_DIMS if kind == "sinogram" else IMAGE_DIMS
    dims = tuple(da.dims)
    if len(set(dims)) != len(dims):
        raise DataError(f"{var}: repeated dim names {dims}")
    missing = [d for d in core if d not in dims]
    spec = [d for d in dims if d in SPECTRAL_DIMS]
    unknown = [d for d in dims if d not in core and d not in SPECTRAL_DIMS and d not in EXTRA_DIMS]
    if missing or len(spec) != 1 or unknown:
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if len(spec) != 1:
            problems.append(f"{len(spec)} spectral dims {spec} (need exactly one of {SPECTRAL_DIMS})")
        if unknown:
            problems.append(f"unknown dims {unknown} (optional dims are {EXTRA_DIMS})")
        raise DataError(
            f"{var}: expected a {kind} with dims {core} + one spectral dim (+ optional {EXTRA_DIMS}); "
            f"found dims {dims}: " + "; ".join(problems)
        )
    if not (np.issubdtype(da.dtype, np.floating) or np.issubdtype(da.dtype, np.integer)):
        raise DataError(f"{var}: expected a real numeric dtype (float or int), found {da.dtype}")
    for d in dims:
        if d not in da.coords:
            raise DataError(f"{var}: dim {d!r} has no coordinate; expected 1-D {UNITS.get(d, '')} values")
        c = da.coords[d]
        if c.ndim != 1 or c.dims != (d,):
            raise DataError(f"{var}: coordinate {d!r} must be 1-D along {d!r}, found dims {c.dims}")
        cv = np.asarray(c.values)
        if not np.issubdtype(cv.dtype, np.number):
            raise DataError(f"{var}: coordinate {d!r} must be numeric, found dtype {cv.dtype}")
        if not np.all(np.isfinite(cv)):
            raise DataError(f"{var}: coordinate {d!r} has {int(np.sum(~np.isfinite(cv)))} NaN/inf values")
        if cv.size > 1:
            diff = np.diff(cv)
            if not (np.all(diff > 0) or np.all(diff < 0)):
                bad = int(np.argmax(~(diff > 0) if diff[0] > 0 else ~(diff < 0)))
                raise DataError(
                    f"{var}: coordinate {d!r} must be strictly monotonic; found "
                    f"{cv[bad].item()!r} then {cv[bad + 1].item()!r} at index {bad}"
                )
    if da.sizes[spec[0]] < 1 or any(da.sizes[d] < 1 for d in core):
        raise DataError(f"{var}: empty {kind}: sizes {dict(da.sizes)}")
    if kind == "sinogram":
        da = _check_angles(da, var)
    if spec[0] == "tth":
        _check_tth(da, var)
    if check_finite and not (check_finite != "always" and _is_lazy(da)):
        n_nan, n_inf = nonfinite_counts(da)
        if n_nan or n_inf:
            raise DataError(
                f"{var}: expected finite values, found {n_nan} NaN and {n_inf} inf of {da.size} "
                "(fill or mask them first, e.g. da.fillna(0))"
            )
        _warn_if_constant(da, var)
    if "geometry_energy_keV" in da.attrs or any(k.startswith("geometry_") for k in da.attrs):
        try:
            get_geometry(da)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{var}: invalid geometry attrs: {exc}") from None
    return canonical(da)


def validate_sinogram_stack(obj, *, check_finite=True, name: str | None = None) -> xr.DataArray:
    """Check ``obj`` is a valid sinogram stack; return it in canonical order.

    Checks dims, one spectral dim, coordinates (present, 1-D, numeric, finite, strictly
    monotonic, matching lengths), dtype, and (``check_finite``) NaN/inf counts. ``check_finite``
    is skipped for lazy (dask) data unless it is ``"always"``.
    """
    return _validate(obj, "sinogram", check_finite=check_finite, name=name)


def validate_volume(obj, *, check_finite=True, name: str | None = None) -> xr.DataArray:
    """Check ``obj`` is a valid volume / image stack; return it in canonical order."""
    return _validate(obj, "volume", check_finite=check_finite, name=name)


def validate(obj, *, check_finite=True, name: str | None = None) -> xr.DataArray:
    """Validate a sinogram stack or a volume, whichever its dims say."""
    kind = kind_of(obj)
    return _validate(obj, kind, check_finite=check_finite, name=name)


