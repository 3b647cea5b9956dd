"""Analytic 2-D shapes with exact rasters and exact (closed-form) line integrals.

These shapes give test data without the *inverse crime*: the sinogram of a shape is computed
from exact chord lengths, the reference image from exact pixel area fractions, and neither
uses the discretised projector that a reconstruction algorithm uses.

Geometry convention
-------------------
Image
    ``n × n`` pixels, array axes ``(y, x)`` (row, column). Physical extent ``[-1, 1] × [-1, 1]``
    in units of the image half-width; pixel size ``h = 2 / n``. Pixel centres::

        x_j = -1 + (j + 1/2) h,     y_i = -1 + (i + 1/2) h

    (see :func:`pixel_centres`), so the origin, the image centre, is at index ``(n - 1) / 2`` along
    both axes. **y increases with the row index**: downwards when the image is shown with row 0
    at the top (``matplotlib.imshow`` default), and the same order as the ``y`` coordinate of the
    package's xarray images.

Angles
    Every angle is in degrees and turns **counter-clockwise as displayed** (row 0 at the top),
    i.e. from ``+x`` towards ``-y``. A shape's ``angle_deg`` turns its first axis to the direction
    ``(cos φ, -sin φ)`` in ``(x, y)``.

Pencil beams (line integrals)
    The beam at angle ``θ`` and translation ``t`` is the line::

        (x - x_c) cos θ - (y - y_c) sin θ = t - t_0

    where ``(x_c, y_c)`` is ``rotation_centre`` (default ``(0, 0)``, the image centre, pixel
    index ``(n - 1) / 2``) and ``t_0`` is ``translation_offset`` (the translation at which the beam
    passes through the rotation axis; ``ScanGeometry.centre_offset × step``). At ``θ = 0`` the beam
    runs along the columns and ``t = x``; at ``θ = 90°``, ``t = -y`` (t grows towards row 0).
    ``t`` is in the same units as the image extent (so ``t ∈ [-1, 1]`` spans the image). Line
    integrals are returned as arrays of shape ``(n_translation, n_angle)``, the package's
    sinogram axis order.

Relation to :func:`skimage.transform.radon`
    ``radon(image, theta)`` uses the same angle sign and the same translation direction (output
    row ``k`` grows with ``t``); its output has shape ``(n_translation, n_angle)`` and is a sum
    over pixels, i.e. the line integral divided by ``h``. Its rotation centre is pixel index
    ``n // 2`` on both axes, which is the image centre ``(n - 1) / 2`` only for odd ``n``
    (for even ``n`` it sits half a pixel right of and below the centre), and its row ``k`` lies at
    ``t = (k - P // 2) h`` with ``P = n`` (``circle=True``) or the padded size
    (``circle=False``). :func:`skimage_radon_geometry` returns the translations and rotation
    centre that reproduce it::

        t, c = skimage_radon_geometry(n)
        shape.line_integrals(t, theta, rotation_centre=c)  ≈  radon(shape.raster(n), theta) * h

Values are additive (Shepp–Logan semantics): where shapes of a :class:`Phantom` overlap their
values add.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "Shape",
    "Ellipse",
    "Circle",
    "Rectangle",
    "Polygon",
    "Phantom",
    "PixelPhantom",
    "pixel_centres",
    "pixel_size",
    "skimage_radon_geometry",
]

# samples per block in the supersampled rasteriser (bounds memory)
_BLOCK_SAMPLES = 1 << 21


# --------------------------------------------------------------------------- validation
def _check_size(name: str, n) -> int:
    """An image size: an integer >= 1."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        if isinstance(n, (float, np.floating)) and math.isfinite(n) and float(n).is_integer():
            n = int(n)
        else:
            raise ValueError(f"{name} must be an integer >= 1; found {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be an integer >= 1; found {n!r}")
    return int(n)


def _check_supersample(supersample):
    if supersample is None:
        return None
    return _check_size("supersample", supersample)


