"""Load and save XRD-CT data: the own HDF5 layout, nDTomo and SD2I files, ``.npy``, zarr.

Public API
----------
``save(obj, path)`` / ``load(path)``
    Exact round trip of a DataArray or Dataset through the own HDF5 layout (below). ``load``
    also reads nDTomo and SD2I files (and opens zarr stores lazily).
``read_provenance(path)``
    What produced a file: software versions, producer, parameters, time.
``load_ndtomo``, ``load_sd2i``, ``list_sd2i``, ``load_npy``
    Importers; each maps the file into the data model (:mod:`xrdwidgets.data`) and records
    what had to be assumed in ``attrs["import_note"]`` (also logged at INFO level).
``save_zarr`` / ``open_zarr`` / ``create_zarr_stack``
    Chunked (by spectral channel) zarr stores, opened lazily with dask; a
    :class:`ZarrStackWriter` fills a stack larger than memory block by block.
``describe(obj_or_path)``
    Text summary: dims, coords, geometry, value range, provenance.

The own HDF5 layout (``xrdwidgets.hdf5``, version 1)
---------------------------------------------------
::

    /                     attrs: xrdwidgets_format = "xrdwidgets.hdf5"
                                 xrdwidgets_format_version = 1
                                 _xrd_object = "DataArray" | "Dataset"
                                 _xrd_name   = JSON name of the DataArray (null for a Dataset)
                                 + the Dataset's own attrs (a DataArray keeps its attrs on
                                   its variable)
    /variables/<key>      one HDF5 dataset per data variable
    /coords/<key>         one HDF5 dataset per coordinate (dim, non-dim and scalar coords)
    /provenance           group; attrs software, producer, parameters (JSON), created,
                          versions (JSON)

Every variable/coord dataset carries ``_xrd_name`` (JSON of the xarray name), ``_xrd_dims``
(JSON list of dim names, in axis order), ``_xrd_dtype`` (only where the numpy dtype is not
stored natively: unicode strings, datetimes) and the xarray attrs as plain HDF5 attributes
(readable by any HDF5 tool). ``_xrd_attr_types`` (JSON) records the Python type of attrs whose
native HDF5 form would not read back identically (``int``, ``float``, ``bool``, lists, tuples,
``None``/dicts stored as JSON), so ``load(save(x))`` is identical to ``x``: values, dtypes, dims,
coords, attrs and name. Provenance lives in its own group and is *not* added to the attrs
(read it with :func:`read_provenance`). Groups carry ``_xrd_order`` so the order of variables
and coords is kept. Large arrays (≥ 4 MiB, or any when compressed) are chunked by blocks of
spectral channels (a chunk is about 4 MiB and holds whole images/sinograms); ``compression=``
is off by default so writing stays fast.

Errors
------
A bad or missing file raises :class:`XRDFileError` (both an ``OSError`` and a ``ValueError``;
a missing file also a ``FileNotFoundError``); the message names the file, the dataset, what
was expected and what was found. Writers never replace an existing path unless
``overwrite=True`` (else ``FileExistsError``) and write atomically (a temporary file in the
same folder, then ``os.replace``): a failure leaves the original untouched and no temp file.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import shutil
import uuid
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from . import data as _data
from ._version import __version__
from .data import SPECTRAL_DIMS, DataError
from .geometry import ScanGeometry

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "ZARR_FORMAT_NAME", "XRDFileError", "XRDFileNotFoundError",
    "save", "load", "read_provenance", "load_ndtomo", "list_sd2i", "load_sd2i", "load_npy",
    "save_zarr", "open_zarr", "create_zarr_stack", "ZarrStackWriter", "describe",
]

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


class XRDFileError(OSError, ValueError):
    """A file cannot be read as XRD-CT data; the message names the file, what and where.

    Both an ``OSError`` (it is about a file) and a ``ValueError`` (its contents are wrong), so
    either ``except`` clause catches it.
    """


class XRDFileNotFoundError(XRDFileError, FileNotFoundError):
    """The file (or folder) does not exist."""


# ============================================================================ paths
def _as_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected a file path (str or os.PathLike), found {type(path).__name__}")
    return Path(path).expanduser()


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise XRDFileNotFoundError(f"{path}: no such file or folder")


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path}: the file exists; pass overwrite=True to replace it (or choose another name)"
        )
    if not path.parent.is_dir():
        raise XRDFileNotFoundError(f"{path}: cannot write, the folder {path.parent} does not exist")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _atomic_path(path: Path, overwrite: bool):
    """Yield a temporary path beside ``path``; on success move it into place atomically.

    On any error the temporary file/folder is removed and ``path`` is left untouched. A file
    target is replaced with one ``os.replace``; a folder (zarr) target is first moved aside.
    """
    _check_target(path, overwrite)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        if path.exists() and not overwrite:  # appeared while we were writing
            raise FileExistsError(f"{path}: the file appeared while writing; not replaced")
        if tmp.is_dir() and path.exists():
            aside = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(path, aside)
            os.replace(tmp, path)
            _remove(aside)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


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


def _encode_values(values: np.ndarray, where):
    """``(array h5py can store, dtype tag or None)``."""
    kind = values.dtype.kind
    if kind in "biufcS":
        return values, None
    if kind in "Mm":
        return values.view(np.int64), values.dtype.str
    if kind == "U":
        return values.astype(object), values.dtype.str
    if kind == "O" and all(isinstance(v, str) for v in values.ravel()):
        return values, "object_str"
    raise DataError(f"{where}: dtype {values.dtype} cannot be stored (numbers, bools, str, datetimes only)")


def _decode_values(dset, tag):
    if tag is None:
        return np.asarray(dset[()])
    if tag == "object_str" or tag.startswith("<U") or tag.startswith("|U"):
        arr = np.asarray(dset.asstr()[()], dtype=object)
        return arr if tag == "object_str" else arr.astype(tag)
    return np.asarray(dset[()]).view(tag)


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


def _h5_chunks(shape, dims, itemsize, chunks, compressed):
    if len(shape) == 0 or 0 in shape:
        return None
    if isinstance(chunks, dict):
        out = []
        for d, n in zip(dims, shape):
            c = int(chunks.get(d, n))
            if c < 1:
                raise DataError(f"chunks: expected positive sizes, found {d}={c}")
            out.append(min(c, n))
        return tuple(out)
    if chunks is None:
        return True if compressed else None
    if chunks != "auto":
        raise DataError(f"chunks: expected 'auto', None or a dict {{dim: size}}, found {chunks!r}")
    if math.prod(shape) * itemsize < CHUNK_MIN_BYTES and not compressed:
        return None
    return _auto_chunks(shape, dims, itemsize)


def _compression_kwargs(compression, level):
    if compression is None:
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4 if level is None else int(level),
                "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    raise DataError(f"compression: expected None, 'gzip' or 'lzf', found {compression!r}")


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


# ============================================================================ own HDF5 layout
def _h5_key(name, used):
    key = str(name).replace("/", "%2F") or "_"
    if key in (".", ".."):
        key = "%2E" * len(key)
    base, i = key, 1
    while key in used:
        key, i = f"{base}~{i}", i + 1
    used.add(key)
    return key


def _json_name(name, where):
    text = json.dumps(name)
    if json.loads(text) != name:
        raise DataError(f"{where}: name {name!r} cannot be stored; use a str (or int/None)")
    return text


def _write_variable(group, key, name, var, *, where, chunks, compression):
    comp = _compression_kwargs(*compression)
    _check_reserved(var.attrs, (), where)
    raw = var.data
    if _is_dask(raw) and raw.dtype.kind in "biuf":
        enc, tag = raw, None
    else:
        enc, tag = _encode_values(np.asarray(var.values), where)
    h5chunks = _h5_chunks(enc.shape, var.dims, enc.dtype.itemsize, chunks, bool(comp))
    kw = dict(comp) if h5chunks is not None else {}
    if enc.dtype == object:
        kw["dtype"] = h5py.string_dtype()
    if _is_dask(enc):
        import dask.array as dsa

        dset = group.create_dataset(key, shape=enc.shape, dtype=enc.dtype, chunks=h5chunks, **kw)
        dsa.store(enc, dset, lock=True)
    else:
        dset = group.create_dataset(key, data=enc, chunks=h5chunks, **kw)
    dset.attrs[_NAME_KEY] = _json_name(name, where)
    dset.attrs[_DIMS_KEY] = json.dumps([str(d) for d in var.dims])
    if tag:
        dset.attrs[_DTYPE_KEY] = tag
    _write_attrs(dset, var.attrs, where)
    return dset


def _write_group(f, group_name, items, *, where, chunks, compression):
    group = f.create_group(group_name, track_order=True)
    used, order = set(), []
    for name, var in items:
        key = _h5_key(name, used)
        _write_variable(group, key, name, var, where=f"{where} {group_name[:-1]} {name!r}",
                        chunks=chunks, compression=compression)
        order.append(key)
    group.attrs[_ORDER_KEY] = json.dumps(order)


def _check_storable(obj, where):
    for name, idx in obj.indexes.items():
        if idx.__class__.__name__ == "MultiIndex":
            raise DataError(f"{where}: coordinate {name!r} is a pandas MultiIndex, which cannot be "
                            "stored; call .reset_index() first")
    if isinstance(obj, xr.Dataset):
        _check_reserved(obj.attrs, _ROOT_RESERVED, where)


def _write_own(f, obj, prov, *, where, chunks, compression):
    f.attrs[_FORMAT_KEY] = FORMAT_NAME
    f.attrs[_VERSION_KEY] = np.int64(FORMAT_VERSION)
    if isinstance(obj, xr.DataArray):
        f.attrs[_OBJECT_KEY] = "DataArray"
        f.attrs[_NAME_KEY] = _json_name(obj.name, where)
        variables = [(obj.name, obj.variable)]
    else:
        f.attrs[_OBJECT_KEY] = "Dataset"
        f.attrs[_NAME_KEY] = "null"
        _write_attrs(f, obj.attrs, where)
        variables = [(k, v.variable) for k, v in obj.data_vars.items()]
    _write_group(f, "variables", variables, where=where, chunks=chunks, compression=compression)
    coords = [(k, v.variable) for k, v in obj.coords.items()]
    _write_group(f, "coords", coords, where=where, chunks=chunks, compression=compression)
    g = f.create_group("provenance")
    for key, value in prov.items():
        g.attrs[key] = value


def save(obj, path, *, overwrite: bool = False, producer: str | None = None,
         parameters: dict | None = None, compression: str | None = None,
         compression_level: int | None = None, chunks="auto") -> Path:
    """Save a DataArray or Dataset in the own, self-describing HDF5 layout.

    The file round-trips exactly with :func:`load` (values, dtypes, dims, coords, attrs of
    variables, coords and the Dataset, name). Provenance (software versions, ``producer``,
    ``parameters``, UTC time) goes to a separate ``/provenance`` group, read with
    :func:`read_provenance`; nothing is added to the attrs.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Any dims and dim order (stored as given). Lazy (dask) data are written chunk by chunk.
    path : str or path-like
        Target file. An existing file is only replaced with ``overwrite=True``; the file is
        written to a temporary file beside it and moved into place atomically.
    producer : str, optional
        What produced the data (function, script, notebook); default ``"xrdwidgets.io.save"``.
    parameters : dict, optional
        Parameters of the producer, stored as JSON.
    compression : {None, "gzip", "lzf"}
        Off by default (fast writes); ``"gzip"`` (level ``compression_level``, default 4) or
        ``"lzf"`` with byte shuffling.
    chunks : "auto", None or dict
        ``"auto"``: arrays ≥ 4 MiB are chunked by blocks of spectral channels (~4 MiB per
        chunk, whole images/sinograms in each); ``None``: contiguous; ``{dim: size}``: explicit.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not isinstance(obj, (xr.DataArray, xr.Dataset)):
        raise DataError(f"save: expected an xarray DataArray or Dataset, found {type(obj).__name__}")
    path = _as_path(path)
    where = f"{path}"
    _check_storable(obj, where)
    _compression_kwargs(compression, compression_level)
    prov = _provenance(producer, parameters, "xrdwidgets.io.save")
    with _atomic_path(path, overwrite) as tmp:
        with h5py.File(tmp, "w-", track_order=True) as f:
            _write_own(f, obj, prov, where=where, chunks=chunks,
                       compression=(compression, compression_level))
    log.info("saved %s %r to %s", type(obj).__name__, getattr(obj, "name", None), path)
    return path


