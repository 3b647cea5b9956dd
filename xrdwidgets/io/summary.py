"""Text summaries of data and files: :func:`describe`.

(Named ``summary`` rather than ``describe`` so that the submodule does not shadow the
function ``xrdwidgets.io.describe``.)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from .. import data as _data
from ..base.checks import available_memory, fits_in_memory
from ..base.checks import format_bytes as _fmt_size
from ..data import DataError
from ._common import (
    _NPY_MAGIC, _VERSION_KEY, FORMAT_NAME, XRDFileError, _as_path, _decode_provenance, _is_dask,
    _require_exists, _value_stats,
)
from ._reading import _inventory, _layout, _open_h5, _read
from .hdf5 import _read_own, read_provenance
from .ndtomo import load_ndtomo
from .zarr_store import open_zarr


# ============================================================================ describe
def _fmt_coord(name, c, dim_names) -> str:
    v = np.asarray(c.values)
    units = c.attrs.get("units", "")
    mark = "*" if name in dim_names else " "
    head = f"  {mark} {str(name):<12} {'(' + ', '.join(map(str, c.dims)) + ')':<18} {str(v.dtype):<8}"
    if v.size == 0:
        return head + " (empty)"
    if v.dtype.kind in "iuf" and v.size:
        if v.ndim == 1 and v.size > 2 and np.allclose(np.diff(v), v[1] - v[0]):
            span = f"{v.flat[0]:.6g} … {v.flat[-1]:.6g}, step {v[1] - v[0]:.6g}"
        elif v.size > 1:
            span = f"{v.flat[0]:.6g} … {v.flat[-1]:.6g}"
        else:
            span = f"{v.flat[0]:.6g}"
    else:
        span = (f"{_plain(v.flat[0])!r} … {_plain(v.flat[-1])!r}" if v.size > 1 else f"{_plain(v.flat[0])!r}")
    return f"{head} {span}" + (f" [{units}]" if units else "")


def _fmt_stats(data) -> str:
    nbytes = int(np.prod(data.shape, dtype=np.float64)) * np.dtype(data.dtype).itemsize
    if not fits_in_memory(nbytes):  # scanning it all would take hours: shape and size only
        return (f"values: not summarised ({_fmt_size(nbytes)}, more than the "
                f"{_fmt_size(available_memory() or 0)} of memory available: too large to scan)")
    s = _value_stats(data)
    if s is None:
        return f"values: dtype {data.dtype} (not summarised)"
    if s["min"] is None:
        text = "values: no finite values"
    else:
        text = f"values: min {s['min']:.6g}, max {s['max']:.6g}, mean {s['mean']:.6g}"
    return text + f"; NaN {s['nan']}, inf {s['inf']}"


def _describe_array(da: xr.DataArray, indent="") -> list[str]:
    lazy = " (lazy, dask)" if _is_dask(da.data) else ""
    try:
        kind = _data.kind_of(da)
        _data.spectral_dim(da)
    except DataError:
        kind = "array"  # e.g. a 2-D map: no spectral dim
    lines = [f"{indent}{da.name!r}: {kind}, dtype {da.dtype}, {_fmt_size(da.nbytes)}{lazy}",
             f"{indent}  dims: " + ", ".join(f"{d}={n}" for d, n in da.sizes.items()),
             f"{indent}  {_fmt_stats(da.data)}"]
    if da.attrs.get("units"):
        lines.append(f"{indent}  units: {da.attrs['units']}")
    try:
        geom = _data.get_geometry(da)
    except (TypeError, ValueError) as exc:
        geom = f"invalid ({exc})"
    if geom is not None:
        lines.append(f"{indent}  geometry: {geom!r}")
    prov = {k[len("provenance_"):]: v for k, v in da.attrs.items() if k.startswith("provenance_")}
    if prov:
        lines.append(f"{indent}  provenance: " + ", ".join(f"{k}={v}" for k, v in prov.items()))
    if da.attrs.get("import_note"):
        lines.append(f"{indent}  import note: {da.attrs['import_note']}")
    other = [k for k in da.attrs if k not in ("units", "import_note") and not k.startswith(
        ("geometry_", "provenance_"))]
    if other:
        lines.append(f"{indent}  attrs: {', '.join(other)}")
    return lines


def _describe_obj(obj) -> list[str]:
    lines = []
    if isinstance(obj, xr.Dataset):
        lines.append(f"xarray.Dataset: {len(obj.data_vars)} variables, dims "
                     + ", ".join(f"{d}={n}" for d, n in obj.sizes.items()))
    else:
        lines.append("xarray.DataArray")
    if obj.coords:
        lines.append("coords:")
        lines += [_fmt_coord(k, c, obj.dims) for k, c in obj.coords.items()]
    if isinstance(obj, xr.Dataset):
        lines.append("variables:")
        for v in obj.data_vars.values():
            lines += _describe_array(v, indent="  ")
        if obj.attrs:
            lines.append(f"attrs: {', '.join(map(str, obj.attrs))}")
    else:
        lines += _describe_array(obj)
    return lines


def _fmt_provenance(prov) -> list[str]:
    if not prov:
        return []
    return [f"provenance: produced by {prov.get('producer')} with {prov.get('software')} at "
            f"{prov.get('created')}", f"  parameters: {json.dumps(prov.get('parameters'), default=str)}"]


def _describe_path(path: Path) -> list[str]:
    _require_exists(path)
    if path.is_dir():
        obj = open_zarr(path)
        return ([f"file: {path} (zarr store)"] + _fmt_provenance(read_provenance(path))
                + _describe_obj(obj))
    with open(path, "rb") as fh:
        is_npy = fh.read(6) == _NPY_MAGIC
    if is_npy:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise XRDFileError(f"{path}: unreadable .npy file: {exc}") from None
        return [f"file: {path} (NumPy .npy; dims unknown, read with load_npy(path, dims=...))",
                f"shape {arr.shape}, dtype {arr.dtype}, {_fmt_size(arr.nbytes)}", _fmt_stats(arr)]
    with _open_h5(path) as f:
        layout = _layout(f)
        if layout == "xrdwidgets":
            head = [f"file: {path} ({FORMAT_NAME} version {int(f.attrs.get(_VERSION_KEY, 0))})"]
            g = f.get("provenance")
            prov = _decode_provenance(dict(g.attrs)) if isinstance(g, h5py.Group) else None
            return head + _fmt_provenance(prov) + _describe_obj(_read_own(f, path, lazy=True))
        if layout is None:
            return [f"file: {path} (HDF5, unknown layout)", f"holds: {_inventory(f)}"]
    if layout == "ndtomo":
        with _open_h5(path) as f:
            dset = f["data"]
            if not fits_in_memory(dset.size * dset.dtype.itemsize):  # describe without loading
                return [f"file: {path} (nDTomo layout)",
                        f"/data: shape {dset.shape}, dtype {dset.dtype}, "
                        f"{_fmt_size(dset.size * dset.dtype.itemsize)}; {_fmt_stats(dset)}",
                        f"holds: {_inventory(f)}"]
        return [f"file: {path} (nDTomo layout)"] + _describe_obj(load_ndtomo(path))
    lines = [f"file: {path} (SD2I layout: 2-D (angles, translations) sinograms; read one with "
             "load_sd2i(path, name))"]
    with _open_h5(path) as f:
        for name, dset in f.items():
            big = not fits_in_memory(dset.size * dset.dtype.itemsize)
            lines.append(f"  {name}: {dset.shape} {dset.dtype}; {_fmt_stats(dset if big else _read(dset, path))}")
    return lines


def describe(obj_or_path) -> str:
    """Text summary of data or of a file.

    Lists the dims and sizes, coordinates (range, step, units), geometry, value range (min,
    max, mean of finite values; NaN and inf counts), dtype and provenance. Lazy data and
    files are summarised chunk by chunk (never loaded whole).

    Parameters
    ----------
    obj_or_path : xarray.DataArray, xarray.Dataset, str or path-like
        Data, or a file: own HDF5 layout, nDTomo, SD2I, ``.npy`` or a zarr store.

    Returns
    -------
    str
    """
    if isinstance(obj_or_path, (xr.DataArray, xr.Dataset)):
        return "\n".join(_describe_obj(obj_or_path))
    if isinstance(obj_or_path, (str, os.PathLike)):
        return "\n".join(_describe_path(_as_path(obj_or_path)))
    raise DataError(f"describe: expected an xarray object or a file path, found "
                    f"{type(obj_or_path).__name__}")


def _plain(value):
    """numpy scalar → Python scalar (for readable reprs)."""
    return value.item() if hasattr(value, "item") else value
