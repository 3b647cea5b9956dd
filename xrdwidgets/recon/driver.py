"""The one stack runner of every reconstruction method, and its plumbing (checks, volume, checkpoints).

Every method (FBP, SIRT, CGLS, TV, SD2I, ParallaxNet, Noise2Inverse; DLSR uses
:func:`prepare_stack`) provides only "solve one batch", a *bare-array generator*::

    solve(sino, op, channels) -> generator of Progress, returning the image batch

with ``sino`` a float32 tensor ``(translation, angle, C)`` on ``op.device``, ``channels`` the
slice of the spectral axis it holds, and the image batch ``(y, x, C)``. :func:`prepare_stack`
validates a sinogram stack and builds the one :class:`ParallelProjector` of its geometry;
:func:`run_stack` feeds it to ``solve`` in channel batches of at most ``batch`` channels (memory
stays bounded whatever the number of channels), re-emits the inner :class:`Progress` events with
a global step count, and assembles the volume ``(y, x, spectral)`` with coordinates, geometry
and provenance. :func:`stream_stack` does both. Any algorithm (FBP included: a one-step
``solve``) plugs in this way.

The batch plan (:class:`BatchPlan`, chosen in :func:`prepare_stack`)
    ``layout="tile"`` (classical methods, SD2I): batches of ``batch`` channels over the channels
    not done yet, one leading ``time``/``z`` slice at a time. ``"even"`` (Noise2Inverse): fixed
    near-equal groups of at most ``batch`` channels. ``"overlap"`` (ParallaxNet): fixed batches
    of ``batch`` channels overlapping by at least ``overlap``, merged by a linear cross-fade or
    the mean (``merge``). ``whole_lead=True``: a batch holds every leading slice (``solve`` gets
    numpy ``(L, translation, angle, C)`` and returns ``(L, y, x, C)``). A ``solve`` may return
    ``(image, metrics)``: the metrics (e.g. timings) go on the batch's last event.

The checks run when :func:`prepare_stack` is *called* (not at the first ``next()``), so a bad
argument fails at the line that passed it.

Checkpoints and resume
    After each finished channel batch, :func:`run_stack` attaches a checkpoint to the batch's last
    event (``metrics["checkpoint"]``)::

        {"kind": "xrdwidgets.recon.stack" (or the method's own, e.g. Noise2Inverse's), "version",
         "fingerprint": {"producer", "parameters", "dims", "shape", "data_hash"},
         "step": global step count so far, "total": steps of the whole run,
         "done_batches": int, "n_batches": int,
         "chunks": {"<lead>_<start>_<stop>": image batch (y, x, stop - start), float32}}

    ``chunks`` holds only the batch just finished (a *delta*): a consumer accumulates the chunks
    of all checkpoints (a :class:`~xrdwidgets.jobs.Job` with a ``workdir`` writes each to its own
    ``.npy`` file and lists them in ``checkpoint.pt``; :func:`xrdwidgets.jobs.merge_checkpoint`
    does it in memory), so checkpointing a volume costs one write of it in all, not one per batch.
    Passing the accumulated dict back (``checkpoint=``) restores the finished channels and
    reconstructs only the missing ones, in the same batches an uninterrupted run uses (so the
    volume is the same); a different ``batch`` or ``device`` is allowed.

    Within a batch, a solver may checkpoint too: if ``solve`` accepts ``checkpoint=`` and its
    events carry ``metrics["checkpoint"]`` (its own state, e.g. the iterate every
    ``checkpoint_every`` iterations: :func:`want_checkpoint`, :func:`restore_state`), the driver
    yields a stack checkpoint with no new chunks and ``"running": {"key": ..., "state": ...}``;
    on resume that batch is continued by ``solve(..., checkpoint=state)`` (when the batches are
    unchanged), and the result is the same as without interruption. A ``solve`` that yields
    checkpoints but does not accept ``checkpoint=`` manages them itself: they pass through
    untouched and the driver adds none. A checkpoint of another
    method, other parameters, another geometry or other data (the fingerprint holds a BLAKE2 hash
    of the sinograms as float32 and of the angles) is refused with a ValueError that says what
    differs. Hashing reads the stack once (about 1 s per GB); it is done when a checkpoint is
    given, else after the first batch. This is the one checkpoint schema of every stack method;
    a checkpoint of an earlier version (a lower ``version``, or ParallaxNet's former own format)
    is refused with an error that says it is from an older version.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import re
from dataclasses import dataclass, replace

import numpy as np
import torch
import xarray as xr

from .. import data as _data
from ..base.checks import check_fits_in_memory
from ..ops.projector import ParallelProjector
from ..base.progress import Progress
from ..base.validators import check_float, check_int  # noqa: F401  (re-exported)
from .batching import MERGE_WEIGHTS, even_batches, merge_batches, plan_batches

log = logging.getLogger(__name__)

__all__ = [
    "check_int", "check_float", "as_sino_batch", "as_image_batch", "to_output", "want_preview",
    "want_checkpoint", "restore_state",
    "preview_of", "support_of", "channel_norm", "channel_dot", "relative_residual",
    "StackPlan", "prepare_stack", "run_stack", "stream_stack", "stack_fingerprint",
    "STACK_CHECKPOINT_KIND", "BatchPlan", "capture_stack_run", "solve_batch", "volume_of",
]

#: ``kind`` of the checkpoints :func:`run_stack` yields.
STACK_CHECKPOINT_KIND = "xrdwidgets.recon.stack"
_STACK_CHECKPOINT_VERSION = 1
#: Parameters that may change between a checkpoint and its resumption.
_FREE_PARAMETERS = ("batch",)
_HASH_BLOCK = 64  # channels hashed at a time (fixed, so the hash does not depend on ``batch``)
_CHUNK_KEY = re.compile(r"(\d+)_(\d+)_(\d+)")
#: Kinds of per-method stack checkpoints of earlier versions (refused with an "older version" error).
_OLDER_KINDS = ("xrdwidgets.recon.parallaxnet",)
_LAYOUTS = ("tile", "even", "overlap")
#: Set by :func:`capture_stack_run`: a list that :func:`run_stack` appends ``(plan, solve)`` to.
_CAPTURE: contextvars.ContextVar = contextvars.ContextVar("xrdwidgets_stack_capture", default=None)


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


def want_checkpoint(k: int, n_iter: int, every) -> bool:
    """A within-batch checkpoint at every ``every``-th iteration but the last (0/None: never)."""
    return bool(every) and k % int(every) == 0 and k < n_iter


def restore_state(caller: str, checkpoint, kind: str, n_iter: int, shapes: dict, device):
    """Check a solver's own checkpoint (``{"kind", "iteration", name: tensor, ...}``) and load it.

    Parameters
    ----------
    caller : str
        Named in error messages.
    checkpoint : dict
        What the solver yielded in ``metrics["checkpoint"]``.
    kind : str
        The solver's checkpoint kind.
    n_iter : int
        Iterations of the run; the checkpoint's ``iteration`` must be below.
    shapes : dict
        ``{name: (shape, dtype)}`` of the tensors it must hold.
    device :
        Where to put them.

    Returns
    -------
    (int, dict)
        The iteration reached and ``{name: tensor}`` on ``device``.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"{caller}: checkpoint must be a dict or None, found {type(checkpoint).__name__}")
    if checkpoint.get("kind") != kind:
        raise ValueError(f"{caller}: checkpoint is of kind {checkpoint.get('kind')!r}, expected {kind!r}")
    k = checkpoint.get("iteration")
    if not isinstance(k, (int, np.integer)) or not 0 <= k < n_iter:
        raise ValueError(f"{caller}: checkpoint iteration must be an integer in [0, {n_iter}), found {k!r}")
    out = {}
    for name, (shape, dtype) in shapes.items():
        v = checkpoint.get(name)
        if v is None:
            raise ValueError(f"{caller}: checkpoint has no {name!r}")
        t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{caller}: checkpoint {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        out[name] = t.to(device=device, dtype=dtype).clone()
    return int(k), out


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
    version: int = _STACK_CHECKPOINT_VERSION


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
                  kind: str = STACK_CHECKPOINT_KIND, version: int = _STACK_CHECKPOINT_VERSION) -> StackPlan:
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
    if layout not in _LAYOUTS:
        raise ValueError(f"{caller}: layout must be one of {_LAYOUTS}, found {layout!r}")
    overlap = check_int(caller, "overlap", overlap, 0)
    if overlap >= batch:
        raise ValueError(f"{caller}: overlap must be smaller than batch (overlap {overlap}, batch {batch})")
    if merge not in MERGE_WEIGHTS:
        raise ValueError(f"{caller}: merge must be one of {MERGE_WEIGHTS}, found {merge!r}")
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


