"""Ellipses and circles: exact rasters (area fractions) and chord lengths."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .shape import Shape, check_scalar, check_vector


def _disk_triangle_area(ax, ay, bx, by):
    """Signed area of (unit disk ∩ triangle (0, A, B)), vectorised; sign of the turn A → B."""
    dx, dy = bx - ax, by - ay
    dd = dx * dx + dy * dy
    ad = ax * dx + ay * dy
    disc = ad * ad - dd * (ax * ax + ay * ay - 1.0)
    ok = (disc > 0) & (dd > 0)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    dds = np.where(ok, dd, 1.0)
    s1 = np.where(ok, np.clip((-ad - sq) / dds, 0.0, 1.0), 0.0)
    s2 = np.where(ok, np.clip((-ad + sq) / dds, 0.0, 1.0), 0.0)
    p1x, p1y = ax + s1 * dx, ay + s1 * dy
    p2x, p2y = ax + s2 * dx, ay + s2 * dy

    def sector(ux, uy, vx, vy):
        return np.arctan2(ux * vy - uy * vx, ux * vx + uy * vy)

    return 0.5 * (sector(ax, ay, p1x, p1y) + (p1x * p2y - p1y * p2x) + sector(p2x, p2y, bx, by))


@dataclass(frozen=True)
class Ellipse(Shape):
    """A filled ellipse of constant ``value``.

    Parameters
    ----------
    value : float
        Value inside (added to overlapping shapes in a :class:`Phantom`).
    centre : (float, float)
        ``(x, y)`` of the centre, image units.
    axes : (float, float)
        Half-axes ``(a, b) > 0``; ``a`` lies along the direction ``angle_deg``.
    angle_deg : float
        Rotation of the first axis from ``+x``, degrees, counter-clockwise as displayed.
    """

    value: float = 1.0
    centre: tuple = (0.0, 0.0)
    axes: tuple = (0.5, 0.5)
    angle_deg: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "value", check_scalar("value", self.value))
        object.__setattr__(self, "centre", check_vector("centre", self.centre, 2))
        object.__setattr__(self, "axes", check_vector("axes", self.axes, 2, positive=True))
        object.__setattr__(self, "angle_deg", check_scalar("angle_deg", self.angle_deg))

    # unit vectors of the two axes in (x, y)
    def _frame(self):
        phi = math.radians(self.angle_deg)
        c, s = math.cos(phi), math.sin(phi)
        return (c, -s), (-s, -c)

    @property
    def area(self) -> float:
        return math.pi * self.axes[0] * self.axes[1]

    @property
    def bounds(self) -> tuple:
        a, b = self.axes
        phi = math.radians(self.angle_deg)
        hx = math.hypot(a * math.cos(phi), b * math.sin(phi))
        hy = math.hypot(a * math.sin(phi), b * math.cos(phi))
        x0, y0 = self.centre
        return (x0 - hx, x0 + hx, y0 - hy, y0 + hy)

    def _unit(self, x, y):
        (e1x, e1y), (e2x, e2y) = self._frame()
        dx, dy = x - self.centre[0], y - self.centre[1]
        return (dx * e1x + dy * e1y) / self.axes[0], (dx * e2x + dy * e2y) / self.axes[1]

    def contains(self, x, y) -> np.ndarray:
        """Boolean mask of the points ``(x, y)`` (broadcast) inside the ellipse."""
        u, v = self._unit(np.asarray(x, float), np.asarray(y, float))
        return u * u + v * v <= 1.0

    def _chords(self, s, cos_t, sin_t):
        a, b = self.axes
        phi = math.radians(self.angle_deg)
        cg = cos_t * math.cos(phi) + sin_t * math.sin(phi)  # cos(θ - φ)
        sg = sin_t * math.cos(phi) - cos_t * math.sin(phi)  # sin(θ - φ)
        w2 = (a * cg) ** 2 + (b * sg) ** 2  # squared half-width of the projection
        d = s - (self.centre[0] * cos_t - self.centre[1] * sin_t)
        r = w2 - d * d
        return np.where(r > 0, (2.0 * a * b) * np.sqrt(np.maximum(r, 0.0)) / w2, 0.0)

    def _exact_fraction(self, xe, ye):
        h = xe[1] - xe[0]
        xc = 0.5 * (xe[:-1] + xe[1:])[None, :]
        yc = 0.5 * (ye[:-1] + ye[1:])[:, None]
        u, v = self._unit(xc, yc)
        rho = np.sqrt(u * u + v * v)
        # rho is Lipschitz with constant 1/min(a, b): pixels farther than the half-diagonal
        # from the boundary are entirely inside or outside
        tol = (h / math.sqrt(2.0)) / min(self.axes) * (1.0 + 1e-9) + 1e-12
        frac = (rho < 1.0).astype(np.float64)
        iy, ix = np.nonzero(np.abs(rho - 1.0) <= tol)
        if iy.size:
            xs = (xe[ix], xe[ix + 1], xe[ix + 1], xe[ix])
            ys = (ye[iy], ye[iy], ye[iy + 1], ye[iy + 1])
            corners = [self._unit(x, y) for x, y in zip(xs, ys)]
            total = np.zeros(iy.size)
            for k in range(4):
                (ax, ay), (bx, by) = corners[k], corners[(k + 1) % 4]
                total += _disk_triangle_area(ax, ay, bx, by)
            frac[iy, ix] = np.clip(np.abs(total) * (self.axes[0] * self.axes[1]) / (h * h), 0.0, 1.0)
        return frac


@dataclass(frozen=True)
class Circle(Shape):
    """A filled disk of constant ``value``: ``centre = (x, y)``, ``radius > 0`` (image units)."""

    value: float = 1.0
    centre: tuple = (0.0, 0.0)
    radius: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "value", check_scalar("value", self.value))
        object.__setattr__(self, "centre", check_vector("centre", self.centre, 2))
        object.__setattr__(self, "radius", check_scalar("radius", self.radius, positive=True))

    def as_ellipse(self) -> Ellipse:
        """The same disk as an :class:`Ellipse`."""
        return Ellipse(self.value, self.centre, (self.radius, self.radius), 0.0)

    @property
    def area(self) -> float:
        return math.pi * self.radius ** 2

    @property
    def bounds(self) -> tuple:
        return self.as_ellipse().bounds

    def contains(self, x, y) -> np.ndarray:
        """Boolean mask of the points ``(x, y)`` (broadcast) inside the disk."""
        return self.as_ellipse().contains(x, y)

    def _chords(self, s, cos_t, sin_t):
        return self.as_ellipse()._chords(s, cos_t, sin_t)

    def _exact_fraction(self, xe, ye):
        return self.as_ellipse()._exact_fraction(xe, ye)


# --------------------------------------------------------------------------- polygons
