"""``.xrd`` accessor on xarray objects: forwards to the public functions, holds no state.

Importing :mod:`xrdwidgets` registers it::

    da.xrd.kind            # "sinogram" or "volume"
    da.xrd.validate()      # canonical, validated copy
    da.xrd.geometry        # ScanGeometry or None
    da.xrd.to("q")         # spectral axis in other units
    da.xrd.save("out.h5")  # own HDF5 layout
"""
from __future__ import annotations

import xarray as xr

from . import data as _data


class _XRDAccessor:
    def __init__(self, obj):
        self._obj = obj

    @property
    def kind(self) -> str:
        """``"sinogram"`` or ``"volume"``."""
        return _data.kind_of(self._obj)

    @property
    def spectral_dim(self) -> str:
        """Name of the spectral dim."""
        return _data.spectral_dim(self._obj)

    @property
    def geometry(self):
        """The stored :class:`~xrdwidgets.geometry.ScanGeometry` (or ``None``)."""
        return _data.get_geometry(self._obj)

    def with_geometry(self, geometry):
        """Copy with ``geometry`` stored in attrs."""
        return _data.set_geometry(self._obj, geometry)

    def validate(self, **kwargs):
        """See :func:`xrdwidgets.data.validate`."""
        return _data.validate(self._obj, **kwargs)

    def canonical(self):
        """See :func:`xrdwidgets.data.canonical`."""
        return _data.canonical(self._obj)

    def to(self, spectral: str, **kwargs):
        """See :func:`xrdwidgets.data.convert_spectral`."""
        return _data.convert_spectral(self._obj, spectral, **kwargs)

    def save(self, path, **kwargs):
        """See :func:`xrdwidgets.io.save`."""
        from . import io

        return io.save(self._obj, path, **kwargs)

    def info(self) -> str:
        """Text summary: dims, coords, geometry, value range. See :func:`xrdwidgets.io.describe`."""
        from . import io

        return io.describe(self._obj)


xr.register_dataarray_accessor("xrd")(_XRDAccessor)
xr.register_dataset_accessor("xrd")(_XRDAccessor)
