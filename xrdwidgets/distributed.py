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
scheduler, or a dask-jobqueue cluster (:func:`slurm_cluster`). This module imports dask only when
used.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import data as _data
from .base.atomic import remove_path
from .base.progress import Progress, run_to_end
from .recon import driver as _drv
from .recon.registry import get_method

log = logging.getLogger(__name__)

__all__ = ["iterate_distributed", "reconstruct_distributed", "iterate_on_cluster",
           "iterate_integration_distributed", "integrate_chunks", "local_cluster", "connect", "slurm_cluster",
           "dashboard_link", "store_status", "keep_environment", "run_batch", "BatchTask", "RUN_GROUP"]

#: The store's bookkeeping group and the attribute holding the run record.
RUN_GROUP = "xrdwidgets_run"
RUN_ATTR = "run"
_RUN_KIND = "xrdwidgets.distributed.run"
_RUN_VERSION = 1
_TOPIC = "xrdwidgets-progress-"
_PREVIEW_MAX = 256  # a published preview is at most this many pixels on a side


# ---------------------------------------------------------------------------- value objects
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
        return batch_key(self.batch)


def batch_key(batch) -> str:
    """Name of batch ``(lead, start, stop)`` in the store (``"<lead>_<start>_<stop>"``, lead -1 → 0)."""
    li, s, e = (int(v) for v in batch)
    return f"{max(li, 0)}_{s}_{e}"


