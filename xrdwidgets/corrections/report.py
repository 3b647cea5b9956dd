"""The reports of the corrections: what each one found, as a small frozen dataclass.

Every correction returns ``(corrected, report)``; ``report.summary()`` is a one-line text and
``report.name`` the step (``"air"``, ``"decay"``, ``"jitter"``, ``"centre"``). What a stack says
was done to it: :func:`applied_corrections`; the image to compare before and after:
:func:`summary_sinogram`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import xarray as xr

from .. import data as _data

__all__ = ["AirResult", "DecayResult", "JitterResult", "CentreResult", "applied_corrections",
           "summary_sinogram"]


class _Report:
    """Base of the correction reports: a name and a one-line summary."""

    name: ClassVar[str] = "correction"

    def summary(self) -> str:  # pragma: no cover - overridden
        return self.name


@dataclass(frozen=True, eq=False)
class AirResult(_Report):
    """What :func:`.remove_air` found.

    Attributes
    ----------
    edges : (int, int)
        Number of air-only translations used at the low-index and high-index ends.
    detected : bool
        ``True`` when ``edges`` was detected from the data, ``False`` when given.
    mode, statistic : str
        Background model (:data:`.AIR_MODES`) and statistic (:data:`.STATISTICS`).
    pattern : xarray.DataArray (spectral)
        Estimated air pattern per point, in the stack's units, at the median beam intensity
        (the background subtracted at angle ``j`` is ``scale[j] · pattern``; for
        ``mode="per_angle"`` that holds for the pattern's sum only).
    scale : xarray.DataArray (angle)
        Relative air level of each projection (1 at the median; all 1 for ``mode="global"``).
    n_clipped : int
        Values set to 0 by ``clip=True``.
    """

    name: ClassVar[str] = "air"
    edges: tuple
    detected: bool
    mode: str
    statistic: str
    pattern: xr.DataArray
    scale: xr.DataArray
    n_clipped: int = 0

    def summary(self) -> str:
        return (f"air: {self.mode} {self.statistic} of edges {self.edges}"
                f"{' (detected)' if self.detected else ''}; pattern sum {float(self.pattern.sum()):.4g}, "
                f"scale {float(self.scale.min()):.3f}–{float(self.scale.max()):.3f}"
                + (f", {self.n_clipped} values clipped" if self.n_clipped else ""))


@dataclass(frozen=True, eq=False)
class DecayResult(_Report):
    """What :func:`.normalise_decay` found.

    Attributes
    ----------
    factors : xarray.DataArray (angle) or (translation, angle)
        Relative beam intensity the data were divided by (1 at the reference).
    source : str
        ``"totals"`` (projection sums of the data) or ``"monitor"``.
    reference : str
        ``"median"``, ``"first"`` or ``"max"``: where the factors equal 1.
    """

    name: ClassVar[str] = "decay"
    factors: xr.DataArray
    source: str
    reference: str

    def summary(self) -> str:
        f = self.factors.values
        return (f"decay: {self.source} relative to the {self.reference}, factors "
                f"{float(f.min()):.4f}–{float(f.max()):.4f}")


@dataclass(frozen=True, eq=False)
class JitterResult(_Report):
    """What :func:`.correct_jitter` found.

    Attributes
    ----------
    shifts_steps : xarray.DataArray (angle)
        Shift applied to each projection, translation steps (positive: towards higher indices);
        minus the measured jitter.
    com_steps : xarray.DataArray (angle)
        Measured centre of mass of each projection, steps from the middle of the translations.
    sinusoid : (float, float, float)
        ``(c, a, b)`` of ``COM(θ) = c + a cos θ + b sin θ`` (steps from the middle).
    axis_offset_steps : float
        The rotation-axis position implied by the fit (``c``), steps from the middle.
    rms_steps : float
        Root mean square of the shifts.
    interpolation : str
        :data:`.INTERPOLATIONS` used to shift.
    """

    name: ClassVar[str] = "jitter"
    shifts_steps: xr.DataArray
    com_steps: xr.DataArray
    sinusoid: tuple
    axis_offset_steps: float
    rms_steps: float
    interpolation: str

    def summary(self) -> str:
        s = self.shifts_steps.values
        return (f"jitter: rms {self.rms_steps:.3f} steps, max {float(np.abs(s).max()):.3f}; "
                f"axis from the COM sinusoid at {self.axis_offset_steps:+.3f} steps")


@dataclass(frozen=True, eq=False)
class CentreResult(_Report):
    """What :func:`.find_centre` / :func:`.correct_centre` found.

    Attributes
    ----------
    offset_steps : float
        Rotation-axis position relative to the middle of the translations, steps (the
        ``centre_offset`` convention of :class:`~xrdwidgets.geometry.ScanGeometry`).
    method : str
        Method that gave ``offset_steps`` (:data:`.CENTRE_METHODS` or ``"given"``).
    estimates : dict
        Offset found by each method tried, ``{method: steps}``.
    candidates_steps, scores : numpy.ndarray or None
        The FBP image-metric curve (offsets tried and their metric, lower is better).
    metric : str or None
        Metric of the curve (:data:`.CENTRE_METRICS`).
    n_pairs : int
        Opposing projection pairs (θ, θ + 180°) used (0 when not used).
    apply : str or None
        ``"geometry"`` or ``"shift"`` after :func:`.correct_centre`; ``None`` from :func:`.find_centre`.
    previous_offset_steps : float
        ``centre_offset`` of the geometry stored with the input (0 when none).
    """

    name: ClassVar[str] = "centre"
    offset_steps: float
    method: str
    estimates: dict = field(default_factory=dict)
    candidates_steps: np.ndarray | None = None
    scores: np.ndarray | None = None
    metric: str | None = None
    n_pairs: int = 0
    apply: str | None = None
    previous_offset_steps: float = 0.0

    def summary(self) -> str:
        est = ", ".join(f"{k} {v:+.3f}" for k, v in self.estimates.items())
        return (f"centre: {self.offset_steps:+.3f} steps by {self.method}"
                + (f" ({est})" if est else "") + (f", applied to the {self.apply}" if self.apply else ""))


def applied_corrections(da: xr.DataArray) -> list:
    """Corrections already applied to a stack.

    Parameters
    ----------
    da : xarray.DataArray
        A sinogram stack (any dims).

    Returns
    -------
    list of str
        The steps recorded in ``attrs["corrections"]`` (e.g. ``["decay", "air"]``), in order.
    """
    return [s.strip() for s in str(da.attrs.get("corrections", "")).split(",") if s.strip()]


def summary_sinogram(stack, max_size: int = 256) -> xr.DataArray:
    """The channel-summed sinogram of a stack, block-averaged for display.

    Parameters
    ----------
    stack : xarray.DataArray
        Sinogram stack with dims ``translation``, ``angle`` and a spectral dim.
    max_size : int
        Images larger than this per axis are block-averaged (:func:`xrdwidgets.explore.decimate`).

    Returns
    -------
    xarray.DataArray
        ``(angle, translation)`` float32, the sum over the spectral channels in the stack's
        units, with the (decimated) angle (deg) and translation coordinates.
    """
    from ..explore import decimate

    spec = _data.spectral_dim(stack)
    img = stack.sum(spec).transpose("angle", "translation").astype(np.float32)
    return decimate(img, max_size)
