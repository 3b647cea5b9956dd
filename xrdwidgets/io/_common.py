"""Shared pieces of :mod:`xrdwidgets.io`: errors, format keys, paths and atomic writes,
the HDF5 attribute codec, chunking, provenance and block-wise value statistics.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from .. import data as _data
from .._version import __version__
from ..base.atomic import atomic_path, remove_path
from ..base.checks import check_writable
from ..data import SPECTRAL_DIMS, DataError
from ..base.errors import FileFormatError, InputTypeError

#: One logger for the whole package (named ``xrdwidgets.io``, as before the split).
log = logging.getLogger(__package__)


FORMAT_NAME = "xrdwidgets.hdf5"
FORMAT_VERSION = 1
ZARR_FORMAT_NAME = "xrdwidgets.zarr"

_FORMAT_KEY = "xrdwidgets_format"
_VERSION_KEY = "xrdwidgets_format_version"
_OBJECT_KEY = "_xrd_object"
_NAME_KEY = "_xrd_name"
_DIMS_KEY = "_xrd_dims"
_DTYPE_KEY = "_xrd_dtype"
_TYPES_KEY = "_xrd_attr_types"
_ORDER_KEY = "_xrd_order"
_ROOT_RESERVED = (_FORMAT_KEY, _VERSION_KEY, _OBJECT_KEY, _NAME_KEY, _TYPES_KEY)

# zarr root attrs (the store's Dataset attrs; stripped by open_zarr)
_Z_OBJECT = "xrdwidgets_object"
_Z_NAME = "xrdwidgets_name"
_Z_PROV = "xrdwidgets_provenance"
_Z_COMPLETE = "xrdwidgets_complete"
_Z_RESERVED = (_FORMAT_KEY, _VERSION_KEY, _Z_OBJECT, _Z_NAME, _Z_PROV, _Z_COMPLETE)
_Z_UNNAMED = "__xarray_dataarray_variable__"

#: Arrays at least this large are chunked (smaller ones are stored contiguously).
CHUNK_MIN_BYTES = 4 * 2**20
#: Target size of one chunk (HDF5 and zarr).
CHUNK_TARGET_BYTES = 4 * 2**20
_STATS_BLOCK_BYTES = 64 * 2**20
_NPY_MAGIC = b"\x93NUMPY"


class XRDFileError(FileFormatError):
    """A file cannot be read as XRD-CT data; the message names the file, what and where.

    Both an ``OSError`` (it is about a file) and a ``ValueError`` (its contents are wrong), so
    either ``except`` clause catches it.
    """


class XRDFileNotFoundError(XRDFileError, FileNotFoundError):
    """The file (or folder) does not exist."""


# ============================================================================ paths
def _as_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"expected a file path (str or os.PathLike), found {type(path).__name__}")
    return Path(path).expanduser()


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise XRDFileNotFoundError(f"{path}: no such file or folder")


def _check_target(path: Path, overwrite: bool, *, store: bool = False) -> None:
    """Before any work: may ``path`` be written? (a zarr folder when ``store``, else a file)

    ``overwrite=True`` replaces only what the writer makes: a zarr store (``store``) or a file,
    never a folder of other files. The folder must exist and be writable (a probe file is
    created and removed), so that a bad target is reported before the data are computed.
    """
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"{path}: the file exists; pass overwrite=True to replace it (or choose another name)"
            )
        if store and not _is_zarr(path):
            what = "a folder that is not a zarr store" if path.is_dir() else "a file, not a zarr store"
            raise FileExistsError(
                f"{path}: exists and is {what}; overwrite=True replaces only a zarr store, never other "
                "files. Remove it yourself or choose another name")
        if not store and path.is_dir():
            raise IsADirectoryError(
                f"{path}: is a folder; overwrite=True replaces only a file. Remove it yourself or "
                "choose another name")
    if not path.parent.is_dir():
        raise XRDFileNotFoundError(f"{path}: cannot write, the folder {path.parent} does not exist")
    try:
        check_writable(path.parent)
    except OSError as exc:
        raise type(exc)(f"{path}: cannot write: {exc}") from None


_remove = remove_path


@contextlib.contextmanager
def _atomic_path(path: Path, overwrite: bool, *, store: bool = False):
    """Yield a temporary path beside ``path``; on success move it into place atomically
    (:func:`xrdwidgets.base.atomic.atomic_path`). A file is not clobbered unless ``overwrite``; a
    folder target (zarr, ``store=True``) is replaced only while it is still a zarr store
    (:func:`_check_target`, checked again just before the move)."""
    _check_target(path, overwrite, store=store)
    with atomic_path(path, overwrite=overwrite,
                     before_replace=lambda: _check_target(path, overwrite, store=True)) as tmp:
        yield tmp


# ============================================================================ attrs codec
def _encode_list(value):
    kind = "tuple" if isinstance(value, tuple) else "list"
    if value and all(isinstance(v, str) for v in value):
        return np.array(value, dtype=h5py.string_dtype()), kind + "_str"
    if value and all(type(v) is int and -2**63 <= v < 2**63 for v in value):
        return np.array(value, dtype=np.int64), kind + "_int"
    if value and all(type(v) is float for v in value):
        return np.array(value, dtype=np.float64), kind + "_float"
    return None, None


def _encode_attr(key, value, where):
    """``(value HDF5 stores natively, type tag or None)`` for one attribute."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return np.bool_(value), "bool"
    if isinstance(value, int) and -2**63 <= value < 2**63:
        return np.int64(value), "int"
    if isinstance(value, float):
        return np.float64(value), "float"
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return value, None
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return value, "ndarray"
        if value.dtype.kind == "U":
            return value.astype(object), "ndarray:" + value.dtype.str
    if isinstance(value, (list, tuple)):
        native, tag = _encode_list(value)
        if tag:
            return native, tag
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: attribute {key!r} has type {type(value).__name__}, which cannot be stored; "
            "use str, numbers, bools, lists/tuples/dicts of those, or numeric numpy arrays"
        ) from None
    if json.loads(text) != value and not isinstance(value, tuple):
        raise DataError(f"{where}: attribute {key!r} = {value!r} does not survive JSON encoding")
    return text, ("json_tuple" if isinstance(value, tuple) else "json")


