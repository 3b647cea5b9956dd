"""Reader for SD2I files (one 2-D ``(angles, translations)`` sinogram per dataset):
:func:`list_sd2i`, :func:`load_sd2i`.
"""
from __future__ import annotations

import h5py
import numpy as np
import xarray as xr

from .. import data as _data
from ..data import DataError
from ..geometry import ScanGeometry
from ._common import XRDFileError, _as_path
from ._reading import (
    _check_axis, _get_dataset, _inventory, _nonfinite_note, _note, _open_h5, _read,
)


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
