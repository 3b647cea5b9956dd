"""Polygons and rectangles: exact rasters (area fractions) and chord lengths."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...base.errors import InputError
from .shape import Shape, check_scalar, check_vector


def _first_crossing(verts):
    """Indices ``(i, j)`` of two non-adjacent edges of the closed polygon that touch, or ``None``."""
    v = np.asarray(verts)
    m = len(v)
    px, py = v[:, 0], v[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)

    def orient(ax, ay, bx, by, cx, cy):
        return np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))

    def between(ax, ay, bx, by, cx, cy):  # c within the bounding box of segment ab
        return ((np.minimum(ax, bx) <= cx) & (cx <= np.maximum(ax, bx))
                & (np.minimum(ay, by) <= cy) & (cy <= np.maximum(ay, by)))

    I = (slice(None), None)  # edge i along axis 0, edge j along axis 1
    J = (None, slice(None))
    ai, bi, ci, di = px[I], py[I], qx[I], qy[I]
    aj, bj, cj, dj = px[J], py[J], qx[J], qy[J]
    o1, o2 = orient(ai, bi, ci, di, aj, bj), orient(ai, bi, ci, di, cj, dj)
    o3, o4 = orient(aj, bj, cj, dj, ai, bi), orient(aj, bj, cj, dj, ci, di)
    touch = ((o1 != o2) & (o3 != o4)
             | (o1 == 0) & between(ai, bi, ci, di, aj, bj) | (o2 == 0) & between(ai, bi, ci, di, cj, dj)
             | (o3 == 0) & between(aj, bj, cj, dj, ai, bi) | (o4 == 0) & between(aj, bj, cj, dj, ci, di))
    i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    touch &= (j >= i + 2) & ~((i == 0) & (j == m - 1))
    hits = np.argwhere(touch)
    return None if hits.size == 0 else tuple(int(k) for k in hits[0])


@dataclass(frozen=True)
class Polygon(Shape):
    """A filled simple polygon (convex or not, no self-intersections) of constant ``value``.

    Parameters
    ----------
    value : float
        Value inside.
    vertices : sequence of (x, y)
        At least 3 vertices in image units, in either orientation; the last connects to the first.

    Notes
    -----
    Chords are exact for any simple polygon: along a beam the inside length is the signed sum of
    the positions where the beam crosses the edges. Pixel area fractions are exact through
    Green's theorem (the area of the polygon in each lower-left quadrant of the pixel-corner grid).
    """

    value: float = 1.0
    vertices: tuple = ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))

    def __post_init__(self):
        object.__setattr__(self, "value", check_scalar("value", self.value))
        try:
            arr = np.asarray(self.vertices, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"vertices must be a sequence of (x, y) pairs; found {self.vertices!r}") from None
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
            raise InputError(f"vertices must be an array of shape (m >= 3, 2); found shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"vertices must be finite numbers; found {self.vertices!r}")
        verts = tuple((float(x), float(y)) for x, y in arr)
        object.__setattr__(self, "vertices", verts)
        if abs(self._signed_area()) <= 1e-15:
            raise InputError(f"vertices must enclose a non-zero area; found area 0 for {verts!r}")
        crossing = _first_crossing(verts)
        if crossing is not None:
            raise InputError("vertices must form a simple polygon (no self-intersection); "
                             f"found edges {crossing[0]} and {crossing[1]} intersecting")

    def _arrays(self):
        v = np.asarray(self.vertices)
        return v[:, 0], v[:, 1], np.roll(v[:, 0], -1), np.roll(v[:, 1], -1)

    def _signed_area(self) -> float:
        xa, ya, xb, yb = self._arrays()
        return 0.5 * float(np.sum(xa * yb - xb * ya))

    @property
    def area(self) -> float:
        return abs(self._signed_area())

    @property
    def bounds(self) -> tuple:
        v = np.asarray(self.vertices)
        return (float(v[:, 0].min()), float(v[:, 0].max()), float(v[:, 1].min()), float(v[:, 1].max()))

    def contains(self, x, y) -> np.ndarray:
        """Boolean mask of the points ``(x, y)`` (broadcast) inside (even–odd rule)."""
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        inside = np.zeros(x.shape, dtype=bool)
        for xa, ya, xb, yb in zip(*self._arrays()):
            if ya == yb:
                continue
            crosses = (ya > y) != (yb > y)
            xi = xa + (y - ya) * ((xb - xa) / (yb - ya))
            inside ^= crosses & (x < xi)
        return inside

    def _chords(self, s, cos_t, sin_t):
        # beam normal n = (cos θ, -sin θ), direction m = (sin θ, cos θ), n × m = 1
        orientation = math.copysign(1.0, self._signed_area())
        out = np.zeros(np.broadcast_shapes(s.shape, cos_t.shape))
        for xa, ya, xb, yb in zip(*self._arrays()):
            fa = xa * cos_t - ya * sin_t - s
            fb = xb * cos_t - yb * sin_t - s
            crossed = (fa > 0) != (fb > 0)
            if not crossed.any():
                continue
            lam = np.where(crossed, fa / np.where(crossed, fa - fb, 1.0), 0.0)
            sa = xa * sin_t + ya * cos_t
            sb = xb * sin_t + yb * cos_t
            pos = sa + lam * (sb - sa)
            # exiting when the outward normal points along m: sign = -orientation · sign(fb - fa)
            out += np.where(crossed, -orientation * np.sign(fb - fa) * pos, 0.0)
        return np.maximum(out, 0.0)

    def _quadrant_areas(self, X, Y):
        """Area of the polygon ∩ {x < X, y < Y} for ``X`` (nX,), ``Y`` (nY,) → (nY, nX)."""
        F = np.zeros((Y.size, X.size))
        Xr = X[None, :]
        for xa, ya, xb, yb in zip(*self._arrays()):
            if ya == yb:
                continue
            sign = 1.0
            if ya > yb:
                xa, ya, xb, yb, sign = xb, yb, xa, ya, -1.0
            hi = np.minimum(Y, yb)[:, None]
            L = np.maximum(hi - ya, 0.0)
            if not np.any(L > 0):
                continue
            x_hi = xa + (np.clip(hi, ya, yb) - ya) * ((xb - xa) / (yb - ya))
            ua, ub = xa - Xr, x_hi - Xr
            # ∫ min(x, X) dy = ∫ x dy - ∫ (x - X)⁺ dy over the part of the edge below Y
            pos = np.where((ua >= 0) & (ub >= 0), 0.5 * L * (ua + ub), 0.0)
            mixed = ua * ub < 0
            if mixed.any():
                p = np.maximum(ua, ub)
                d = np.where(mixed, np.abs(ub - ua), 1.0)
                pos = np.where(mixed, 0.5 * L * p * p / d, pos)
            F += sign * (0.5 * L * (xa + x_hi) - pos)
        return F * math.copysign(1.0, self._signed_area())

    def _exact_fraction(self, xe, ye):
        h = xe[1] - xe[0]
        F = self._quadrant_areas(xe, ye)
        area = F[1:, 1:] - F[1:, :-1] - F[:-1, 1:] + F[:-1, :-1]
        return np.clip(area / (h * h), 0.0, 1.0)


@dataclass(frozen=True)
class Rectangle(Shape):
    """A filled rectangle of constant ``value``.

    Parameters
    ----------
    value : float
        Value inside.
    centre : (float, float)
        ``(x, y)`` of the centre, image units.
    size : (float, float)
        Full side lengths ``(width, height) > 0``; ``width`` lies along the direction ``angle_deg``.
    angle_deg : float
        Rotation from ``+x``, degrees, counter-clockwise as displayed.
    """

    value: float = 1.0
    centre: tuple = (0.0, 0.0)
    size: tuple = (1.0, 1.0)
    angle_deg: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "value", check_scalar("value", self.value))
        object.__setattr__(self, "centre", check_vector("centre", self.centre, 2))
        object.__setattr__(self, "size", check_vector("size", self.size, 2, positive=True))
        object.__setattr__(self, "angle_deg", check_scalar("angle_deg", self.angle_deg))

    def as_polygon(self) -> Polygon:
        """The same rectangle as a :class:`Polygon`."""
        phi = math.radians(self.angle_deg)
        e1 = np.array([math.cos(phi), -math.sin(phi)])
        e2 = np.array([-math.sin(phi), -math.cos(phi)])
        c = np.asarray(self.centre)
        w, h = 0.5 * self.size[0], 0.5 * self.size[1]
        verts = [c + sx * w * e1 + sy * h * e2 for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        return Polygon(self.value, tuple(map(tuple, verts)))

    @property
    def area(self) -> float:
        return self.size[0] * self.size[1]

    @property
    def bounds(self) -> tuple:
        return self.as_polygon().bounds

    def contains(self, x, y) -> np.ndarray:
        """Boolean mask of the points ``(x, y)`` (broadcast) inside the rectangle."""
        return self.as_polygon().contains(x, y)

    def _chords(self, s, cos_t, sin_t):
        return self.as_polygon()._chords(s, cos_t, sin_t)

    def _exact_fraction(self, xe, ye):
        return self.as_polygon()._exact_fraction(xe, ye)