# ---------------------------------------------------------------------------- reading HDF5
def _describe_bytes(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(_NPY_MAGIC):
        return "a NumPy .npy file (read it with load_npy(path, dims=...))"
    if head.startswith(b"PK"):
        return "a zip archive (.npz?)"
    if not head:
        return "an empty file"
    try:
        text = head.decode("utf-8")
        return f"text starting {text[:40]!r}"
    except UnicodeDecodeError:
        return f"binary data starting {head[:8].hex(' ')}"


@contextlib.contextmanager
def _open_h5(path: Path):
    """Open an HDF5 file for reading, turning every failure into an :class:`XRDFileError`."""
    _require_exists(path)
    if path.is_dir():
        raise XRDFileError(f"{path}: is a folder, expected an HDF5 file"
                           + (" (it looks like a zarr store: use open_zarr)" if _is_zarr(path) else ""))
    if not h5py.is_hdf5(path):
        raise XRDFileError(f"{path}: not an HDF5 file (no HDF5 signature); found {_describe_bytes(path)}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise XRDFileError(f"{path}: HDF5 file cannot be opened, it is truncated or corrupt ({exc})") from None
    try:
        yield f
    finally:
        f.close()


def _inventory(f, limit=20) -> str:
    items = []

    def visit(name, obj):
        if len(items) < limit:
            if isinstance(obj, h5py.Dataset):
                items.append(f"/{name} {obj.shape} {obj.dtype}")
            else:
                items.append(f"/{name}/ (group)")

    f.visititems(visit)
    return ", ".join(items) if items else "nothing (empty file)"


def _get_dataset(f, key, path, *, ndim=None):
    """The HDF5 dataset ``key``, checked to exist and have ``ndim`` axes."""
    if key not in f:
        raise XRDFileError(f"{path}: dataset /{key.lstrip('/')} is missing; found {_inventory(f)}")
    dset = f[key]
    if not isinstance(dset, h5py.Dataset):
        raise XRDFileError(f"{path}: /{key.lstrip('/')} is a group, expected a dataset")
    if ndim is not None and dset.ndim not in np.atleast_1d(ndim):
        raise XRDFileError(
            f"{path}: dataset /{key.lstrip('/')} has {dset.ndim} axes (shape {dset.shape}), "
            f"expected {ndim}"
        )
    return dset


def _read(dset, path):
    """All values of an HDF5 dataset (an ``XRDFileError`` if the bytes cannot be read)."""
    try:
        return np.asarray(dset[()])
    except (OSError, RuntimeError, ValueError) as exc:
        raise XRDFileError(f"{path}: cannot read dataset {dset.name} (file corrupt?): {exc}") from None


def _layout(f) -> str | None:
    fmt = f.attrs.get(_FORMAT_KEY)
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt == FORMAT_NAME:
        return "xrdwidgets"
    if isinstance(f.get("data"), h5py.Dataset):
        return "ndtomo"
    members = list(f.values())
    if members and all(isinstance(m, h5py.Dataset) and m.ndim == 2 for m in members):
        return "sd2i"
    return None


def _ordered(group):
    order = json.loads(group.attrs.get(_ORDER_KEY, "null")) or list(group)
    return [(k, group[k]) for k in order]


def _read_variable(dset, path, lazy):
    dims = tuple(json.loads(dset.attrs[_DIMS_KEY]))
    name = json.loads(dset.attrs[_NAME_KEY])
    tag = dset.attrs.get(_DTYPE_KEY)
    if lazy and tag is None and dset.dtype.kind in "biuf" and dset.ndim > 0:
        import dask.array as dsa

        values = dsa.from_array(dset, chunks=dset.chunks or "auto", lock=True,
                                name=f"xrd-h5-{uuid.uuid4().hex}")
    else:
        try:
            values = _decode_values(dset, tag)
        except (OSError, RuntimeError) as exc:
            raise XRDFileError(f"{path}: cannot read dataset {dset.name} (file corrupt?): {exc}") from None
    if len(dims) != values.ndim:
        raise XRDFileError(f"{path}: dataset {dset.name} has {values.ndim} axes but its dims "
                           f"attribute names {len(dims)}: {dims}")
    return name, xr.Variable(dims, values, attrs=_read_attrs(dset))


def _read_own(f, path, *, lazy=False):
    version = int(f.attrs.get(_VERSION_KEY, 0))
    if version > FORMAT_VERSION:
        raise XRDFileError(f"{path}: written in {FORMAT_NAME} version {version}; this xrdwidgets "
                           f"{__version__} reads up to version {FORMAT_VERSION} (upgrade xrdwidgets)")
    try:
        kind = f.attrs[_OBJECT_KEY]
        coords = dict(_read_variable(d, path, lazy) for _, d in _ordered(f["coords"]))
        variables = [_read_variable(d, path, lazy) for _, d in _ordered(f["variables"])]
    except KeyError as exc:
        raise XRDFileError(f"{path}: incomplete {FORMAT_NAME} file, missing {exc}; found "
                           f"{_inventory(f)}") from None
    if kind == "DataArray":
        if len(variables) != 1:
            raise XRDFileError(f"{path}: a DataArray file must hold 1 variable, found {len(variables)}")
        _, var = variables[0]
        return xr.DataArray(var.data, dims=var.dims, coords=coords, attrs=var.attrs,
                            name=json.loads(f.attrs[_NAME_KEY]))
    return xr.Dataset(dict(variables), coords=coords, attrs=_read_attrs(f, skip=_ROOT_RESERVED))


def load(path, *, name: str | None = None, kind: str = "auto"):
    """Load a file written by :func:`save`, or an nDTomo / SD2I HDF5 file, or a zarr store.

    The own layout comes back exactly as saved (same type: DataArray or Dataset). An HDF5 file
    without the ``xrdwidgets_format`` mark is tried as nDTomo (a ``/data`` dataset; see
    :func:`load_ndtomo`, ``kind`` is passed on) and then as SD2I (only 2-D datasets; see
    :func:`load_sd2i`, ``name`` picks the sinogram, needed when there are several). A zarr
    folder is opened lazily with :func:`open_zarr`.

    Raises
    ------
    XRDFileError
        Missing file, not HDF5, truncated/corrupt, or an unknown layout (the message lists
        what the file holds).
    """
    path = _as_path(path)
    _require_exists(path)
    if path.is_dir() and _is_zarr(path):
        return open_zarr(path)
    with _open_h5(path) as f:
        layout = _layout(f)
        if layout == "xrdwidgets":
            if name is not None:
                raise XRDFileError(f"{path}: name= selects a sinogram of an SD2I file; this is a "
                                   f"{FORMAT_NAME} file")
            return _read_own(f, path)
        if layout is None:
            raise XRDFileError(
                f"{path}: unknown HDF5 layout; found {_inventory(f)}. Expected one of: "
                f"{FORMAT_NAME} (root attribute {_FORMAT_KEY!r}), nDTomo (a /data dataset, "
                "X×Y×channels or translations×angles×channels, with /tth, /q, /d, ...), SD2I "
                "(2-D (angles, translations) sinogram datasets)"
            )
        sd2i_names = list(f) if layout == "sd2i" else []
    if layout == "ndtomo":
        if name is not None:
            raise XRDFileError(f"{path}: name= selects a sinogram of an SD2I file; this is an "
                               "nDTomo file (one /data array)")
        log.info("%s: no %s mark; reading it as an nDTomo file", path, FORMAT_NAME)
        return load_ndtomo(path, kind=kind)
    if name is None:
        if len(sd2i_names) != 1:
            raise XRDFileError(
                f"{path}: an SD2I-layout file with {len(sd2i_names)} sinograms {sd2i_names}; "
                "choose one: load(path, name=...) or load_sd2i(path, name)"
            )
        name = sd2i_names[0]
    log.info("%s: no %s mark; reading it as an SD2I sinogram file", path, FORMAT_NAME)
    return load_sd2i(path, name)


def read_provenance(path) -> dict | None:
    """Provenance of a file written by :func:`save` or :func:`save_zarr` (``None`` if absent).

    Returns
    -------
    dict or None
        ``software`` (e.g. ``"xrdwidgets 0.1.0"``), ``producer``, ``parameters`` (dict),
        ``created`` (UTC ISO time), ``versions`` (dict of package versions).
    """
    path = _as_path(path)
    _require_exists(path)
    if path.is_dir():
        attrs = _zarr_root_attrs(path)
        raw = attrs.get(_Z_PROV)
        return _decode_provenance(json.loads(raw)) if raw else None
    with _open_h5(path) as f:
        g = f.get("provenance")
        if not isinstance(g, h5py.Group) or _layout(f) != "xrdwidgets":
            return None
        return _decode_provenance({k: _decode_attr(v, None) for k, v in g.attrs.items()})


# ============================================================================ checks on arrays
def _check_axis(values, key, n, path, *, what):
    """A 1-D, numeric, finite, strictly monotonic axis of length ``n`` (else XRDFileError)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise XRDFileError(f"{path}: axis /{key} has shape {arr.shape}, expected ({n},) to match "
                           f"the {n} {what} of the data")
    if arr.dtype.kind not in "iuf":
        raise XRDFileError(f"{path}: axis /{key} must be numeric, found dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise XRDFileError(f"{path}: axis /{key} has {int(np.sum(~np.isfinite(arr)))} NaN/inf values")
    if n > 1:
        diff = np.diff(arr)
        if not (np.all(diff > 0) or np.all(diff < 0)):
            i = int(np.argmax(diff <= 0) if diff[0] > 0 else np.argmax(diff >= 0))
            raise XRDFileError(f"{path}: axis /{key} must be strictly monotonic; found "
                               f"{arr[i].item()!r} then {arr[i + 1].item()!r} at index {i}")
    return arr


def _note(da, notes, path):
    text = "; ".join(notes)
    da.attrs["import_note"] = text
    log.info("%s: %s", path, text)
    return da


def _nonfinite_note(data, notes):
    stats = _value_stats(data)
    if stats and (stats["nan"] or stats["inf"]):
        notes.append(f"the data hold {stats['nan']} NaN and {stats['inf']} inf values (kept)")


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


# ============================================================================ SD2I
def list_sd2i(path) -> dict:
    """Names and shapes ``{name: (angles, translations)}`` of the sinograms in an SD2I file.

    The SD2I layout holds one 2-D dataset per chemical sinogram at the root, shape
    ``(angles, translations)``.
    """
    path = _as_path(path)
    with _open_h5(path) as f:
        out = {k: tuple(v.shape) for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2}
        if not out:
            raise XRDFileError(f"{path}: no 2-D (angles, translations) sinogram datasets at the root "
                               f"(SD2I layout); found {_inventory(f)}")
    return out


def _nth(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _sd2i_subsampling(f, name, sino, path):
    """``(step, note)`` when ``name`` = ``<base>_angsamp`` is every ``step``-th angle of ``base``."""
    base = name[: -len("_angsamp")]
    full = f.get(base)
    if not isinstance(full, h5py.Dataset) or full.ndim != 2 or full.shape[1] != sino.shape[1]:
        return None, f"no full-angle dataset {base!r} to compare with"
    n_full, n_sub = full.shape[0], sino.shape[0]
    steps = [s for s in range(1, n_full + 1) if -(-n_full // s) == n_sub]
    full_values = _read(full, path)
    for s in steps:
        if np.array_equal(full_values[::s], sino):
            return s, f"identical to every {_nth(s)} angle of {base!r} ({n_full} angles), from the first"
    if len(steps) == 1:
        return steps[0], (f"assumed every {_nth(steps[0])} angle of {base!r} ({n_full} angles) from "
                          "the shapes (values differ)")
    return None, f"no angle step maps {base!r} ({n_full} angles) onto {n_sub}"


def load_sd2i(path, name: str, *, angles=None) -> xr.DataArray:
    """Read one sinogram of an SD2I-layout HDF5 file as a one-channel sinogram stack.

    Parameters
    ----------
    path : str or path-like
    name : str
        Dataset name, e.g. ``"MnNaWSiO2"`` or ``"POX_angsamp"`` (see :func:`list_sd2i`).
    angles : array, optional
        Rotation angles in degrees, one per row of the dataset (overrides the assumption).

    Returns
    -------
    xarray.DataArray
        Dims ``(translation, angle, channel)`` with ``channel`` of length 1; named ``name``;
        dtype as stored.

    Notes
    -----
    The file stores no angles. Assumed (and written to ``attrs["import_note"]``): rows are
    angles, columns translations; angles evenly spaced over 0–180° (end excluded). For
    ``<base>_angsamp`` with ``<base>`` in the file, the rows are matched to every ``s``-th row
    of ``<base>`` (starting with the first) and take those angles of ``<base>``'s grid:
    ``linspace(0, 180, n_base, endpoint=False)[::s]`` (so the last angle is just short of
    180°). Translations are steps centred on the middle (units ``px``).
    """
    path = _as_path(path)
    with _open_h5(path) as f:
        if name not in f:
            names = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2]
            raise XRDFileError(f"{path}: no dataset {name!r}; the file holds sinograms {names}")
        sino = _read(_get_dataset(f, name, path, ndim=2), path)
        notes = [f"SD2I layout: /{name} {sino.shape} read as (angle, translation)"]
        if angles is not None:
            angles = _check_axis(angles, f"{name} (angles=)", sino.shape[0], path, what="angles")
            notes.append("angles given by the caller")
        elif name.endswith("_angsamp"):
            step, why = _sd2i_subsampling(f, name, sino, path)
            if step:
                n_full = f[name[: -len("_angsamp")]].shape[0]
                angles = ScanGeometry().angles(n_full)[::step]
                notes.append(f"angular subsampling: {why}; angles = every {_nth(step)} of {n_full} "
                             "evenly spaced over 0–180°")
            else:
                notes.append(f"angles assumed evenly spaced over 0–180° ({why})")
        else:
            notes.append("angles assumed evenly spaced over 0–180° (end excluded)")
    if angles is None:
        angles = ScanGeometry().angles(sino.shape[0])
    notes.append("translations in steps centred on the middle (px); one channel")
    try:
        da = _data.sinogram_stack(sino.T[:, :, None], angle=angles, spectral_dim="channel",
                                  name=name, units="a.u.", validate_values=False,
                                  attrs={"long_name": "chemical sinogram", "source_file": str(path),
                                         "source_dataset": f"/{name}"})
    except DataError as exc:
        raise XRDFileError(f"{path}: /{name}: {exc}") from None
    _nonfinite_note(da.data, notes)
    return _note(da, notes, path)


# ============================================================================ .npy
def load_npy(path, dims, kind: str | None = None, *, mmap_mode: str | None = "r",
             name: str | None = None, geometry: ScanGeometry | None = None,
             units: str = "counts", **coords) -> xr.DataArray:
    """Wrap a ``.npy`` array as a sinogram stack or volume, with the axis order given.

    Parameters
    ----------
    path : str or path-like
    dims : sequence of str
        Name of each axis in file order, e.g. ``("angle", "translation", "tth")``.
    kind : {"sinogram", "volume"}, optional
        Default from ``dims`` (``translation`` + ``angle`` → sinogram, ``y`` + ``x`` → volume).
    mmap_mode : {"r", "r+", "c", None}
        ``"r"`` (default) memory-maps the file, so arrays larger than memory stay on disk
        until used; ``None`` reads it into memory.
    **coords
        Coordinates by dim name, e.g. ``tth=...`` (deg), ``angle=...`` (deg). The spectral
        coordinate is required unless the spectral dim is ``channel``; others default as in
        :func:`xrdwidgets.data.sinogram_stack` (noted in ``attrs["import_note"]``).

    Returns
    -------
    xarray.DataArray
        In canonical dim order (a transposed view of the memory map, no copy).
    """
    path = _as_path(path)
    _require_exists(path)
    try:
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise XRDFileError(f"{path}: not a readable .npy file ({_describe_bytes(path)}): {exc}") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        keys = list(arr.keys())
        arr.close()
        raise XRDFileError(f"{path}: an .npz archive holding {keys}, expected a single-array .npy")
    dims = tuple(dims)
    if len(dims) != arr.ndim:
        raise XRDFileError(f"{path}: the array has shape {arr.shape} ({arr.ndim} axes) but dims="
                           f"{dims} names {len(dims)}")
    unknown = [k for k in coords if k not in dims]
    if unknown:
        raise DataError(f"{path}: coordinates {unknown} are not among dims {dims}")
    spec = [d for d in dims if d in SPECTRAL_DIMS]
    if len(spec) != 1:
        raise DataError(f"{path}: dims {dims} must hold exactly one spectral dim of {SPECTRAL_DIMS}")
    if kind is None:
        kind = "sinogram" if {"translation", "angle"} <= set(dims) else "volume"
    defaulted = [d for d in dims if coords.get(d) is None and d != "channel"]
    notes = [f"NumPy file {arr.shape} {arr.dtype}; axis order given as {dims}"]
    if defaulted:
        notes.append(f"coordinates not given, assumed defaults for {defaulted}")
    kw = dict(dims=dims, spectral=coords.pop(spec[0], None), spectral_dim=spec[0],
              geometry=geometry, name=name or kind, units=units, validate_values=False,
              attrs={"source_file": str(path)})
    try:
        if kind == "sinogram":
            da = _data.sinogram_stack(arr, **kw, **coords)
        elif kind == "volume":
            da = _data.volume(arr, **kw, **coords)
        else:
            raise DataError(f"kind: expected 'sinogram', 'volume' or None, found {kind!r}")
    except (DataError, TypeError) as exc:
        raise XRDFileError(f"{path}: {exc}") from None
    _nonfinite_note(da.data, notes)
    return _note(da, notes, path)


# ============================================================================ zarr
def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zattrs", ".zarray"))


def _zarr_root_attrs(path: Path) -> dict:
    import zarr

    if not _is_zarr(path):
        raise XRDFileError(f"{path}: not a zarr store (no zarr.json or .zgroup inside)")
    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as exc:  # zarr raises many types for broken stores
        raise XRDFileError(f"{path}: zarr store cannot be opened: {exc}") from None


def _drop_encoding(obj):
    return obj.drop_encoding() if hasattr(obj, "drop_encoding") else obj.reset_encoding()


def _zarr_chunk_dict(ds: xr.Dataset, chunks) -> dict:
    """Per-dim chunk sizes: by blocks of spectral channels, other dims whole."""
    sizes = dict(ds.sizes)
    spec = [d for d in sizes if d in SPECTRAL_DIMS]
    if chunks is None:
        main = max(ds.data_vars.values(), key=lambda v: v.size, default=None)
        if main is None or main.ndim == 0:
            return {}
        auto = _auto_chunks(main.shape, main.dims, main.dtype.itemsize)
        out = {d: sizes[d] for d in sizes}
        out.update(dict(zip(main.dims, auto)))
        return out
    if isinstance(chunks, int):
        if not spec:
            raise DataError(f"chunks={chunks}: an int sets channels per chunk, but dims {tuple(sizes)} "
                            f"have no spectral dim of {SPECTRAL_DIMS}; pass a dict")
        return {**{d: sizes[d] for d in sizes}, spec[0]: max(1, min(chunks, sizes[spec[0]]))}
    if isinstance(chunks, dict):
        bad = [d for d in chunks if d not in sizes]
        if bad:
            raise DataError(f"chunks: dims {bad} are not among {tuple(sizes)}")
        return {d: min(int(chunks.get(d, n)), n) if int(chunks.get(d, n)) > 0 else n
                for d, n in sizes.items()}
    raise DataError(f"chunks: expected None, an int (channels per chunk) or a dict, found {chunks!r}")


def _to_zarr_dataset(obj, prov: dict):
    if isinstance(obj, xr.DataArray):
        _check_reserved(obj.attrs, (), "DataArray")
        ds = obj.to_dataset(name=_Z_UNNAMED if obj.name is None else obj.name)
        marker = {_Z_OBJECT: "DataArray", _Z_NAME: json.dumps(obj.name)}
    elif isinstance(obj, xr.Dataset):
        _check_reserved(obj.attrs, _Z_RESERVED, "Dataset")
        ds, marker = obj, {_Z_OBJECT: "Dataset", _Z_NAME: "null"}
    else:
        raise DataError(f"expected an xarray DataArray or Dataset, found {type(obj).__name__}")
    ds = ds.copy(deep=False)
    ds.attrs = {**ds.attrs, _FORMAT_KEY: ZARR_FORMAT_NAME, _VERSION_KEY: FORMAT_VERSION, **marker,
                _Z_PROV: json.dumps(prov)}
    return ds


def save_zarr(obj, path, *, chunks=None, overwrite: bool = False, producer: str | None = None,
              parameters: dict | None = None) -> Path:
    """Save a DataArray or Dataset as a zarr store, chunked by blocks of spectral channels.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        numpy or dask backed (dask data are written chunk by chunk, never all in memory).
    path : str or path-like
        Target folder; written beside itself and renamed into place, replaced only with
        ``overwrite=True``.
    chunks : None, int or dict
        ``None``: ~4 MiB chunks holding whole images/sinograms and a block of channels;
        ``int``: channels per chunk; ``{dim: size}``: explicit (missing dims whole).
    producer, parameters :
        Provenance, stored in the store's attrs and read with :func:`read_provenance`.

    Notes
    -----
    Attrs go through JSON: str, numbers, bools and lists round-trip (tuples and numpy
    arrays come back as lists); geometry attrs round-trip. Meant for numeric stacks: string
    variables/coords have no stable zarr v3 encoding (use :func:`save` for those).
    """
    path = _as_path(path)
    prov = _provenance(producer, parameters, "xrdwidgets.io.save_zarr")
    ds = _to_zarr_dataset(obj, prov)
    ds = _drop_encoding(ds)
    chunk_dict = _zarr_chunk_dict(ds, chunks)
    if chunk_dict:
        ds = ds.chunk(chunk_dict)
    with _atomic_path(path, overwrite) as tmp:
        ds.to_zarr(str(tmp), mode="w-", consolidated=False)
    log.info("saved %s to zarr store %s (chunks %s)", type(obj).__name__, path, chunk_dict)
    return path


def open_zarr(path, *, chunks="auto"):
    """Open a zarr store lazily (dask-backed); a store of a DataArray gives a DataArray.

    Parameters
    ----------
    path : str or path-like
    chunks : "auto", dict or None
        Dask chunks, passed to :func:`xarray.open_zarr`: ``"auto"`` (default) groups whole
        stored chunks into dask chunks of ~128 MiB; ``{}`` uses the stored chunks as they are.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Without the store's bookkeeping attrs (format, provenance: see
        :func:`read_provenance`).
    """
    path = _as_path(path)
    _require_exists(path)
    root = _zarr_root_attrs(path)
    try:
        ds = xr.open_zarr(str(path), chunks=chunks, consolidated=False)
    except Exception as exc:
        raise XRDFileError(f"{path}: zarr store cannot be read as xarray data: {exc}") from None
    if root.get(_Z_COMPLETE) is False:
        log.warning("%s: the stack is incomplete (not every channel block was written); unwritten "
                    "channels read as NaN", path)
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in _Z_RESERVED}
    if root.get(_Z_OBJECT) != "DataArray":
        return ds
    name = json.loads(root.get(_Z_NAME, "null"))
    var = _Z_UNNAMED if name is None else name
    if var not in ds.data_vars:
        raise XRDFileError(f"{path}: zarr store marked as a DataArray {name!r} but holds "
                           f"{list(ds.data_vars)}")
    da = ds[var]
    da.name = name
    return da


# ---------------------------------------------------------------------------- incremental stacks
class ZarrStackWriter:
    """Fill a zarr sinogram stack / volume block of spectral channels by block.

    Made by :func:`create_zarr_stack`. Blocks are written straight into the zarr array, so a
    stack larger than memory is produced one block at a time; unwritten channels read as NaN
    (float dtypes). ``close()`` marks the store complete when every channel was written.
    Use as a context manager::

        with create_zarr_stack("big.zarr", coords={"translation": 512, "angle": 400,
                                                    "tth": tth}) as w:
            for start in range(0, len(tth), w.block):
                w.write_block(make_channels(start, start + w.block), start)

    Attributes
    ----------
    path : pathlib.Path
    name : str
        Variable name in the store.
    dims, shape, dtype : tuple, tuple, numpy.dtype
        Canonical dims (spectral last) and shape.
    spectral_dim : str
    block : int
        Channels per zarr chunk; blocks aligned to it can be written by parallel workers.
    """

    def __init__(self, path: Path, template: xr.DataArray, block: int):
        import zarr

        self.path = path
        self.name = template.name
        self.dims = tuple(template.dims)
        self.shape = tuple(template.shape)
        self.dtype = np.dtype(template.dtype)
        self.spectral_dim = self.dims[-1]
        self.block = int(block)
        self.coords = {d: np.asarray(template[d].values) for d in self.dims}
        self._array = zarr.open_group(str(path), mode="r+")[self.name]
        self._written = np.zeros(self.shape[-1], dtype=bool)

    def __repr__(self):
        return (f"ZarrStackWriter({str(self.path)!r}, dims={self.dims}, shape={self.shape}, "
                f"written={int(self._written.sum())}/{self.shape[-1]} channels)")

    def _start_from_coords(self, block: xr.DataArray, start):
        for d in self.dims[:-1]:
            if not np.allclose(np.asarray(block[d].values), self.coords[d]):
                raise DataError(f"{self.path}: block coordinate {d!r} differs from the stack's")
        spec = np.asarray(block[self.spectral_dim].values)
        full = self.coords[self.spectral_dim]
        if start is None:
            hits = np.flatnonzero(np.isclose(full, spec[0]))
            if hits.size == 0:
                raise DataError(f"{self.path}: block {self.spectral_dim}={spec[0]!r} is not on the "
                                "stack's spectral axis")
            start = int(hits[0])
        if not np.allclose(full[start:start + spec.size], spec):
            raise DataError(f"{self.path}: block {self.spectral_dim} values do not match the stack's "
                            f"channels {start}..{start + spec.size - 1}")
        return start

    def write_block(self, block, start: int | None = None) -> tuple[int, int]:
        """Write channels ``[start, start + n)``.

        Parameters
        ----------
        block : array-like or xarray.DataArray
            Shape ``shape[:-1] + (n,)`` (canonical order, spectral axis last); a DataArray may be
            in any dim order, its coords are checked and give ``start`` when it is omitted.
        start : int, optional
            First channel index (required for plain arrays).

        Returns
        -------
        (start, stop)
        """
        if isinstance(block, xr.DataArray):
            if set(block.dims) != set(self.dims):
                raise DataError(f"{self.path}: block dims {block.dims}, expected {self.dims}")
            block = block.transpose(*self.dims)
            start = self._start_from_coords(block, start)
            values = np.asarray(block.values)
        else:
            if start is None:
                raise DataError(f"{self.path}: write_block needs start= for a plain array")
            values = np.asarray(_data._to_numpy(block, "block"))
        if values.ndim != len(self.shape) or values.shape[:-1] != self.shape[:-1]:
            raise DataError(f"{self.path}: block shape {values.shape}, expected {self.shape[:-1]} + "
                            f"(n channels,) in dims order {self.dims}")
        start, stop = int(start), int(start) + values.shape[-1]
        if start < 0 or stop > self.shape[-1]:
            raise DataError(f"{self.path}: channels {start}..{stop - 1} outside 0..{self.shape[-1] - 1}")
        self._array[..., start:stop] = values.astype(self.dtype, copy=False)
        self._written[start:stop] = True
        return start, stop

    def missing(self) -> list[tuple[int, int]]:
        """Channel ranges ``[(start, stop), ...]`` not written yet."""
        edges = np.diff(np.concatenate([[0], (~self._written).astype(np.int8), [0]]))
        return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))

    def close(self):
        """Mark the store complete (when every channel is written) and open it lazily."""
        import zarr

        missing = self.missing()
        zarr.open_group(str(self.path), mode="r+").attrs[_Z_COMPLETE] = not missing
        if missing:
            log.warning("%s: closed with unwritten channel ranges %s", self.path, missing)
        return open_zarr(self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        return False


def create_zarr_stack(path, *, coords: dict, kind: str | None = None, dtype="float32",
                      block: int | None = None, name: str | None = None,
                      geometry: ScanGeometry | None = None, units: str = "counts",
                      attrs: dict | None = None, overwrite: bool = False,
                      producer: str | None = None, parameters: dict | None = None) -> ZarrStackWriter:
    """Create an empty zarr sinogram stack / volume to fill block by block.

    Parameters
    ----------
    path : str or path-like
        New zarr folder (an existing one only with ``overwrite=True``).
    coords : dict
        ``{dim: values or length}`` for every dim, e.g. ``{"translation": 256, "angle": 180,
        "tth": tth_deg}``; an int gives the default coordinate of that length (not allowed for
        a calibrated spectral dim).
    kind : {"sinogram", "volume"}, optional
        Default from the dims.
    dtype : numpy dtype
    block : int, optional
        Channels per zarr chunk (default: ~4 MiB chunks).

    Returns
    -------
    ZarrStackWriter
    """
    import dask.array as dsa

    path = _as_path(path)
    _check_target(path, overwrite)
    dims = tuple(coords)
    if kind is None:
        kind = "sinogram" if {"translation", "angle"} <= set(dims) else "volume"
    values = {d: (None if isinstance(v, (int, np.integer)) else np.asarray(v)) for d, v in coords.items()}
    shape = tuple(int(v) if values[d] is None else values[d].shape[0] for d, v in coords.items())
    spec = [d for d in dims if d in SPECTRAL_DIMS]
    if len(spec) != 1:
        raise DataError(f"create_zarr_stack: coords {dims} must hold exactly one spectral dim of "
                        f"{SPECTRAL_DIMS}")
    itemsize = np.dtype(dtype).itemsize
    if block is None:
        block = _auto_chunks(shape, dims, itemsize)[dims.index(spec[0])]
    chunks = tuple(min(int(block), n) if d == spec[0] else n for d, n in zip(dims, shape))
    lazy = dsa.zeros(shape, dtype=dtype, chunks=chunks)
    kw = dict(dims=dims, spectral=values.pop(spec[0]), spectral_dim=spec[0], geometry=geometry,
              name=name or kind, units=units, attrs=attrs, validate_values=False)
    ctor = {"sinogram": _data.sinogram_stack, "volume": _data.volume}.get(kind)
    if ctor is None:
        raise DataError(f"kind: expected 'sinogram', 'volume' or None, found {kind!r}")
    template = ctor(lazy, **kw, **values)
    canon_chunks = tuple(min(int(block), n) if d == spec[0] else n
                         for d, n in zip(template.dims, template.shape))
    template = template.chunk(dict(zip(template.dims, canon_chunks)))
    prov = _provenance(producer, parameters, "xrdwidgets.io.create_zarr_stack")
    ds = _to_zarr_dataset(template, prov)
    ds.attrs[_Z_COMPLETE] = False
    if path.exists():
        _remove(path)
    ds.to_zarr(str(path), mode="w-", compute=False, consolidated=False)
    log.info("created zarr stack %s %s, %d channels per chunk", path, dict(template.sizes), block)
    return ZarrStackWriter(path, template, min(int(block), shape[dims.index(spec[0])]))


# ============================================================================ describe
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


def _fmt_size(nbytes):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


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
        return [f"file: {path} (nDTomo layout)"] + _describe_obj(load_ndtomo(path))
    lines = [f"file: {path} (SD2I layout: 2-D (angles, translations) sinograms; read one with "
             "load_sd2i(path, name))"]
    with _open_h5(path) as f:
        for name, dset in f.items():
            lines.append(f"  {name}: {dset.shape} {dset.dtype}; {_fmt_stats(_read(dset, path))}")
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
