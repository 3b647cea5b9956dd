"""Scale-out on dask.distributed: a method's channel batches as tasks, results streamed to zarr.

(Raw detector frames go the same way: :func:`iterate_integration_distributed` integrates chunks
of frames as tasks into the work store of :mod:`xrdwidgets.integrate`; see its docstring.)

Every registered reconstruction method runs through the one stack runner
(:mod:`xrdwidgets.recon.driver`), whose *batch plan* (channel batches, or overlapping batches for
ParallaxNet) is the unit of distribution here: each batch is one dask task that runs the method's
own batch solver (:func:`~xrdwidgets.recon.driver.solve_batch`) on a worker and writes its image
straight into a zarr store. The same generator of :class:`~xrdwidgets.base.progress.Progress` events
comes back, so a progress bar, a :class:`~xrdwidgets.jobs.Job` and the Reconstruct panel show a
cluster run as they show a local one::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")            # or Client(local_cluster(2))
    vol = reconstruct_distributed(stack, "sd2i", client=client, store="run.zarr", epochs=2000)

Where the work goes
    One task per batch. Workers with a ``GPU`` resource (``dask worker --resources GPU=1``,
    :func:`local_cluster` on a machine with GPUs, :func:`slurm_cluster`) each take one batch at a
    time on their GPU; without GPU workers the batches run on CPU workers, one batch per worker
    thread (one torch thread each). The stack reaches each worker once: a path (HDF5/zarr
    file on a shared file system) is read by each worker itself; an in-memory stack is scattered
    once (``Client.scatter``), never pickled per task. Progress (loss, preview, iteration) is
    published by the workers (``Worker.log_event``, at most every ``progress_every_s`` seconds
    per batch) and read by the caller (``Client.subscribe_topic``).

The store (a zarr folder, e.g. ``run.zarr``)
    A volume ``(leading..., y, x, spectral)`` float32 made by
    :func:`~xrdwidgets.io.create_zarr_stack`, chunked so that every batch covers whole chunks:
    workers write their batch region concurrently (:meth:`~xrdwidgets.io.ZarrStackWriter.write_block`).
    Beside it, the group ``xrdwidgets_run``: the run record (attribute ``run``: method, parameters,
    the stack's fingerprint, the batches) and, one element (one chunk) per batch, ``done``,
    ``sha256`` of what was written and ``seconds``; overlapping batches (ParallaxNet) are kept whole
    there (``part_<key>``) and merged into the volume by the caller at the end, as the
    single-process runner merges them. Everything is zarr, so the store may live on any file
    system or object store that every worker and the caller reach. :func:`xrdwidgets.io.open_zarr`
    opens it as the volume; it is marked complete when every batch is in.

Faults and resume
    A worker that dies loses only its running batch: the scheduler runs that task again on
    another worker. Tasks are idempotent: a batch marked ``done`` is not computed again. A caller
    that dies leaves the store; calling again with the same stack, method, parameters and store
    resumes: finished batches are checked against their SHA-256 and skipped, the others (and any
    that do not match) computed. A store of another stack or other parameters is refused with a
    message saying what differs; a folder that is not such a store is never overwritten. The
    result is the one the single-process runner gives for the same plan (the same solver on the
    same batches; equal to float tolerance).

``client`` may be any ``distributed.Client``: of a :class:`~distributed.LocalCluster`, a remote
scheduler, or a dask-jobqueue cluster (:func:`slurm_cluster`). This package imports dask only when
used.

The package's parts: :mod:`~xrdwidgets.distributed.cluster` (clusters and worker settings),
:mod:`~xrdwidgets.distributed.store` (the zarr store and its bookkeeping),
:mod:`~xrdwidgets.distributed.batch` (one task: a batch on a worker),
:mod:`~xrdwidgets.distributed.run` (the caller's side: submit, progress, assemble) and
:mod:`~xrdwidgets.distributed.integrate` (raw frames integrated on a cluster).
"""
from __future__ import annotations

from .batch import BatchTask, run_batch
from .cluster import (WORKER_ENV, connect, dashboard_link, gpu_workers, keep_environment, local_cluster,
                      slurm_cluster, worker_device)
from .integrate import integrate_chunks, iterate_integration_distributed
from .run import iterate_distributed, iterate_on_cluster, reconstruct_distributed
from .store import RUN_GROUP, store_status

__all__ = ["iterate_distributed", "reconstruct_distributed", "iterate_on_cluster",
           "iterate_integration_distributed", "integrate_chunks", "local_cluster", "connect", "slurm_cluster",
           "dashboard_link", "store_status", "keep_environment", "run_batch", "BatchTask", "RUN_GROUP",
           "WORKER_ENV", "gpu_workers", "worker_device"]