def _decode_attr(value, tag):
    if tag is None:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if tag == "bool":
        return bool(value)
    if tag == "int":
        return int(value)
    if tag == "float":
        return float(value)
    if tag == "ndarray":
        return np.asarray(value)
    if tag.startswith("ndarray:"):
        return np.asarray(value, dtype=object).astype(tag.split(":", 1)[1])
    if tag in ("list_str", "tuple_str"):
        out = [v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(value)]
        return tuple(out) if tag.startswith("tuple") else out
    if tag in ("list_int", "list_float", "tuple_int", "tuple_float"):
        out = np.ravel(value).tolist()
        return tuple(out) if tag.startswith("tuple") else out
    if tag == "json":
        return json.loads(value)
    if tag == "json_tuple":
        return tuple(json.loads(value))
    raise XRDFileError(f"unknown attribute type tag {tag!r} (file written by a newer xrdwidgets?)")


def _check_reserved(attrs, reserved, where):
    bad = [k for k in attrs if k in reserved or (isinstance(k, str) and k.startswith("_xrd_"))]
    if bad:
        raise DataError(f"{where}: attribute names {bad} are reserved by the xrdwidgets file format")
    nonstr = [k for k in attrs if not isinstance(k, str)]
    if nonstr:
        raise DataError(f"{where}: attribute names must be str, found {nonstr}")


def _write_attrs(h5obj, attrs, where):
    types = {}
    for key, value in attrs.items():
        native, tag = _encode_attr(key, value, where)
        h5obj.attrs[key] = native
        if tag:
            types[key] = tag
    if types:
        h5obj.attrs[_TYPES_KEY] = json.dumps(types)


def _read_attrs(h5obj, skip=()):
    types = json.loads(h5obj.attrs.get(_TYPES_KEY, "{}"))
    out = {}
    for key in h5obj.attrs:
        if key in skip or key.startswith("_xrd_"):
            continue
        out[key] = _decode_attr(h5obj.attrs[key], types.get(key))
    return out


