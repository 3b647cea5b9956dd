"""Import of ``.npy`` arrays (memory-mapped) as sinogram stacks or volumes: :func:`load_npy`."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .. import data as _data
from ..data import SPECTRAL_DIMS, DataError
from ..geometry import ScanGeometry
from ._common import XRDFileError, _as_path, _require_exists
from ..base.checks import DataTooLargeError
from ..base.checks import check_fits_in_memory as _check_fits
from ._reading import _describe_bytes, _nonfinite_note, _note


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
        if mmap_mode is None:  # read whole: first check its size from the header (a memory map)
            head = np.load(path, mmap_mode="r", allow_pickle=False)
            if isinstance(head, np.ndarray):
                _check_fits(head.nbytes, what=f"{path}: reading the array {head.shape} {head.dtype}",
                            lazy_hint="keep the default mmap_mode='r' (the file stays on disk until used)")
            del head
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except DataTooLargeError:
        raise
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
