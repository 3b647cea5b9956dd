"""Background execution of algorithm generators: jobs, a queue, progress streams, persistence.

An *algorithm* here is any generator that yields :class:`~xrdwidgets.base.progress.Progress` events
and returns its result (see ``../shared/DESIGN.md``). A :class:`Job` runs one in a background
thread::

    job = run(iterate_fbp(stack), name="fbp")   # returns at once
    job.subscribe(print_progress)               # throttled events (≤ rate_hz, always the latest)
    job.wait()                                  # or job.cancel()
    vol = job.result

States: ``queued → running → done | failed | cancelled``. Cancel is checked between two
events, so it takes effect within one iteration. A failed job keeps the exception and a clear
message (a GPU out-of-memory error says so and suggests a smaller channel batch or the CPU).

With ``workdir=`` a job writes, as it runs, ``job.json`` (state, timings, last metrics, the
error, the last checkpoint), ``log.txt``, and ``result.h5`` when done; checkpoints an algorithm
yields (a ``Progress`` whose ``metrics["checkpoint"]`` is a dict) are written to
``checkpoint.pt`` atomically, so a cancelled, crashed or restarted kernel leaves a resumable
state on disk (:func:`load_checkpoint`).

Resume protocol
    A *resumable* algorithm is a callable (generator function, ``functools.partial``) that
    accepts a keyword ``checkpoint=`` (a dict, or ``None`` for a fresh start) and yields
    checkpoint dicts in ``metrics["checkpoint"]``. ``Job(source, workdir=..., resume=True)`` (or
    :func:`resume`) calls ``source(checkpoint=load_checkpoint(workdir))`` in the worker when the
    workdir holds a checkpoint, ``source()`` otherwise; a workdir that already holds
    ``result.h5`` gives that result back without running anything. The job records what it
    resumed from in ``job.json`` (``resumed_from``) and ``log.txt``. A new job never takes over
    a workdir that holds a result or a checkpoint unless ``resume=True`` or ``overwrite=True``.

    Checkpoint dicts hold tensors, numpy arrays (numeric/bool) and plain Python values (str,
    numbers, bool, None, bytes, dict, list, tuple, set): they are stored so that
    :func:`load_checkpoint` reads them with ``torch.load(weights_only=True)`` (no pickled
    code runs when a checkpoint is read); other objects make the write fail with a TypeError.

    The key ``"chunks"`` is reserved for *incremental* results: a dict ``{name: array}`` of the
    parts finished since the last checkpoint (names of letters, digits, ``_ - .``). Each part is
    written once to ``chunks/<name>.npy`` and ``checkpoint.pt`` lists all parts written so far;
    :func:`load_checkpoint` gives ``"chunks"`` back as ``{name: read-only memory-mapped array}``
    of *all* of them (:func:`merge_checkpoint` does the same accumulation in memory). A
    stack reconstruction checkpoints its finished channel batches this way
    (:mod:`xrdwidgets.recon.driver`), so a volume is written once, not once per batch. When the
    result is stored, the chunk files are removed (``result.h5`` holds it all).

Safety of a work folder (a result is never handed back for the wrong computation)
    *One job per folder*: a job holds the folder's exclusive lock (``job.lock``,
    :mod:`xrdwidgets.jobs.lock`) from its creation to its end; a second job, in this process
    or another, gets a :class:`WorkdirBusyError` naming the holder (pid, host, job name, start
    time). The lock of a process that died is taken over (logged). *Checks before work*: the
    folder must be writable (a probe file). *Fingerprints*: before ``result.h5`` is given back
    as "already done", the source is called with the folder's last checkpoint, which makes the
    algorithm compare the checkpoint's fingerprint (method, parameters, data hash) with its own
    arguments without running anything; a mismatch fails the job with what differs (pass
    ``overwrite=True`` to recompute). A generic source can pass ``fingerprint=`` (recorded in
    ``job.json``, compared on resume). *Checksums*: ``checkpoint.pt`` (format version 2) wraps
    its content with a sha256, and lists a sha256 of every chunk file as written; reading
    verifies them. A damaged ``checkpoint.pt`` is a :class:`CheckpointError`; a damaged chunk is
    a CheckpointError from :func:`load_checkpoint`, and is left out (so recomputed, never merged)
    when a job resumes. *Crashes*: ``job.json`` records the pid and host; :func:`job_info`
    reports a job still marked running whose process is gone as ``"crashed"``.

Subscribers run in a dispatcher thread, never in the worker; they must only set widget
traits (no ``display()``/``print`` into Output widgets from threads).

Modules: :mod:`~xrdwidgets.jobs.job` (the :class:`Job`: thread, lifecycle, cancel, wait),
:mod:`~xrdwidgets.jobs.workfolder` (the work folder: checkpoints, checksums, ``job.json``, result
parts), :mod:`~xrdwidgets.jobs.events` (:class:`State`, :class:`JobEvent`, the rate-limited
dispatcher), :mod:`~xrdwidgets.jobs.queue` (:class:`JobQueue`, :func:`run`, :func:`resume`) and
:mod:`~xrdwidgets.jobs.lock` (one job per work folder). Their public names are all here.
"""
from .events import JobEvent, State, describe_error
from .job import Job
from .lock import LOCK_FILE, WorkdirBusyError
from .queue import JobQueue, default_queue, list_jobs, resume, run
from .workfolder import (CHECKPOINT_FILE, CHUNKS_DIR, JOB_FILE, RESULT_FILE, CheckpointError, job_info,
                    load_checkpoint, merge_checkpoint)

__all__ = [
    "CHECKPOINT_FILE",
    "CHUNKS_DIR",
    "LOCK_FILE",
    "RESULT_FILE",
    "CheckpointError",
    "Job",
    "JobEvent",
    "JobQueue",
    "State",
    "WorkdirBusyError",
    "default_queue",
    "describe_error",
    "job_info",
    "list_jobs",
    "load_checkpoint",
    "merge_checkpoint",
    "resume",
    "run",
]
