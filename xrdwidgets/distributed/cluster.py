"""Dask clusters for xrdwidgets: start or reach one, and the worker-process settings.

:func:`local_cluster` (worker processes, one per GPU when there are GPUs), :func:`connect` (a
``Client`` of a scheduler or of a new local cluster), :func:`slurm_cluster` (dask-jobqueue on an
HPC centre), :func:`keep_environment` (the caller's environment kept as it was while dask starts
workers), and what a worker needs for itself: its torch device (:func:`worker_device`) and its
malloc settings (:func:`tune_worker_malloc`). Imports dask only when called.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from ..base.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["local_cluster", "connect", "slurm_cluster", "keep_environment", "dashboard_link", "WORKER_ENV",
           "scheduler_workers", "gpu_workers", "worker_device", "tune_worker_malloc", "WORKER_LOCK"]

#: Held by a worker's tasks while they fill the worker-process caches (a worker with several
#: threads runs several tasks at once).
WORKER_LOCK = threading.Lock()


def local_cluster(n_workers: int | None = None, *, threads_per_worker: int | None = None, gpus=None,
                  **kwargs):
    """A ``LocalCluster`` of worker processes: one per GPU when GPUs are present, else CPU workers.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: the number of GPUs, else 2).
    threads_per_worker : int, optional
        Threads (and torch threads) per worker (default: the CPU cores shared out, at least 1).
    gpus : int, optional
        GPUs to use (default: all that torch sees). With GPUs, worker ``i`` sees only GPU
        ``i % gpus`` (``CUDA_VISIBLE_DEVICES``) and has the resource ``{"GPU": 1}``.
    **kwargs
        Passed to ``LocalCluster`` / ``SpecCluster`` (e.g. ``dashboard_address``).

    Returns
    -------
    distributed.LocalCluster or distributed.SpecCluster
        Close it when done (``with local_cluster(2) as cluster, Client(cluster) as client: ...``).
    """
    import torch
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    if gpus is None:
        gpus = torch.cuda.device_count()
    gpus = int(gpus)
    if n_workers is None:
        n_workers = gpus or 2
    n_workers = int(n_workers)
    if n_workers < 1:
        raise InputError(f"local_cluster: n_workers must be at least 1, found {n_workers}")
    if threads_per_worker is None:
        threads_per_worker = max(1, (os.cpu_count() or 1) // n_workers)
    import dask

    kwargs.setdefault("dashboard_address", ":0")
    env = {**WORKER_ENV, **dict(kwargs.pop("env", None) or {})}
    # dask's nannies would write their "pre-spawn" settings (OMP_NUM_THREADS=1,
    # MALLOC_TRIM_THRESHOLD_=65536) into *this* process's environment at every worker (re)start;
    # here the workers get the thread limits as their own environment instead, and no malloc
    # setting (see _tune_worker_malloc)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}), keep_environment():
        if not gpus:
            return LocalCluster(n_workers=n_workers, threads_per_worker=int(threads_per_worker), processes=True,
                                env=env, **kwargs)
        workers = {f"gpu-{i}": {"cls": Nanny, "options": {
            "nthreads": int(threads_per_worker), "resources": {"GPU": 1},
            "env": {**env, "CUDA_VISIBLE_DEVICES": str(i % gpus)}}} for i in range(n_workers)}
        scheduler = {"cls": Scheduler, "options": {"dashboard_address": kwargs.pop("dashboard_address")}}
        return SpecCluster(workers=workers, scheduler=scheduler, **kwargs)


#: Environment of :func:`local_cluster`'s workers: one thread per BLAS/OpenMP pool (each worker
#: thread runs one batch with one torch thread).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@contextlib.contextmanager
def keep_environment():
    """Restore ``os.environ`` after the block: dask's nannies write their workers' settings
    (``OMP_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_``) into the *caller's* environment, which
    would otherwise slow down or change every process it starts later."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def connect(scheduler: str | None = None, local: int | None = None, **kwargs):
    """A ``Client``: of the scheduler at ``scheduler``, or of a new :func:`local_cluster` of
    ``local`` workers. Returns ``(client, cluster)`` (``cluster`` None for a remote scheduler);
    close both when done.
    """
    from distributed import Client

    if (scheduler is None) == (local is None):
        raise InputError("connect: give either scheduler= (an address such as tcp://host:8786) or "
                         "local= (the number of local worker processes)")
    if scheduler is not None:
        return Client(str(scheduler), **kwargs), None
    cluster = local_cluster(int(local))
    return Client(cluster, **kwargs), cluster


