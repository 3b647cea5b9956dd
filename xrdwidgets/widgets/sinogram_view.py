"""Linked sinogram–spectrum view of a sinogram stack ``(translation, angle, spectral)``.

The :class:`~xrdwidgets.widgets.explorer.Explorer` with the sinogram's image dims: the image
is the sinogram at the selected channel / summed window (rows = translation, drawn top to
bottom; columns = angle), a click gives the pattern measured at that (translation, angle)
point. Everything else — windows, overlays, colour limits, export, byte budget — is the
Explorer's.
"""
from __future__ import annotations

import logging

import xarray as xr

from .explorer import Explorer
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["SinogramView"]


class SinogramView(Explorer):
    """Linked view of a sinogram stack: sinogram at a channel/window ↔ pattern at a point.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset, optional
        Sinogram stack ``(translation, angle, spectral)`` in any dim order (a Dataset gives its
        ``sinogram`` variable).
    compare : dict, optional
        ``{name: stack}`` with the same (translation, angle) sizes, overlaid on the pattern
        plot, e.g. ``{"raw": raw_stack}`` next to a corrected one.
    state : AppState, optional
        Follow ``state.stack`` (shown as ``"stack"``); ``state.raw`` (when it differs) and the
        noise-free ``state.truth["clean"]`` of simulated data are overlays.
    **kwargs
        As for :class:`Explorer` (``export_dir``, ``max_image_size``, ``cmap``, ...).

    Notes
    -----
    :meth:`select_pixel` takes ``(translation_index, angle_index)``; :attr:`pixel` holds them.
    """

    KIND = "sinogram"
    STATE_TRAITS = ("stack", "raw", "truth")

    def __init__(self, stack=None, *, compare: dict | None = None, state: AppState | None = None,
                 **kwargs):
        super().__init__(stack, compare=compare, state=state, **kwargs)

    def _state_sources(self, state: AppState):
        """``("stack", state.stack, {"raw": ..., "clean": ...})``."""
        if state.stack is None:
            return "", None, {}
        compare = {}
        if state.raw is not None and state.raw is not state.stack:
            compare["raw"] = state.raw
        truth = state.truth
        if isinstance(truth, xr.Dataset) and "clean" in truth.data_vars:
            compare["clean"] = truth["clean"]
        return "stack", state.stack, compare
