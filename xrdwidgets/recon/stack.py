"""A sinogram stack made ready for the stack runner: checks, memory check, projector, volume.

:func:`prepare_stack` validates a sinogram stack ``(time, z, translation, angle, spectral)`` and the
common arguments, checks that the volume fits in memory (:func:`check_stack_memory`) and builds the
one :class:`~xrdwidgets.ops.projector.ParallelProjector` of its geometry: a :class:`StackPlan`.
:func:`batch_input` reads one channel batch of it; :func:`volume_of` / :func:`assemble_volume`
turn the reconstructed array into the volume ``(y, x, spectral)`` with coordinates
(:func:`image_coords`), geometry and provenance. The checks run when :func:`prepare_stack` is
called, so a bad argument fails at the line that passed it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from .. import data as _data
from ..base.checks import check_fits_in_memory
from ..base.errors import InputError
from ..base.validators import check_float, check_int
from ..ops.projector import ParallelProjector
from .batching import MERGE_WEIGHTS
from .stack_checkpoint import STACK_CHECKPOINT_KIND, STACK_CHECKPOINT_VERSION

__all__ = ["StackPlan", "LAYOUTS", "check_stack_memory", "prepare_stack", "n_lead", "batch_input",
           "volume_of", "image_coords", "assemble_volume"]

#: The batch plans of :class:`StackPlan` (``layout``).
LAYOUTS = ("tile", "even", "overlap")


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
    caller : str
        Name used in error messages.
    layout : {"tile", "even", "overlap"}
        The batch plan (:class:`BatchPlan`): ``"tile"`` batches of ``batch`` channels over the
        channels not done yet (``batch`` may change on resume); ``"even"`` fixed near-equal
        batches of at most ``batch`` (:func:`~xrdwidgets.recon.batching.even_batches`);
        ``"overlap"`` fixed batches of ``batch`` overlapping by at least ``overlap``
        (:func:`~xrdwidgets.recon.batching.plan_batches`), merged by ``merge``.
    overlap : int
    merge : {"linear", "mean"}
        How overlapping batches are merged (:func:`~xrdwidgets.recon.batching.merge_batches`).
    whole_lead : bool
        A batch holds every leading ``time``/``z`` slice (``solve`` gets ``(L, translation,
        angle, C)`` as numpy and returns ``(L, y, x, C)``), instead of one slice at a time.
    label : str
        The method's name in messages ("a <label> checkpoint").
    kind, version : str, int
        ``kind``/``version`` of its checkpoints (the schema is the same for every method).
    """

    stack: xr.DataArray
    op: ParallelProjector
    batch: int
    n_channels: int
    producer: str
    parameters: dict
    caller: str = "run_stack"
    layout: str = "tile"
    overlap: int = 0
    merge: str = "linear"
    whole_lead: bool = False
    label: str = "stack reconstruction"
    kind: str = STACK_CHECKPOINT_KIND
    version: int = STACK_CHECKPOINT_VERSION


def check_stack_memory(stack, n: int, batch: int, *, caller: str) -> None:
    """Before a stack reconstruction: does its volume (float32) plus one channel batch of
    sinograms fit in memory? A :class:`DataTooLargeError` naming the sizes otherwise.

    Parameters
    ----------
    stack : xarray.DataArray
        Validated sinogram stack ``(time, z, translation, angle, spectral)`` (lazy or not).
    n : int
        Image size (the volume is ``lead × n × n × channels``).
    batch : int
        Channels per batch.
    caller : str
        Named in the message.
    """
    sizes = dict(stack.sizes)
    lead = 1
    for d in _data.EXTRA_DIMS:
        lead *= sizes.get(d, 1)
    spec = _data.spectral_dim(stack)
    C = sizes[spec]
    volume = 4 * lead * n * n * C
    one_batch = 4 * sizes[_data.TRANSLATION] * sizes[_data.ANGLE] * min(batch, C)
    check_fits_in_memory(
        volume + one_batch,
        what=f"{caller}: the volume ({lead} × {n} × {n} × {C} float32) with one batch of {min(batch, C)} "
             "sinograms",
        lazy_hint=f"reconstruct fewer channels per run (stack.isel({spec}=slice(...))) or a smaller image "
                  "(n=), and write each part to a zarr store (xrdwidgets.io.save_zarr)")


