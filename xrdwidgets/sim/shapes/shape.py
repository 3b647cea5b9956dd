"""Validation, pixel grid and the :class:`Shape` base class of the analytic shapes.

The geometry convention is in :mod:`xrdwidgets.sim.shapes`. The ``check_*`` helpers validate
the arguments of the shapes and phantoms (same messages everywhere); :func:`pixel_window` and
:func:`beam_lines` are the grid and beam geometry the shapes share.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ...base.errors import InputError

logger = logging.getLogger(__name__)

# samples per block in the supersampled rasteriser (bounds memory)
_BLOCK_SAMPLES = 1 << 21


# --------------------------------------------------------------------------- validation
def check_size(name: str, n) -> int:
    """An image size: an integer >= 1."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        if isinstance(n, (float, np.floating)) and math.isfinite(n) and float(n).is_integer():
            n = int(n)
        else:
            raise InputError(f"{name} must be an integer >= 1; found {n!r}")
    if n < 1:
        raise InputError(f"{name} must be an integer >= 1; found {n!r}")
    return int(n)


def check_supersample(supersample):
    if supersample is None:
        return None
    return check_size("supersample", supersample)


def check_scalar(name: str, value, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a finite number; found {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{name} must be a finite number; found {value!r}")
    if positive and v <= 0:
        raise InputError(f"{name} must be a finite number > 0; found {value!r}")
    return v


def check_vector(name: str, value, length: int, *, positive: bool = False) -> tuple:
    expected = f"{length} finite numbers" + (" > 0" if positive else "")
    try:
        vals = tuple(float(v) for v in np.asarray(value, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {expected}; found {value!r}") from None
    if len(vals) != length or not all(math.isfinite(v) for v in vals):
        raise InputError(f"{name} must be {expected}; found {value!r}")
    if positive and not all(v > 0 for v in vals):
        raise InputError(f"{name} must be {expected}; found {value!r}")
    return vals


def check_1d(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a 1-D array of finite numbers; found {value!r}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of finite numbers; found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)][0]
        raise InputError(f"{name} must be a 1-D array of finite numbers; found {bad!r}")
    return arr


# --------------------------------------------------------------------------- grid helpers
def pixel_size(n: int) -> float:
    """Pixel size ``2 / n`` of an ``n × n`` image of extent ``[-1, 1]²``."""
    return 2.0 / check_size("n", n)


def pixel_centres(n: int) -> np.ndarray:
    """Pixel-centre coordinates ``-1 + (i + 1/2) · 2/n`` for ``i = 0 … n-1`` (x and y alike).

    The image centre (coordinate 0) is at index ``(n - 1) / 2``; ``y`` grows with the row index.
    """
    n = check_size("n", n)
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
    n = check_size("n", n)
    h = 2.0 / n
    if circle:
        size = n
    else:
        size = n + int(np.ceil(np.sqrt(2) * n - n))
    translations = (np.arange(size) - size // 2) * h
    offset = (n // 2 - (n - 1) / 2.0) * h
    return translations, (offset, offset)


def pixel_window(bounds, n):
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


def beam_lines(translations, angles_deg, rotation_centre, translation_offset):
    """Lines ``x cos θ - y sin θ = s`` of a scan: ``s`` (T, A), ``cos θ`` and ``sin θ`` (1, A)."""
    t = check_1d("translations", translations)
    theta = np.deg2rad(check_1d("angles_deg", angles_deg))
    xc, yc = check_vector("rotation_centre", rotation_centre, 2)
    t0 = check_scalar("translation_offset", translation_offset)
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
        s, c, si = beam_lines(translations, angles_deg, rotation_centre, translation_offset)
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
        n = check_size("n", n)
        out = np.zeros((n, n))
        self._accumulate(out, 1.0, check_supersample(supersample))
        return out

    def raster(self, n: int, *, supersample: int | None = None) -> np.ndarray:
        """Area-averaged image ``value × area_fraction``, float64 of shape ``(n, n)``, axes ``(y, x)``."""
        n = check_size("n", n)
        out = np.zeros((n, n))
        self._accumulate(out, self.value, check_supersample(supersample))
        return out

    def in_pixels(self, n: int) -> "PixelPhantom":
        """This shape seen on an ``n × n`` pixel grid, in pixel units; see :class:`PixelPhantom`."""
        from .composite import Phantom, PixelPhantom

        return PixelPhantom(Phantom((self,)), n)

    def __add__(self, other):
        from .composite import Phantom

        return Phantom((self,)) + other

    def __radd__(self, other):
        from .composite import Phantom

        if other == 0:  # sum([...])
            return Phantom((self,))
        return NotImplemented

    # -- rasterisation ----------------------------------------------------------------------
    def _accumulate(self, image, weight, supersample):
        n = image.shape[0]
        i0, i1, j0, j1 = pixel_window(self.bounds, n)
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