def run_stack(plan: StackPlan, solve, *, checkpoint: dict | None = None):
    """Run ``solve`` over the channel batches of a prepared stack; a generator.

    Parameters
    ----------
    plan : StackPlan
        From :func:`prepare_stack`.
    solve : callable
        ``solve(sino, op, channels)`` with ``sino`` float32 ``(translation, angle, C)`` on
        ``op.device`` and ``channels`` the ``slice`` of the spectral axis it holds: a generator of
        :class:`Progress` returning the image batch ``(y, x, C)``. A solver that can resume
        *within* a batch also accepts ``checkpoint=`` (its own state, or ``None``) and yields that
        state in ``metrics["checkpoint"]`` (see the module docstring).
    checkpoint : dict, optional
        A stack checkpoint (chunks accumulated, see the module docstring) to resume from: its
        channels are taken as done, the others reconstructed. Checked now (a ValueError names
        what does not match), not at the first ``next()``.

    Yields
    ------
    Progress
        The inner events, with ``iteration`` counted over all batches (``total`` = inner total ×
        number of batches) and ``metrics`` extended by ``inner_iteration``, ``batch``,
        ``n_batches``, ``channel_start``, ``channel_stop`` and ``channels``. The last event of
        each batch also carries ``metrics["checkpoint"]`` (module docstring); it is emitted once
        the batch is finished, so the events of a batch come one iteration late.

    Returns
    -------
    xarray.DataArray
        Volume ``(y, x, spectral)`` (leading ``time``/``z`` kept), float32, coordinates from
        :func:`image_coords`, the stack's attrs (geometry included) and
        new provenance.
    """
    holder = _CAPTURE.get()
    if holder is not None:  # capture_stack_run(): hand the plan and solver over, run nothing
        holder.append((plan, solve))
        return iter(())
    da, op = plan.stack, plan.op
    n = op.n
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    C = plan.n_channels
    out = np.zeros([da.sizes[d] for d in lead] + [n, n, C], np.float32)
    batches = BatchPlan(plan, n_lead(plan))
    step, fingerprint, running = 0, None, None
    if checkpoint is not None:
        fingerprint = stack_fingerprint(plan)
        step, running = _restore(plan, checkpoint, fingerprint, batches, out.reshape(-1, n, n, C))
        log.info("%s: resuming from a checkpoint: %d of %d batch(es) done, step %d%s", plan.caller,
                 batches.n_done, batches.n_done + len(batches.work()), step, "" if running is None else
                 f", batch {running['key']} from its saved state")
    return _run_stack(plan, solve, out, batches, step, fingerprint, running)


