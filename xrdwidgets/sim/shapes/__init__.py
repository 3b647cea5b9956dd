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

The code lives in ``base`` (validation, pixel grid, :class:`Shape`), ``ellipse``, ``polygon`` and
``composite`` (:class:`Phantom`, :class:`PixelPhantom`); every name is importable from here.
"""
from __future__ import annotations

from .shape import Shape, pixel_centres, pixel_size, skimage_radon_geometry
from .composite import Phantom, PixelPhantom
from .ellipse import Circle, Ellipse
from .polygon import Polygon, Rectangle

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
