"""Live mode: follow an acquisition in progress, integrate new frames, reconstruct as data arrive.

:mod:`.sources` (growing HDF5 files — frames or integrated patterns — and folders of frame
files), :mod:`.progressive` (FBP updated with the new angles only, warm-started SIRT),
:mod:`.session` (:class:`LiveSession`, :func:`iterate_live`, :func:`live`) and
:mod:`.writer` (a simulated acquisition that writes a raw scan frame by frame, SWMR).
"""
from __future__ import annotations

from .progressive import ProgressiveFBP, WarmSIRT, coverage
from .session import LiveSession, LiveSnapshot, iterate_live, live, strongest_windows, window_images
from .sources import DONE_SUFFIX, FrameFolder, GrowingHDF5, LiveSource, open_live

__all__ = ["ProgressiveFBP", "WarmSIRT", "coverage", "LiveSession", "LiveSnapshot", "iterate_live", "live",
           "window_images", "strongest_windows", "DONE_SUFFIX", "FrameFolder", "GrowingHDF5", "LiveSource", "open_live"]