def n_lead(plan: StackPlan) -> int:
    """Number of flattened leading ``time``/``z`` slices of the plan's stack (1 without any)."""
    da = plan.stack
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    return int(np.prod([da.sizes[d] for d in lead])) if lead else 1


def capture_stack_run(iterate, stack, **kwargs):
    """The :class:`StackPlan` and ``solve`` that ``iterate(stack, **kwargs)`` would run, unrun.

    A method's stack-level function (``iterate_<method>``) checks its arguments, prepares the
    stack and hands its ``solve`` to :func:`run_stack`; here :func:`run_stack` only records them.
    Executors other than :func:`run_stack` (:mod:`xrdwidgets.distributed`) run the same batches
    with :func:`solve_batch`, so every method runs the same way everywhere.

    Returns
    -------
    (StackPlan, callable)

    Raises
    ------
    ValueError
        The method does not run through :func:`run_stack` (it has no batch plan).
    """
    holder: list = []
    token = _CAPTURE.set(holder)
    try:
        iterate(stack, **kwargs)
    finally:
        _CAPTURE.reset(token)
    if len(holder) != 1:
        name = getattr(iterate, "__name__", repr(iterate))
        raise ValueError(f"{name} does not run through the stack runner (run_stack was called "
                         f"{len(holder)} times); it cannot be split into channel batches")
    return holder[0]


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


