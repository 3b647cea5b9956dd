"""A method's batch plan on a dask cluster, seen from the caller: submit the batches, stream their
progress, assemble the volume from the store.

See :mod:`xrdwidgets.distributed`.
"""
from __future__ import annotations

import logging
import os
import queue
import uuid
from pathlib import Path

import numpy as np

from ..base.errors import InputError
from ..base.progress import Progress, run_to_end
from ..recon.batching import BatchPlan, batch_key
from ..recon.driver import capture_stack_run
from ..recon.registry import get_method
from ..recon.stack import n_lead, volume_of
from .batch import PROGRESS_TOPIC, BatchTask, run_batch
from .cluster import dashboard_link, gpu_workers
from .store import open_run, read_batch, run_group

log = logging.getLogger(__name__)

__all__ = ["iterate_distributed", "reconstruct_distributed", "iterate_on_cluster"]


def iterate_distributed(stack, method: str = "fbp", /, *, client, store, overwrite: bool = False,
                        gpu: bool | None = None, retries: int = 2, progress_every_s: float = 1.0, **params):
    """Run ``method``'s batch plan on a dask cluster; a generator of Progress returning the volume.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset or path
        Sinogram stack ``(translation, angle, spectral)`` (any dim order), or the path of a file
        :func:`xrdwidgets.io.load` reads (then every worker reads it itself: it must be on a file
        system the workers see).
    method : str
        A registered method (:func:`xrdwidgets.recon.methods`).
    client : distributed.Client
    store : path
        The zarr store of the run (module docstring). It must be on a file system every worker
        and the caller see. An existing store of the same run is resumed.
    overwrite : bool
        Discard an existing store of another run (a folder that is not such a store is never
        removed).
    gpu : bool, optional
        Run on GPU workers (resource ``GPU``). Default: when the cluster has any.
    retries : int
        Times a failed task is tried again (a worker that dies does not count: the scheduler
        re-runs its task anyway).
    progress_every_s : float
        Least seconds between two progress events of one batch.
    **params
        The method's keywords (``batch``, ``epochs``, ...) as for :func:`xrdwidgets.recon.reconstruct`;
        not ``device`` (each worker uses its GPU or CPU) nor ``checkpoint`` (the store is the
        checkpoint).

    Yields
    ------
    Progress
        ``iteration`` counted over all batches (a finished batch counts whole), ``total``,
        ``loss`` and ``preview`` of the batch that reported; ``metrics``: ``batch`` (its key),
        ``batches_done``, ``n_batches``, ``worker``, ``inner_iteration`` (on events from inside a
        batch), ``distributed`` (True),
        ``dashboard`` (the dask dashboard's URL, or "").

    Returns
    -------
    xarray.DataArray
        The volume ``(y, x, spectral)`` in memory, as :func:`xrdwidgets.recon.reconstruct` gives it.
        ``attrs["distributed_computed"]``/``["distributed_skipped"]``: batches computed by this
        call / found finished in the store (at the start, or meanwhile by a former caller's task).

    Raises
    ------
    ValueError, TypeError
        Bad method or parameters (before anything is submitted); a store of another run.
    FileExistsError
        ``store`` exists and is not a store of a distributed run.
    """
    bad = sorted(k for k in ("device", "checkpoint") if params.get(k) is not None)
    params = {k: v for k, v in params.items() if k not in ("device", "checkpoint")}
    if bad:
        raise InputError(f"iterate_distributed: {bad} cannot be set: each worker uses its GPU or CPU, "
                         "and the store is the checkpoint (call again with the same store to resume)")
    if client is None:
        raise InputError("iterate_distributed: client must be a distributed.Client, found None")
    spec = get_method(method)
    source = None
    if isinstance(stack, (str, os.PathLike)):
        from .. import io

        source = str(Path(stack).resolve())
        stack = io.load(source)
    plan, _solve = capture_stack_run(spec.iterate, stack, device="cpu", **params)
    batches = BatchPlan(plan, n_lead(plan)).work()
    store = Path(store).resolve()
    run, done = open_run(store, plan, batches, spec.name, bool(overwrite))
    gpu = gpu_workers(client) > 0 if gpu is None else bool(gpu)
    return _drive(client, plan, spec.name, {k: v for k, v in params.items()}, store, run, done, source, gpu,
                  int(retries), float(progress_every_s))


