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
``save_zarr`` / ``open_zarr`` / ``create_zarr_stack`` / ``open_zarr_stack``
    Chunked (by spectral channel) zarr stores, opened lazily with dask; a
    :class:`ZarrStackWriter` fills a stack larger than memory block by block.
``describe(obj_or_path)``
    Text summary: dims, coords, geometry, value range, provenance.
``probe_stack(path)`` / ``load_stack(path, variable=..., npy_dims=...)``
    Read a sinogram stack from any of these files, the reader chosen by file type and layout
    (what the app's data panel calls).

The own HDF5 layout (``xrdwidgets.hdf5``, version 1)
----------------------------------------------------
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

Modules
-------
Everything above is importable from :mod:`xrdwidgets.io` itself; the code lives in
``hdf5`` (own layout, ``load`` dispatch), ``ndtomo``, ``sd2i_files``, ``npy``, ``zarr_store``,
``summary`` (``describe``), ``dispatch`` (``probe_stack``, ``load_stack``), and the private
``_common`` (errors, paths, atomic writes, attrs codec, provenance) and ``_reading`` (shared
reader helpers).
"""
from __future__ import annotations

# CHUNK_MIN_BYTES, CHUNK_TARGET_BYTES, NDTOMO_AXES (documented constants) and the package
# logger ``log`` are importable as before, outside __all__.
from ._common import (  # noqa: F401
    CHUNK_MIN_BYTES, CHUNK_TARGET_BYTES, FORMAT_NAME, FORMAT_VERSION, ZARR_FORMAT_NAME,
    XRDFileError, XRDFileNotFoundError, log,
)
from .dispatch import StackFile, load_stack, probe_stack
from .hdf5 import load, read_provenance, save
from .ndtomo import NDTOMO_AXES, load_ndtomo  # noqa: F401
from .npy import load_npy
from .sd2i_files import list_sd2i, load_sd2i
from .summary import describe
from .zarr_store import ZarrStackWriter, create_zarr_stack, open_zarr, open_zarr_stack, save_zarr

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "ZARR_FORMAT_NAME", "XRDFileError", "XRDFileNotFoundError",
    "save", "load", "read_provenance", "load_ndtomo", "list_sd2i", "load_sd2i", "load_npy",
    "save_zarr", "open_zarr", "create_zarr_stack", "open_zarr_stack", "ZarrStackWriter", "describe",
    "StackFile", "probe_stack", "load_stack",
]