# ============================================================================ arrays
def _is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def _auto_chunks(shape, dims, itemsize, target=CHUNK_TARGET_BYTES):
    """Chunk shape holding whole images/sinograms and a block of spectral channels.

    Along the spectral dim a chunk holds ``target // bytes_per_channel`` channels (at least
    1); when one channel alone exceeds ``2 * target`` the largest other axis is halved until it
    fits. Without a spectral dim the largest axes are halved the same way.
    """
    chunk = [max(1, int(n)) for n in shape]
    spec = [i for i, d in enumerate(dims) if d in SPECTRAL_DIMS]
    if spec:
        i = spec[0]
        per_channel = itemsize * math.prod(c for j, c in enumerate(chunk) if j != i)
        chunk[i] = int(min(chunk[i], max(1, target // max(per_channel, 1))))
    others = [j for j in range(len(chunk)) if j not in spec]
    while math.prod(chunk) * itemsize > 2 * target:
        j = max(others or range(len(chunk)), key=lambda k: chunk[k])
        if chunk[j] == 1:
            break
        chunk[j] = -(-chunk[j] // 2)
    return tuple(chunk)


# ============================================================================ provenance
def _provenance(producer, parameters, default_producer) -> dict:
    p = _data.provenance(producer or default_producer, parameters)
    versions = {"xrdwidgets": __version__, "python": platform.python_version(),
                "numpy": np.__version__, "xarray": xr.__version__, "h5py": h5py.__version__}
    return {
        "software": p["provenance_software"],
        "producer": p["provenance_producer"],
        "parameters": p["provenance_parameters"],
        "created": p["provenance_created"],
        "versions": json.dumps(versions, sort_keys=True),
    }


def _decode_provenance(raw: dict) -> dict:
    out = dict(raw)
    for key in ("parameters", "versions"):
        if isinstance(out.get(key), str):
            with contextlib.suppress(ValueError):
                out[key] = json.loads(out[key])
    return out


# ============================================================================ zarr detection
def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zattrs", ".zarray"))


# ============================================================================ value statistics
def _block_stats(block):
    b = np.asarray(block)
    if b.dtype.kind in "biu":
        b = b.astype(np.int64) if b.dtype.kind == "b" else b
        return (b.min() if b.size else None, b.max() if b.size else None,
                float(b.sum(dtype=np.float64)), b.size, 0, 0)
    finite = np.isfinite(b)
    n_nan = int(np.isnan(b).sum())
    n_inf = int(b.size - finite.sum() - n_nan)
    vals = b[finite]
    if not vals.size:
        return None, None, 0.0, 0, n_nan, n_inf
    return vals.min(), vals.max(), float(vals.sum(dtype=np.float64)), vals.size, n_nan, n_inf


def _combine(parts):
    mins = [p[0] for p in parts if p[0] is not None]
    maxs = [p[1] for p in parts if p[1] is not None]
    n = sum(p[3] for p in parts)
    return {"min": min(mins) if mins else None, "max": max(maxs) if maxs else None,
            "mean": sum(p[2] for p in parts) / n if n else None, "count": n,
            "nan": sum(p[4] for p in parts), "inf": sum(p[5] for p in parts)}


def _value_stats(data) -> dict | None:
    """``{min, max, mean (of finite values), count, nan, inf}``, computed block by block.

    Dask arrays are reduced chunk by chunk (never loaded whole); large numpy arrays (memory
    maps) in slabs along the first axis. ``None`` for non-real dtypes.
    """
    if np.dtype(data.dtype).kind not in "biuf":
        return None
    if _is_dask(data):
        import dask

        parts = dask.compute(*[dask.delayed(_block_stats)(b) for b in data.to_delayed().ravel()])
        return _combine(parts)
    arr = np.asarray(data)
    if arr.ndim == 0 or arr.nbytes <= _STATS_BLOCK_BYTES:
        return _combine([_block_stats(arr)])
    step = max(1, int(arr.shape[0] * _STATS_BLOCK_BYTES // arr.nbytes))
    return _combine([_block_stats(arr[i:i + step]) for i in range(0, arr.shape[0], step)])