def _drive(client, plan, method, params, store, run, done, source, gpu, retries, progress_every_s):
    from distributed import as_completed

    batches = [tuple(b) for b in run["batches"]]
    n_batches = len(batches)
    todo = [b for b in batches if batch_key(*b) not in done]
    skipped = n_batches - len(todo)
    if skipped:
        log.info("%s: resuming, %d of %d batch(es) already done", store, skipped, n_batches)
    run_id, call = run["run_id"], uuid.uuid4().hex[:8]
    dashboard = dashboard_link(client)
    events: queue.Queue = queue.Queue()
    topic = PROGRESS_TOPIC + run_id
    futures = []
    computed = 0
    step_of = {batch_key(*b): None for b in batches}   # inner iteration reached per batch
    batch_of = {batch_key(*b): tuple(b) for b in batches}
    total_of: dict = {}
    finished = set(done)
    if todo:
        client.subscribe_topic(topic, lambda event: events.put(event[1]))
    try:
        if todo:
            ref = source if source is not None else client.scatter(plan.stack, broadcast=False, hash=False)
            resources = {"GPU": 1} if gpu else None
            index = {batch_key(*b): i for i, b in enumerate(batches)}
            for b in todo:
                task = BatchTask(run_id, method, params, str(store), index[batch_key(*b)], b, run["parts"], gpu,
                                 progress_every_s)
                futures.append(client.submit(run_batch, task, ref, key=f"xrdwidgets-{method}-{run_id}-{call}-{task.key}",
                                             resources=resources, retries=retries, pure=False))
            log.info("%s: %d batch task(s) submitted (%s workers)", store, len(futures), "GPU" if gpu else "CPU")
        ac = as_completed(futures, loop=client.loop)

        def progress(msg, preview=None):
            inner_total = next((t for t in total_of.values() if t), None)
            step = sum((total_of.get(k) or 0) if k in finished else (v or 0) for k, v in step_of.items())
            total = inner_total * n_batches if inner_total else None
            metrics = {"batch": msg.get("key"), "batches_done": len(finished), "n_batches": n_batches,
                       "worker": msg.get("worker", ""),
                       "distributed": True, "dashboard": dashboard, **(msg.get("metrics") or {})}
            if msg.get("key") in batch_of:  # the channels of the batch that reported
                metrics["channel_start"], metrics["channel_stop"] = batch_of[msg["key"]][1:]
            if msg.get("iteration") is not None:
                metrics["inner_iteration"] = msg["iteration"]
            return Progress(iteration=min(step, total) if total else step, total=total, loss=msg.get("loss"),
                            metrics=metrics, preview=preview)

        while not ac.is_empty() or not events.empty():
            try:
                msg = events.get(timeout=0.05)
            except queue.Empty:
                msg = None
            if msg is not None and msg.get("key") in step_of and not msg.get("done"):
                step_of[msg["key"]] = msg.get("iteration")
                if msg.get("total"):
                    total_of[msg["key"]] = msg["total"]
                p = msg.get("preview")
                preview = None if p is None else np.frombuffer(p["data"], np.float32).reshape(p["shape"])
                yield progress(msg, preview)
            for fut in ac.next_batch(block=False) if ac.has_ready() else ():
                try:
                    res = fut.result()
                except Exception as exc:
                    raise RuntimeError(f"distributed run in {store}: task {fut.key} failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
                finished.add(res["key"])
                computed += bool(res["computed"])
                skipped += not res["computed"]  # finished meanwhile by a former caller's task
                if res["key"] in step_of and step_of[res["key"]] is None:
                    step_of[res["key"]] = 0
                yield progress({"key": res["key"], "worker": res.get("worker", ""),
                                "metrics": {"batch_seconds": res.get("seconds", 0.0)}})
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
        if todo:
            try:
                client.unsubscribe_topic(topic)
            except Exception:  # noqa: BLE001 - the client may already be closed
                log.debug("unsubscribe_topic failed", exc_info=True)
    return _assemble(store, plan, run, computed, skipped)


def _assemble(store: Path, plan, run: dict, computed: int, skipped: int):
    """Read the finished batches from the store, merge overlapping ones, return the volume."""
    import zarr

    flags = np.asarray(run_group(store)["done"][:])
    missing = [batch_key(*b) for b, f in zip(run["batches"], flags) if not f]
    if missing:
        raise RuntimeError(f"{store}: batches {missing} are not finished; call again to resume")
    n, C = plan.op.n, plan.n_channels
    lead_count = n_lead(plan)
    grp = zarr.open_group(str(store), mode="r+")
    arr = grp["volume"]
    out = np.zeros(arr.shape, np.float32)
    if run["parts"]:
        batch_plan, chunks = BatchPlan(plan, lead_count), {}
        for b in run["batches"]:
            chunks.update(batch_plan.chunks(b[0], b[1], b[2], read_batch(store, plan, tuple(b), True)))
        batch_plan.restore(out.reshape(-1, n, n, C), chunks, f"distributed run in {store}", n)
        arr[...] = out
    else:
        out[...] = arr[...]
    from ..io._common import _Z_COMPLETE

    grp.attrs[_Z_COMPLETE] = True
    vol = volume_of(plan, out)
    vol.attrs["distributed_computed"] = int(computed)
    vol.attrs["distributed_skipped"] = int(skipped)
    log.info("%s: volume assembled (%d batch(es) computed now, %d found finished)", store, computed, skipped)
    return vol


def iterate_on_cluster(cluster, stack, method: str = "fbp", /, *, store, timeout_s: float = 20.0, **params):
    """:func:`iterate_distributed` on ``cluster``: a ``Client``, or a scheduler address connected to
    (and disconnected from) inside the generator, so that a caller (a widget callback) never waits
    for the connection. A generator; ``params`` as for :func:`iterate_distributed`.
    """
    from distributed import Client

    own = not hasattr(cluster, "submit")
    client = Client(str(cluster), timeout=f"{float(timeout_s)}s") if own else cluster
    try:
        return (yield from iterate_distributed(stack, method, client=client, store=store, **params))
    finally:
        if own:
            client.close()


def reconstruct_distributed(stack, method: str = "fbp", /, *, client, store, callback=None, **kwargs):
    """:func:`iterate_distributed` run to the end; returns the volume (``callback`` gets every event)."""
    return run_to_end(iterate_distributed(stack, method, client=client, store=store, **kwargs), callback)
