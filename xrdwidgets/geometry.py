"""Scan geometry of a pencil-beam XRD-CT measurement, as a small immutable value.

A :class:`ScanGeometry` travels with the data in the xarray ``attrs`` under the documented keys
below (:data:`ATTR_KEYS`), and so round-trips through every file format the package writes.

Conventions
-----------
* Translation positions are measured along the scan axis, in mm, relative to the *middle* of the
  translation range: position ``i`` of ``n`` is ``(i - (n - 1) / 2) * translation_step_mm``.
* The rotation axis lies at ``centre_offset`` translation steps from that middle (0: the axis is
  in the middle, index ``(n - 1) / 2``; +1: one step towards higher indices).
* Angles are in degrees, counter-clockwise, over ``angle_range_deg`` (end excluded).
* ``distance_mm`` is the distance from the rotation axis (sample centre) to the detector along
  the beam; it sets the size of the thick-sample parallax effect.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .conversions import HC_KEV_ANGSTROM
from .base.validators import check_float
from .base.errors import InputError

__all__ = ["ScanGeometry", "ATTR_PREFIX", "ATTR_KEYS"]

#: Prefix of every geometry key in an xarray ``attrs`` dictionary.
ATTR_PREFIX = "geometry_"

_FLOAT_FIELDS = (
    "energy_keV",
    "distance_mm",
    "translation_step_mm",
    "pixel_size_mm",
    "centre_offset",
    "ed_tth_deg",
)

#: Documented attribute keys, ``attrs[key] -> field``.
ATTR_KEYS = {ATTR_PREFIX + f: f for f in _FLOAT_FIELDS + ("angle_range_deg",)}


def _check_positive(name, value, *, allow_none=True):
    if value is None and allow_none:
        return None
    return check_float("ScanGeometry", name, value, minimum=0.0, strict=True)


@dataclass(frozen=True, kw_only=True, eq=False)
class ScanGeometry:
    """Geometry of a pencil-beam XRD-CT scan (immutable; build with keywords).

    Parameters
    ----------
    energy_keV : float, optional
        X-ray photon energy in keV (monochromatic, angle-dispersive). Give this or
        ``wavelength_A`` to :meth:`create`.
    distance_mm : float, optional
        Rotation axis (sample centre) to detector distance, mm.
    translation_step_mm : float, optional
        Step of the sample translation (pencil-beam positions), mm.
    pixel_size_mm : float, optional
        Detector pixel size, mm.
    centre_offset : float
        Rotation-axis position relative to the middle of the translation range, in translation
        steps (0 means the axis sits at index ``(n - 1) / 2``).
    angle_range_deg : tuple of float
        ``(start, stop)`` of the rotation in degrees, stop excluded, e.g. ``(0, 180)`` or
        ``(0, 360)``.
    ed_tth_deg : float, optional
        Fixed scattering angle 2θ (deg) of an energy-dispersive detector.
    """

    energy_keV: float | None = None
    distance_mm: float | None = None
    translation_step_mm: float | None = None
    pixel_size_mm: float | None = None
    centre_offset: float = 0.0
    angle_range_deg: tuple = field(default=(0.0, 180.0))
    ed_tth_deg: float | None = None

    def __post_init__(self):
        for name in ("energy_keV", "distance_mm", "translation_step_mm", "pixel_size_mm", "ed_tth_deg"):
            object.__setattr__(self, name, _check_positive(name, getattr(self, name)))
        try:
            off = float(self.centre_offset)
        except (TypeError, ValueError):
            raise InputError(
                f"ScanGeometry.centre_offset: expected a number, found {self.centre_offset!r}"
            ) from None
        if not math.isfinite(off):
            raise InputError(f"ScanGeometry.centre_offset: expected a finite number, found {off!r}")
        object.__setattr__(self, "centre_offset", off)
        rng = tuple(float(v) for v in np.ravel(self.angle_range_deg))
        if len(rng) != 2 or not all(math.isfinite(v) for v in rng) or rng[1] <= rng[0]:
            raise InputError(
                "ScanGeometry.angle_range_deg: expected (start, stop) in degrees with stop > start, "
                f"found {self.angle_range_deg!r}"
            )
        object.__setattr__(self, "angle_range_deg", rng)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, *, wavelength_A=None, energy_keV=None, **kwargs) -> "ScanGeometry":
        """Build a geometry giving either ``energy_keV`` or ``wavelength_A`` (Å)."""
        if wavelength_A is not None and energy_keV is not None:
            raise InputError("ScanGeometry.create: give energy_keV or wavelength_A, not both")
        if wavelength_A is not None:
            energy_keV = HC_KEV_ANGSTROM / _check_positive("wavelength_A", wavelength_A, allow_none=False)
        return cls(energy_keV=energy_keV, **kwargs)

    def replace(self, **changes) -> "ScanGeometry":
        """A copy with some fields changed (``wavelength_A`` accepted)."""
        if "wavelength_A" in changes:
            lam = changes.pop("wavelength_A")
            changes["energy_keV"] = None if lam is None else HC_KEV_ANGSTROM / _check_positive(
                "wavelength_A", lam, allow_none=False
            )
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ derived values
    @property
    def wavelength_A(self) -> float | None:
        """Wavelength in Å (``None`` when the energy is unknown)."""
        return None if self.energy_keV is None else HC_KEV_ANGSTROM / self.energy_keV

    @property
    def full_rotation(self) -> bool:
        """True when the angle range covers 360° (0–360 scans)."""
        return self.angle_range_deg[1] - self.angle_range_deg[0] > 180.0 + 1e-9

    def angles(self, n: int) -> np.ndarray:
        """``n`` evenly spaced angles over ``angle_range_deg`` (stop excluded), degrees."""
        n = int(n)
        if n < 1:
            raise InputError(f"angles: expected n >= 1, found {n}")
        return np.linspace(*self.angle_range_deg, n, endpoint=False)

    def translations(self, n: int) -> np.ndarray:
        """Positions of ``n`` translations relative to the middle of the range.

        In mm when ``translation_step_mm`` is known, else in translation steps.
        """
        n = int(n)
        if n < 1:
            raise InputError(f"translations: expected n >= 1, found {n}")
        step = self.translation_step_mm or 1.0
        return (np.arange(n) - (n - 1) / 2.0) * step

    # ------------------------------------------------------------------ attrs round trip
    def to_attrs(self) -> dict:
        """Flat dict of the documented ``geometry_*`` keys (``None`` fields are left out)."""
        out = {}
        for f in _FLOAT_FIELDS:
            v = getattr(self, f)
            if v is not None:
                out[ATTR_PREFIX + f] = float(v)
        out[ATTR_PREFIX + "angle_range_deg"] = [float(v) for v in self.angle_range_deg]
        return out

    @classmethod
    def from_attrs(cls, attrs) -> "ScanGeometry | None":
        """Geometry from an ``attrs`` mapping, or ``None`` when no ``geometry_*`` key is present."""
        found = {ATTR_KEYS[k]: v for k, v in attrs.items() if k in ATTR_KEYS}
        if not found:
            return None
        if "angle_range_deg" in found:
            found["angle_range_deg"] = tuple(np.ravel(found["angle_range_deg"]).tolist())
        for k, v in list(found.items()):
            if isinstance(v, np.generic):
                found[k] = v.item()
        return cls(**found)

    # ------------------------------------------------------------------ comparison
    def isclose(self, other, *, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
        """Equality within tolerance, field by field (``None`` equals only ``None``)."""
        if not isinstance(other, ScanGeometry):
            return False
        for f in _FLOAT_FIELDS:
            a, b = getattr(self, f), getattr(other, f)
            if (a is None) != (b is None):
                return False
            if a is not None and not math.isclose(a, b, rel_tol=rtol, abs_tol=atol):
                return False
        return all(
            math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
            for a, b in zip(self.angle_range_deg, other.angle_range_deg)
        )

    def __eq__(self, other):
        if not isinstance(other, ScanGeometry):
            return NotImplemented
        return self.isclose(other)

    def __hash__(self):
        # consistent with tolerant equality: only the pattern of known fields is hashed
        return hash(tuple(getattr(self, f) is None for f in _FLOAT_FIELDS))

    def __repr__(self):
        parts = [
            f"{f}={getattr(self, f)!r}"
            for f in _FLOAT_FIELDS
            if getattr(self, f) is not None and not (f == "centre_offset" and self.centre_offset == 0)
        ]
        if self.angle_range_deg != (0.0, 180.0):
            parts.append(f"angle_range_deg={self.angle_range_deg!r}")
        return f"ScanGeometry({', '.join(parts)})"