def solve_batch(plan: StackPlan, solve, batch: tuple, *, state=None):
    """Run ``solve`` on one batch of the plan; a generator.

    Parameters
    ----------
    plan : StackPlan
    solve : callable
        The method's batch solver (see :func:`run_stack`).
    batch : (int, int, int)
        ``(lead, start, stop)``: a leading slice (-1: all, ``whole_lead``) and a channel range.
    state : optional
        The solver's own saved state within this batch (only for a ``solve`` accepting
        ``checkpoint=``).

    Yields
    ------
    Progress
        The solver's own events, unchanged.

    Returns
    -------
    (numpy.ndarray, dict)
        The image batch, float32 ``(y, x, stop - start)`` (``(L, y, x, stop - start)`` for lead
        -1), and the metrics the solver returned after its last event (often empty).
    """
    li, s, e = (int(v) for v in batch)
    n = plan.op.n
    sino = batch_input(plan, li, s, e)
    gen = solve(sino, plan.op, slice(s, e)) if state is None else solve(sino, plan.op, slice(s, e),
                                                                        checkpoint=state)
    value = yield from gen
    img, more = value if isinstance(value, tuple) else (value, {})
    arr = np.ascontiguousarray(
        img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img), np.float32)
    arr = arr.reshape(((sino.shape[0],) if li < 0 else ()) + (n, n, e - s))
    return arr, dict(more or {})


def volume_of(plan: StackPlan, out: np.ndarray) -> xr.DataArray:
    """The result DataArray of a finished run: ``out`` ``(leading..., y, x, C)`` float32 with the
    coordinates, geometry and provenance :func:`run_stack` gives."""
    da = plan.stack
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    return _volume(da, out, lead, _data.spectral_dim(da), plan.op.n, plan.producer, plan.parameters)


