"""Filtered back-projection of whole sinogram stacks, streamed in channel batches.

Memory bound: besides the input stack and the output volume, one batch of ``B`` channels needs
about ``4·B·(3·n_pad·n_angles + n²)`` bytes (float32), with ``n_pad`` the padded filter length
(≥ 2·n_translations), plus the projector's sparse matrix (``2·n²·n_angles`` entries, stored twice).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import xarray as xr

from .. import data as _data
from ..ops.filters import filter_sinogram
from ..ops.projector import ParallelProjector
from .base import Progress, run_to_end

log = logging.getLogger(__name__)

__all__ = ["fbp", "iterate_fbp", "fbp_array"]


def _scale(n_angles: int) -> float:
    # ∫_0^π dθ ≈ (π / n_angles)·Σ, with the ramp response scaled by 2 (see ops.filters)
    return math.pi / (2.0 * n_angles)


def fbp_array(sino, angles_deg, *, n: int | None = None, filter: str = "ramp",
              centre_offset: float = 0.0, circle: bool = True, device=None,
              projector: ParallelProjector | None = None):
    """FBP of one sinogram or a channel batch held in an array.

    Parameters
    ----------
    sino : numpy.ndarray or torch.Tensor
        ``(translation, angle)`` or ``(translation, angle, C)``.
    angles_deg : array
        Angles in degrees, evenly covering 180° or 360°.
    n : int, optional
        Output image size (default: number of translations).
    filter : str
        See :data:`xrdwidgets.ops.FILTERS`.
    centre_offset : float
        Rotation axis offset from the middle of the translations, in steps.
    circle : bool
        Zero outside the inscribed circle.

    Returns
    -------
    Same type as ``sino``: ``(y, x)`` or ``(y, x, C)``, in the units of the sinogram per step.
    """
    is_np = not isinstance(sino, torch.Tensor)
    t = torch.as_tensor(np.asarray(sino, np.float32)) if is_np else sino
    if t.dim() not in (2, 3):
        raise ValueError(f"fbp_array: expected (translation, angle[, C]), found shape {tuple(t.shape)}")
    n_t, n_a = t.shape[:2]
    if len(np.ravel(angles_deg)) != n_a:
        raise ValueError(f"fbp_array: {len(np.ravel(angles_deg))} angles given for a sinogram with {n_a} angles")
    op = projector or ParallelProjector(n or n_t, angles_deg, n_translations=n_t,
                                        centre_offset=centre_offset, mask=circle, device=device)
    t = t.to(op.device)
    img = op.T(filter_sinogram(t, filter)) * _scale(n_a)
    return img.cpu().numpy() if is_np else img


def iterate_fbp(stack, *, filter: str = "ramp", batch: int = 256, n: int | None = None,
                circle: bool = True, centre_offset: float | None = None, device=None):
    """FBP of a sinogram stack as a generator of :class:`Progress`, one event per channel batch.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (any dim order); angles in degrees, evenly spaced.
    filter : str
        FBP filter name.
    batch : int
        Channels per batch (bounds the working memory).
    n : int, optional
        Image size (default: number of translations).
    centre_offset : float, optional
        Rotation-axis offset in steps (default: the stored geometry's, else 0).
    device : optional
        torch device (default CUDA when present).

    Returns
    -------
    xarray.DataArray
        Volume ``(y, x, spectral)`` (leading ``time``/``z`` kept), float32, coords in the units of
        the translation coordinate, geometry and provenance in attrs.
    """
    da = _data.validate_sinogram_stack(stack, check_finite=True)
    spec = _data.spectral_dim(da)
    geom = _data.get_geometry(da)
    if centre_offset is None:
        centre_offset = geom.centre_offset if geom is not None else 0.0
    if int(batch) < 1:
        raise ValueError(f"iterate_fbp: batch must be >= 1, found {batch}")
    n_t, n_a = da.sizes[_data.TRANSLATION], da.sizes[_data.ANGLE]
    n = int(n or n_t)
    angles = da[_data.ANGLE].values.astype(float)
    op = ParallelProjector(n, angles, n_translations=n_t, centre_offset=centre_offset, mask=circle,
                           device=device)
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    lead_shape = [da.sizes[d] for d in lead]
    C = da.sizes[spec]
    out = np.zeros(lead_shape + [n, n, C], np.float32)
    # flatten leading dims; loop over (leading index, channel batch)
    flat = da.data.reshape(-1, n_t, n_a, C) if lead else da.data[None]
    starts = list(range(0, C, int(batch)))
    total = len(starts) * flat.shape[0]
    step = 0
    for li in range(flat.shape[0]):
        for s in starts:
            e = min(C, s + int(batch))
            sino = torch.as_tensor(np.asarray(flat[li, :, :, s:e], np.float32), device=op.device)
            img = fbp_array(sino, angles, filter=filter, projector=op)
            out.reshape(-1, n, n, C)[li, :, :, s:e] = img.cpu().numpy()
            step += 1
            yield Progress(iteration=step, total=total, metrics={"channels_done": e, "channels": C},
                           preview=out.reshape(-1, n, n, C)[li, :, :, s:e].sum(-1))
    pos, units = image_coords(da, n)
    coords = {d: da[d] for d in lead}
    coords.update({
        _data.Y: xr.Variable((_data.Y,), pos, {"units": units, "long_name": "y"}),
        _data.X: xr.Variable((_data.X,), pos.copy(), {"units": units, "long_name": "x"}),
        spec: da[spec],
    })
    attrs = {k: v for k, v in da.attrs.items() if not k.startswith("provenance_")}
    attrs.update(_data.provenance("xrdwidgets.recon.fbp", {
        "filter": filter, "n": n, "circle": circle, "centre_offset": centre_offset,
        "n_angles": n_a, "source": da.attrs.get("provenance_producer", "")}))
    vol = xr.DataArray(out, dims=tuple(lead) + (_data.Y, _data.X, spec), coords=coords,
                       name="volume", attrs=attrs)
    return vol


def image_coords(stack, n: int):
    """Pixel-centre positions of an ``n``-pixel reconstruction of ``stack`` and their units.

    One pixel per translation step; positions relative to the rotation axis, computed as
    :meth:`ScanGeometry.translations` does so that they equal the simulator's coordinates.
    """
    geom = _data.get_geometry(stack)
    tcoord = stack[_data.TRANSLATION]
    if geom is not None and geom.translation_step_mm is not None:
        return geom.translations(n), "mm"
    t = tcoord.values
    step_len = float(abs(t[1] - t[0])) if t.size > 1 else 1.0
    return (np.arange(n) - (n - 1) / 2.0) * step_len, tcoord.attrs.get("units", _data.PIXEL_UNITS)


def fbp(stack, **kwargs) -> xr.DataArray:
    """Filtered back-projection of a sinogram stack, run to the end. See :func:`iterate_fbp`."""
    return run_to_end(iterate_fbp(stack, **kwargs))
