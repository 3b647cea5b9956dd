"""Shared plumbing of the reconstruction algorithms: argument checks, channel streaming, volume.

Every algorithm is written once, as a *bare-array generator* over a channel batch::

    solve(sino, op, channels) -> generator of Progress, returning the image batch

with ``sino`` a float32 tensor ``(translation, angle, C)`` on ``op.device``, ``channels`` the
slice of the spectral axis it holds, and the image batch ``(y, x, C)``. :func:`prepare_stack`
validates a sinogram stack and builds the one :class:`ParallelProjector` of its geometry;
:func:`run_stack` feeds it to ``solve`` in channel batches of at most ``batch`` channels (memory
stays bounded whatever the number of channels), re-emits the inner :class:`Progress` events with
a global step count, and assembles the volume ``(y, x, spectral)`` with coordinates, geometry
and provenance. :func:`stream_stack` does both. Any algorithm (FBP included: a one-step
``solve``) plugs in this way.

The checks run when :func:`prepare_stack` is *called* (not at the first ``next()``), so a bad
argument fails at the line that passed it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from .. import data as _data
from ..ops.projector import ParallelProjector
from .base import Progress

log = logging.getLogger(__name__)

__all__ = [
    "check_int", "check_float", "as_sino_batch", "as_image_batch", "to_output", "want_preview",
    "preview_of", "support_of", "channel_norm", "channel_dot", "relative_residual",
    "StackPlan", "prepare_stack", "run_stack", "stream_stack",
]


# ---------------------------------------------------------------------------- argument checks
def check_int(caller: str, name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; a ValueError naming ``caller``/``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if not (isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{caller}: {name} must be an integer >= {minimum}, found {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{caller}: {name} must be an integer >= {minimum}, found {value}")
    return value


def check_float(caller: str, name: str, value, *, minimum: float | None = None,
                strict: bool = False, maximum: float | None = None) -> float:
    """``value`` as a finite float within the given bounds, else a ValueError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{caller}: {name} must be a finite number, found {value!r}") from None
    bound = ""
    if minimum is not None:
        bound = f" {'>' if strict else '>='} {minimum}"
    if maximum is not None:
        bound += (" and" if bound else "") + f" < {maximum}"
    bad = not math.isfinite(v)
    bad |= minimum is not None and (v <= minimum if strict else v < minimum)
    bad |= maximum is not None and v >= maximum
    if bad:
        raise ValueError(f"{caller}: {name} must be a finite number{bound}, found {value!r}")
    return v


# ---------------------------------------------------------------------------- array handling
@dataclass(frozen=True)
class _Wrap:
    """How to give the result back: numpy or torch, with or without the channel axis."""

    numpy: bool
    squeeze: bool


