"""Scan plans: which (translation, angle) point each detector frame belongs to.

A pencil-beam XRD-CT scan records one frame per point of a ``n_translations × n_angles`` grid,
in an acquisition order. :class:`ScanPlan` declares the grid and the order; it gives the grid
cell of every frame (:meth:`ScanPlan.frame_cells`). When the raw file holds motor positions,
:func:`plan_from_motors` builds the plan from them instead (any order, continuous rotation
included: positions are snapped to the nearest grid value within a tolerance).

Orders (``order``)
    ``"raster"``, ``"zigzag"``, ``"interlaced"``, ``"interlaced-zigzag"``: translation is the
    fast axis, lines of constant angle (as :func:`xrdwidgets.sim.scan.acquisition_order`).
    ``"rotation-fast"``: the angle is the fast axis (a full rotation per translation, e.g.
    continuous rotation with frames read on the fly), translations in increasing order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import DataError
from ..sim.scan import SCAN_ORDERS, acquisition_order

__all__ = ["PLAN_ORDERS", "ScanPlan", "plan_from_motors", "ScanPlanError"]

#: Accepted values of :attr:`ScanPlan.order`.
PLAN_ORDERS = SCAN_ORDERS + ("rotation-fast",)


class ScanPlanError(DataError):
    """Frames and scan plan do not fit (count, grid, duplicates); the message says how."""


@dataclass(frozen=True, kw_only=True)
class ScanPlan:
    """Grid and acquisition order of a pencil-beam scan.

    Parameters
    ----------
    translations : array (n_translations,)
        Translation positions, increasing (mm, or steps).
    angles : array (n_angles,)
        Rotation angles in degrees, increasing.
    order : str
        One of :data:`PLAN_ORDERS`.
    n_subsets : int
        Interlaced orders: number of angle subsets.
    cells : array (n_frames, 2), optional
        Explicit (translation index, angle index) of each frame (from motors); overrides
        ``order``.
    translation_units : str
        ``"mm"`` or ``"steps"``.
    """

    translations: np.ndarray
    angles: np.ndarray
    order: str = "raster"
    n_subsets: int = 4
    cells: np.ndarray | None = field(default=None, repr=False)
    translation_units: str = "mm"

    def __post_init__(self):
        t = np.asarray(self.translations, float).ravel()
        a = np.asarray(self.angles, float).ravel()
        for name, v in (("translations", t), ("angles", a)):
            if v.size < 1 or not np.all(np.isfinite(v)) or (v.size > 1 and not np.all(np.diff(v) > 0)):
                raise ScanPlanError(f"ScanPlan.{name}: expected finite strictly increasing values, "
                                    f"found {v[:8]}{'…' if v.size > 8 else ''}")
        if self.order not in PLAN_ORDERS:
            raise ScanPlanError(f"ScanPlan.order: expected one of {PLAN_ORDERS}, found {self.order!r}")
        object.__setattr__(self, "translations", t)
        object.__setattr__(self, "angles", a)
        if self.cells is not None:
            c = np.asarray(self.cells, np.int64)
            if c.ndim != 2 or c.shape[1] != 2:
                raise ScanPlanError(f"ScanPlan.cells: expected shape (n_frames, 2), found {c.shape}")
            object.__setattr__(self, "cells", c)

    @classmethod
    def regular(cls, n_translations: int, n_angles: int, *, translation_step_mm: float | None = None,
                angle_range_deg=(0.0, 180.0), order: str = "raster", n_subsets: int = 4) -> "ScanPlan":
        """A plan on the regular grid of :class:`~xrdwidgets.geometry.ScanGeometry` (centred
        translations, angles over ``angle_range_deg`` with the stop excluded)."""
        from ..geometry import ScanGeometry

        g = ScanGeometry(translation_step_mm=translation_step_mm, angle_range_deg=angle_range_deg)
        return cls(translations=g.translations(int(n_translations)), angles=g.angles(int(n_angles)),
                   order=order, n_subsets=n_subsets,
                   translation_units="mm" if translation_step_mm else "steps")

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_translations, n_angles)``."""
        return self.translations.size, self.angles.size

    @property
    def n_frames(self) -> int:
        """Frames the plan expects."""
        return int(self.cells.shape[0]) if self.cells is not None else int(np.prod(self.shape))

    def acquisition_index(self) -> np.ndarray:
        """Frame index of every grid point, shape ``(n_translations, n_angles)``."""
        n_t, n_a = self.shape
        if self.cells is not None:
            idx = np.full((n_t, n_a), -1, np.int64)
            idx[self.cells[:, 0], self.cells[:, 1]] = np.arange(self.cells.shape[0])
            return idx
        if self.order == "rotation-fast":
            return np.arange(n_t)[:, None] * n_a + np.arange(n_a)[None, :]
        return acquisition_order(n_t, n_a, self.order, n_subsets=self.n_subsets)[0]

    def frame_cells(self) -> np.ndarray:
        """``(n_frames, 2)`` int array: (translation index, angle index) of each frame."""
        if self.cells is not None:
            return self.cells
        idx = self.acquisition_index()
        cells = np.empty((idx.size, 2), np.int64)
        t, a = np.indices(idx.shape)
        cells[idx.ravel(), 0] = t.ravel()
        cells[idx.ravel(), 1] = a.ravel()
        return cells

    def check_frames(self, n_frames: int, where: str = "frames"):
        """Raise :class:`ScanPlanError` unless ``n_frames`` equals :attr:`n_frames`."""
        if int(n_frames) != self.n_frames:
            n_t, n_a = self.shape
            hint = ("; a scan still being written is followed with xrdwidgets.live (`xrdwidgets live`)"
                    if int(n_frames) < self.n_frames else "")
            raise ScanPlanError(f"{where}: {n_frames} frames do not fit the scan plan of {n_t} "
                                f"translations × {n_a} angles ({self.n_frames} frames expected){hint}")

    def to_dict(self) -> dict:
        """JSON-friendly description (for provenance)."""
        return {"n_translations": self.shape[0], "n_angles": self.shape[1], "order": self.order,
                "n_subsets": self.n_subsets, "from_motors": self.cells is not None,
                "translation_units": self.translation_units}


