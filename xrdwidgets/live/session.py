"""A live session: follow an acquisition, integrate new frames only, reconstruct progressively.

:class:`LiveSession` ties a :mod:`source <xrdwidgets.live.sources>`, the frame integrator of
:mod:`xrdwidgets.integrate` (the same :class:`~xrdwidgets.integrate.Integrator`, mask and
settings as the offline path) and a :class:`~xrdwidgets.live.progressive.ProgressiveFBP` over
every channel. :meth:`LiveSession.step` polls once: new frames are integrated and put in their
scan cells; then, at most every ``update_every_s`` seconds, the scan cells that became
complete (angle columns, or translation rows for ``order="rotation-fast"``) are added to the
reconstruction. It returns a :class:`LiveSnapshot` for views.

:func:`iterate_live` is the loop as an algorithm generator (Progress events, one per poll that
brought data; the snapshot in ``metrics["snapshot"]``) returning the final sinogram stack,
which equals :func:`xrdwidgets.integrate.integrate` of the same files with the same plan and
settings (:func:`~xrdwidgets.integrate.stack_from_patterns` builds both). :func:`live` runs it
to the end.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .. import data as _data
from ..integrate import combined_mask, poni_text, stack_from_patterns
from ..integrate.calibration import load_poni
from ..integrate.engines import UNITS, IntegrationOptions, Integrator
from ..integrate.plan import ScanPlan, ScanPlanError
from ..base.progress import Progress, run_to_end
from .progressive import ProgressiveFBP, WarmSIRT
from .sources import LiveSource, open_live
from ..base.errors import InputError, InputTypeError

log = logging.getLogger(__name__)

__all__ = ["LiveSession", "LiveSnapshot", "iterate_live", "live", "window_images", "strongest_windows"]


@dataclass
class LiveSnapshot:
    """What a view shows at one moment of a live session (arrays are the session's own: read only).

    Attributes
    ----------
    frames, n_frames : int
        Frames received / expected.
    angles_done, n_angles : int
        Angle columns complete (all translations measured).
    rows_done : int
        Translation rows complete (all angles measured).
    frames_per_s : float
        Mean rate since the first frame.
    eta_s : float or None
        Time to the end of the scan at that rate.
    latest_frame : array (rows, columns) or None
        The last frame received (``None`` for a pattern source).
    latest_pattern : array (bins,) or None
    radial : array (bins,)
        Radial axis (deg or 1/Å, see ``unit``).
    unit : {"tth", "q"}
    sinogram : array (n_translations, n_angles, bins)
        Received patterns in their scan cells (NaN where not yet measured).
    volume : array (y, x, bins) or None
        The current reconstruction (FBP of the complete cells).
    frames_in_image : int
        Frames received when ``volume`` last changed (new complete angles or rows).
    image_time : float
        ``time.monotonic()`` of that update.
    coverage : dict
        Angles covered and missing wedge (:func:`~xrdwidgets.live.progressive.coverage`).
    sirt : array (y, x, W) or None
        Warm-started SIRT of the windows (when enabled).
    finished : bool
        Every frame of the plan received and reconstructed.
    """

    frames: int
    n_frames: int
    angles_done: int
    n_angles: int
    rows_done: int
    frames_per_s: float
    eta_s: float | None
    latest_frame: np.ndarray | None
    latest_pattern: np.ndarray | None
    radial: np.ndarray | None
    unit: str
    sinogram: np.ndarray | None
    volume: np.ndarray | None
    frames_in_image: int
    image_time: float | None
    coverage: dict = field(default_factory=dict)
    sirt: np.ndarray | None = None
    finished: bool = False

    def summary(self) -> str:
        """One line: frames, angles, rate, ETA, missing wedge."""
        eta = "–" if self.eta_s is None else f"{self.eta_s:.0f} s"
        wedge = self.coverage.get("missing_wedge_deg")
        return (f"{self.frames}/{self.n_frames} frames, {self.angles_done}/{self.n_angles} angles, "
                f"{self.frames_per_s:.1f} frames/s, ETA {eta}"
                + (f", missing wedge {wedge:.1f}°" if wedge is not None else ""))


def window_images(volume, radial, windows) -> np.ndarray:
    """Mean of ``volume`` ``(y, x, bins)`` over each radial window ``(lo, hi)``: ``(y, x, W)``.

    A window holding no bin takes the nearest bin. FBP is linear, so this equals the FBP of the
    window-averaged sinogram.
    """
    r = np.asarray(radial, float)
    out = []
    for lo, hi in windows:
        sel = (r >= min(lo, hi)) & (r <= max(lo, hi))
        if not sel.any():
            sel = np.zeros(r.size, bool)
            sel[int(np.argmin(np.abs(r - 0.5 * (lo + hi))))] = True
        out.append(np.asarray(volume)[..., sel].mean(-1))
    return np.stack(out, -1)


def strongest_windows(radial, pattern, k: int = 3) -> list[tuple[float, float]]:
    """Radial windows ``(lo, hi)`` around the ``k`` most prominent peaks of ``pattern``.

    Each window spans the peak's full width at half prominence (at least one bin each side),
    in the units of ``radial``; sorted by position.
    """
    from scipy.signal import find_peaks, peak_widths

    r = np.asarray(radial, float)
    y = np.nan_to_num(np.asarray(pattern, float))
    peaks, props = find_peaks(y, prominence=0)
    if peaks.size == 0:
        return [(float(r[0]), float(r[-1]))]
    top = peaks[np.argsort(props["prominences"])[::-1][:k]]
    _, _, left, right = peak_widths(y, top, rel_height=0.5)
    out = []
    for pk, lo, hi in sorted(zip(top, left, right)):
        i0 = int(max(0, min(pk - 1, np.floor(lo))))
        i1 = int(min(r.size - 1, max(pk + 1, np.ceil(hi))))
        out.append((float(r[i0]), float(r[i1])))
    return out


class LiveSession:
    """Follow one acquisition (see the module docstring).

    Parameters
    ----------
    source : path-like or LiveSource
        A growing HDF5 file (frames or patterns) or a folder of frame files
        (:func:`~xrdwidgets.live.sources.open_live`).
    poni : path or pyFAI integrator, optional
        Calibration; required for frames, unused for patterns.
    plan : ScanPlan
        The declared scan plan (grid and acquisition order).
    options : IntegrationOptions, optional
        Or its fields as keywords; the same settings give the same patterns as the offline path.
    mask, dark, flat, use_file_mask :
        As :func:`xrdwidgets.integrate.iterate_integration`.
    update_every_s : float
        Least time between two reconstruction updates (the rate the user sets; 0: every poll).
    windows : list of (lo, hi), optional
        Radial windows (deg or 1/Å) for :attr:`LiveSnapshot.sirt` when ``sirt_iterations``.
    sirt_iterations : int
        SIRT iterations per update on the windows, warm-started (0: none).
    filter, circle, centre_offset, device :
        FBP settings (:class:`~xrdwidgets.live.progressive.ProgressiveFBP`).
    keep_frame : bool
        Keep the latest frame in the snapshot.
    """

    def __init__(self, source, poni=None, *, plan: ScanPlan, options: IntegrationOptions | None = None,
                 mask=None, dark=None, flat=None, use_file_mask: bool = True, update_every_s: float = 1.0,
                 windows=None, sirt_iterations: int = 0, filter: str = "ramp", circle: bool = True,
                 centre_offset: float = 0.0, device="cpu", keep_frame: bool = True, **option_kwargs):
        if not isinstance(plan, ScanPlan):
            raise InputTypeError(f"LiveSession: plan must be a ScanPlan, found {type(plan).__name__}")
        if options is None:
            options = IntegrationOptions(**option_kwargs)
        elif option_kwargs:
            raise InputTypeError(f"give options= or option keywords, not both ({sorted(option_kwargs)})")
        self.source: LiveSource = open_live(source)
        self.poni, self.options, self.plan = poni, options, plan
        self._mask, self._dark, self._flat, self._use_file_mask = mask, dark, flat, use_file_mask
        if poni is not None:
            load_poni(poni)   # a missing or bad PONI fails now, before any frame
        self.update_every_s = float(update_every_s)
        self.windows = [tuple(map(float, w)) for w in (windows or [])]
        self.keep_frame = keep_frame
        self._fbp_kw = dict(filter=filter, circle=circle, centre_offset=centre_offset, device=device)
        self._sirt = (WarmSIRT(plan.shape[0], plan.angles, n_iter=sirt_iterations, circle=circle,
                               centre_offset=centre_offset, device=device) if sirt_iterations else None)
        self._sirt_img = None
        self.cells = plan.frame_cells()
        self.n_frames = plan.n_frames
        self.rotation_fast = plan.order == "rotation-fast" and plan.cells is None
        self.integ = self.ai = None
        self.radial = None
        self.unit = options.unit
        self.patterns = None          # (n_frames, bins) in frame order
        self.sinogram = None          # (n_t, n_a, bins), NaN where not measured
        self.filled = np.zeros(plan.shape, bool)
        self.received = 0
        self.latest_frame = self.latest_pattern = None
        self.recon: ProgressiveFBP | None = None
        self._released = np.zeros(plan.shape[1] if not self.rotation_fast else plan.shape[0], bool)
        self._volume = None
        self._frames_in_image = 0
        self._image_time = None
        self._last_update = -np.inf
        self._t_first = None
        self._t_last = None
        self._mask_info = {}

    # ------------------------------------------------------------------ set-up on first data
    def _setup(self, first):
        src = self.source
        if src.kind == "frames":
            if self.poni is None:
                raise InputError(f"{src.name}: raw frames need a PONI file (poni=)")
            self.ai = load_poni(self.poni, shape=src.item_shape)
            full_mask, self._mask_info = combined_mask(self._mask, src.item_shape,
                                                       src.pixel_mask if self._use_file_mask else None)
            self.integ = Integrator(self.ai, src.item_shape, self.options, mask=full_mask, dark=self._dark,
                                    flat=self._flat)
            self.radial, self.unit = self.integ.radial, self.options.unit
        else:
            self.radial, self.unit = np.asarray(src.radial, float), src.radial_unit or "tth"
        bins = self.radial.size
        self.patterns = np.full((self.n_frames, bins), np.nan, np.float32)
        n_t, n_a = self.plan.shape
        self.sinogram = np.full((n_t, n_a, bins), np.nan, np.float32)
        self.recon = ProgressiveFBP(n_t, self.plan.angles, bins, **self._fbp_kw)

    # ------------------------------------------------------------------ polling
    def poll(self) -> int:
        """Read and integrate the frames completed since the last poll; returns how many."""
        items = self.source.poll()
        if items is None or len(items) == 0:
            return 0
        now = time.monotonic()
        if self.patterns is None:
            self._setup(items)
        start = self.received
        room = self.n_frames - start
        if len(items) > room:
            raise ScanPlanError(f"{self.source.name}: {start + len(items)} frames received; the scan plan has "
                                f"{self.n_frames} ({self.plan.shape[0]} translations × {self.plan.shape[1]} angles)")
        pats = self.integ.integrate(items) if self.integ is not None else np.asarray(items, np.float32)
        stop = start + len(items)
        self.patterns[start:stop] = pats
        c = self.cells[start:stop]
        self.sinogram[c[:, 0], c[:, 1]] = pats
        self.filled[c[:, 0], c[:, 1]] = True
        self.received = stop
        if self.keep_frame and self.source.kind == "frames":
            self.latest_frame = np.asarray(items[-1])
        self.latest_pattern = pats[-1]
        self._t_first = self._t_first or now
        self._t_last = now
        return len(items)

    def update(self, *, force: bool = False) -> bool:
        """Add the newly complete angles (or rows) to the reconstruction if an update is due."""
        if self.recon is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_update < self.update_every_s:
            return False
        before = self.recon.updates
        if self.rotation_fast:
            rows = np.flatnonzero(self.filled.all(axis=1) & ~self._released)
            if rows.size:
                delta = np.zeros(self.sinogram.shape, np.float32)
                delta[rows] = self.sinogram[rows]
                self.recon.add(np.arange(self.plan.shape[1]), delta)
                self._released[rows] = True
        else:
            cols = np.flatnonzero(self.filled.all(axis=0) & ~self._released)
            if cols.size:
                self.recon.add(cols, self.sinogram[:, cols])
                self._released[cols] = True
        self._last_update = now
        if self.recon.updates == before:     # nothing new became complete: the images stand
            return False
        self._volume = self.recon.image()
        if self._sirt is not None and self.windows:
            done = self.filled.all(axis=0)
            win = window_images(np.nan_to_num(self.sinogram), self.radial, self.windows)
            self._sirt_img = self._sirt.update(win, done)
        self._frames_in_image = self.received
        self._image_time = now
        return True

    def step(self) -> LiveSnapshot:
        """One poll and, when due, one reconstruction update; the snapshot after them."""
        self.poll()
        self.update(force=self.complete)
        return self.snapshot()

    @property
    def complete(self) -> bool:
        """Every frame of the plan received."""
        return self.received >= self.n_frames

    @property
    def finished(self) -> bool:
        """Every frame received and in the reconstruction."""
        return self.complete and self._frames_in_image >= self.n_frames

    def snapshot(self) -> LiveSnapshot:
        n = self.received
        rate = 0.0
        if self._t_first is not None and self._t_last > self._t_first and n > 1:
            rate = (n - 1) / (self._t_last - self._t_first)
        eta = (self.n_frames - n) / rate if rate > 0 else None
        return LiveSnapshot(
            frames=n, n_frames=self.n_frames, angles_done=int(self.filled.all(axis=0).sum()),
            n_angles=self.plan.shape[1], rows_done=int(self.filled.all(axis=1).sum()), frames_per_s=rate,
            eta_s=eta, latest_frame=self.latest_frame, latest_pattern=self.latest_pattern, radial=self.radial,
            unit=self.unit, sinogram=self.sinogram, volume=self._volume, frames_in_image=self._frames_in_image,
            image_time=self._image_time,
            coverage=self.recon.coverage() if self.recon is not None else {},
            sirt=self._sirt_img, finished=self.finished)

    # ------------------------------------------------------------------ xarray views
    def stack(self, *, checksums: bool = True) -> xr.DataArray:
        """The sinogram stack of the frames received (NaN where not yet measured).

        Once the scan is complete this equals :func:`xrdwidgets.integrate.integrate` of the
        same files with the same plan and settings.
        """
        if self.patterns is None:
            raise InputError(f"{self.source.name}: no frame received yet")
        if self.integ is not None:
            return stack_from_patterns(self.patterns, self.plan, self.integ, self.ai, poni=self.poni,
                                       poni_text=poni_text(self.poni, self.ai), mask_info=self._mask_info,
                                       files=self.source.files, raw_name=self.source.name,
                                       checksums=checksums and self.complete)
        idx = self.plan.acquisition_index()
        data = self.patterns[idx.ravel()].reshape(idx.shape + (self.radial.size,))
        da = _data.sinogram_stack(data, translation=self.plan.translations, angle=self.plan.angles,
                                  spectral=self.radial, spectral_dim=self.unit, name="sinogram",
                                  units="counts", validate_values=False,
                                  attrs={"live_source": self.source.name,
                                         "integrate_plan": json.dumps(self.plan.to_dict()),
                                         **_data.provenance("xrdwidgets.live", {"source": self.source.name})})
        if self.plan.translation_units != "mm":
            da["translation"].attrs["units"] = _data.PIXEL_UNITS
        da[self.unit].attrs["units"] = UNITS[self.unit][1]
        return da

    def volume(self) -> xr.DataArray | None:
        """The current reconstruction as a volume ``(y, x, tth | q)`` (coords as the offline FBP)."""
        if self._volume is None:
            return None
        from ..recon.stack import assemble_volume

        cov = self.recon.coverage()
        return assemble_volume(self.stack(checksums=False), self._volume, (), self.unit, self._volume.shape[0],
                               "xrdwidgets.live", {"angles": cov["angles"], "missing_wedge_deg": cov["missing_wedge_deg"],
                                                   "frames": self._frames_in_image})

    def close(self):
        self.source.close()


def iterate_live(source, poni=None, *, plan: ScanPlan, period_s: float = 0.5, idle_timeout_s: float | None = None,
                 stop=None, **kwargs):
    """Follow an acquisition to its end (a generator of :class:`Progress`).

    Parameters
    ----------
    source, poni, plan, **kwargs :
        See :class:`LiveSession`; or ``session=`` an existing :class:`LiveSession` (then
        ``source`` and ``poni`` are ignored), e.g. to read its state while it runs.
    period_s : float
        Polling period (s).
    idle_timeout_s : float, optional
        Give up (``TimeoutError``) when no frame arrived for this long.
    stop : threading.Event, optional
        Set it to end the loop early (returns the partial stack).

    Yields
    ------
    Progress
        After each poll that brought frames or updated the images: ``iteration`` = frames,
        ``total`` = frames of the plan, ``metrics``: ``frames``, ``n_frames``, ``angles``,
        ``frames_per_s``, ``eta_s``, ``missing_wedge_deg``, ``snapshot`` (a
        :class:`LiveSnapshot`).

    Returns
    -------
    xarray.DataArray
        The sinogram stack (complete unless stopped early).
    """
    sess = kwargs.pop("session", None) or LiveSession(source, poni, plan=plan, **kwargs)
    return _loop(sess, float(period_s), idle_timeout_s, stop)


def _loop(sess: LiveSession, period, idle_timeout, stop):
    last_new = time.monotonic()
    try:
        while True:
            t0 = time.monotonic()
            got = sess.poll()
            updated = sess.update(force=sess.complete)
            if got:
                last_new = t0
            if got or updated:
                snap = sess.snapshot()
                yield Progress(iteration=snap.frames, total=snap.n_frames,
                               metrics={"frames": snap.frames, "n_frames": snap.n_frames,
                                        "angles": snap.angles_done, "frames_per_s": snap.frames_per_s,
                                        "eta_s": snap.eta_s,
                                        "missing_wedge_deg": snap.coverage.get("missing_wedge_deg"),
                                        "snapshot": snap})
            if sess.finished or (stop is not None and stop.is_set()):
                break
            if sess.source.writer_done and not got and not sess.complete:
                raise ScanPlanError(f"{sess.source.name}: the writer finished after {sess.received} frames; "
                                    f"the scan plan expects {sess.n_frames}")
            if idle_timeout is not None and time.monotonic() - last_new > idle_timeout:
                raise TimeoutError(f"{sess.source.name}: no new frame for {idle_timeout:g} s "
                                   f"({sess.received}/{sess.n_frames} frames received)")
            time.sleep(max(0.0, period - (time.monotonic() - t0)))
        return sess.stack()
    finally:
        sess.close()


def live(source, poni=None, **kwargs) -> xr.DataArray:
    """Run :func:`iterate_live` to the end (``callback=`` receives every Progress)."""
    callback = kwargs.pop("callback", None)
    return run_to_end(iterate_live(source, poni, **kwargs), callback)