def _check_scalar(name: str, value, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number; found {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number; found {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be a finite number > 0; found {value!r}")
    return v


def _check_vector(name: str, value, length: int, *, positive: bool = False) -> tuple:
    expected = f"{length} finite numbers" + (" > 0" if positive else "")
    try:
        vals = tuple(float(v) for v in np.asarray(value, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {expected}; found {value!r}") from None
    if len(vals) != length or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be {expected}; found {value!r}")
    if positive and not all(v > 0 for v in vals):
        raise ValueError(f"{name} must be {expected}; found {value!r}")
    return vals


def _check_1d(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of finite numbers; found {value!r}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of finite numbers; found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)][0]
        raise ValueError(f"{name} must be a 1-D array of finite numbers; found {bad!r}")
    return arr


# --------------------------------------------------------------------------- grid helpers
def pixel_size(n: int) -> float:
    """Pixel size ``2 / n`` of an ``n × n`` image of extent ``[-1, 1]²``."""
    return 2.0 / _check_size("n", n)


def pixel_centres(n: int) -> np.ndarray:
    """Pixel-centre coordinates ``-1 + (i + 1/2) · 2/n`` for ``i = 0 … n-1`` (x and y alike).

    The image centre (coordinate 0) is at index ``(n - 1) / 2``; ``y`` grows with the row index.
    """
    n = _check_size("n", n)
    return -1.0 + (np.arange(n) + 0.5) * (2.0 / n)


def skimage_radon_geometry(n: int, circle: bool = True):
    """Translations and rotation centre that reproduce :func:`skimage.transform.radon`.

    Parameters
    ----------
    n : int
        Size of the square image given to ``radon``.
    circle : bool
        The ``circle`` argument given to ``radon``.

    Returns
    -------
    translations : ndarray, shape (n_translation,)
        ``t`` of each output row of ``radon`` (image units).
    rotation_centre : tuple of float
        ``(x_c, y_c)`` of skimage's rotation centre, pixel index ``n // 2`` on both axes:
        ``(0, 0)`` for odd ``n`` and ``(h/2, h/2)`` for even ``n``.

    Notes
    -----
    ``shape.line_integrals(t, theta, rotation_centre=c) ≈ radon(shape.raster(n), theta) · h``
    with ``h = 2/n`` (up to skimage's bilinear interpolation).
    """
    n = _check_size("n", n)
    h = 2.0 / n
    if circle:
        size = n
    else:
        size = n + int(np.ceil(np.sqrt(2) * n - n))
    translations = (np.arange(size) - size // 2) * h
    offset = (n // 2 - (n - 1) / 2.0) * h
    return translations, (offset, offset)


def _window(bounds, n):
    """Pixel index ranges ``(i0, i1, j0, j1)`` (rows, columns; end excluded) covering ``bounds``."""
    xmin, xmax, ymin, ymax = bounds
    h = 2.0 / n

    def rng(lo, hi):
        a = int(np.clip(np.floor((lo + 1.0) / h), 0, n))
        b = int(np.clip(np.ceil((hi + 1.0) / h), 0, n))
        return a, max(a, b)

    i0, i1 = rng(ymin, ymax)
    j0, j1 = rng(xmin, xmax)
    return i0, i1, j0, j1


def _beam_lines(translations, angles_deg, rotation_centre, translation_offset):
    """Lines ``x cos θ - y sin θ = s`` of a scan: ``s`` (T, A), ``cos θ`` and ``sin θ`` (1, A)."""
    t = _check_1d("translations", translations)
    theta = np.deg2rad(_check_1d("angles_deg", angles_deg))
    xc, yc = _check_vector("rotation_centre", rotation_centre, 2)
    t0 = _check_scalar("translation_offset", translation_offset)
    cos_t, sin_t = np.cos(theta)[None, :], np.sin(theta)[None, :]
    s = (t - t0)[:, None] + (xc * cos_t - yc * sin_t)
    return s, cos_t, sin_t


# --------------------------------------------------------------------------- base class
class Shape:
    """Base of the analytic shapes: raster, area fraction and line integrals.

    Subclasses provide ``value``, :attr:`bounds`, :attr:`area`, :meth:`contains`,
    ``_chords(s, cos_t, sin_t)`` (chord lengths of the lines ``x cos θ - y sin θ = s``) and
    ``_exact_fraction(xe, ye)`` (exact area fractions of the pixels with edges ``xe``, ``ye``).
    """

    value: float

    # -- to be provided by subclasses ---------------------------------------------------
    @property
    def bounds(self) -> tuple:  # pragma: no cover - abstract
        """``(xmin, xmax, ymin, ymax)`` of the shape."""
        raise NotImplementedError

    @property
    def area(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def contains(self, x, y) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _chords(self, s, cos_t, sin_t):  # pragma: no cover - abstract
        raise NotImplementedError

    def _exact_fraction(self, xe, ye):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------
    @property
    def mass(self) -> float:
        """``value × area``: the integral of the shape over the plane."""
        return self.value * self.area

    def chord_lengths(self, translations, angles_deg, *, rotation_centre=(0.0, 0.0),
                      translation_offset=0.0) -> np.ndarray:
        """Exact lengths of the beams inside the shape, shape ``(n_translation, n_angle)``.

        See :meth:`line_integrals` for the parameters.
        """
        s, c, si = _beam_lines(translations, angles_deg, rotation_centre, translation_offset)
        return self._chords(s, c, si)

    def line_integrals(self, translations, angles_deg, *, rotation_centre=(0.0, 0.0),
                       translation_offset=0.0) -> np.ndarray:
        """Exact line integrals (``value × chord length``) of pencil beams.

        Parameters
        ----------
        translations : array_like, shape (n_translation,)
            Signed beam positions ``t`` (image units: ``[-1, 1]`` spans the image).
        angles_deg : array_like, shape (n_angle,)
            Rotation angles ``θ`` in degrees, counter-clockwise as displayed; any values.
        rotation_centre : (float, float)
            ``(x, y)`` of the rotation axis in image units (default the image centre).
        translation_offset : float
            Translation at which the beam crosses the rotation axis (shifted centre of rotation).

        Returns
        -------
        ndarray, shape (n_translation, n_angle), float64
            Beam line ``(x - x_c) cos θ - (y - y_c) sin θ = t - translation_offset``; see the
            module docstring.
        """
        return self.value * self.chord_lengths(translations, angles_deg, rotation_centre=rotation_centre,
                                               translation_offset=translation_offset)

    def area_fraction(self, n: int, *, supersample: int | None = None) -> np.ndarray:
        """Fraction of each pixel covered by the shape, ``(y, x)`` of shape ``(n, n)``.

        Parameters
        ----------
        n : int
            Image size (pixels per side).
        supersample : int, optional
            ``None`` (default): the exact area fraction. An integer ``s``: the mean of ``s × s``
            point samples per pixel (midpoint rule; an independent cross-check).
        """
        n = _check_size("n", n)
        out = np.zeros((n, n))
        self._accumulate(out, 1.0, _check_supersample(supersample))
        return out

    def raster(self, n: int, *, supersample: int | None = None) -> np.ndarray:
        """Area-averaged image ``value × area_fraction``, float64 of shape ``(n, n)``, axes ``(y, x)``."""
        n = _check_size("n", n)
        out = np.zeros((n, n))
        self._accumulate(out, self.value, _check_supersample(supersample))
        return out

    def in_pixels(self, n: int) -> "PixelPhantom":
        """This shape seen on an ``n × n`` pixel grid, in pixel units; see :class:`PixelPhantom`."""
        return PixelPhantom(Phantom((self,)), n)

    def __add__(self, other):
        return Phantom((self,)) + other

    def __radd__(self, other):
        if other == 0:  # sum([...])
            return Phantom((self,))
        return NotImplemented

    # -- rasterisation ----------------------------------------------------------------------
    def _accumulate(self, image, weight, supersample):
        n = image.shape[0]
        i0, i1, j0, j1 = _window(self.bounds, n)
        if i1 <= i0 or j1 <= j0 or weight == 0:
            return
        h = 2.0 / n
        xe = -1.0 + np.arange(j0, j1 + 1) * h
        ye = -1.0 + np.arange(i0, i1 + 1) * h
        if supersample is None:
            frac = self._exact_fraction(xe, ye)
        else:
            frac = self._sampled_fraction(xe, ye, supersample)
        image[i0:i1, j0:j1] += weight * frac

    def _sampled_fraction(self, xe, ye, s):
        h = xe[1] - xe[0]
        sub = (np.arange(s) + 0.5) * (h / s)
        xs = (xe[:-1, None] + sub[None, :]).ravel()
        nx, ny = xe.size - 1, ye.size - 1
        out = np.empty((ny, nx))
        rows = max(1, _BLOCK_SAMPLES // (nx * s * s))
        for r0 in range(0, ny, rows):
            r1 = min(ny, r0 + rows)
            ys = (ye[r0:r1, None] + sub[None, :]).ravel()
            inside = self.contains(xs[None, :], ys[:, None])
            out[r0:r1] = inside.reshape(r1 - r0, s, nx, s).mean(axis=(1, 3))
        return out


# --------------------------------------------------------------------------- ellipse
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
        object.__setattr__(self, "value", _check_scalar("value", self.value))
        object.__setattr__(self, "centre", _check_vector("centre", self.centre, 2))
        object.__setattr__(self, "axes", _check_vector("axes", self.axes, 2, positive=True))
        object.__setattr__(self, "angle_deg", _check_scalar("angle_deg", self.angle_deg))

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
        object.__setattr__(self, "value", _check_scalar("value", self.value))
        object.__setattr__(self, "centre", _check_vector("centre", self.centre, 2))
        object.__setattr__(self, "radius", _check_scalar("radius", self.radius, positive=True))

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
        object.__setattr__(self, "value", _check_scalar("value", self.value))
        try:
            arr = np.asarray(self.vertices, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"vertices must be a sequence of (x, y) pairs; found {self.vertices!r}") from None
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
            raise ValueError(f"vertices must be an array of shape (m >= 3, 2); found shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"vertices must be finite numbers; found {self.vertices!r}")
        verts = tuple((float(x), float(y)) for x, y in arr)
        object.__setattr__(self, "vertices", verts)
        if abs(self._signed_area()) <= 1e-15:
            raise ValueError(f"vertices must enclose a non-zero area; found area 0 for {verts!r}")
        crossing = _first_crossing(verts)
        if crossing is not None:
            raise ValueError("vertices must form a simple polygon (no self-intersection); "
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
        object.__setattr__(self, "value", _check_scalar("value", self.value))
        object.__setattr__(self, "centre", _check_vector("centre", self.centre, 2))
        object.__setattr__(self, "size", _check_vector("size", self.size, 2, positive=True))
        object.__setattr__(self, "angle_deg", _check_scalar("angle_deg", self.angle_deg))

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


# --------------------------------------------------------------------------- phantom
@dataclass(frozen=True)
class Phantom:
    """A collection of shapes whose values add where they overlap (Shepp–Logan semantics).

    Parameters
    ----------
    shapes : sequence of Shape
        The parts; a nested :class:`Phantom` is flattened.

    Notes
    -----
    Rasters cover the image ``[-1, 1]²`` only, while line integrals see every shape whole: keep
    shapes inside the image (inside the unit disk to compare with ``radon(..., circle=True)``).
    """

    shapes: tuple = ()

    def __post_init__(self):
        if isinstance(self.shapes, Shape):
            flat = [self.shapes]
        else:
            try:
                items = list(self.shapes)
            except TypeError:
                raise ValueError(f"shapes must be a sequence of Shape objects; found {self.shapes!r}") from None
            flat = []
            for k, s in enumerate(items):
                if isinstance(s, Phantom):
                    flat.extend(s.shapes)
                elif isinstance(s, Shape):
                    flat.append(s)
                else:
                    raise ValueError(f"shapes[{k}] must be a Shape (Ellipse, Circle, Rectangle, Polygon); "
                                     f"found {type(s).__name__}")
        object.__setattr__(self, "shapes", tuple(flat))

    def __len__(self):
        return len(self.shapes)

    def __iter__(self):
        return iter(self.shapes)

    def __getitem__(self, k):
        got = self.shapes[k]
        return Phantom(got) if isinstance(k, slice) else got

    def __add__(self, other):
        if isinstance(other, (Phantom, Shape)):
            return Phantom((self, other))
        if isinstance(other, (list, tuple)):
            return Phantom((self, *other))
        return NotImplemented

    def __radd__(self, other):
        if other == 0:
            return self
        return NotImplemented

    def in_pixels(self, n: int) -> "PixelPhantom":
        """This phantom seen on an ``n × n`` pixel grid, in pixel units; see :class:`PixelPhantom`."""
        return PixelPhantom(self, n)

    @property
    def mass(self) -> float:
        """Integral of the phantom over the plane, ``Σ value × area``."""
        return float(sum(s.mass for s in self.shapes))

    def raster(self, n: int, *, supersample: int | None = None) -> np.ndarray:
        """Area-averaged image, float64 ``(n, n)``, axes ``(y, x)``; see :meth:`Shape.area_fraction`."""
        n = _check_size("n", n)
        supersample = _check_supersample(supersample)
        out = np.zeros((n, n))
        for s in self.shapes:
            s._accumulate(out, s.value, supersample)
        return out

    def area_fractions(self, n: int, *, supersample: int | None = None) -> np.ndarray:
        """Pixel area fraction of every part, float64 ``(n_shapes, n, n)``, axes ``(shape, y, x)``."""
        n = _check_size("n", n)
        supersample = _check_supersample(supersample)
        out = np.zeros((len(self.shapes), n, n))
        for k, s in enumerate(self.shapes):
            s._accumulate(out[k], 1.0, supersample)
        return out

    def line_integrals(self, translations, angles_deg, *, rotation_centre=(0.0, 0.0),
                       translation_offset=0.0) -> np.ndarray:
        """Exact line integrals of all parts, float64 ``(n_translation, n_angle)``.

        Parameters are those of :meth:`Shape.line_integrals`.
        """
        s, c, si = _beam_lines(translations, angles_deg, rotation_centre, translation_offset)
        out = np.zeros(np.broadcast_shapes(s.shape, c.shape))
        for shape in self.shapes:
            if shape.value != 0:
                out += shape.value * shape._chords(s, c, si)
        return out


@dataclass(frozen=True)
class PixelPhantom:
    """A :class:`Phantom` on an ``n × n`` grid, with lengths measured in pixels.

    For code that works in pixels (ray tracers, projectors): translations are in pixels from the
    image centre (index ``(n - 1) / 2``), and line integrals are ``value × chord length in
    pixels`` (what a sum over pixels along the beam gives). Angles and directions are those of
    the module docstring. With ``n`` translations ``t = i - (n - 1)/2`` it matches
    ``skimage.transform.radon(raster, theta, circle=True)`` for odd ``n``.

    Parameters
    ----------
    phantom : Phantom or Shape
    n : int
        Grid size; the pixel size is ``h = 2 / n`` image units.
    """

    phantom: Phantom
    n: int

    def __post_init__(self):
        ph = self.phantom
        object.__setattr__(self, "phantom", Phantom((ph,)) if isinstance(ph, Shape) else Phantom(ph))
        object.__setattr__(self, "n", _check_size("n", self.n))

    @property
    def pixel_size(self) -> float:
        """Pixel size ``2 / n`` in image units."""
        return 2.0 / self.n

    @property
    def shape(self) -> tuple:
        """``(n, n)``: the raster shape, axes ``(y, x)``."""
        return (self.n, self.n)

    def line_integrals(self, translations, angles_deg, *, rotation_centre=(0.0, 0.0),
                       translation_offset=0.0) -> np.ndarray:
        """Exact line integrals in pixel units, float64 ``(n_translation, n_angle)``.

        ``translations``, ``rotation_centre`` (``(x, y)`` from the image centre) and
        ``translation_offset`` are in pixels; otherwise as :meth:`Phantom.line_integrals`.
        """
        h = self.pixel_size
        t = _check_1d("translations", translations) * h
        c = tuple(h * v for v in _check_vector("rotation_centre", rotation_centre, 2))
        t0 = _check_scalar("translation_offset", translation_offset) * h
        return self.phantom.line_integrals(t, angles_deg, rotation_centre=c, translation_offset=t0) / h

    def raster(self, *, supersample: int | None = None) -> np.ndarray:
        """Area-averaged image, float64 ``(n, n)``, axes ``(y, x)``."""
        return self.phantom.raster(self.n, supersample=supersample)

    def area_fractions(self, *, supersample: int | None = None) -> np.ndarray:
        """Pixel area fraction of every part, float64 ``(n_shapes, n, n)``."""
        return self.phantom.area_fractions(self.n, supersample=supersample)
