"""Zarr stores chunked by spectral channel: :func:`save_zarr`, :func:`open_zarr` and the
incremental :class:`ZarrStackWriter` made by :func:`create_zarr_stack`.

``zarr`` and ``dask`` are imported only when used.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from .. import data as _data
from ..data import SPECTRAL_DIMS, DataError
from ..geometry import ScanGeometry
from ._common import (
    _FORMAT_KEY, _VERSION_KEY, _Z_COMPLETE, _Z_NAME, _Z_OBJECT, _Z_PROV, _Z_RESERVED, _Z_UNNAMED,
    FORMAT_VERSION, ZARR_FORMAT_NAME, XRDFileError, _as_path, _atomic_path, _auto_chunks,
    _check_reserved, _check_target, _is_zarr, _provenance, _remove, _require_exists, log,
)


# ============================================================================ zarr
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
    with _atomic_path(path, overwrite, store=True) as tmp:
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
    return _open_zarr(path, chunks, warn_incomplete=True)


def _open_zarr(path, chunks, *, warn_incomplete: bool):
    path = _as_path(path)
    _require_exists(path)
    root = _zarr_root_attrs(path)
    try:
        ds = xr.open_zarr(str(path), chunks=chunks, consolidated=False)
    except Exception as exc:
        raise XRDFileError(f"{path}: zarr store cannot be read as xarray data: {exc}") from None
    if warn_incomplete and root.get(_Z_COMPLETE) is False:
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

    def write_block(self, block, start: int | None = None, *, lead: tuple = ()) -> tuple[int, int]:
        """Write channels ``[start, start + n)``.

        Parameters
        ----------
        block : array-like or xarray.DataArray
            Shape ``shape[:-1] + (n,)`` (canonical order, spectral axis last); a DataArray may be
            in any dim order, its coords are checked and give ``start`` when it is omitted.
        start : int, optional
            First channel index (required for plain arrays).
        lead : tuple of int
            Indices of leading dims (``time``/``z``) the plain-array block is one slice of: its
            shape is then ``shape[len(lead):-1] + (n,)``.

        Returns
        -------
        (start, stop)

        Notes
        -----
        Blocks that cover whole zarr chunks (``block`` channels, aligned; the last chunk may be
        short) can be written by parallel processes at once.
        """
        if lead:
            lead = tuple(int(i) for i in lead)
            if isinstance(block, xr.DataArray) or start is None:
                raise DataError(f"{self.path}: lead= takes a plain array and start=")
            if len(lead) >= len(self.shape) - 2 or any(not 0 <= i < n for i, n in zip(lead, self.shape)):
                raise DataError(f"{self.path}: lead index {lead} does not fit the leading dims "
                                f"{self.dims[:len(lead)]} of shape {self.shape[:len(lead)]}")
            values = np.asarray(_data.to_numpy(block, "block"))
            inner = self.shape[len(lead):-1]
            if values.shape[:-1] != inner:
                raise DataError(f"{self.path}: block shape {values.shape}, expected {inner} + (n channels,)")
            start, stop = int(start), int(start) + values.shape[-1]
            if start < 0 or stop > self.shape[-1]:
                raise DataError(f"{self.path}: channels {start}..{stop - 1} outside 0..{self.shape[-1] - 1}")
            self._array[lead + (Ellipsis, slice(start, stop))] = values.astype(self.dtype, copy=False)
            return start, stop
        if isinstance(block, xr.DataArray):
            if set(block.dims) != set(self.dims):
                raise DataError(f"{self.path}: block dims {block.dims}, expected {self.dims}")
            block = block.transpose(*self.dims)
            start = self._start_from_coords(block, start)
            values = np.asarray(block.values)
        else:
            if start is None:
                raise DataError(f"{self.path}: write_block needs start= for a plain array")
            values = np.asarray(_data.to_numpy(block, "block"))
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


def open_zarr_stack(path) -> ZarrStackWriter:
    """A :class:`ZarrStackWriter` on a store made by :func:`create_zarr_stack` (e.g. by another
    process: each worker of a cluster opens the store and writes its own blocks).

    Its ``missing()`` only knows what this writer wrote.
    """
    import zarr

    path = _as_path(path)
    da = _open_zarr(path, "auto", warn_incomplete=False)
    if not isinstance(da, xr.DataArray):
        raise XRDFileError(f"{path}: holds a Dataset, not one stack or volume made by create_zarr_stack")
    arr = zarr.open_group(str(path), mode="r")[da.name]
    return ZarrStackWriter(path, da, int(arr.chunks[-1]))


def create_zarr_stack(path, *, coords: dict, kind: str | None = None, dtype="float32",
                      block: int | None = None, name: str | None = None,
                      geometry: ScanGeometry | None = None, units: str = "counts",
                      attrs: dict | None = None, overwrite: bool = False,
                      producer: str | None = None, parameters: dict | None = None,
                      lead_block: int | None = None) -> ZarrStackWriter:
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
    lead_block : int, optional
        Entries per chunk along leading ``time``/``z`` dims (default: all in one chunk); 1 lets
        parallel writers fill different leading slices of the same channels.

    Returns
    -------
    ZarrStackWriter
    """
    import dask.array as dsa

    path = _as_path(path)
    _check_target(path, overwrite, store=True)
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
    def chunk_of(d, n):
        if d == spec[0]:
            return min(int(block), n)
        if lead_block is not None and d in _data.EXTRA_DIMS:
            return min(int(lead_block), n)
        return n

    chunks = tuple(chunk_of(d, n) for d, n in zip(dims, shape))
    lazy = dsa.zeros(shape, dtype=dtype, chunks=chunks)
    kw = dict(dims=dims, spectral=values.pop(spec[0]), spectral_dim=spec[0], geometry=geometry,
              name=name or kind, units=units, attrs=attrs, validate_values=False)
    ctor = {"sinogram": _data.sinogram_stack, "volume": _data.volume}.get(kind)
    if ctor is None:
        raise DataError(f"kind: expected 'sinogram', 'volume' or None, found {kind!r}")
    template = ctor(lazy, **kw, **values)
    canon_chunks = tuple(chunk_of(d, n) for d, n in zip(template.dims, template.shape))
    template = template.chunk(dict(zip(template.dims, canon_chunks)))
    prov = _provenance(producer, parameters, "xrdwidgets.io.create_zarr_stack")
    ds = _to_zarr_dataset(template, prov)
    ds.attrs[_Z_COMPLETE] = False
    if path.exists():
        _remove(path)
    ds.to_zarr(str(path), mode="w-", compute=False, consolidated=False)
    log.info("created zarr stack %s %s, %d channels per chunk", path, dict(template.sizes), block)
    return ZarrStackWriter(path, template, min(int(block), shape[dims.index(spec[0])]))
