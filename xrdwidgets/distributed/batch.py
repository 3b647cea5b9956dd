"""One task of a distributed reconstruction: a method's batch solver on one channel batch, on a
dask worker, its image written to the run's store and its progress published.

See :mod:`xrdwidgets.distributed`.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..base.progress import Progress
from ..recon.batching import batch_key
from ..recon.driver import capture_stack_run, solve_batch
from ..recon.registry import get_method
from .cluster import WORKER_LOCK, tune_worker_malloc, worker_device
from .store import RUN_GROUP, lead_index, run_group, sha256

log = logging.getLogger(__name__)

__all__ = ["BatchTask", "run_batch", "PROGRESS_TOPIC"]

#: Prefix of the dask event topic a run's progress is published on (``+ run_id``).
PROGRESS_TOPIC = "xrdwidgets-progress-"
_PREVIEW_MAX = 256  # a published preview is at most this many pixels on a side
_WORKER_PLANS: dict = {}  # (run_id, stack key) -> (plan, solve); a few recent runs per worker process
_WORKER_STACKS: dict = {}  # path -> loaded stack


@dataclass(frozen=True)
class BatchTask:
    """What one task does: run ``method`` with ``params`` on batch ``batch`` of the stack.

    Attributes
    ----------
    run_id : str
        The store's run id (progress topic, worker cache key).
    method : str
        Registered method name.
    params : dict
        The method's keywords (``device`` excluded: the worker chooses it).
    store : str
        Path of the zarr store (shared file system).
    index : int
        Position of the batch in the run's list (its entry in the store's ``done`` array).
    batch : tuple
        ``(lead, start, stop)``: leading slice (-1: all) and channel range.
    parts : bool
        Write the batch image to ``_xrdwidgets_parts`` (overlapping batches) instead of the volume.
    gpu : bool
        Run on the worker's GPU.
    progress_every_s : float
        Least seconds between two published progress events of this batch.
    """

    run_id: str
    method: str
    params: dict
    store: str
    index: int
    batch: tuple
    parts: bool
    gpu: bool
    progress_every_s: float

    @property
    def key(self) -> str:
        return batch_key(*self.batch)



def _stack_on_worker(stack):
    if isinstance(stack, (str, Path)):
        key = str(stack)
        if key not in _WORKER_STACKS:
            from .. import io

            _WORKER_STACKS.clear()
            _WORKER_STACKS[key] = io.load(key)
        return _WORKER_STACKS[key]
    return stack


def _plan_on_worker(task: BatchTask, stack, device):
    key = (task.run_id, id(stack) if not isinstance(stack, (str, Path)) else str(stack), str(device))
    with WORKER_LOCK:  # a worker with several threads runs several batches at once
        if key not in _WORKER_PLANS:
            if len(_WORKER_PLANS) >= 4:
                _WORKER_PLANS.pop(next(iter(_WORKER_PLANS)))
            spec = get_method(task.method)
            _WORKER_PLANS[key] = capture_stack_run(spec.iterate, _stack_on_worker(stack), device=device,
                                                        **task.params)
        return _WORKER_PLANS[key]


def _small_preview(img) -> dict | None:
    if img is None:
        return None
    a = np.asarray(img, np.float32)
    if a.ndim != 2:
        return None
    step = max(1, math.ceil(max(a.shape) / _PREVIEW_MAX))
    a = np.ascontiguousarray(a[::step, ::step])
    return {"shape": list(a.shape), "data": a.tobytes()}


def _plain(v):
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, (float, np.floating, np.integer)):
        return float(v) if isinstance(v, (float, np.floating)) else int(v)
    return None


def _publish(worker, task: BatchTask, ev: Progress, final: bool) -> None:
    if worker is None:
        return
    msg = {"key": task.key, "iteration": int(ev.iteration), "total": None if ev.total is None else int(ev.total),
           "loss": None if ev.loss is None else float(ev.loss), "worker": str(worker.address),
           "metrics": {k: _plain(v) for k, v in (ev.metrics or {}).items() if _plain(v) is not None},
           "preview": _small_preview(ev.preview), "final": final}
    worker.log_event(PROGRESS_TOPIC + task.run_id, msg)


def run_batch(task: BatchTask, stack) -> dict:
    """One task: the batch ``task.batch`` of ``task.method`` on ``stack``, written to the store.

    Runs on a dask worker (also callable in-process). Idempotent: a batch with a ``done``
    record is not computed again.

    Parameters
    ----------
    task : BatchTask
    stack : xarray.DataArray or str
        The sinogram stack, or the path of a file :func:`xrdwidgets.io.load` reads.

    Returns
    -------
    dict
        ``{"key", "computed": bool, "seconds", "worker"}``.
    """
    import torch

    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        worker = None
    store = Path(task.store)
    sub = run_group(store, "r+")
    if sub is None:
        raise FileNotFoundError(f"{store}: the store of this run is gone (no {RUN_GROUP!r} group)")
    if sub["done"][task.index]:
        return {"key": task.key, "computed": False, "seconds": 0.0, "worker": getattr(worker, "address", "")}
    t0 = time.perf_counter()
    if worker is not None:
        tune_worker_malloc()
        if not task.gpu:
            torch.set_num_threads(1)  # a CPU worker runs one batch per thread
    device = worker_device(task.gpu, worker)
    plan, solve = _plan_on_worker(task, stack, device)
    gen = solve_batch(plan, solve, task.batch)
    last, ev = -math.inf, None
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            arr, _more = stop.value
            break
        now = time.monotonic()
        if now - last >= task.progress_every_s:
            _publish(worker, task, ev, final=False)
            last = now
    if ev is not None:  # the batch's last event, with its image (summed over channels) as the preview
        summed = arr.sum(axis=tuple(range(arr.ndim - 3)) + (-1,)) if arr.ndim >= 3 else arr
        _publish(worker, task, replace(ev, preview=summed), final=True)
    _write_batch(store, sub, task, arr, plan)
    seconds = time.perf_counter() - t0
    sub["sha256"][task.index] = np.frombuffer(sha256(arr), np.uint8)   # data, checksum, then the flag
    sub["seconds"][task.index] = seconds
    sub["done"][task.index] = 1
    return {"key": task.key, "computed": True, "seconds": seconds,
            "worker": getattr(worker, "address", "in-process")}


def _write_batch(store: Path, sub, task: BatchTask, arr: np.ndarray, plan) -> None:
    li, s, e = task.batch
    if task.parts:  # overlapping batches: kept whole, merged by the caller at the end
        name = f"part_{task.key}"
        if name in sub:
            del sub[name]
        sub.create_array(name, shape=arr.shape, chunks=arr.shape, dtype="float32")[...] = arr
        return
    from ..io import open_zarr_stack

    idx = lead_index(plan, li)
    writer = open_zarr_stack(store)
    writer.write_block(arr, s, lead=idx) if idx else writer.write_block(arr, s)
