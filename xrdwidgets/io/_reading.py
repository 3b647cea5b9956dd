"""Shared helpers of the readers: open HDF5 files with clear errors, detect the layout,
check imported axes and record import notes.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import h5py
import numpy as np

from ..base.checks import check_fits_in_memory, fits_in_memory
from ._common import (
    _FORMAT_KEY, _NPY_MAGIC, FORMAT_NAME, XRDFileError, _is_zarr, _require_exists, _value_stats,
    log,
)


# ============================================================================ reading HDF5
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


def _check_size(path, datasets) -> None:
    """Before reading HDF5 datasets whole: a DataTooLargeError when they do not fit in memory."""
    datasets = list(datasets)
    nbytes = sum(int(d.size) * d.dtype.itemsize for d in datasets)
    if nbytes and not fits_in_memory(nbytes):
        shown = ", ".join(f"{d.name} {d.shape} {d.dtype}" for d in datasets[:3])
        check_fits_in_memory(nbytes, what=f"{path}: reading {shown}" + (" ..." if len(datasets) > 3 else ""),
                             lazy_hint=LAZY_HINT)


#: How to work on a file too large to load (in the errors of the readers).
LAZY_HINT = ("work on it lazily: xrdwidgets.io.describe(path) summarises it without loading it; read a "
             "part with h5py (e.g. f['/data'][..., :64]); or copy it block by block into a chunked zarr "
             "store (xrdwidgets.io.create_zarr_stack) and open that lazily with xrdwidgets.io.open_zarr "
             "(dask): reconstructions read such a store one channel batch at a time")


def _read(dset, path):
    """All values of an HDF5 dataset (an ``XRDFileError`` if the bytes cannot be read; a
    ``DataTooLargeError`` before reading when they would not fit in memory)."""
    _check_size(path, [dset])
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
