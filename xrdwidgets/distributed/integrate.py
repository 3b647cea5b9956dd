"""Raw detector frames integrated on a dask cluster: chunks of frames as tasks, written into the
work store of :mod:`xrdwidgets.integrate.assemble`, so a stopped run resumes as a local one does.
"""
from __future__ import annotations

import logging
import math
import time
import uuid

from ..base.errors import InputError, InputTypeError
from ..base.progress import Progress
from .cluster import WORKER_LOCK, scheduler_workers, tune_worker_malloc

log = logging.getLogger(__name__)

__all__ = ["integrate_chunks", "iterate_integration_distributed"]

_WORKER_INTEGRATIONS: dict = {}  # run id -> IntegrationRun prepared on this worker


def integrate_chunks(spec: dict, chunks: list) -> dict:
    """One task of a cluster integration: integrate frame ``chunks`` of a prepared run into its
    work store (on a dask worker; also callable in-process). Chunks already marked done are
    skipped. Returns ``{"chunks": [...done now...], "frames": n, "setup_s": seconds spent opening the
    frames and building the integrator (0 after the first task of a run on a worker)}``."""
    import torch

    from ..integrate.assemble import _DONE, integrate_chunk, prepare_integration, work_store

    try:
        from distributed import get_worker

        get_worker()  # raises ValueError outside a dask worker: then the caller's threads stay as they are
        tune_worker_malloc()
        torch.set_num_threads(1)  # one chunk per worker thread
    except (ImportError, ValueError):
        pass
    t0 = time.perf_counter()
    with WORKER_LOCK:
        run = _WORKER_INTEGRATIONS.get(spec["run_id"])
        if run is None:
            for old in _WORKER_INTEGRATIONS.values():
                old.close()
            _WORKER_INTEGRATIONS.clear()
            run = prepare_integration(spec["raw"], spec["poni"], **spec["kw"])
            _WORKER_INTEGRATIONS[spec["run_id"]] = run
    setup_s = time.perf_counter() - t0
    done_dir = work_store(run.out) / _DONE
    done, frames = [], 0
    for k in chunks:
        if (done_dir / str(int(k))).exists():  # a retried task, or a chunk finished by a former run
            continue
        frames += integrate_chunk(run, int(k))
        done.append(int(k))
    return {"chunks": done, "frames": frames, "setup_s": setup_s}


def iterate_integration_distributed(raw, poni, *, client, out, checksums: bool = True, task_chunks: int | None = None,
                                    retries: int = 2, **kwargs):
    """Integrate a raw scan on a dask cluster: chunks of frames as tasks; a generator.

    Every worker opens the frame files and builds the integrator itself (once per run) and writes
    its chunks' patterns into the work store of ``out`` (:mod:`xrdwidgets.integrate.assemble`:
    one zarr chunk and one ``done`` marker per frame chunk), so a stopped run resumes as a local
    one does, and the stack assembled at the end is the one :func:`xrdwidgets.integrate.integrate`
    gives.

    Parameters
    ----------
    raw : path, list of paths, folder or glob
        The frame files (on a file system every worker reads; not an opened ``FrameSource``).
    poni : path or pyFAI integrator
    client : distributed.Client
    out : path
        The output (``.h5``/``.zarr``); its work store is ``<out>.partial.zarr`` (shared too).
    checksums : bool
        As in :func:`~xrdwidgets.integrate.iterate_integration`.
    task_chunks : int, optional
        Frame chunks per task (default: about four tasks per worker thread).
    retries : int
        Times a failed task is tried again.
    **kwargs
        The other keywords of :func:`~xrdwidgets.integrate.iterate_integration` (``chunk``,
        ``bins``, ``mask``, ``plan``, ``overwrite``, ...).

    Yields
    ------
    Progress
        One per finished task (``metrics``: ``frames``, ``n_frames``, ``frames_per_s``, ``eta_s``,
        ``worker_setup_s``: seconds the workers spent so far opening frames and building integrators).

    Returns
    -------
    xarray.DataArray
        The sinogram stack, read back from ``out``.
    """
    from ..integrate.assemble import finish_integration, integration_progress, prepare_integration
    from ..integrate.readers import FrameSource

    if client is None:
        raise InputError("iterate_integration_distributed: client must be a distributed.Client, found None")
    if out is None:
        raise InputError("integrate on a cluster: out= is needed (the workers write into its work store "
                         "<out>.partial.zarr, on a file system they all see)")
    if isinstance(raw, FrameSource):
        raise InputTypeError("integrate on a cluster: give the frame files (a path, list, folder or glob), not an "
                        "opened FrameSource: each worker opens them itself")
    kwargs.pop("prefetch", None)
    run = prepare_integration(raw, poni, out=out, **kwargs)
    overwrite = bool(kwargs.get("overwrite", False))
    return _drive_integration(client, run, raw, poni, kwargs, overwrite, checksums, task_chunks, int(retries),
                              finish_integration, integration_progress)


def _drive_integration(client, run, raw, poni, kwargs, overwrite, checksums, task_chunks, retries, finish, progress):
    from distributed import as_completed

    futures = []
    try:
        pending = run.pending
        if run.done:
            log.info("%s: resuming, %d of %d chunks already done", run.out, len(run.done), run.n_chunks)
        if pending:
            threads = sum(int(w.get("nthreads", 1)) for w in scheduler_workers(client)) or 1
            per = int(task_chunks) if task_chunks else max(1, math.ceil(len(pending) / (4 * threads)))
            run_id = uuid.uuid4().hex[:12]
            spec = {"run_id": run_id, "raw": raw, "poni": poni,
                    "kw": {**kwargs, "out": str(run.out), "overwrite": False}}
            [spec_ref] = client.scatter([spec], broadcast=False, hash=False)
            for i in range(0, len(pending), per):
                group = pending[i:i + per]
                futures.append(client.submit(integrate_chunks, spec_ref, group, key=f"xrdwidgets-integrate-{run_id}-{i}",
                                             retries=retries, pure=False))
            log.info("%s: %d chunk(s) in %d task(s) submitted", run.out, len(pending), len(futures))
        t0 = time.perf_counter()
        frames_done, setup_s = 0, 0.0
        for fut in as_completed(futures, loop=client.loop):
            try:
                res = fut.result()
            except Exception as exc:
                raise RuntimeError(f"integration into {run.out}: task {fut.key} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
            run.done.update(res["chunks"])
            frames_done += res["frames"]
            setup_s += res.get("setup_s", 0.0)
            ev = progress(run, t0, frames_done)
            yield Progress(iteration=ev.iteration, total=ev.total, loss=ev.loss, preview=ev.preview,
                           metrics={**ev.metrics, "worker_setup_s": setup_s})
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
        run.close()
    from ..integrate.assemble import _DONE, work_store

    run.done = {int(p.name) for p in (work_store(run.out) / _DONE).iterdir() if p.name.isdigit()}
    return finish(run, overwrite=overwrite, checksums=checksums)