class BatchPlan:
    """The channel batches of a run and the results that are in: what is left to do, and where a
    finished batch goes in the volume.

    A batch is ``(lead, start, stop)``: ``lead`` the index of a flattened leading ``time``/``z``
    slice, or -1 for all of them (``whole_lead``). Checkpoints name a finished batch's images
    ``"<lead>_<start>_<stop>"``, one per leading slice (:func:`chunk_key`). Layouts (see
    :class:`StackPlan`): ``"tile"`` covers the channels not done yet, ``batch`` at a time;
    ``"even"`` and ``"overlap"`` are fixed (:func:`~xrdwidgets.recon.batching.even_batches`,
    :func:`~xrdwidgets.recon.batching.plan_batches`), overlapping batches merged once all of a
    leading slice's are in.
    """

    def __init__(self, plan: StackPlan, n_lead: int):
        self.plan, self.n_lead, self.C = plan, n_lead, plan.n_channels
        self.done = np.zeros((n_lead, self.C), bool)       # "tile": channels done
        if plan.layout == "overlap":
            self.slices = [(t.start, t.stop) for t in plan_batches(self.C, plan.batch, plan.overlap)]
        elif plan.layout == "even":
            self.slices = [(t.start, t.stop) for t in even_batches(self.C, plan.batch)]
        else:
            self.slices = None
        self.parts: dict = {}                              # fixed layouts: {lead: {(s, e): image or None}}
        self.n_done = 0

    @property
    def leads(self) -> list:
        return [-1] if self.plan.whole_lead else list(range(self.n_lead))

    def keys(self) -> set | None:
        """Names of every chunk of the run (fixed layouts), or None (any tiling is accepted)."""
        if self.slices is None:
            return None
        return {f"{li}_{s}_{e}" for li in range(self.n_lead) for s, e in self.slices}

    def is_done(self, li: int, s: int, e: int) -> bool:
        if self.slices is None:
            return bool(self.done[li, s:e].any())
        return (s, e) in self.parts.get(li, {})

    def work(self) -> list:
        """``(lead, start, stop)`` of the batches left, in order."""
        if self.slices is None:
            return [(li, s, e) for li in self.leads for s, e in _gaps(self.done[li], self.plan.batch)]
        return [(li, s, e) for li in self.leads for s, e in self.slices if not self.is_done(li, s, e)]

    def chunks(self, li: int, s: int, e: int, img: np.ndarray) -> dict:
        """The checkpoint chunks of a finished batch ``img``."""
        if li < 0:
            return {f"{k}_{s}_{e}": img[k] for k in range(self.n_lead)}
        return {f"{li}_{s}_{e}": img}

    def put(self, flat_out: np.ndarray, li: int, s: int, e: int, img: np.ndarray) -> None:
        """A finished batch ``img`` (``(y, x, e - s)``, or ``(L, y, x, e - s)`` for ``li`` -1):
        into the volume, or kept until its leading slice can be merged."""
        self.n_done += 1
        if self.slices is None:
            flat_out[li, :, :, s:e] = img
            self.done[li, s:e] = True
            return
        for k, im in ([(li, img)] if li >= 0 else enumerate(img)):
            key = -1 if li < 0 else k
            got = self.parts.setdefault(key, {})
            if self.plan.layout == "overlap":
                got[(s, e)] = im if li >= 0 else got.get((s, e), {}) | {k: im}
            else:
                flat_out[k, :, :, s:e] = im
                got[(s, e)] = None
        if self.plan.layout == "overlap":
            self._merge(flat_out, li)

    def _merge(self, flat_out, li):
        got = self.parts.get(li, {})
        if len(got) < len(self.slices) or any(v is None for v in got.values()):
            return
        for k in (range(self.n_lead) if li < 0 else [li]):
            res = [got[t][k] if li < 0 else got[t] for t in self.slices]
            sl = [slice(a, b) for a, b in self.slices]
            flat_out[k] = res[0] if len(res) == 1 else merge_batches(res, sl, self.C, weights=self.plan.merge)
        self.parts[li] = {t: None for t in got}  # merged: the batch images are not needed any more

    def restore(self, flat_out: np.ndarray, chunks: dict, caller: str, n: int) -> int:
        """Put a checkpoint's chunks in; returns how many batches were complete."""
        names = self.keys()
        by_batch: dict = {}
        for key, arr in chunks.items():
            li, s, e = chunk_key(caller, key)
            if not (li < self.n_lead and 0 <= s < e <= self.C):
                raise ValueError(f"{caller}: checkpoint chunk {key!r} lies outside the stack "
                                 f"({self.n_lead} leading slice(s), {self.C} channels)")
            if names is not None and key not in names:
                raise ValueError(f"{caller}: checkpoint chunk {key!r} is not one of this run's channel batches "
                                 f"(batches {self.slices} over {self.n_lead} leading slice(s))")
            by_batch.setdefault((s, e), {})[li] = np.asarray(chunk_array(caller, key, arr, (n, n, e - s)),
                                                            np.float32)
        for (s, e), per_lead in sorted(by_batch.items()):
            if self.plan.whole_lead:
                if len(per_lead) == self.n_lead:  # a batch of all slices is done only when all are in
                    self.put(flat_out, -1, s, e, np.stack([per_lead[k] for k in range(self.n_lead)]))
            else:
                for li, img in sorted(per_lead.items()):
                    self.put(flat_out, li, s, e, img)
        return self.n_done


