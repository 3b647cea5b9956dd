"""Choose the reader of a sinogram-stack file by its type and layout: :func:`probe_stack`,
:func:`load_stack`.

The one place that decides how a file holding a sinogram stack is read (``.npy`` with an axis
order, an SD2I file with a chosen sinogram, or anything :func:`~xrdwidgets.io.load` reads), so
a notebook and the app's data panel load a file the same way, with the same errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import xarray as xr

from .. import data as _data
from ..base.errors import InputError
from ._common import _as_path
from ._reading import _layout, _open_h5
from .hdf5 import load
from .npy import load_npy
from .sd2i_files import list_sd2i, load_sd2i

__all__ = ["StackFile", "probe_stack", "load_stack"]


class StackFile(NamedTuple):
    """What :func:`load_stack` read from a file: ``stack`` (the sinogram stack, dims
    ``(translation, angle, spectral)`` + optional ``z``, ``time``), ``truth`` (for simulated files
    with ``volume`` or ``phase_maps``, the whole Dataset; else None) and ``stored``
    (reconstructions stored next to the stack, ``{variable: volume}`` with dims
    ``(y, x, spectral)``, e.g. the ``fbp`` that ``xrdwidgets demo`` writes)."""

    stack: xr.DataArray
    truth: xr.Dataset | None
    stored: dict


def probe_stack(path) -> tuple[str | None, list | None]:
    """What must be chosen before :func:`load_stack` can read ``path``.

    Parameters
    ----------
    path : str or path-like
        A file (HDF5, ``.npy``) or a zarr store (a folder).

    Returns
    -------
    kind : {"sd2i", "npy", None}
        ``"sd2i"``: an SD2I file, choose a sinogram (``variable=``); ``"npy"``: a ``.npy`` file,
        give its axis order (``npy_dims=``); ``None``: nothing to choose.
    names : list of str or None
        The sinograms of an SD2I file (in file order), else ``None``.

    Raises
    ------
    XRDFileError
        An HDF5 file that cannot be opened (the message names the file).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return "npy", None
    if path.is_dir():
        return None, None
    with _open_h5(path) as f:
        layout = _layout(f)
    if layout == "sd2i":
        return "sd2i", list(list_sd2i(path))
    return None, None


def load_stack(path, *, variable: str | None = None, npy_dims=None) -> StackFile:
    """Read a sinogram stack from a file, choosing the reader by file type and layout.

    Parameters
    ----------
    path : str or path-like
        An HDF5 file (own layout, nDTomo, SD2I), a zarr store or a ``.npy`` file.
    variable : str, optional
        The sinogram to read from an SD2I file (one of :func:`probe_stack`'s names); without it
        :func:`~xrdwidgets.io.load` reads the file (an SD2I file then needs exactly one sinogram).
    npy_dims : sequence of str
        For a ``.npy`` file, the name of each axis in file order, e.g.
        ``("angle", "translation", "channel")`` (read into memory, as :func:`~xrdwidgets.io.load_npy`).

    Returns
    -------
    StackFile
        ``(stack, truth, stored)``: the sinogram stack, the simulated truth (or ``None``) and the
        reconstructions stored in the file.

    Raises
    ------
    XRDFileError
        A missing or unreadable file (the message names it).
    DataError
        The file holds no sinogram stack (e.g. a volume).
    InputError
        A ``.npy`` file without ``npy_dims``.
    """
    path = _as_path(path)
    if path.suffix.lower() == ".npy":
        if npy_dims is None:
            raise InputError(f"{path}: a .npy file needs its axis order (npy_dims=)")
        obj = load_npy(path, npy_dims, kind="sinogram", mmap_mode=None)
    elif variable:
        obj = load_sd2i(path, variable)
    else:
        obj = load(path)
    truth = None
    stored = {}
    if hasattr(obj, "data_vars"):
        truth = obj if {"volume", "phase_maps"} & set(obj.data_vars) else None
        spec = obj["sinogram"].dims[-1] if "sinogram" in obj.data_vars else None
        for var in obj.data_vars:   # reconstructions (y, x, spectral) on the stack's spectral axis
            if var in ("sinogram", "volume", "clean") or spec is None:
                continue
            if obj[var].dims == ("y", "x", spec):
                stored[str(var)] = obj[var]
        obj = _data.as_dataarray(obj, "sinogram") if "sinogram" in obj.data_vars else _data.as_dataarray(obj)
    if _data.kind_of(obj) != "sinogram":
        raise _data.DataError(f"holds a {obj.name or 'volume'} with dims {tuple(obj.dims)}; the data "
                              "panel loads sinogram stacks (dims translation, angle and a spectral dim)")
    return StackFile(obj, truth, stored)
