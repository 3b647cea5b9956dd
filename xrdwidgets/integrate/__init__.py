"""Raw detector frames → 1-D patterns → sinogram stacks (pyFAI), out of core and resumable.

Main entry points: :func:`integrate` (a whole scan, xarray out), :func:`iterate_integration`
(the same as a generator of progress events, for jobs), :func:`integrate_frames` (a few frames), :func:`frame_preview` (one frame, its rings),
:func:`open_frames` (lazy readers), :func:`load_poni` (calibration), :class:`Integrator` and
:class:`IntegrationOptions` (engines), :class:`ScanPlan` (frame → scan point).
These read a finished scan; to follow one being written, use :mod:`xrdwidgets.live`
(``xrdwidgets live`` on the command line).
"""
from __future__ import annotations

from .assemble import (combined_mask, integrate, integrate_frames, iterate_integration, poni_text, resolve_plan,
                       stack_from_patterns, work_store)
from .calibration import CalibrationError, load_image, load_poni, make_integrator, scan_geometry, write_poni
from .engines import METHODS, PRESETS, UNITS, IntegrationOptions, Integrator
from .preview import frame_preview
from .plan import PLAN_ORDERS, ScanPlan, ScanPlanError, plan_from_motors
from .readers import FrameReadError, FrameSource, open_frames

__all__ = [
    "integrate", "iterate_integration", "integrate_frames", "resolve_plan", "stack_from_patterns", "work_store",
    "combined_mask", "poni_text",
    "CalibrationError", "load_image", "load_poni", "make_integrator", "scan_geometry", "write_poni",
    "METHODS", "PRESETS", "UNITS", "IntegrationOptions", "Integrator",
    "PLAN_ORDERS", "ScanPlan", "ScanPlanError", "plan_from_motors",
    "FrameReadError", "FrameSource", "open_frames", "frame_preview",
]


class _CallableModule(type(__import__("sys"))):
    """Lets ``import xrdwidgets as xw; xw.integrate(raw, poni, ...)`` call :func:`integrate`."""

    def __call__(self, *args, **kwargs):
        return integrate(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