def _key(li: int, s: int, e: int) -> str:
    """Name of batch ``(li, s, e)`` in checkpoints (a batch of every leading slice: lead 0)."""
    return f"{max(li, 0)}_{s}_{e}"


def _gaps(done_row: np.ndarray, batch: int):
    """``(start, stop)`` batches of at most ``batch`` channels covering the not-done channels."""
    C, i = done_row.size, 0
    while i < C:
        if done_row[i]:
            i += 1
            continue
        j = i
        while j < C and not done_row[j]:
            j += 1
        for s in range(i, j, batch):
            yield s, min(j, s + batch)
        i = j


def _accepts_checkpoint(solve) -> bool:
    import inspect

    try:
        params = inspect.signature(solve).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "checkpoint" or p.kind == p.VAR_KEYWORD for p in params)


def _run_stack(plan, solve, out, batches, step, fingerprint, running):
    """The one stack loop: every method's ``solve`` over the batches of ``batches``."""
    n, C = plan.op.n, plan.n_channels
    flat_out = out.reshape(-1, n, n, C)
    work = batches.work()
    n_batches = batches.n_done + len(work)
    resumable = _accepts_checkpoint(solve)
    if running is not None and not (resumable and running["key"] in {_key(li, s, e) for li, s, e in work}):
        log.info("%s: the saved state of batch %s is not used (%s); the batch starts again", plan.caller,
                 running["key"], "the solver cannot resume" if not resumable else "the batches changed")
        running = None
    b = batches.n_done

    def stack_checkpoint(chunks, state=None):
        nonlocal fingerprint
        if fingerprint is None:
            fingerprint = stack_fingerprint(plan)
        ck = {"kind": plan.kind, "version": plan.version, "fingerprint": fingerprint, "step": step, "total": total, "done_batches": b - (state is not None),
              "n_batches": n_batches, "chunks": chunks}
        if state is not None:
            ck["running"] = {"key": key, "state": state}
        return ck

    for li, s, e in work:
        b += 1
        key = _key(li, s, e)
        state = None
        if running is not None and running["key"] == key:
            state, running = running["state"], None
        gen = solve_batch(plan, solve, (li, s, e), state=state)
        extra = {"batch": b, "n_batches": n_batches, "channel_start": s, "channel_stop": e,
                 "channels": C}
        pending, total, own = None, None, False
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                arr, more = stop.value
                break
            step += 1
            total = ev.total * n_batches if ev.total is not None else None
            if pending is not None:
                yield pending
            metrics = {**ev.metrics, "inner_iteration": ev.iteration, **extra}
            inner = metrics.get("checkpoint")
            if inner is not None:
                if resumable:  # the solver's state within the batch, wrapped in a stack checkpoint
                    metrics["checkpoint"] = stack_checkpoint({}, inner)
                else:  # a solver that manages its checkpoints itself: left alone
                    own = True
            pending = Progress(iteration=step, total=total, loss=ev.loss, metrics=metrics,
                               preview=ev.preview)
        batches.put(flat_out, li, s, e, arr)
        log.debug("%s: batch %d/%d (channels %d:%d) done", plan.producer, b, n_batches, s, e)
        if pending is None:  # a solver without events (or resumed at its end): the checkpoint still goes out
            pending = Progress(iteration=step, total=total, metrics=dict(extra))
        if more:  # what the solver measured after its last event (e.g. timings)
            pending = replace(pending, metrics={**pending.metrics, **more})
        if not own:
            pending = replace(pending, metrics={**pending.metrics,
                                                "checkpoint": stack_checkpoint(batches.chunks(li, s, e, arr))})
        yield pending
    return volume_of(plan, out)