def slurm_cluster(*, queue: str | None = None, account: str | None = None, walltime: str = "04:00:00",
                  gpus_per_job: int = 1, cores: int = 8, memory: str = "64GB", python: str | None = None,
                  job_script_prologue: list | None = None, **kwargs):
    """A dask-jobqueue ``SLURMCluster`` for an HPC centre: each SLURM job is one node share with
    ``gpus_per_job`` GPUs and as many dask workers, each with the resource ``GPU=1``.

    Scale it to the number of jobs wanted (``cluster.scale(jobs=3)``) and pass
    ``Client(cluster)`` to :func:`reconstruct_distributed`. ``gpus_per_job=0`` gives CPU
    workers (one per job, ``cores`` threads).

    Parameters
    ----------
    queue, account, walltime, cores, memory :
        SLURM partition, account, wall time, cores and memory of one job.
    gpus_per_job : int
        GPUs (and worker processes) per job (``--gres=gpu:N``).
    python : str, optional
        The Python of the environment holding xrdwidgets on the nodes.
    job_script_prologue : list of str, optional
        Shell lines run before the workers start (``module load …``, ``source venv/bin/activate``).
    **kwargs
        Passed to ``dask_jobqueue.SLURMCluster``.
    """
    from dask_jobqueue import SLURMCluster

    gpus = int(gpus_per_job)
    if gpus < 0:
        raise InputError(f"slurm_cluster: gpus_per_job must be 0 or more, found {gpus}")
    extra = list(kwargs.pop("job_extra_directives", []))
    worker_args = list(kwargs.pop("worker_extra_args", []))
    if gpus:
        extra.append(f"--gres=gpu:{gpus}")
        worker_args += ["--resources", "GPU=1"]
    if python is not None:
        kwargs["python"] = python
    return SLURMCluster(queue=queue, account=account, walltime=walltime, cores=int(cores), memory=memory,
                        processes=max(1, gpus), job_extra_directives=extra, worker_extra_args=worker_args,
                        job_script_prologue=list(job_script_prologue or []), **kwargs)


def dashboard_link(client) -> str:
    """The URL of the cluster's dask dashboard ("" when it has none)."""
    try:
        return str(client.dashboard_link or "")
    except Exception:  # noqa: BLE001 - no dashboard (bokeh missing, or none served)
        return ""


def scheduler_workers(client) -> list[dict]:
    """The scheduler's record of every worker (all of them: newer dask lists only a few by default)."""
    import inspect

    every = "n_workers" in inspect.signature(client.scheduler_info).parameters
    info = client.scheduler_info(n_workers=-1) if every else client.scheduler_info()
    return list(info.get("workers", {}).values())


def gpu_workers(client) -> int:
    """Number of the cluster's workers with the resource ``GPU`` (at least 1)."""
    return sum(1 for w in scheduler_workers(client) if (w.get("resources") or {}).get("GPU", 0) >= 1)



def worker_device(gpu: bool, worker):
    """The torch device a task on ``worker`` uses: the CPU unless ``gpu`` and CUDA is present; with
    several GPUs visible, the one of the worker's index (``name-<i>``, ``i`` modulo the GPUs)."""
    import torch

    if not gpu or not torch.cuda.is_available():
        return torch.device("cpu")
    n = torch.cuda.device_count()
    index = 0
    name = str(getattr(worker, "name", "") or "")
    if n > 1 and "-" in name and name.rsplit("-", 1)[1].isdigit():  # dask worker --nworkers N: name-0, name-1...
        index = int(name.rsplit("-", 1)[1]) % n
    return torch.device(f"cuda:{index}")


_MALLOC_TUNED = False


def tune_worker_malloc() -> None:
    """Undo the cost of dask's ``MALLOC_TRIM_THRESHOLD_`` on this worker process (once).

    dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to give memory back to the
    system). Setting it also switches off glibc's dynamic mmap threshold, so every array above
    128 KiB (most torch tensors of a batch) comes from a fresh ``mmap`` and its page faults:
    measured +15 % on SIRT batches against the same code outside dask. Raising the mmap threshold
    to 32 MiB and the trim threshold to 64 MiB (``mallopt``) gives the single-process speed back;
    a worker keeps at most that much freed memory. Nothing is done elsewhere (no glibc, or the
    variable not set).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 32 * 2**20) and libc.mallopt(-1, 64 * 2**20)   # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
        log.debug("worker malloc thresholds raised (mallopt returned %s)", ok)
    except (OSError, AttributeError):
        log.debug("mallopt not available; worker malloc left as it is")