# ---------------------------------------------------------------------------- clusters
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
        raise ValueError(f"local_cluster: n_workers must be at least 1, found {n_workers}")
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
        raise ValueError("connect: give either scheduler= (an address such as tcp://host:8786) or "
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
        raise ValueError(f"slurm_cluster: gpus_per_job must be 0 or more, found {gpus}")
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


def _workers(client) -> list[dict]:
    """The scheduler's record of every worker (all of them: newer dask lists only a few by default)."""
    import inspect

    every = "n_workers" in inspect.signature(client.scheduler_info).parameters
    info = client.scheduler_info(n_workers=-1) if every else client.scheduler_info()
    return list(info.get("workers", {}).values())


def _gpu_workers(client) -> int:
    return sum(1 for w in _workers(client) if (w.get("resources") or {}).get("GPU", 0) >= 1)


# ---------------------------------------------------------------------------- the store
def _batch_chunk(batches, n_channels: int) -> int:
    """Channels per zarr chunk such that every batch covers whole chunks."""
    g = 0
    for _, s, e in batches:
        g = math.gcd(g, int(s))
        if e != n_channels:
            g = math.gcd(g, int(e))
    return g or n_channels


def _sha256(arr: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(arr, np.float32).tobytes()).digest()


def _run_group(store: Path, mode: str = "r"):
    """The store's bookkeeping group (None when ``store`` is not a store of a distributed run)."""
    import zarr

    try:
        grp = zarr.open_group(str(store), mode=mode)
        sub = grp[RUN_GROUP]
    except Exception:  # noqa: BLE001 - zarr raises many types for a folder that is not a store
        return None
    return sub if RUN_ATTR in sub.attrs else None


def _read_run(store: Path) -> dict | None:
    sub = _run_group(store)
    if sub is None:
        return None
    run = dict(sub.attrs[RUN_ATTR])
    if run.get("kind") != _RUN_KIND:
        raise ValueError(f"{store}: not the store of a distributed run (kind {run.get('kind')!r})")
    if run.get("version") != _RUN_VERSION:
        raise ValueError(f"{store}: a distributed run of record version {run.get('version')!r}; this xrdwidgets "
                         f"reads version {_RUN_VERSION}; remove the store to start again")
    return run


def store_status(store) -> dict:
    """What a store of :func:`iterate_distributed` holds: ``{"method", "n_batches", "done",
    "complete"}`` (``done``: keys of the batches recorded as finished, not checked)."""
    store = Path(store)
    run = _read_run(store)
    if run is None:
        raise ValueError(f"{store}: not the store of a distributed run (no {RUN_GROUP!r} group)")
    flags = np.asarray(_run_group(store)["done"][:])
    done = [batch_key(b) for b, f in zip(run["batches"], flags) if f]
    return {"method": run["method"], "n_batches": len(run["batches"]), "done": done,
            "complete": len(done) == len(run["batches"])}


def _create_store(store: Path, plan, run: dict, chunk: int, lead_chunk: bool) -> None:
    import zarr

    from .io import create_zarr_stack

    da = plan.stack
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    pos, _units = _drv.image_coords(da, plan.op.n)
    spec = _data.spectral_dim(da)
    coords = {d: np.asarray(da[d].values) for d in lead}
    coords.update({_data.Y: pos, _data.X: pos.copy(), spec: np.asarray(da[spec].values)})
    attrs = {k: v for k, v in da.attrs.items() if not k.startswith(("provenance_", "geometry_"))}
    create_zarr_stack(store, coords=coords, kind="volume", block=chunk, name="volume",
                      geometry=_data.get_geometry(da), attrs=attrs, producer=plan.producer,
                      parameters=plan.parameters, lead_block=1 if lead_chunk else None)
    nb = len(run["batches"])
    sub = zarr.open_group(str(store), mode="r+").create_group(RUN_GROUP)
    sub.create_array("done", shape=(nb,), chunks=(1,), dtype="uint8", fill_value=0)
    sub.create_array("sha256", shape=(nb, 32), chunks=(1, 32), dtype="uint8", fill_value=0)
    sub.create_array("seconds", shape=(nb,), chunks=(1,), dtype="float64", fill_value=np.nan)
    sub.attrs[RUN_ATTR] = _drv._jsonable(run)  # last: the store is a run from here on


def _lead_index(plan, li: int) -> tuple:
    da = plan.stack
    shape = tuple(da.sizes[d] for d in da.dims if d in _data.EXTRA_DIMS)
    return tuple(int(i) for i in np.unravel_index(li, shape)) if shape and li >= 0 else ()


def _read_batch(store: Path, plan, batch, parts: bool) -> np.ndarray:
    import zarr

    li, s, e = batch
    if parts:
        return np.asarray(_run_group(store)[f"part_{batch_key(batch)}"][...])
    arr = zarr.open_group(str(store), mode="r")["volume"]
    return np.asarray(arr[_lead_index(plan, li) + (Ellipsis, slice(s, e))])


def _valid_done(store: Path, plan, run: dict) -> set:
    """Keys of the finished batches whose data match their SHA-256; the others are marked undone."""
    sub = _run_group(store, "r+")
    flags, sums = np.asarray(sub["done"][:]), np.asarray(sub["sha256"][:])
    ok = set()
    for i, b in enumerate(run["batches"]):
        if not flags[i]:
            continue
        key = batch_key(b)
        try:
            good = _sha256(_read_batch(store, plan, tuple(b), run["parts"])) == bytes(sums[i])
        except Exception as exc:  # noqa: BLE001 - a damaged chunk reads with many error types
            log.warning("%s: batch %s cannot be read (%s); it is computed again", store, key, exc)
            good = False
        if good:
            ok.add(key)
        else:
            log.warning("%s: batch %s does not match its SHA-256; it is computed again", store, key)
            sub["done"][i] = 0
    return ok


def _open_run(store: Path, plan, batches: list, method: str, overwrite: bool) -> tuple[dict, set]:
    """Create the store of a new run, or check and reopen the one to resume; returns
    ``(run record, keys of the finished batches)``."""
    fingerprint = _drv.stack_fingerprint(plan)
    run = {"kind": _RUN_KIND, "version": _RUN_VERSION, "method": method, "producer": plan.producer,
           "fingerprint": fingerprint, "layout": plan.layout, "parts": plan.layout == "overlap",
           "batches": [list(b) for b in batches], "run_id": uuid.uuid4().hex[:12]}
    if store.exists():
        old = _read_run(store)
        if old is None:
            raise FileExistsError(f"{store}: exists and is not the store of a distributed run; it is left "
                                  "untouched: choose another store path")
        if overwrite:
            log.info("%s: overwrite: removing the store of a former run", store)
            remove_path(store)
        else:
            _drv.check_fingerprint(f"distributed run in {store}", old.get("fingerprint"), _drv._jsonable(fingerprint))
            if [list(b) for b in old["batches"]] != run["batches"]:
                raise ValueError(f"{store}: holds a run of other channel batches ({len(old['batches'])} "
                                 f"batches; now {len(batches)}): resume with the batch parameters it was "
                                 "started with, or pass overwrite=True")
            return old, _valid_done(store, plan, old)
    chunk = plan.n_channels if run["parts"] else _batch_chunk(batches, plan.n_channels)
    _create_store(store, plan, run, chunk, lead_chunk=not plan.whole_lead)
    return run, set()


# ---------------------------------------------------------------------------- the worker side
_WORKER_PLANS: dict = {}  # (run_id, stack key) -> (plan, solve); a few recent runs per worker process
_WORKER_STACKS: dict = {}  # path -> loaded stack
_WORKER_LOCK = threading.Lock()


def _worker_device(gpu: bool, worker):
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


def _tune_worker_malloc() -> None:
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


def _stack_on_worker(stack):
    if isinstance(stack, (str, Path)):
        key = str(stack)
        if key not in _WORKER_STACKS:
            from . import io

            _WORKER_STACKS.clear()
            _WORKER_STACKS[key] = io.load(key)
        return _WORKER_STACKS[key]
    return stack


def _plan_on_worker(task: BatchTask, stack, device):
    key = (task.run_id, id(stack) if not isinstance(stack, (str, Path)) else str(stack), str(device))
    with _WORKER_LOCK:  # a worker with several threads runs several batches at once
        if key not in _WORKER_PLANS:
            if len(_WORKER_PLANS) >= 4:
                _WORKER_PLANS.pop(next(iter(_WORKER_PLANS)))
            spec = get_method(task.method)
            _WORKER_PLANS[key] = _drv.capture_stack_run(spec.iterate, _stack_on_worker(stack), device=device,
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
    worker.log_event(_TOPIC + task.run_id, msg)


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
    sub = _run_group(store, "r+")
    if sub is None:
        raise FileNotFoundError(f"{store}: the store of this run is gone (no {RUN_GROUP!r} group)")
    if sub["done"][task.index]:
        return {"key": task.key, "computed": False, "seconds": 0.0, "worker": getattr(worker, "address", "")}
    t0 = time.perf_counter()
    if worker is not None:
        _tune_worker_malloc()
        if not task.gpu:
            torch.set_num_threads(1)  # a CPU worker runs one batch per thread
    device = _worker_device(task.gpu, worker)
    plan, solve = _plan_on_worker(task, stack, device)
    gen = _drv.solve_batch(plan, solve, task.batch)
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
    sub["sha256"][task.index] = np.frombuffer(_sha256(arr), np.uint8)   # data, checksum, then the flag
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
    from .io import open_zarr_stack

    idx = _lead_index(plan, li)
    writer = open_zarr_stack(store)
    writer.write_block(arr, s, lead=idx) if idx else writer.write_block(arr, s)


# ---------------------------------------------------------------------------- the caller side
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
        raise ValueError(f"iterate_distributed: {bad} cannot be set: each worker uses its GPU or CPU, "
                         "and the store is the checkpoint (call again with the same store to resume)")
    if client is None:
        raise ValueError("iterate_distributed: client must be a distributed.Client, found None")
    spec = get_method(method)
    source = None
    if isinstance(stack, (str, os.PathLike)):
        from . import io

        source = str(Path(stack).resolve())
        stack = io.load(source)
    plan, _solve = _drv.capture_stack_run(spec.iterate, stack, device="cpu", **params)
    batches = _drv.BatchPlan(plan, _drv.n_lead(plan)).work()
    store = Path(store).resolve()
    run, done = _open_run(store, plan, batches, spec.name, bool(overwrite))
    gpu = _gpu_workers(client) > 0 if gpu is None else bool(gpu)
    return _drive(client, plan, spec.name, {k: v for k, v in params.items()}, store, run, done, source, gpu,
                  int(retries), float(progress_every_s))


def _drive(client, plan, method, params, store, run, done, source, gpu, retries, progress_every_s):
    from distributed import as_completed

    batches = [tuple(b) for b in run["batches"]]
    n_batches = len(batches)
    todo = [b for b in batches if batch_key(b) not in done]
    skipped = n_batches - len(todo)
    if skipped:
        log.info("%s: resuming, %d of %d batch(es) already done", store, skipped, n_batches)
    run_id, call = run["run_id"], uuid.uuid4().hex[:8]
    dashboard = dashboard_link(client)
    events: queue.Queue = queue.Queue()
    topic = _TOPIC + run_id
    futures = []
    computed = 0
    step_of = {batch_key(b): None for b in batches}   # inner iteration reached per batch
    batch_of = {batch_key(b): tuple(b) for b in batches}
    total_of: dict = {}
    finished = set(done)
    if todo:
        client.subscribe_topic(topic, lambda event: events.put(event[1]))
    try:
        if todo:
            ref = source if source is not None else client.scatter(plan.stack, broadcast=False, hash=False)
            resources = {"GPU": 1} if gpu else None
            index = {batch_key(b): i for i, b in enumerate(batches)}
            for b in todo:
                task = BatchTask(run_id, method, params, str(store), index[batch_key(b)], b, run["parts"], gpu,
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

    flags = np.asarray(_run_group(store)["done"][:])
    missing = [batch_key(b) for b, f in zip(run["batches"], flags) if not f]
    if missing:
        raise RuntimeError(f"{store}: batches {missing} are not finished; call again to resume")
    n, C = plan.op.n, plan.n_channels
    n_lead = _drv.n_lead(plan)
    grp = zarr.open_group(str(store), mode="r+")
    arr = grp["volume"]
    out = np.zeros(arr.shape, np.float32)
    if run["parts"]:
        batch_plan, chunks = _drv.BatchPlan(plan, n_lead), {}
        for b in run["batches"]:
            chunks.update(batch_plan.chunks(b[0], b[1], b[2], _read_batch(store, plan, tuple(b), True)))
        batch_plan.restore(out.reshape(-1, n, n, C), chunks, f"distributed run in {store}", n)
        arr[...] = out
    else:
        out[...] = arr[...]
    from .io._common import _Z_COMPLETE

    grp.attrs[_Z_COMPLETE] = True
    vol = _drv.volume_of(plan, out)
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


# ---------------------------------------------------------------------------- raw frames → sinograms
_WORKER_INTEGRATIONS: dict = {}  # run id -> IntegrationRun prepared on this worker


def integrate_chunks(spec: dict, chunks: list) -> dict:
    """One task of a cluster integration: integrate frame ``chunks`` of a prepared run into its
    work store (on a dask worker; also callable in-process). Chunks already marked done are
    skipped. Returns ``{"chunks": [...done now...], "frames": n, "setup_s": seconds spent opening the
    frames and building the integrator (0 after the first task of a run on a worker)}``."""
    import torch

    from .integrate.assemble import _DONE, integrate_chunk, prepare_integration, work_store

    try:
        from distributed import get_worker

        worker = get_worker()
        _tune_worker_malloc()
        torch.set_num_threads(1)  # one chunk per worker thread
    except (ImportError, ValueError):
        worker = None
    t0 = time.perf_counter()
    with _WORKER_LOCK:
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
    from .integrate.assemble import finish_integration, integration_progress, prepare_integration
    from .integrate.readers import FrameSource

    if client is None:
        raise ValueError("iterate_integration_distributed: client must be a distributed.Client, found None")
    if out is None:
        raise ValueError("integrate on a cluster: out= is needed (the workers write into its work store "
                         "<out>.partial.zarr, on a file system they all see)")
    if isinstance(raw, FrameSource):
        raise TypeError("integrate on a cluster: give the frame files (a path, list, folder or glob), not an "
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
            threads = sum(int(w.get("nthreads", 1)) for w in _workers(client)) or 1
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
    from .integrate.assemble import _DONE, work_store

    run.done = {int(p.name) for p in (work_store(run.out) / _DONE).iterdir() if p.name.isdigit()}
    return finish(run, overwrite=overwrite, checksums=checksums)


def reconstruct_distributed(stack, method: str = "fbp", /, *, client, store, callback=None, **kwargs):
    """:func:`iterate_distributed` run to the end; returns the volume (``callback`` gets every event)."""
    return run_to_end(iterate_distributed(stack, method, client=client, store=store, **kwargs), callback)
