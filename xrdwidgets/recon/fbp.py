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

from ..base.errors import InputError
from ..ops.filters import FILTERS, fbp_filter, filter_sinogram
from ..ops.projector import ParallelProjector
from ..base.progress import Progress, run_to_end
from . import driver as _drv
from .stack import image_coords  # noqa: F401  (re-exported: it was defined here)
from .registry import common_params, param, register

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
        raise InputError(f"fbp_array: expected (translation, angle[, C]), found shape {tuple(t.shape)}")
    n_t, n_a = t.shape[:2]
    if len(np.ravel(angles_deg)) != n_a:
        raise InputError(f"fbp_array: {len(np.ravel(angles_deg))} angles given for a sinogram with {n_a} angles")
    op = projector or ParallelProjector(n or n_t, angles_deg, n_translations=n_t,
                                        centre_offset=centre_offset, mask=circle, device=device)
    t = t.to(op.device)
    img = op.T(filter_sinogram(t, filter)) * _scale(n_a)
    return img.cpu().numpy() if is_np else img


def iterate_fbp(stack, *, filter: str = "ramp", batch: int = 256, n: int | None = None,
                circle: bool = True, centre_offset: float | None = None, device=None,
                checkpoint: dict | None = None):
    """FBP of a sinogram stack as a generator of :class:`Progress`, one event per channel batch.

    The arguments are checked when this is called (not at the first ``next()``).

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
    circle : bool
        Zero outside the inscribed circle.
    centre_offset : float, optional
        Rotation-axis offset in steps (default: the stored geometry's, else 0).
    device : optional
        torch device (default CUDA when present).
    checkpoint : dict, optional
        Resume from a stack checkpoint (``metrics["checkpoint"]`` of the events, chunks
        accumulated; e.g. ``xrdwidgets.jobs.load_checkpoint(workdir)``): finished channel
        batches are taken from it. It must come from the same stack, method and parameters
        (``batch`` and ``device`` may differ); see :mod:`xrdwidgets.recon.driver`.

    Returns
    -------
    generator
        Yields one ``Progress`` per batch (with a checkpoint in ``metrics["checkpoint"]``); returns the volume ``(y, x, spectral)`` (leading
        ``time``/``z`` kept), float32, coords in the units of the translation coordinate,
        geometry and provenance in attrs.
    """
    fbp_filter(1, filter)  # unknown filter names fail now
    plan = _drv.prepare_stack(stack, caller="iterate_fbp", producer="xrdwidgets.recon.fbp",
                              parameters={"filter": filter}, batch=batch, n=n, circle=circle,
                              centre_offset=centre_offset, device=device)

    def solve(sino, op, channels):
        img = fbp_array(sino, op.angles_deg, filter=filter, projector=op)
        yield Progress(iteration=1, total=1, preview=img.sum(-1).cpu().numpy())
        return img

    return _drv.run_stack(plan, solve, checkpoint=checkpoint)


def fbp(stack, **kwargs) -> xr.DataArray:
    """Filtered back-projection of a sinogram stack, run to the end. See :func:`iterate_fbp`."""
    return run_to_end(iterate_fbp(stack, **kwargs))


register("fbp", iterate_fbp, label="FBP (filtered back-projection)",
         help="filtered back-projection: fast, one step per channel batch",
         params=[param("filter", label="FBP filter", help="FBP filter (window of the ramp)", choices=FILTERS),
                 *common_params()])
