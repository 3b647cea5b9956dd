"""The one stack runner of every reconstruction method.

Its parts, re-exported here: :mod:`~xrdwidgets.recon.stack` (the stack checked and its
projector, the volume), :mod:`~xrdwidgets.recon.stack_checkpoint` (the checkpoint schema),
:mod:`~xrdwidgets.recon.solver_kit` (what every batch solver shares) and
:class:`~xrdwidgets.recon.batching.BatchPlan` (the batches of a run).

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
    differs. Hashing reads the stack once; it is done when a checkpoint is
    given, else after the first batch. This is the one checkpoint schema of every stack method;
    a checkpoint of an earlier version (a lower ``version``, or ParallaxNet's former own format)
    is refused with an error that says it is from an older version.
"""
from __future__ import annotations

import contextvars
import inspect
import logging
from dataclasses import replace

import numpy as np
import torch

from .. import data as _data
from ..base.errors import InputError
from ..base.progress import Progress
from ..base.validators import check_float, check_int  # noqa: F401  (re-exported)
from .batching import BatchPlan, batch_key
# The parts of the stack runner, re-exported here: the methods use them as ``_drv.<name>``.
from .solver_kit import (as_image_batch, as_sino_batch, channel_dot, channel_norm, preview_of,  # noqa: F401
                         relative_residual, restore_state, support_of, to_output, want_checkpoint,
                         want_preview)
from .stack import (StackPlan, batch_input, check_stack_memory, image_coords, n_lead,  # noqa: F401
                    prepare_stack, volume_of)
from .stack_checkpoint import (STACK_CHECKPOINT_KIND, check_fingerprint, check_stack_checkpoint,  # noqa: F401
                               chunk_array, chunk_key, restore_stack_checkpoint, stack_fingerprint)

log = logging.getLogger(__name__)

__all__ = [
    "check_int", "check_float", "as_sino_batch", "as_image_batch", "to_output", "want_preview",
    "want_checkpoint", "restore_state",
    "preview_of", "support_of", "channel_norm", "channel_dot", "relative_residual",
    "StackPlan", "prepare_stack", "run_stack", "stream_stack", "stack_fingerprint",
    "STACK_CHECKPOINT_KIND", "BatchPlan", "capture_stack_run", "solve_batch", "volume_of",
]

#: Set by :func:`capture_stack_run`: a list that :func:`run_stack` appends ``(plan, solve)`` to.
_CAPTURE: contextvars.ContextVar = contextvars.ContextVar("xrdwidgets_stack_capture", default=None)


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
        step, running = restore_stack_checkpoint(plan, checkpoint, fingerprint, batches, out.reshape(-1, n, n, C))
        log.info("%s: resuming from a checkpoint: %d of %d batch(es) done, step %d%s", plan.caller,
                 batches.n_done, batches.n_done + len(batches.work()), step, "" if running is None else
                 f", batch {running['key']} from its saved state")
    return _run_stack(plan, solve, out, batches, step, fingerprint, running)


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
        raise InputError(f"{name} does not run through the stack runner (run_stack was called "
                         f"{len(holder)} times); it cannot be split into channel batches")
    return holder[0]


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


def _accepts_checkpoint(solve) -> bool:
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
    if running is not None and not (resumable and running["key"] in {batch_key(li, s, e) for li, s, e in work}):
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
        key = batch_key(li, s, e)
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