def _grid(values, n, name, tol):
    """Snap motor ``values`` to a grid of ``n`` points (given) or the clusters found."""
    v = np.asarray(values, float)
    if n is None:
        s = np.sort(v)
        gaps = np.diff(s)
        step = np.max(gaps) if gaps.size else 0.0
        if step <= 0:
            return np.array([s[0]]), np.zeros(v.size, np.int64)
        breaks = gaps > tol * step
        labels = np.concatenate([[0], np.cumsum(breaks)])
        grid = np.array([s[labels == k].mean() for k in range(labels[-1] + 1)])
    else:
        lo, hi = np.min(v), np.max(v)
        grid = np.linspace(lo, hi, int(n)) if n > 1 else np.array([lo])
    idx = np.abs(v[:, None] - grid[None, :]).argmin(axis=1)
    step = np.median(np.diff(grid)) if grid.size > 1 else np.inf
    off = np.abs(v - grid[idx])
    if grid.size > 1 and np.max(off) > tol * step:
        k = int(np.argmax(off))
        raise ScanPlanError(f"motor {name!r}: frame {k} at {v[k]:.6g} is {off[k]:.3g} from the nearest "
                            f"grid position {grid[idx[k]]:.6g} (tolerance {tol:g} × step {step:.3g})")
    return grid, idx


def plan_from_motors(translation, rotation, *, n_translations: int | None = None,
                     n_angles: int | None = None, tolerance: float = 0.3,
                     translation_units: str = "mm") -> ScanPlan:
    """A plan from the recorded motor position of every frame.

    Parameters
    ----------
    translation, rotation : array (n_frames,)
        Translation (mm) and rotation angle (deg) of each frame, in frame order.
    n_translations, n_angles : int, optional
        Grid sizes; default: the clusters of distinct positions.
    tolerance : float
        Largest distance from a grid position, as a fraction of the grid step (continuous
        rotation: the angle read at each frame may lie off the nominal grid).

    Raises
    ------
    ScanPlanError
        A frame off the grid, a grid point measured twice or never.
    """
    t = np.asarray(translation, float).ravel()
    r = np.asarray(rotation, float).ravel()
    if t.shape != r.shape:
        raise ScanPlanError(f"motors: translation has {t.size} positions, rotation {r.size}; "
                            "expected one of each per frame")
    tg, ti = _grid(t, n_translations, "translation", tolerance)
    ag, ai = _grid(r, n_angles, "rotation", tolerance)
    count = np.zeros((tg.size, ag.size), np.int64)
    np.add.at(count, (ti, ai), 1)
    if np.any(count != 1):
        dup = np.argwhere(count > 1)
        miss = np.argwhere(count == 0)
        raise ScanPlanError(f"motors: the {t.size} frames do not cover the {tg.size} × {ag.size} grid "
                            f"once each: {len(dup)} points measured twice or more "
                            f"(first (translation, angle) index {dup[0].tolist() if len(dup) else None}), "
                            f"{len(miss)} never (first {miss[0].tolist() if len(miss) else None})")
    return ScanPlan(translations=tg, angles=ag, cells=np.stack([ti, ai], axis=1),
                    order="raster", translation_units=translation_units)
