"""Raw detector frames → 1-D patterns → sinogram stacks (pyFAI), out of core and resumable.

Main entry points: :func:`integrate` (a whole scan, xarray out), :func:`iterate_integration`
(the same as a generator of progress events, for jobs; ``wait_s=`` follows a running
acquisition), :func:`integrate_frames` (a few frames), :func:`frame_preview` (one frame, its rings),
:func:`open_frames` (lazy readers), :func:`load_poni` (calibration), :class:`Integrator` and
:class:`IntegrationOptions` (engines), :class:`ScanPlan` (frame → scan point).
"""
from __future__ import annotations

from .assemble import (integrate, integrate_frames, iterate_integration, resolve_plan, stack_from_patterns,
                       work_store)
from .calibration import CalibrationError, load_image, load_poni, make_integrator, scan_geometry, write_poni
from .engines import METHODS, PRESETS, UNITS, IntegrationOptions, Integrator
from .preview import frame_preview
from .plan import PLAN_ORDERS, ScanPlan, ScanPlanError, plan_from_motors
from .readers import FrameReadError, FrameSource, open_frames

__all__ = [
    "integrate", "iterate_integration", "integrate_frames", "resolve_plan", "stack_from_patterns", "work_store",
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
