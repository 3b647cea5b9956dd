"""The own HDF5 layout (``xrdwidgets.hdf5``): :func:`save`, :func:`load`, :func:`read_provenance`.

The layout is described in :mod:`xrdwidgets.io`. :func:`load` also dispatches to the nDTomo
and SD2I readers and opens zarr stores.
"""
from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from .._version import __version__
from ..data import DataError
from ._common import (
    _DIMS_KEY, _DTYPE_KEY, _FORMAT_KEY, _NAME_KEY, _OBJECT_KEY, _ORDER_KEY, _ROOT_RESERVED,
    _VERSION_KEY, _Z_PROV, CHUNK_MIN_BYTES, FORMAT_NAME, FORMAT_VERSION, XRDFileError, _as_path,
    _atomic_path, _auto_chunks, _check_reserved, _decode_attr, _decode_provenance, _is_dask,
    _is_zarr, _provenance, _read_attrs, _require_exists, _write_attrs, log,
)
from ._reading import _check_size, _inventory, _layout, _open_h5
from .ndtomo import load_ndtomo
from .sd2i_files import load_sd2i
from .zarr_store import _zarr_root_attrs, open_zarr


# ============================================================================ arrays
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
        # an open h5py file cannot travel to a dask cluster: always the local threads, also when
        # a distributed Client is the default scheduler of this process
        dsa.store(enc, dset, lock=True, scheduler="threads")
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


# ============================================================================ reading
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
        if not lazy:  # before any read: a clear error when it cannot fit in memory
            _check_size(path, [d for _, d in _ordered(f["coords"]) + _ordered(f["variables"])])
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
