"""Where jobs run: :class:`JobQueue` (one worker thread, jobs one after another),
:func:`run` (a thread of its own, a queue, or a dask cluster), :func:`resume` and
:func:`list_jobs`.
"""
from __future__ import annotations

import functools
import logging
import queue as _queue
import threading
from collections.abc import Iterator
from pathlib import Path

from ..base.errors import InputError, InputTypeError
from .job import Job
from .workfolder import job_info

log = logging.getLogger(__name__)

__all__ = ["JobQueue", "default_queue", "run", "resume", "list_jobs"]


class JobQueue:
    """Runs jobs one after another in one worker thread (one device)."""

    def __init__(self, name: str = "default"):
        self.name = name
        self.jobs: list[Job] = []
        self._q: _queue.Queue = _queue.Queue()
        self._worker = threading.Thread(target=self._work, name=f"xrdwidgets-queue-{name}", daemon=True)
        self._worker.start()

    def submit(self, source, **kwargs) -> Job:
        """Queue an algorithm generator (or a callable returning one); returns its :class:`Job`."""
        job = source if isinstance(source, Job) else Job(source, **kwargs)
        self.jobs.append(job)
        self._q.put(job)
        return job

    def _work(self):
        while True:
            job = self._q.get()
            try:
                job.execute()
            except Exception:  # pragma: no cover - execute reports its own errors
                log.exception("queue %s: job %s crashed", self.name, job.id)

    def list(self) -> list[Job]:
        """All jobs submitted to this queue, oldest first."""
        return list(self.jobs)

    def cancel_all(self):
        """Cancel every job that has not finished."""
        for j in self.jobs:
            if not j.done:
                j.cancel()


_default_queue: JobQueue | None = None
_all_jobs: list[Job] = []


def default_queue() -> JobQueue:
    """The process-wide queue used by :func:`run` with ``queue=True``."""
    global _default_queue
    if _default_queue is None:
        _default_queue = JobQueue("default")
    return _default_queue


def run(source, *, name: str = "job", queue: bool | JobQueue = False, client=None, store=None, **kwargs) -> Job:
    """Start an algorithm generator in the background and return its :class:`Job` at once.

    Parameters
    ----------
    source : generator or callable returning one
    name : str
    queue : bool or JobQueue
        ``False``: a thread of its own (starts now). ``True``: the default queue (jobs run one
        after another); or a given :class:`JobQueue`.
    client : distributed.Client, optional
        Run on a dask cluster: ``source`` must be a callable taking ``client=`` and ``store=``
        (e.g. ``functools.partial(recon.iterate, stack, "sd2i", epochs=2000)``); the job
        follows the cluster run from this process (progress, cancel).
    store : path, optional
        The cluster run's zarr store (default: ``<workdir>/volume.zarr``; a job without a
        workdir needs it). Resuming the job resumes the store.
    **kwargs
        ``rate_hz``, ``workdir``, ``save_result``, ``params``, ``resume``, ``overwrite``,
        ``fingerprint`` (see :class:`Job`).
    """
    if client is not None:
        if isinstance(source, Iterator) or not callable(source):
            raise InputTypeError("run: with client=, source must be a callable taking client= and store= "
                            "(e.g. functools.partial(recon.iterate, stack, 'sirt')), not a generator object")
        if store is None:
            if kwargs.get("workdir") is None:
                raise InputError("run: a cluster job needs store= or workdir= (its results are written there)")
            store = Path(kwargs["workdir"]) / "volume.zarr"
        extra = {"overwrite": True} if kwargs.get("overwrite") else {}  # a fresh job: a fresh store
        source = functools.partial(source, client=client, store=store, **extra)
    elif store is not None:
        raise InputError("run: store= is for cluster jobs; give client= too")
    if queue:
        q = default_queue() if queue is True else queue
        job = q.submit(source, name=name, **kwargs)
    else:
        job = Job(source, name=name, **kwargs).start()
    _all_jobs.append(job)
    return job


def list_jobs() -> list[Job]:
    """Every job started with :func:`run` in this process, oldest first."""
    return list(_all_jobs)


def resume(workdir, source, *, name: str | None = None, queue: bool | JobQueue = False, **kwargs) -> Job:
    """Continue the job whose files are in ``workdir`` (after a cancel, a crash or a new kernel).

    Parameters
    ----------
    workdir : path-like
        The folder of the job to continue.
    source : callable
        The same algorithm, as a callable accepting ``checkpoint=`` (e.g.
        ``functools.partial(iterate_sirt, stack, n_iter=50)``); called with the checkpoint found
        in ``workdir``. A stack reconstruction refuses a checkpoint of other data or parameters.
    name : str, optional
        Default: the name recorded in ``workdir/job.json``.
    queue : bool or JobQueue
        As in :func:`run`.
    **kwargs
        As in :func:`run` (``params`` default: the recorded ones).

    Returns
    -------
    Job
        Started (or queued). With ``result.h5`` already in ``workdir`` it ends at once with that
        result.
    """
    try:
        info = job_info(workdir) or {}
    except ValueError as exc:
        log.warning("resume: %s; using defaults", exc)
        info = {}
    if name is None:
        name = str(info.get("name") or "job")
    if "params" not in kwargs and isinstance(info.get("params"), dict):
        kwargs["params"] = info["params"]
    return run(source, name=name, queue=queue, workdir=workdir, resume=True, **kwargs)
