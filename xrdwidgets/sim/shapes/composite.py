"""Sums of shapes: :class:`Phantom` (values add where shapes overlap) and its pixel-unit view
:class:`PixelPhantom`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...base.errors import InputError
from .shape import Shape, beam_lines, check_1d, check_scalar, check_size, check_supersample, check_vector



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
                raise InputError(f"shapes must be a sequence of Shape objects; found {self.shapes!r}") from None
            flat = []
            for k, s in enumerate(items):
                if isinstance(s, Phantom):
                    flat.extend(s.shapes)
                elif isinstance(s, Shape):
                    flat.append(s)
                else:
                    raise InputError(f"shapes[{k}] must be a Shape (Ellipse, Circle, Rectangle, Polygon); "
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
        n = check_size("n", n)
        supersample = check_supersample(supersample)
        out = np.zeros((n, n))
        for s in self.shapes:
            s._accumulate(out, s.value, supersample)
        return out

    def area_fractions(self, n: int, *, supersample: int | None = None) -> np.ndarray:
        """Pixel area fraction of every part, float64 ``(n_shapes, n, n)``, axes ``(shape, y, x)``."""
        n = check_size("n", n)
        supersample = check_supersample(supersample)
        out = np.zeros((len(self.shapes), n, n))
        for k, s in enumerate(self.shapes):
            s._accumulate(out[k], 1.0, supersample)
        return out

    def line_integrals(self, translations, angles_deg, *, rotation_centre=(0.0, 0.0),
                       translation_offset=0.0) -> np.ndarray:
        """Exact line integrals of all parts, float64 ``(n_translation, n_angle)``.

        Parameters are those of :meth:`Shape.line_integrals`.
        """
        s, c, si = beam_lines(translations, angles_deg, rotation_centre, translation_offset)
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
        object.__setattr__(self, "n", check_size("n", self.n))

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
        t = check_1d("translations", translations) * h
        c = tuple(h * v for v in check_vector("rotation_centre", rotation_centre, 2))
        t0 = check_scalar("translation_offset", translation_offset) * h
        return self.phantom.line_integrals(t, angles_deg, rotation_centre=c, translation_offset=t0) / h

    def raster(self, *, supersample: int | None = None) -> np.ndarray:
        """Area-averaged image, float64 ``(n, n)``, axes ``(y, x)``."""
        return self.phantom.raster(self.n, supersample=supersample)

    def area_fractions(self, *, supersample: int | None = None) -> np.ndarray:
        """Pixel area fraction of every part, float64 ``(n_shapes, n, n)``."""
        return self.phantom.area_fractions(self.n, supersample=supersample)
