"""Phantoms for XRD-CT: Shepp–Logan, Voronoi grain maps, random blobs, and simple 3-D volumes.

The 2-D phantoms are :class:`~xrdwidgets.sim.shapes.Phantom` objects (sums of analytic shapes),
so each has an exact area-averaged raster (``.raster(n)``) *and* exact closed-form line integrals
(``.line_integrals(t, theta)``): test data for reconstructions without the inverse crime.

Geometry convention (shared with :mod:`xrdwidgets.sim.shapes`, whose docstring has the details)
-----------------------------------------------------------------------------------------------
* Images are ``n × n``, axes ``(y, x)``, extent ``[-1, 1]²``, pixel size ``h = 2/n``, pixel
  centres ``-1 + (i + 1/2) h``; the centre (0, 0) is at index ``(n - 1) / 2``; **y grows with the
  row index** (downwards as displayed with row 0 at the top).
* Angles are in degrees, counter-clockwise as displayed. The beam ``(θ, t)`` is the line
  ``x cos θ - y sin θ = t``; sinograms have axes ``(translation, angle)``. This matches
  :func:`skimage.transform.radon` except for its rotation centre (pixel ``n // 2``); see
  :func:`~xrdwidgets.sim.shapes.skimage_radon_geometry`.
* Code that works in pixels (translations in pixels from index ``(n - 1)/2``, integrals as sums
  over pixels) uses ``phantom.in_pixels(n)`` (:class:`~xrdwidgets.sim.shapes.PixelPhantom`).
* Volumes are ``(z, y, x)`` with ``n × n`` slices and cubic voxels of side ``h = 2/n``; ``z``
  centres are ``(k - (nz - 1)/2) h``, growing with the slice index. 3-D positions are given as
  ``(x, y, z)``.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ..base.errors import InputError
from .shapes import (
    Circle,
    Ellipse,
    Phantom,
    PixelPhantom,
    Polygon,
    Rectangle,
    Shape,
    pixel_centres,
    pixel_size,
    skimage_radon_geometry,
)
from .shapes.shape import check_scalar, check_size, check_vector

logger = logging.getLogger(__name__)

__all__ = [
    # re-exported shapes
    "Shape", "Ellipse", "Circle", "Rectangle", "Polygon", "Phantom", "PixelPhantom",
    "pixel_centres", "pixel_size", "skimage_radon_geometry",
    # 2-D phantoms
    "SHEPP_LOGAN_ELLIPSES", "shepp_logan", "shepp_logan_image", "voronoi_grains", "random_blobs_phantom",
    # 3-D
    "volume_centres", "sphere", "cylinder", "ellipsoid", "shepp_logan_3d", "SHEPP_LOGAN_3D_ELLIPSOIDS",
]

# --------------------------------------------------------------------------- Shepp–Logan
#: Ellipses of the Shepp–Logan phantom in the usual table form (Shepp & Logan 1974; Toft 1996):
#: ``(a, b, x0, y0, phi_deg)`` with ``y0`` pointing *up* (the table convention), values below.
SHEPP_LOGAN_ELLIPSES = (
    (0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.0230, 0.0460, 0.06, -0.6050, 0.0),
)
_SL_VALUES_ORIGINAL = (2.0, -0.98, -0.02, -0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
_SL_VALUES_MODIFIED = (1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)


def shepp_logan(modified: bool = True) -> Phantom:
    """The Shepp–Logan head phantom as ten :class:`Ellipse` objects.

    Parameters
    ----------
    modified : bool
        ``True`` (default): Toft's higher-contrast values (1, -0.8, -0.2, -0.2, 0.1, …), as in
        ``skimage.data.shepp_logan_phantom()`` and MATLAB ``phantom('Modified Shepp-Logan')``.
        ``False``: the original values (2, -0.98, -0.02, -0.02, 0.01, …).

    Returns
    -------
    Phantom
        Oriented as usually shown: the three small ellipses near the bottom rows, i.e. the table's
        upward ``y0`` becomes ``-y0`` in our row-down ``y``; table angles are counter-clockwise as
        displayed, like ours, and are kept.
    """
    values = _SL_VALUES_MODIFIED if modified else _SL_VALUES_ORIGINAL
    return Phantom(tuple(
        Ellipse(v, (x0, -y0), (a, b), phi)
        for v, (a, b, x0, y0, phi) in zip(values, SHEPP_LOGAN_ELLIPSES)
    ))


def shepp_logan_image(n: int, *, modified: bool = True, supersample: int | None = None) -> np.ndarray:
    """Area-averaged Shepp–Logan image, float64 ``(n, n)``, axes ``(y, x)``.

    ``supersample=None`` gives exact pixel area fractions; see :func:`shepp_logan`.
    """
    return shepp_logan(modified).raster(n, supersample=supersample)


# --------------------------------------------------------------------------- grain maps
def _uniform_in_disk(rng, k, radius):
    r = radius * np.sqrt(rng.random(k))
    phi = 2.0 * np.pi * rng.random(k)
    return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)


def voronoi_grains(n: int, n_grains: int, seed: int = 0, *, radius: float = 0.9,
                   return_seeds: bool = False):
    """Label image of Voronoi grains inside a circular sample.

    Parameters
    ----------
    n : int
        Image size (pixels per side).
    n_grains : int
        Number of grains (>= 1); seeds are uniform in the disk of ``radius``.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same arguments give the same image.
    radius : float
        Radius of the sample disk, image units (0 < radius; 1 touches the image edges).
    return_seeds : bool
        Also return the grain seeds.

    Returns
    -------
    labels : ndarray of int32, shape (n, n), axes (y, x)
        ``0`` outside the disk, ``k = 1 … n_grains`` in the grain of seed ``k - 1`` (nearest seed
        to the pixel centre). Grains smaller than a pixel may own no pixel.
    seeds : ndarray, shape (n_grains, 2)
        ``(x, y)`` of the seeds in image units (only with ``return_seeds=True``).
    """
    from scipy.spatial import cKDTree

    n = check_size("n", n)
    n_grains = check_size("n_grains", n_grains)
    radius = check_scalar("radius", radius, positive=True)
    rng = np.random.default_rng(seed)
    seeds = _uniform_in_disk(rng, n_grains, radius)
    c = pixel_centres(n)
    xx, yy = np.meshgrid(c, c)  # (y, x) arrays
    inside = xx * xx + yy * yy <= radius * radius
    labels = np.zeros((n, n), dtype=np.int32)
    _, nearest = cKDTree(seeds).query(np.stack([xx[inside], yy[inside]], axis=1))
    labels[inside] = nearest.astype(np.int32) + 1
    empty = n_grains - np.unique(labels[inside]).size
    if empty:
        logger.debug("voronoi_grains: %d of %d grains own no pixel at n=%d", empty, n_grains, n)
    return (labels, seeds) if return_seeds else labels


def random_blobs_phantom(n: int, n_shapes: int, seed: int = 0, *, radius: float = 0.9,
                         size_range=None, value_range=(0.2, 1.0),
                         polygon_fraction: float = 0.5) -> Phantom:
    """A random set of ellipses and convex polygons inside a disk (e.g. for multi-phase maps).

    Parameters
    ----------
    n : int
        Image size the phantom is meant for; sets the smallest blob (half-size of 4 pixels).
    n_shapes : int
        Number of shapes (>= 1).
    seed : int
        Seed of :func:`numpy.random.default_rng` (deterministic).
    radius : float
        Every shape lies inside the disk of this radius (image units).
    size_range : (float, float), optional
        Range of the half-axes in image units; default ``(max(0.05, 8/n), max(0.3, …))``
        (the lower end capped at ``radius / 2``).
    value_range : (float, float)
        Range of the (uniform random) values.
    polygon_fraction : float
        Probability that a shape is a polygon (3–8 vertices) rather than an ellipse.

    Returns
    -------
    Phantom
        Values add where shapes overlap; use :meth:`Phantom.area_fractions` for one map per shape.
    """
    n = check_size("n", n)
    n_shapes = check_size("n_shapes", n_shapes)
    radius = check_scalar("radius", radius, positive=True)
    if size_range is None:
        lo = min(max(0.05, 8.0 / n), 0.5 * radius)
        size_range = (lo, max(0.3, lo))
    smin, smax = check_vector("size_range", size_range, 2, positive=True)
    if smax < smin or smin >= radius:
        raise InputError(f"size_range must be (min, max) with min <= max and min < radius={radius}; "
                         f"found {size_range!r}")
    vmin, vmax = check_vector("value_range", value_range, 2)
    pf = check_scalar("polygon_fraction", polygon_fraction)
    if not 0.0 <= pf <= 1.0:
        raise InputError(f"polygon_fraction must be in [0, 1]; found {polygon_fraction!r}")
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n_shapes):
        a, b = rng.uniform(smin, min(smax, 0.95 * radius), size=2)
        room = radius - max(a, b)
        (x0, y0), = _uniform_in_disk(rng, 1, room)
        angle = rng.uniform(0.0, 180.0)
        value = rng.uniform(vmin, vmax)
        if rng.random() < pf:
            k = int(rng.integers(3, 9))
            # points on an ellipse in angular order form a convex polygon
            phi = 2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, k)) / k + rng.uniform(0, 2 * np.pi)
            ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            u, v = a * np.cos(phi), b * np.sin(phi)
            xs = x0 + u * ca - v * sa
            ys = y0 - u * sa - v * ca
            shapes.append(Polygon(value, tuple(zip(xs.tolist(), ys.tolist()))))
        else:
            shapes.append(Ellipse(value, (x0, y0), (a, b), angle))
    return Phantom(tuple(shapes))


# --------------------------------------------------------------------------- 3-D volumes
def _volume_size(n, nz):
    n = check_size("n", n)
    nz = n if nz is None else check_size("nz", nz)
    return n, nz


def volume_centres(n: int, nz: int | None = None):
    """Voxel-centre coordinates ``(z, y, x)`` of an ``(nz, n, n)`` volume (cubic voxels, h = 2/n).

    ``x`` and ``y`` are :func:`pixel_centres`; ``z = (k - (nz - 1)/2) h`` (``nz`` defaults to ``n``).
    """
    n, nz = _volume_size(n, nz)
    h = 2.0 / n
    return (np.arange(nz) - (nz - 1) / 2.0) * h, pixel_centres(n), pixel_centres(n)


def _raster_3d(n, nz, bounds, sdf, supersample):
    """Volume-averaged indicator of ``{sdf <= 0}`` on an ``(nz, n, n)`` grid.

    ``sdf(x, y, z)`` must be 1-Lipschitz (a lower bound of the distance to the boundary), so
    voxels whose centre is farther than half a diagonal from the boundary are uniform; only the
    others are supersampled with ``supersample³`` points.
    """
    s = check_size("supersample", supersample)
    h = 2.0 / n
    z, y, x = volume_centres(n, nz)
    (x0, x1), (y0, y1), (z0, z1) = bounds

    def rng(c, lo, hi):
        idx = np.nonzero((c >= lo - h) & (c <= hi + h))[0]
        return (idx[0], idx[-1] + 1) if idx.size else (0, 0)

    (k0, k1), (i0, i1), (j0, j1) = rng(z, z0, z1), rng(y, y0, y1), rng(x, x0, x1)
    out = np.zeros((nz, n, n))
    if k1 <= k0 or i1 <= i0 or j1 <= j0:
        return out
    zc, yc, xc = z[k0:k1, None, None], y[None, i0:i1, None], x[None, None, j0:j1]
    f = sdf(xc, yc, zc)
    win = (f <= 0).astype(np.float64)
    if s > 1:
        band = np.abs(f) <= 0.5 * math.sqrt(3.0) * h * (1.0 + 1e-9)
        kk, ii, jj = np.nonzero(band)
        if kk.size:
            off = (np.arange(s) + 0.5) / s * h - 0.5 * h
            oz, oy, ox = (g.ravel() for g in np.meshgrid(off, off, off, indexing="ij"))
            vals = np.empty(kk.size)
            block = max(1, (1 << 21) // s ** 3)
            for b0 in range(0, kk.size, block):
                b = slice(b0, b0 + block)
                inside = sdf(xc.ravel()[jj[b], None] + ox, yc.ravel()[ii[b], None] + oy,
                             zc.ravel()[kk[b], None] + oz) <= 0
                vals[b] = inside.mean(axis=1)
            win[kk, ii, jj] = vals
    out[k0:k1, i0:i1, j0:j1] = win
    return out


def ellipsoid(n: int, nz: int | None = None, *, centre=(0.0, 0.0, 0.0), axes=(0.5, 0.4, 0.3),
              angle_deg: float = 0.0, value: float = 1.0, supersample: int = 4) -> np.ndarray:
    """Volume-averaged ellipsoid, float64 ``(nz, n, n)``, axes ``(z, y, x)``.

    Parameters
    ----------
    n, nz : int
        Slice size and number of slices (``nz`` defaults to ``n``); cubic voxels of side ``2/n``.
    centre : (float, float, float)
        ``(x, y, z)`` of the centre, image units.
    axes : (float, float, float)
        Half-axes ``(a, b, c) > 0``; ``c`` along ``z``, ``a`` along ``angle_deg`` in the slice.
    angle_deg : float
        Rotation about ``z``, degrees, counter-clockwise as displayed (like the 2-D shapes).
    value : float
        Value inside.
    supersample : int
        Points per voxel side used on voxels that straddle the surface (1: centre sampling).
    """
    n, nz = _volume_size(n, nz)
    cx, cy, cz = check_vector("centre", centre, 3)
    a, b, c = check_vector("axes", axes, 3, positive=True)
    value = check_scalar("value", value)
    phi = math.radians(check_scalar("angle_deg", angle_deg))
    ca, sa = math.cos(phi), math.sin(phi)
    rmin = min(a, b, c)

    def sdf(x, y, z):
        dx, dy = x - cx, y - cy
        u = (dx * ca - dy * sa) / a
        v = (-dx * sa - dy * ca) / b
        w = (z - cz) / c
        return (np.sqrt(u * u + v * v + w * w) - 1.0) * rmin

    hx, hy = math.hypot(a * ca, b * sa), math.hypot(a * sa, b * ca)
    bounds = ((cx - hx, cx + hx), (cy - hy, cy + hy), (cz - c, cz + c))
    return value * _raster_3d(n, nz, bounds, sdf, supersample)


def sphere(n: int, nz: int | None = None, *, centre=(0.0, 0.0, 0.0), radius: float = 0.5,
           value: float = 1.0, supersample: int = 4) -> np.ndarray:
    """Volume-averaged ball, float64 ``(nz, n, n)``, axes ``(z, y, x)``; ``centre = (x, y, z)``.

    See :func:`ellipsoid` for the grid and ``supersample``.
    """
    n, nz = _volume_size(n, nz)
    cx, cy, cz = check_vector("centre", centre, 3)
    r = check_scalar("radius", radius, positive=True)
    value = check_scalar("value", value)

    def sdf(x, y, z):
        return np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - r

    bounds = ((cx - r, cx + r), (cy - r, cy + r), (cz - r, cz + r))
    return value * _raster_3d(n, nz, bounds, sdf, supersample)


def cylinder(n: int, nz: int | None = None, *, centre=(0.0, 0.0), radius: float = 0.5,
             z_range=None, value: float = 1.0, supersample: int = 4) -> np.ndarray:
    """Volume-averaged cylinder along ``z`` (the rotation axis), float64 ``(nz, n, n)``.

    Parameters
    ----------
    centre : (float, float)
        ``(x, y)`` of the axis, image units.
    radius : float
        Radius > 0, image units.
    z_range : (float, float), optional
        ``(z_min, z_max)`` of the flat ends, image units; ``None`` fills every slice.

    See :func:`ellipsoid` for ``n``, ``nz``, ``value`` and ``supersample``.
    """
    n, nz = _volume_size(n, nz)
    cx, cy = check_vector("centre", centre, 2)
    r = check_scalar("radius", radius, positive=True)
    value = check_scalar("value", value)
    if z_range is None:
        zmid, half = 0.0, math.inf
    else:
        za, zb = check_vector("z_range", z_range, 2)
        if zb <= za:
            raise InputError(f"z_range must be (z_min, z_max) with z_max > z_min; found {z_range!r}")
        zmid, half = 0.5 * (za + zb), 0.5 * (zb - za)

    def sdf(x, y, z):
        radial = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r
        return radial if math.isinf(half) else np.maximum(radial, np.abs(z - zmid) - half)

    zb_ = (-math.inf, math.inf) if math.isinf(half) else (zmid - half, zmid + half)
    bounds = ((cx - r, cx + r), (cy - r, cy + r), zb_)
    return value * _raster_3d(n, nz, bounds, sdf, supersample)


#: Ellipsoids of the 3-D Shepp–Logan phantom (Kak & Slaney; M. Schabel's ``phantom3d``):
#: ``(a, b, c, x0, y0, z0, phi_deg)`` with ``y0`` pointing up (table convention). The small tilt
#: (psi = 10°) of the two ventricles in ``phantom3d`` is left out: rotations are about ``z`` only.
SHEPP_LOGAN_3D_ELLIPSOIDS = (
    (0.6900, 0.920, 0.810, 0.00, 0.0000, 0.00, 0.0),
    (0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0.0),
    (0.1100, 0.310, 0.220, 0.22, 0.0000, 0.00, -18.0),
    (0.1600, 0.410, 0.280, -0.22, 0.0000, 0.00, 18.0),
    (0.2100, 0.250, 0.410, 0.00, 0.3500, -0.15, 0.0),
    (0.0460, 0.046, 0.050, 0.00, 0.1000, 0.25, 0.0),
    (0.0460, 0.046, 0.050, 0.00, -0.1000, 0.25, 0.0),
    (0.0460, 0.023, 0.050, -0.08, -0.6050, 0.00, 0.0),
    (0.0230, 0.023, 0.020, 0.00, -0.6060, 0.00, 0.0),
    (0.0230, 0.046, 0.020, 0.06, -0.6050, 0.00, 0.0),
)


def shepp_logan_3d(n: int, nz: int | None = None, *, modified: bool = True,
                   supersample: int = 2) -> np.ndarray:
    """3-D Shepp–Logan phantom, float64 ``(nz, n, n)``, axes ``(z, y, x)``.

    Ten ellipsoids (:data:`SHEPP_LOGAN_3D_ELLIPSOIDS`) with the 2-D values (``modified`` as in
    :func:`shepp_logan`), oriented like :func:`shepp_logan` in every slice. ``nz`` defaults to
    ``n`` (the whole ``[-1, 1]³`` cube); fewer slices keep the middle of the head.
    """
    n, nz = _volume_size(n, nz)
    values = _SL_VALUES_MODIFIED if modified else _SL_VALUES_ORIGINAL
    out = np.zeros((nz, n, n))
    for v, (a, b, c, x0, y0, z0, phi) in zip(values, SHEPP_LOGAN_3D_ELLIPSOIDS):
        out += ellipsoid(n, nz, centre=(x0, -y0, z0), axes=(a, b, c), angle_deg=phi, value=v,
                         supersample=supersample)
    return out
