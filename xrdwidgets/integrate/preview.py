"""One frame, its integrated pattern and its strongest rings: what a preview shows.

Used by the dashboard's Integrate tab (:mod:`xrdwidgets.widgets.integrate_panel`) and usable in a
notebook; no widgets here.
"""
from __future__ import annotations

import numpy as np

from .assemble import combined_mask
from .calibration import load_poni
from .engines import UNITS, IntegrationOptions, Integrator
from .readers import open_frames

__all__ = ["frame_preview"]


def frame_preview(raw, poni, *, index: int = 0, mask=None, use_file_mask: bool = True, n_rings: int = 5,
                  max_pixels: int = 256, dataset=None, **option_kwargs) -> dict:
    """Read one frame, integrate it, and locate its strongest rings on the detector.

    Parameters
    ----------
    raw, poni, mask, use_file_mask, dataset :
        As :func:`~xrdwidgets.integrate.assemble.iterate_integration`.
    index : int
        Frame index (0-based, acquisition order).
    n_rings : int
        Rings overlaid: the most prominent peaks of the pattern.
    max_pixels : int
        The image is decimated (every k-th pixel) to at most this many pixels per side.
    **option_kwargs
        :class:`IntegrationOptions` fields.

    Returns
    -------
    dict
        ``image`` (rows, cols) log10(1 + counts), masked pixels NaN, decimated by ``step``;
        ``step``; ``radial`` and ``pattern`` (bins,); ``unit`` (dim name) and ``units``;
        ``rings``: list of ``(position, rows, cols)``: each ring's line in decimated pixel
        coordinates (``None`` between separate pieces);
        ``n_frames``, ``frame_shape``, ``index``.
    """
    from contourpy import contour_generator   # matplotlib's contouring library
    from scipy.signal import find_peaks

    with open_frames(raw, dataset=dataset) as src:
        if not 0 <= int(index) < src.n_frames:
            raise IndexError(f"{src.name}: frame {index} outside 0..{src.n_frames - 1}")
        ai = load_poni(poni, shape=src.frame_shape)
        full_mask, _ = combined_mask(mask, src.frame_shape, src.pixel_mask if use_file_mask else None)
        frame = src.read(int(index), int(index) + 1)[0]
        n_frames, shape = src.n_frames, src.frame_shape
    opts = IntegrationOptions(**option_kwargs)
    integ = Integrator(ai, shape, opts, mask=full_mask)
    pattern = integ.integrate(frame[None], engine="pyfai" if opts.method == "mean" else None)[0]
    step = max(1, int(np.ceil(max(shape) / max_pixels)))
    img = np.log10(1.0 + np.clip(frame.astype(np.float64), 0, None))
    if full_mask is not None:
        img[full_mask] = np.nan
    img = img[::step, ::step]
    pos = integ.radial
    prom = 0.05 * float(np.nanmax(pattern) - np.nanmin(pattern) or 1.0)
    peaks, props = find_peaks(np.nan_to_num(pattern), prominence=prom)
    order = np.argsort(props["prominences"])[::-1][:n_rings]
    unit_arr = ai.center_array(shape, unit=UNITS[opts.unit][0])[::step, ::step]
    rings = []
    gen = contour_generator(z=np.asarray(unit_arr, float))
    for p in sorted(peaks[order]):
        rows, cols = [], []
        for line in gen.lines(float(pos[p])):      # (n, 2) arrays of (column, row)
            cols += line[:, 0].tolist() + [None]
            rows += line[:, 1].tolist() + [None]
        rings.append((float(pos[p]), rows, cols))
    return {"image": img, "step": step, "radial": pos, "pattern": pattern, "unit": opts.unit,
            "units": UNITS[opts.unit][1], "rings": rings, "n_frames": n_frames, "frame_shape": shape,
            "index": int(index)}