def as_sino_batch(caller: str, sino, op: ParallelProjector):
    """Check a sinogram (batch) against ``op`` and return it as a float32 tensor ``(n_t, n_a, C)``.

    Parameters
    ----------
    sino : numpy.ndarray or torch.Tensor
        ``(translation, angle)`` or ``(translation, angle, C)``.
    op : ParallelProjector
        The projector it must fit (``op.range_shape``).

    Returns
    -------
    tensor : torch.Tensor
        float32 ``(n_t, n_a, C)`` on ``op.device`` (a view when already so).
    wrap : _Wrap
        Pass to :func:`to_output` to return an image of the caller's type and rank.
    """
    if not isinstance(op, ParallelProjector):
        raise ValueError(f"{caller}: op must be a ParallelProjector, found {type(op).__name__}")
    is_np = not isinstance(sino, torch.Tensor)
    if is_np:
        arr = np.asarray(sino)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{caller}: sino must be a real numeric array, found dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    else:
        t = sino.detach()
    if t.dim() not in (2, 3):
        raise ValueError(f"{caller}: sino must be (translation, angle) or (translation, angle, C), "
                         f"found shape {tuple(t.shape)}")
    if tuple(t.shape[:2]) != tuple(op.range_shape):
        raise ValueError(
            f"{caller}: sino has (translation, angle) = {tuple(t.shape[:2])} but the projector "
            f"expects {tuple(op.range_shape)} (n_translations={op.n_translations}, "
            f"{op.angles_deg.size} angles)")
    squeeze = t.dim() == 2
    if squeeze:
        t = t[..., None]
    if t.shape[2] < 1:
        raise ValueError(f"{caller}: sino has no channels (shape {tuple(t.shape)})")
    t = t.to(device=op.device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{caller}: sino must be finite, found {n_bad} NaN/inf values of {t.numel()}")
    return t, _Wrap(numpy=is_np, squeeze=squeeze)


def as_image_batch(caller: str, x0, op: ParallelProjector, n_channels: int) -> torch.Tensor:
    """Initial image batch ``(n, n, C)`` float32 on ``op.device``: ``x0`` checked, or zeros."""
    shape = (op.n, op.n, n_channels)
    if x0 is None:
        return torch.zeros(shape, dtype=torch.float32, device=op.device)
    t = x0.detach() if isinstance(x0, torch.Tensor) else torch.from_numpy(np.asarray(x0, np.float32))
    if t.dim() == 2:
        t = t[..., None]
    if tuple(t.shape) != shape:
        raise ValueError(f"{caller}: x0 must have shape {shape[:2]} or {shape}, found {tuple(t.shape)}")
    t = t.to(device=op.device, dtype=torch.float32).clone()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{caller}: x0 must be finite")
    return t


def to_output(x: torch.Tensor, wrap: _Wrap):
    """The image batch ``x`` in the caller's type (numpy/torch) and rank."""
    if wrap.squeeze:
        x = x[..., 0]
    return x.cpu().numpy() if wrap.numpy else x


def want_preview(k: int, n_iter: int, every) -> bool:
    """Preview at every ``every``-th iteration and at the last one (``every`` 0/None: last only)."""
    return k == n_iter or (bool(every) and k % int(every) == 0)


def preview_of(x: torch.Tensor) -> np.ndarray:
    """A ``(y, x)`` numpy preview of an image batch: the sum over channels (as FBP's)."""
    return x.sum(-1).detach().cpu().numpy()


def support_of(op: ParallelProjector) -> torch.Tensor:
    """Float ``(n, n, 1)`` tensor: 1 inside the projector's mask (everywhere without one)."""
    if op.mask is None:
        return torch.ones((op.n, op.n, 1), dtype=torch.float32, device=op.device)
    return torch.as_tensor(op.mask, dtype=torch.float32, device=op.device)[..., None]


def channel_norm(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each channel of a batch ``(..., C)`` → ``(C,)`` (float64 accumulation)."""
    return torch.linalg.vector_norm(t.reshape(-1, t.shape[-1]).double(), dim=0)


def channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product of each channel of two batches ``(..., C)`` → ``(C,)`` (float64)."""
    return (a.reshape(-1, a.shape[-1]).double() * b.reshape(-1, b.shape[-1]).double()).sum(0)


def relative_residual(r: torch.Tensor, b_norm: torch.Tensor) -> float:
    """``‖r‖ / ‖b‖`` over the whole batch (all channels together), a float."""
    num = float(torch.sqrt((channel_norm(r) ** 2).sum()))
    den = float(torch.sqrt((b_norm ** 2).sum()))
    return num / den if den > 0 else num


# ---------------------------------------------------------------------------- stack streaming
@dataclass(frozen=True)
class StackPlan:
    """A validated sinogram stack with its projector: what :func:`run_stack` needs.

    Attributes
    ----------
    stack : xarray.DataArray
        The stack in canonical order ``(time, z, translation, angle, spectral)``.
    op : ParallelProjector
        The projector of its geometry.
    batch : int
        Channels per batch.
    n_channels : int
        Length of the spectral axis.
    producer : str
        Recorded as ``provenance_producer``.
    parameters : dict
        Recorded in ``provenance_parameters``.
    """

    stack: xr.DataArray
    op: ParallelProjector
    batch: int
    n_channels: int
    producer: str
    parameters: dict


def prepare_stack(stack, *, caller: str, producer: str, parameters: dict, batch: int = 64,
                  n: int | None = None, circle: bool = True, centre_offset: float | None = None,
                  device=None) -> StackPlan:
    """Validate a sinogram stack and the common arguments; build its projector.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (any dim order, validated by :func:`xrdwidgets.data.validate_sinogram_stack`).
    caller, producer : str
        Name used in error messages / recorded as ``provenance_producer``.
    parameters : dict
        Algorithm parameters recorded in ``provenance_parameters`` (geometry ones are added).
    batch : int
        Channels per batch (bounds the working memory).
    n : int, optional
        Image size (default: the number of translations).
    circle : bool
        Restrict the image to the inscribed circle (the projector's mask).
    centre_offset : float, optional
        Rotation-axis offset in translation steps (default: the stored geometry's, else 0).
    device : optional
        torch device (default CUDA when present).
    """
    da = _data.validate_sinogram_stack(stack, check_finite=True)
    batch = check_int(caller, "batch", batch)
    n_t, n_a = da.sizes[_data.TRANSLATION], da.sizes[_data.ANGLE]
    n = n_t if n is None else check_int(caller, "n", n)
    geom = _data.get_geometry(da)
    if centre_offset is None:
        centre_offset = geom.centre_offset if geom is not None else 0.0
    centre_offset = check_float(caller, "centre_offset", centre_offset)
    angles = da[_data.ANGLE].values.astype(float)
    op = ParallelProjector(n, angles, n_translations=n_t, centre_offset=centre_offset, mask=bool(circle),
                           device=device)
    params = dict(parameters)
    params.update({"n": n, "circle": bool(circle), "centre_offset": centre_offset, "n_angles": n_a,
                   "batch": batch, "source": da.attrs.get("provenance_producer", "")})
    return StackPlan(da, op, batch, da.sizes[_data.spectral_dim(da)], producer, params)


def run_stack(plan: StackPlan, solve):
    """Run ``solve`` over the channel batches of a prepared stack; a generator.

    Parameters
    ----------
    plan : StackPlan
        From :func:`prepare_stack`.
    solve : callable
        ``solve(sino, op, channels)`` with ``sino`` float32 ``(translation, angle, C)`` on
        ``op.device`` and ``channels`` the ``slice`` of the spectral axis it holds: a generator of
        :class:`Progress` returning the image batch ``(y, x, C)``.

    Yields
    ------
    Progress
        The inner events, with ``iteration`` counted over all batches (``total`` = inner total ×
        number of batches) and ``metrics`` extended by ``inner_iteration``, ``batch``,
        ``n_batches``, ``channel_start``, ``channel_stop`` and ``channels``.

    Returns
    -------
    xarray.DataArray
        Volume ``(y, x, spectral)`` (leading ``time``/``z`` kept), float32, coordinates from
        :func:`xrdwidgets.recon.fbp.image_coords`, the stack's attrs (geometry included) and
        new provenance.
    """
    da, op, batch = plan.stack, plan.op, plan.batch
    spec = _data.spectral_dim(da)
    n = op.n
    n_t, n_a = op.range_shape
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    C = plan.n_channels
    flat_in = da.data.reshape(-1, n_t, n_a, C) if lead else da.data[None]
    n_lead = flat_in.shape[0]
    out = np.zeros([da.sizes[d] for d in lead] + [n, n, C], np.float32)
    flat_out = out.reshape(n_lead, n, n, C)
    starts = list(range(0, C, batch))
    n_batches = len(starts) * n_lead
    step = 0
    b = 0
    for li in range(n_lead):
        for s in starts:
            e = min(C, s + batch)
            b += 1
            sino = torch.as_tensor(np.asarray(flat_in[li, :, :, s:e], np.float32), device=op.device)
            gen = solve(sino, op, slice(s, e))
            extra = {"batch": b, "n_batches": n_batches, "channel_start": s, "channel_stop": e,
                     "channels": C}
            while True:
                try:
                    ev = next(gen)
                except StopIteration as stop:
                    img = stop.value
                    break
                step += 1
                total = ev.total * n_batches if ev.total is not None else None
                yield Progress(iteration=step, total=total, loss=ev.loss,
                               metrics={**ev.metrics, "inner_iteration": ev.iteration, **extra},
                               preview=ev.preview)
            flat_out[li, :, :, s:e] = img.detach().cpu().numpy()
            log.debug("%s: batch %d/%d (channels %d:%d) done", plan.producer, b, n_batches, s, e)
    return _volume(da, out, lead, spec, n, plan.producer, plan.parameters)


def stream_stack(stack, solve, **kwargs):
    """:func:`prepare_stack` (checks run now) then :func:`run_stack` (a generator)."""
    return run_stack(prepare_stack(stack, **kwargs), solve)


def _volume(da, out, lead, spec, n, producer, params):
    from .fbp import image_coords  # one definition of the image grid

    pos, units = image_coords(da, n)
    coords = {d: da[d] for d in lead}
    coords.update({
        _data.Y: xr.Variable((_data.Y,), pos, {"units": units, "long_name": "y"}),
        _data.X: xr.Variable((_data.X,), pos.copy(), {"units": units, "long_name": "x"}),
        spec: da[spec],
    })
    attrs = {k: v for k, v in da.attrs.items() if not k.startswith("provenance_")}
    attrs.update(_data.provenance(producer, params))
    return xr.DataArray(out, dims=tuple(lead) + (_data.Y, _data.X, spec), coords=coords,
                        name="volume", attrs=attrs)