def stream_stack(stack, solve, *, checkpoint: dict | None = None, **kwargs):
    """:func:`prepare_stack` (checks run now) then :func:`run_stack` (a generator)."""
    return run_stack(prepare_stack(stack, **kwargs), solve, checkpoint=checkpoint)


# ---------------------------------------------------------------------------- checkpoints
def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def stack_fingerprint(plan: StackPlan) -> dict:
    """What a stack checkpoint must match to be resumed by ``plan`` (JSON-serialisable dict).

    ``producer`` (the method), ``parameters`` (all but ``batch``), ``dims``, ``shape`` and
    ``data_hash``: a BLAKE2b hash of the angles (float64) and of the sinograms as float32, read
    :data:`_HASH_BLOCK` channels at a time (lazy data are never loaded whole).
    """
    da, op = plan.stack, plan.op
    n_t, n_a = op.range_shape
    C = plan.n_channels
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    flat = da.data.reshape(-1, n_t, n_a, C) if lead else da.data[None]
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(op.angles_deg, np.float64).tobytes())
    for li in range(flat.shape[0]):
        for s in range(0, C, _HASH_BLOCK):
            h.update(np.ascontiguousarray(np.asarray(flat[li, :, :, s:s + _HASH_BLOCK]), np.float32).tobytes())
    params = {k: v for k, v in plan.parameters.items() if k not in _FREE_PARAMETERS}
    return {"producer": plan.producer, "parameters": _jsonable(params), "dims": list(da.dims),
            "shape": [int(v) for v in da.shape], "data_hash": h.hexdigest()}


def _fingerprint_differences(old, new: dict) -> list[str]:
    if not isinstance(old, dict):
        return ["it has no fingerprint"]
    diffs = []
    if old.get("producer") != new["producer"]:
        diffs.append(f"method {old.get('producer')!r} in the checkpoint, {new['producer']!r} now")
    if old.get("dims") != new["dims"] or old.get("shape") != new["shape"]:
        diffs.append(f"stack dims/shape {old.get('dims')}/{old.get('shape')} in the checkpoint, "
                     f"{new['dims']}/{new['shape']} now")
    p_old, p_new = old.get("parameters") or {}, new["parameters"]
    for k in sorted(set(p_old) | set(p_new)):
        if p_old.get(k, "<unset>") != p_new.get(k, "<unset>"):
            diffs.append(f"{k}={p_old.get(k, '<unset>')!r} in the checkpoint, {p_new.get(k, '<unset>')!r} now")
    if old.get("data_hash") != new["data_hash"]:
        diffs.append("the sinogram data or angles differ (data hash)")
    return diffs


def check_fingerprint(caller: str, old, new: dict) -> None:
    """Raise a ValueError listing what differs when a checkpoint's fingerprint ``old`` is not ``new``."""
    diffs = _fingerprint_differences(old, new)
    if diffs:
        raise ValueError(f"{caller}: the checkpoint belongs to another reconstruction ({'; '.join(diffs)}). "
                         "Resume with the stack and parameters it was made with, or start afresh "
                         "(checkpoint=None, or a new workdir)")