def prepare_stack(stack, *, caller: str, producer: str, parameters: dict, batch: int = 64,
                  n: int | None = None, circle: bool = True, centre_offset: float | None = None,
                  device=None, layout: str = "tile", overlap: int = 0, merge: str = "linear",
                  whole_lead: bool = False, label: str = "stack reconstruction",
                  kind: str = STACK_CHECKPOINT_KIND, version: int = STACK_CHECKPOINT_VERSION) -> StackPlan:
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
    layout, overlap, merge, whole_lead, label, kind, version :
        See :class:`StackPlan`. With a fixed layout (``"even"``, ``"overlap"``) ``batch`` is part
        of the fingerprint.
    """
    da = _data.validate_sinogram_stack(stack, check_finite=True)
    batch = check_int(caller, "batch", batch)
    if layout not in LAYOUTS:
        raise InputError(f"{caller}: layout must be one of {LAYOUTS}, found {layout!r}")
    overlap = check_int(caller, "overlap", overlap, 0)
    if overlap >= batch:
        raise InputError(f"{caller}: overlap must be smaller than batch (overlap {overlap}, batch {batch})")
    if merge not in MERGE_WEIGHTS:
        raise InputError(f"{caller}: merge must be one of {MERGE_WEIGHTS}, found {merge!r}")
    n_t, n_a = da.sizes[_data.TRANSLATION], da.sizes[_data.ANGLE]
    n = n_t if n is None else check_int(caller, "n", n)
    check_stack_memory(da, n, batch, caller=caller)  # before the projector or any read
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
    if layout != "tile":  # fixed batches: part of what a checkpoint must match
        params.update(batch_plan=[layout, batch, overlap, merge])
    return StackPlan(da, op, batch, da.sizes[_data.spectral_dim(da)], producer, params, caller,
                     layout, overlap, merge, bool(whole_lead), label, kind, int(version))


def n_lead(plan: StackPlan) -> int:
    """Number of flattened leading ``time``/``z`` slices of the plan's stack (1 without any)."""
    da = plan.stack
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    return int(np.prod([da.sizes[d] for d in lead])) if lead else 1


def batch_input(plan: StackPlan, li: int, s: int, e: int):
    """The sinograms of batch ``(li, s, e)``: float32 tensor ``(translation, angle, e - s)`` on
    ``plan.op.device`` for one leading slice ``li``, numpy ``(L, translation, angle, e - s)`` for
    ``li`` -1 (``whole_lead``). Only these channels are read (lazy stacks stay lazy)."""
    da, op = plan.stack, plan.op
    n_t, n_a = op.range_shape
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    flat_in = da.data.reshape(-1, n_t, n_a, plan.n_channels) if lead else da.data[None]
    if li < 0:
        return np.ascontiguousarray(np.asarray(flat_in[..., s:e]), np.float32)
    return torch.as_tensor(np.asarray(flat_in[li, :, :, s:e], np.float32), device=op.device)


def volume_of(plan: StackPlan, out: np.ndarray) -> xr.DataArray:
    """The result DataArray of a finished run: ``out`` ``(leading..., y, x, C)`` float32 with the
    coordinates, geometry and provenance :func:`run_stack` gives."""
    da = plan.stack
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    return assemble_volume(da, out, lead, _data.spectral_dim(da), plan.op.n, plan.producer, plan.parameters)


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


def assemble_volume(da, out, lead, spec, n, producer, params) -> xr.DataArray:
    """The volume DataArray of a reconstruction of the stack ``da``.

    Parameters
    ----------
    da : xarray.DataArray
        The sinogram stack (its leading coordinates, spectral coordinate, geometry and attrs are
        kept; its provenance is replaced).
    out : numpy.ndarray
        The reconstruction, float32 ``(leading..., y, x, spectral)``.
    lead : sequence of str
        The leading dims of ``da`` (``time``/``z``) present in ``out``.
    spec : str
        The spectral dim name.
    n : int
        Image size in pixels.
    producer : str
        Recorded as ``provenance_producer``.
    params : dict
        Recorded as ``provenance_parameters``.

    Returns
    -------
    xarray.DataArray
        ``(leading..., y, x, spectral)``, named ``"volume"``, ``y``/``x`` in the units of
        :func:`image_coords`.
    """
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
