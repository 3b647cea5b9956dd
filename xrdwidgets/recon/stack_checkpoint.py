"""The one checkpoint schema of every stack reconstruction: what it holds, its fingerprint, its checks.

After each finished channel batch, :func:`xrdwidgets.recon.driver.run_stack` attaches a
checkpoint to the batch's last event (``metrics["checkpoint"]``)::

    {"kind": "xrdwidgets.recon.stack" (or the method's own, e.g. Noise2Inverse's), "version",
     "fingerprint": {"producer", "parameters", "dims", "shape", "data_hash"},
     "step": global step count so far, "total": steps of the whole run,
     "done_batches": int, "n_batches": int,
     "chunks": {"<lead>_<start>_<stop>": image batch (y, x, stop - start), float32}}

(and ``"running": {"key", "state"}`` when a solver checkpointed within a batch). The fingerprint
(:func:`stack_fingerprint`) names the method, its parameters, the stack's dims and shape, and a
BLAKE2 hash of the sinograms and angles; a checkpoint whose fingerprint differs is refused with an
error that says what differs (:func:`check_stack_checkpoint`). A checkpoint of an earlier version
is refused with an error that says it is from an older version.
"""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from .. import data as _data
from ..base.errors import InputTypeError, StateError

__all__ = ["STACK_CHECKPOINT_KIND", "STACK_CHECKPOINT_VERSION", "jsonable", "stack_fingerprint",
           "check_fingerprint", "check_stack_checkpoint", "chunk_key", "chunk_array",
           "restore_stack_checkpoint"]

#: ``kind`` of the checkpoints :func:`~xrdwidgets.recon.driver.run_stack` yields.
STACK_CHECKPOINT_KIND = "xrdwidgets.recon.stack"
#: ``version`` of that schema (a checkpoint of a lower version is refused as "older version").
STACK_CHECKPOINT_VERSION = 1
#: Parameters that may change between a checkpoint and its resumption.
_FREE_PARAMETERS = ("batch",)
_HASH_BLOCK = 64  # channels hashed at a time (fixed, so the hash does not depend on ``batch``)
_CHUNK_KEY = re.compile(r"(\d+)_(\d+)_(\d+)")
#: Kinds of per-method stack checkpoints of earlier versions (refused with an "older version" error).
_OLDER_KINDS = ("xrdwidgets.recon.parallaxnet",)


def jsonable(obj):
    """``obj`` as it reads back from JSON (keys sorted, unknown types as their ``str``)."""
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def stack_fingerprint(plan) -> dict:
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
    return {"producer": plan.producer, "parameters": jsonable(params), "dims": list(da.dims),
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
        raise StateError(f"{caller}: the checkpoint belongs to another reconstruction ({'; '.join(diffs)}). "
                         "Resume with the stack and parameters it was made with, or start afresh "
                         "(checkpoint=None, or a new workdir)")


def check_stack_checkpoint(caller: str, checkpoint, fingerprint: dict, *, kind: str, version: int,
                           description: str) -> dict:
    """The checks every stack-level checkpoint gets: a dict, of ``kind`` and ``version``, made from
    the same stack and parameters (``fingerprint``). Returns its ``chunks`` (a dict, maybe empty).

    ``description`` completes "checkpoint is not … checkpoint" (e.g. ``"a Noise2Inverse"``).
    """
    if not isinstance(checkpoint, dict):
        raise InputTypeError(f"{caller}: checkpoint must be a dict (e.g. xrdwidgets.jobs.load_checkpoint(workdir)) "
                        f"or None, found {type(checkpoint).__name__}")
    found = checkpoint.get("kind")
    if found != kind:
        raise StateError(f"{caller}: checkpoint is not {description} checkpoint (kind {found!r}, expected {kind!r})")
    found = checkpoint.get("version")
    if isinstance(found, (int, np.integer)) and found < version:
        raise StateError(f"{caller}: the checkpoint is from an older version of xrdwidgets (checkpoint "
                         f"version {found}; this one reads version {version}); it cannot be resumed: start "
                         "afresh (checkpoint=None, or a new workdir)")
    if found != version:
        raise StateError(f"{caller}: checkpoint version {found!r} is not supported (this xrdwidgets reads "
                         f"version {version})")
    check_fingerprint(caller, checkpoint.get("fingerprint"), fingerprint)
    chunks = checkpoint.get("chunks") or {}
    if not isinstance(chunks, dict):
        raise InputTypeError(f"{caller}: checkpoint 'chunks' must be a dict, found {type(chunks).__name__}")
    return chunks


def chunk_key(caller: str, key, *, what: str = "chunk") -> tuple[int, int, int]:
    """``(lead, start, stop)`` of a chunk named ``'<lead>_<start>_<stop>'``."""
    m = _CHUNK_KEY.fullmatch(str(key))
    if m is None:
        raise StateError(f"{caller}: checkpoint {what} {key!r} is not named '<lead>_<start>_<stop>'")
    li, s, e = (int(g) for g in m.groups())
    return li, s, e


def chunk_array(caller: str, key, arr, shape: tuple) -> np.ndarray:
    """A checkpoint chunk as an array of the expected ``shape`` (else a ValueError naming it)."""
    a = np.asarray(arr)
    if a.shape != tuple(shape):
        raise StateError(f"{caller}: checkpoint chunk {key!r} has shape {a.shape}, expected {tuple(shape)}")
    return a


def _refuse_older(caller: str, checkpoint, label: str) -> None:
    """A checkpoint of a per-method format of earlier versions: say so (they cannot be resumed)."""
    if isinstance(checkpoint, dict) and checkpoint.get("kind") in _OLDER_KINDS and "parallaxnet" in checkpoint:
        raise StateError(f"{caller}: the checkpoint is from an older version of xrdwidgets (a {label} "
                         f"checkpoint of kind {checkpoint.get('kind')!r} with 'batch<i>' chunks, before the "
                         f"one stack-checkpoint schema {STACK_CHECKPOINT_KIND!r} v{STACK_CHECKPOINT_VERSION}); "
                         "it cannot be resumed: start afresh (checkpoint=None, or a new workdir)")


def restore_stack_checkpoint(plan, checkpoint, fingerprint: dict, batches, flat_out: np.ndarray):
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
            raise StateError(f"{caller}: checkpoint 'running' must be a dict with 'key' and 'state'")
        li, s, e = chunk_key(caller, running["key"], what="running batch")
        li = -1 if plan.whole_lead else li
        if not (li < batches.n_lead and 0 <= s < e <= batches.C) or batches.is_done(li, s, e):
            running = None  # outside the stack or already finished: nothing to continue
    step = checkpoint.get("step", 0)
    return (int(step) if isinstance(step, (int, np.integer)) else 0), running
