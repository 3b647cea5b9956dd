"""The :class:`Job`: one algorithm generator run in a background thread, with its lifecycle
(``queued → running → done | failed | cancelled``), cancel, wait, and, with ``workdir=``, its
:class:`~xrdwidgets.jobs.workfolder.WorkFolder` (checkpoints, resume, ``job.json``, ``result.h5``).
"""
from __future__ import annotations

import inspect
import itertools
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from ..base.errors import InputError, InputTypeError, StateError
from .events import Dispatcher, JobEvent, State, describe_error
from .workfolder import (CHECKPOINT_FILE, JOB_FILE, RESULT_FILE, OtherComputationError, WorkFolder, read_checkpoint,
                    read_job_file)

log = logging.getLogger(__name__)

__all__ = ["Job"]


def _accepts_checkpoint(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins etc.: let the call decide
        return True
    return any(p.name == "checkpoint" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
               or p.kind == p.VAR_KEYWORD for p in params)


_ids = itertools.count(1)


class Job:
    """One algorithm generator run in the background (create with :func:`run` or a queue).

    Parameters
    ----------
    source : generator or callable
        The algorithm generator, or a zero-argument callable returning one (called in the
        worker thread when the job starts, so the set-up cost is not paid in the caller). To
        resume, a callable that also accepts ``checkpoint=`` (package docstring).
    name : str
        Label for lists and logs.
    rate_hz : float
        Most subscriber updates per second (the latest event is always delivered).
    workdir : path-like, optional
        Folder for ``job.json``, ``log.txt``, ``checkpoint.pt`` and ``result.h5``.
    save_result : callable, optional
        ``save_result(result, path)``; default: :func:`xrdwidgets.io.save` for xarray results.
    params : dict, optional
        Parameters to record (JSON-serialisable where possible).
    fingerprint : dict, optional
        What identifies the computation (JSON-serialisable: data hash, parameters...),
        recorded in ``job.json``. With ``resume=True`` it must equal the recorded one, else a
        ValueError lists what differs (nothing is run or returned). Stack reconstructions
        need none: their checkpoints hold a fingerprint the algorithm checks itself.
    resume : bool
        Continue the job whose files are in ``workdir`` (the *Resume protocol* of
        :mod:`xrdwidgets.jobs`): with a checkpoint there, the worker calls
        ``source(checkpoint=...)``; with ``result.h5`` there, the job ends at once, done, with
        that result (:func:`xrdwidgets.io.load`; ``None`` with a custom ``save_result``), once
        the source has accepted the folder's last checkpoint (a mismatch fails the job with the
        algorithm's message of what differs; the result is not returned); with neither, it
        starts from the beginning. Damaged parts of the checkpoint are left out and recomputed
        (``resumed_from["damaged"]``), never merged.
    overwrite : bool
        Discard the result, checkpoint and parts a former job left in ``workdir`` (also the way
        to recompute a finished folder).

    Notes
    -----
    A job with a ``workdir`` holds the folder's exclusive lock (``job.lock``,
    :mod:`xrdwidgets.jobs.lock`) from its creation to its end; the folder must be writable
    (a probe file is created and removed before anything else). ``job.json`` records the pid
    and host of the process.

    Raises
    ------
    WorkdirBusyError
        Another job (of this process or another) uses ``workdir``; the message names it (pid,
        host, job name, start time).
    PermissionError, NotADirectoryError
        ``workdir`` cannot be written (the message names it).
    FileExistsError
        ``workdir`` holds a result or a checkpoint and neither ``resume`` nor ``overwrite`` is set.
    CheckpointError
        ``resume=True`` and the checkpoint cannot be read (the message names the file).
    ValueError
        ``resume=True`` without a workdir, or with a checkpoint and a source that cannot take it,
        or with a ``fingerprint`` other than the recorded one.
    """

    def __init__(self, source, *, name: str = "job", rate_hz: float = 10.0, workdir=None,
                 save_result: Callable | None = None, params: dict | None = None,
                 resume: bool = False, overwrite: bool = False, fingerprint: dict | None = None):
        if resume and overwrite:
            raise InputError("Job: resume=True and overwrite=True exclude each other")
        if resume and workdir is None:
            raise InputError("Job: resume=True needs workdir= (the folder of the job to continue)")
        self.id = next(_ids)
        self.name = str(name)
        self._source = source
        self.rate_hz = float(rate_hz)
        self._save_result = save_result
        self.params = dict(params or {})
        self.fingerprint = None if fingerprint is None else _jsonable(fingerprint)
        self.state = State.QUEUED
        self.progress = None
        self.history: list = []          # (iteration, loss) pairs
        self.result = None
        self.error: BaseException | None = None
        self.message = ""
        self.log_lines: list[str] = []
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._events = Dispatcher(self.rate_hz, f"xrdwidgets-job-{self.id}-events")
        self._thread: threading.Thread | None = None
        self.resume = bool(resume)
        self.resumed_from: dict | None = None   # what this job continues (iteration, parts, file)
        self.last_checkpoint: dict | None = None  # iteration/time of the last checkpoint written
        self._checkpoint: dict | None = None     # loaded for the worker, dropped once used
        self._final_checkpoint: dict | None = None  # of a finished folder: checked before "already done"
        self._already_done = False
        self.folder = None if workdir is None else WorkFolder(workdir, self.name, self.id)
        self.workdir = None if self.folder is None else self.folder.path
        if self.folder is not None:
            try:
                prev = self.folder.lock.previous
                if prev:
                    self._log(f"took over the lock of {prev.get('job')!r} (pid {prev.get('pid')}), "
                              "which is no longer running")
                _take_workdir(self, overwrite=bool(overwrite))
                self._persist()
            except BaseException:
                self.folder.release()
                raise

    # ------------------------------------------------------------------ public API
    def __repr__(self):
        it = getattr(self.progress, "iteration", None)
        return f"<Job {self.id} {self.name!r} {self.state.value}{'' if it is None else f' it={it}'}>"

    @property
    def done(self) -> bool:
        """True once the job has finished (done, failed or cancelled)."""
        return self.state.finished

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (to its end when finished)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def eta(self) -> float | None:
        """Seconds left, estimated from the progress so far (``None`` when unknown)."""
        p = self.progress
        if p is None or not getattr(p, "total", None) or not p.iteration:
            return None
        return self.elapsed * (p.total - p.iteration) / p.iteration

    def subscribe(self, callback: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Call ``callback(JobEvent)`` on progress (throttled) and on every state change.

        Returns a function that unsubscribes. Callbacks run in a dispatcher thread.
        """
        if self.done:
            callback(JobEvent(self, self.state, self.progress))
            return lambda: None
        return self._events.subscribe(callback)

    def cancel(self):
        """Ask the job to stop; it ends within one iteration (a queued job never starts)."""
        self._cancel.set()
        if self.state == State.QUEUED:
            self._finish(State.CANCELLED, "cancelled before it started")

    def wait(self, timeout: float | None = None, *, progress: bool = False, raise_on_error: bool = True):
        """Block until the job ends; return its result.

        ``progress=True`` shows a text progress bar (tqdm) in a terminal. Raises the job's
        exception if it failed (``raise_on_error``), or ``TimeoutError``.
        """
        bar = _text_bar(self.name) if progress else None
        try:
            end = None if timeout is None else time.time() + timeout
            while not self._done.wait(0.1):
                if bar is not None and self.progress is not None:
                    _show_on_bar(bar, self.progress)
                if end is not None and time.time() > end:
                    raise TimeoutError(f"job {self.id} ({self.name}) still {self.state.value} after {timeout} s")
        finally:
            if bar is not None:
                bar.close()
        if self.state == State.FAILED and raise_on_error and self.error is not None:
            raise self.error
        return self.result

    # ------------------------------------------------------------------ running
    def start(self) -> Job:
        """Run in a new background thread (used by :func:`run`; a queue calls :meth:`execute`)."""
        self._thread = threading.Thread(target=self.execute, name=f"xrdwidgets-job-{self.id}", daemon=True)
        self._thread.start()
        return self

    def execute(self):
        """Run the generator in the calling thread until it ends, fails or is cancelled."""
        if self.done:
            return
        if self._cancel.is_set():
            self._finish(State.CANCELLED, "cancelled before it started")
            return
        self.state = State.RUNNING
        self.started = time.time()
        if self._already_done:
            _take_finished_result(self)
            return
        rf = self.resumed_from
        self._log(f"started {self.name}" + ("" if rf is None else
                  f", resuming from the checkpoint at iteration {rf['iteration']}"
                  + (f" ({rf['chunks']} finished part(s))" if rf.get("chunks") else "")))
        self._persist()
        self._events.post(JobEvent(self, self.state, None))
        gen = None
        try:
            if callable(self._source) and not isinstance(self._source, Iterator):
                ckpt, self._checkpoint = self._checkpoint, None
                gen = self._source() if ckpt is None else self._source(checkpoint=ckpt)
                del ckpt
            else:
                gen = self._source
            while True:
                if self._cancel.is_set():
                    self._cancelled(gen)
                    return
                try:
                    ev = next(gen)
                except StopIteration as stop:
                    self.result = stop.value
                    break
                self._on_progress(ev)
            if self.folder is not None and self.folder.store_result(self.result, self._save_result,
                                                                    job=self.name, params=self.params):
                self.folder.drop_chunks()
            self._finish(State.DONE, f"done in {self.elapsed:.1f} s")
        except BaseException as exc:  # noqa: BLE001 - reported to the user, never lost
            self.error = exc
            self._log(traceback.format_exc())
            self._finish(State.FAILED, describe_error(exc))
            log.warning("job %s (%s) failed: %s", self.id, self.name, self.message)
        finally:
            if gen is not None and hasattr(gen, "close"):
                try:
                    gen.close()
                except Exception:  # pragma: no cover - the job has ended anyway
                    log.debug("job %s: closing the generator failed", self.id, exc_info=True)

    # ------------------------------------------------------------------ internals
    def _cancelled(self, gen):
        # closing the generator runs its finally-blocks (algorithms may checkpoint there)
        try:
            gen.close()
        except Exception:  # pragma: no cover - the job is cancelled anyway
            log.debug("job %s: closing the generator failed", self.id, exc_info=True)
        self._finish(State.CANCELLED, f"cancelled after {self.elapsed:.1f} s"
                     + (f" at iteration {self.progress.iteration}" if self.progress is not None else ""))

    def _on_progress(self, ev):
        metrics = getattr(ev, "metrics", None) or {}
        ckpt = metrics.get("checkpoint") if isinstance(metrics, dict) else None
        if ckpt is not None:
            if self.folder is not None:
                self.last_checkpoint = self.folder.write_checkpoint(
                    ckpt, iteration=getattr(ev, "iteration", None), total=getattr(ev, "total", None),
                    job=self.name, saved=time.time())
                self._persist()
            metrics = {k: v for k, v in metrics.items() if k != "checkpoint"}
            try:
                ev = type(ev)(**{**ev.__dict__, "metrics": metrics})
            except TypeError:  # pragma: no cover - foreign event types
                pass
        self.progress = ev
        loss = getattr(ev, "loss", None)
        if loss is not None:
            self.history.append((getattr(ev, "iteration", len(self.history) + 1), float(loss)))
        self._events.post(JobEvent(self, self.state, ev))

    def _finish(self, state: State, message: str):
        with self._lock:
            if self.state.finished:
                return
            self.state = state
            self.message = message
            self.finished = time.time()
        self._log(message)
        self._persist()
        if self.folder is not None:
            self.folder.release()  # before waiters wake: the folder is free when wait() returns
        self._done.set()
        self._events.post(JobEvent(self, state, self.progress))

    def _log(self, line: str):
        stamp = time.strftime("%H:%M:%S")
        self.log_lines.append(f"{stamp} {line}")
        if self.folder is not None:
            self.folder.append_log(f"{stamp} {line}")

    def _persist(self):
        if self.folder is None:
            return
        p = self.progress
        self.folder.write_job_file({
            "id": self.id, "name": self.name, "state": self.state.value, "message": self.message,
            "created": self.created, "started": self.started, "finished": self.finished,
            "iteration": getattr(p, "iteration", None), "total": getattr(p, "total", None),
            "loss": getattr(p, "loss", None), "params": self.params,
            "error": None if self.error is None else describe_error(self.error),
            "checkpoint": self.last_checkpoint, "resumed_from": self.resumed_from,
            "fingerprint": self.fingerprint})


# ---------------------------------------------------------------------------- resume protocol
def _take_workdir(job: Job, overwrite: bool):
    """Check what a former job left in ``job``'s workdir; load the checkpoint to resume from."""
    wd = job.workdir
    result, ck = wd / RESULT_FILE, wd / CHECKPOINT_FILE
    if overwrite:
        gone = job.folder.clear()
        if gone:
            job._log(f"overwrite: removed {', '.join(gone)} of a former job")
        return
    try:
        recorded = read_job_file(wd) if job.resume else None
    except ValueError as exc:
        job._log(f"resume: {exc}; its fingerprint cannot be compared")
        recorded = None
    if recorded is not None:
        note = _fingerprint_problem(wd, recorded, job.fingerprint)
        if note:
            job._log(note)
    if not job.resume:
        if result.exists():
            raise FileExistsError(
                f"{wd} already holds a finished result ({result}); pass resume=True to take it "
                "up, overwrite=True to replace it, or choose another workdir")
        if ck.exists():
            raise FileExistsError(
                f"{wd} holds the checkpoint of an unfinished job ({ck}); pass resume=True to "
                "continue it, overwrite=True to discard it, or choose another workdir")
        return
    if result.exists():
        job._already_done = True
        job.resumed_from = {"iteration": None, "result": str(result)}
        # what the finished job last checkpointed: the source is checked against it
        job._final_checkpoint = read_checkpoint(wd)[0]
        if job._final_checkpoint is not None:
            _require_resumable(job._source, ck, "check that the finished result belongs to it")
        return
    state, meta = read_checkpoint(wd, damaged="drop")
    if state is None:
        job._log(f"resume: no checkpoint in {wd}, starting from the beginning")
        return
    _require_resumable(job._source, ck, "be resumed")
    job._checkpoint = state
    job.folder.adopt(meta)
    job.resumed_from = {"iteration": meta.get("iteration"), "total": meta.get("total"),
                        "saved": meta.get("saved"), "chunks": len(job.folder.chunk_files),
                        "checkpoint": str(ck)}
    if meta.get("damaged"):
        job.resumed_from["damaged"] = list(meta["damaged"])
        job._log(f"resume: damaged part(s) {', '.join(meta['damaged'])} (checksum mismatch) left out; "
                 "they are recomputed")


def _take_finished_result(job: Job):
    """End ``job`` with the result its folder holds (after checking it belongs to its source)."""
    path = job.workdir / RESULT_FILE
    try:
        _check_finished_source(job)
        if job._save_result is None:
            job.result = job.folder.load_result()
        job._finish(State.DONE, f"already done: the result is in {path} (not run again)")
    except BaseException as exc:  # noqa: BLE001 - reported to the user, never lost
        job.error = exc
        job._log(traceback.format_exc())
        job._finish(State.FAILED, describe_error(exc) if isinstance(exc, OtherComputationError) else
                    f"cannot read the finished result {path}: {describe_error(exc)}")


def _text_bar(name: str):
    from tqdm.auto import tqdm

    return tqdm(desc=name, total=None)


def _show_on_bar(bar, progress):
    bar.total = getattr(progress, "total", None)
    bar.n = progress.iteration
    loss = getattr(progress, "loss", None)
    if loss is not None:
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    bar.refresh()


def _require_resumable(source, ck, purpose: str):
    if isinstance(source, Iterator) or not callable(source):
        raise InputTypeError(
            f"Job: {ck} exists, but the source is a generator object, which cannot {purpose}; "
            "pass a callable that accepts checkpoint= (e.g. functools.partial(iterate_sirt, stack, "
            "n_iter=50) or functools.partial(recon.iterate, stack, 'sirt', n_iter=50))")
    if not _accepts_checkpoint(source):
        raise InputError(f"Job: {ck} exists, but the source {source!r} does not accept "
                         f"checkpoint=; it cannot {purpose}")


def _check_finished_source(job: Job):
    """Call the source with the finished folder's last checkpoint: the algorithm checks it
    against its own data and parameters at the call (nothing is run); raise if it refuses."""
    ck, job._final_checkpoint = job._final_checkpoint, None
    if ck is None:
        return
    try:
        gen = job._source(checkpoint=ck)
    except (ValueError, TypeError) as exc:
        raise OtherComputationError(
            f"{job.workdir} holds the result of another computation, not given back: {exc}. Pass "
            "overwrite=True to recompute it here, or choose another workdir") from exc
    if hasattr(gen, "close"):
        gen.close()


def _jsonable(obj):
    """``obj`` as JSON gives it back (keys sorted, other objects as their ``str``)."""
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def _fingerprint_differences(old, new, where: str) -> list[str]:
    """What differs between a recorded fingerprint ``old`` (in ``where``) and ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [f"{k}={old.get(k, '<unset>')!r} in {where}, {new.get(k, '<unset>')!r} now"
                for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
    return [] if old == new else [f"{old!r} in {where}, {new!r} now"]


def _fingerprint_problem(workdir, recorded: dict, fingerprint) -> str | None:
    """Compare the fingerprint ``job.json`` of ``workdir`` records (``recorded``) with ``fingerprint``.

    Returns
    -------
    str or None
        A note for the job's log when the file records none (nothing to compare), else ``None``.

    Raises
    ------
    StateError
        The file records a fingerprint and ``fingerprint`` is ``None`` or differs (the message
        lists what differs).
    """
    old = recorded.get("fingerprint")
    if old is None and fingerprint is None:
        return None
    path = Path(workdir) / JOB_FILE
    if fingerprint is None:
        raise StateError(f"Job: {path} records a fingerprint ({old!r}); pass the fingerprint= of this "
                         "computation to resume it")
    if old is None:
        return f"resume: {path} records no fingerprint; this job's fingerprint cannot be compared"
    diffs = _fingerprint_differences(old, fingerprint, str(path))
    if diffs:
        raise StateError(f"Job: {workdir} holds another computation ({'; '.join(diffs)}); resume "
                         "with the same one, pass overwrite=True to recompute here, or choose another "
                         "workdir")
    return None