def check_stack_checkpoint(caller: str, checkpoint, fingerprint: dict, *, kind: str, version: int,
                           description: str) -> dict:
    """The checks every stack-level checkpoint gets: a dict, of ``kind`` and ``version``, made from
    the same stack and parameters (``fingerprint``). Returns its ``chunks`` (a dict, maybe empty).

    ``description`` completes "checkpoint is not … checkpoint" (e.g. ``"a Noise2Inverse"``).
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"{caller}: checkpoint must be a dict (e.g. xrdwidgets.jobs.load_checkpoint(workdir)) "
                        f"or None, found {type(checkpoint).__name__}")
    found = checkpoint.get("kind")
    if found != kind:
        raise ValueError(f"{caller}: checkpoint is not {description} checkpoint (kind {found!r}, expected {kind!r})")
    found = checkpoint.get("version")
    if isinstance(found, (int, np.integer)) and found < version:
        raise ValueError(f"{caller}: the checkpoint is from an older version of xrdwidgets (checkpoint "
                         f"version {found}; this one reads version {version}); it cannot be resumed: start "
                         "afresh (checkpoint=None, or a new workdir)")
    if found != version:
        raise ValueError(f"{caller}: checkpoint version {found!r} is not supported (this xrdwidgets reads "
                         f"version {version})")
    check_fingerprint(caller, checkpoint.get("fingerprint"), fingerprint)
    chunks = checkpoint.get("chunks") or {}
    if not isinstance(chunks, dict):
        raise TypeError(f"{caller}: checkpoint 'chunks' must be a dict, found {type(chunks).__name__}")
    return chunks


def chunk_key(caller: str, key, *, what: str = "chunk") -> tuple[int, int, int]:
    """``(lead, start, stop)`` of a chunk named ``'<lead>_<start>_<stop>'``."""
    m = _CHUNK_KEY.fullmatch(str(key))
    if m is None:
        raise ValueError(f"{caller}: checkpoint {what} {key!r} is not named '<lead>_<start>_<stop>'")
    li, s, e = (int(g) for g in m.groups())
    return li, s, e


def chunk_array(caller: str, key, arr, shape: tuple) -> np.ndarray:
    """A checkpoint chunk as an array of the expected ``shape`` (else a ValueError naming it)."""
    a = np.asarray(arr)
    if a.shape != tuple(shape):
        raise ValueError(f"{caller}: checkpoint chunk {key!r} has shape {a.shape}, expected {tuple(shape)}")
    return a


def _restore(plan: StackPlan, checkpoint, fingerprint: dict, batches: BatchPlan, flat_out: np.ndarray):
    """Check a stack checkpoint against ``plan`` and put its chunks in (:meth:`BatchPlan.restore`).

    Returns ``(step, running)``.
    """
    caller = plan.caller
    _refuse_older(caller, checkpoint, plan.label)
    chunks = check_stack_checkpoint(caller, checkpoint, fingerprint, kind=plan.kind, version=plan.version,
                                    description=f"a {plan.label}")
    batches.restore(flat_out, chunks, caller, plan.op.n)
    running = checkpoint.get("running")
    if running is not None:
        if not (isinstance(running, dict) and isinstance(running.get("key"), str) and "state" in running):
            raise ValueError(f"{caller}: checkpoint 'running' must be a dict with 'key' and 'state'")
        li, s, e = chunk_key(caller, running["key"], what="running batch")
        li = -1 if plan.whole_lead else li
        if not (li < batches.n_lead and 0 <= s < e <= batches.C) or batches.is_done(li, s, e):
            running = None  # outside the stack or already finished: nothing to continue
    step = checkpoint.get("step", 0)
    return (int(step) if isinstance(step, (int, np.integer)) else 0), running


def _refuse_older(caller: str, checkpoint, label: str) -> None:
    """A checkpoint of a per-method format of earlier versions: say so (they cannot be resumed)."""
    if isinstance(checkpoint, dict) and checkpoint.get("kind") in _OLDER_KINDS and "parallaxnet" in checkpoint:
        raise ValueError(f"{caller}: the checkpoint is from an older version of xrdwidgets (a {label} "
                         f"checkpoint of kind {checkpoint.get('kind')!r} with 'batch<i>' chunks, before the "
                         f"one stack-checkpoint schema {STACK_CHECKPOINT_KIND!r} v{_STACK_CHECKPOINT_VERSION}); "
                         "it cannot be resumed: start afresh (checkpoint=None, or a new workdir)")


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


def _volume(da, out, lead, spec, n, producer, params):
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
