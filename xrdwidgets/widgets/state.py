"""The shared model of a dashboard: the data the panels look at, as observable traits.

Panels never talk to each other directly; they read and set these traits (HyperSpy style), so
any panel can be used alone with an :class:`AppState` of its own.
"""
from __future__ import annotations

import logging

import traitlets as tl

from .. import data as _data

log = logging.getLogger(__name__)

__all__ = ["AppState"]


class AppState(tl.HasTraits):
    """Observable state of an XRD-CT session.

    Attributes
    ----------
    raw : xarray.DataArray or None
        The sinogram stack as loaded / simulated (translation, angle, spectral).
    stack : xarray.DataArray or None
        The stack after corrections (what reconstructions use); equals ``raw`` until corrected.
    truth : xarray.Dataset or None
        Ground truth when the data were simulated (``volume``, ``phase_maps``, ...).
    results : dict
        Name → reconstructed volume (y, x, spectral). Replace the dict to notify observers.
    current : str
        Name of the result shown by default.
    status : str
        One line for a status bar.
    roi : dict
        The region of interest chosen in the analysis tabs: ``source`` (result name),
        ``channels`` (half-open index range), ``range`` (spectral values of its first and last
        channel), ``background``, ``edge_channels``, ``peaks`` (suggested positions).
    """

    raw = tl.Any(None, allow_none=True)
    stack = tl.Any(None, allow_none=True)
    truth = tl.Any(None, allow_none=True)
    results = tl.Dict()
    current = tl.Unicode("")
    status = tl.Unicode("")
    roi = tl.Dict()

    def set_data(self, stack, *, truth=None, name: str = ""):
        """Load a new sinogram stack (validated, canonical); clears results."""
        da = _data.validate_sinogram_stack(_data.as_dataarray(stack, "sinogram"), check_finite=False)
        self.results = {}
        self.current = ""
        self.roi = {}
        self.truth = truth
        self.raw = da
        self.stack = da
        self.status = f"loaded {name or da.name or 'stack'}: " + ", ".join(f"{k}={v}" for k, v in da.sizes.items())

    def add_result(self, name: str, volume):
        """Store a reconstructed volume under ``name`` and make it current."""
        res = dict(self.results)
        res[name] = volume
        self.results = res
        self.current = name
