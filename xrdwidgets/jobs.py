"""Background execution of algorithm generators: jobs, a queue, progress streams, persistence.

An *algorithm* here is any generator that yields :class:`~xrdwidgets.recon.base.Progress` events
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
error), ``log.txt``, and ``result.h5`` when done; checkpoints an algorithm yields (a
``Progress`` whose ``metrics["checkpoint"]`` is a dict) are written to ``checkpoint.pt``
atomically, so a cancelled, crashed or restarted kernel leaves a resumable state on disk
(:func:`load_checkpoint`).

Subscribers run in a dispatcher thread, never in the worker; they must only set widget
traits (no ``display()``/``print`` into Output widgets from threads).
"""
from __future__ import annotations

import enum
import itertools
import json
import logging
import os
import queue as _queue
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

__all__ = ["State", "Job", "JobQueue", "run", "default_queue", "list_jobs", "load_checkpoint",
           "describe_error", "JobEvent"]


class State(str, enum.Enum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)


@dataclass(frozen=True)
class JobEvent:
    """What subscribers receive: the job's state and its latest progress (may be ``None``)."""

    job: "Job"
    state: State
    progress: Any = None


def describe_error(exc: BaseException) -> str:
    """A user-facing message for an exception raised inside a job."""
    name = type(exc).__name__
    text = str(exc)
    if "out of memory" in text.lower() or name == "OutOfMemoryError":
        return (f"GPU out of memory ({text.splitlines()[0] if text else name}). Use a smaller channel "
                "batch (batch=...) or run on the CPU (device='cpu').")
    if isinstance(exc, MemoryError):
        return "Out of memory. Use a smaller channel batch (batch=...) or fewer channels."
    return f"{name}: {text}" if text else name


def _atomic_write_text(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(workdir) -> dict | None:
    """The last checkpoint a job wrote in ``workdir`` (``None`` if there is none)."""
    path = Path(workdir) / "checkpoint.pt"
    if not path.exists():
        return None
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


_ids = itertools.count(1)


class Job:
    """One algorithm generator run in the background (create with :func:`run` or a queue).

    Parameters
    ----------
    source : generator or callable
        The algorithm generator, or a zero-argument callable returning one (called in the
        worker thread when the job starts, so the set-up cost is not paid in the caller).
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
    """

    def __init__(self, source, *, name: str = "job", rate_hz: float = 10.0, workdir=None,
                 save_result: Callable | None = None, params: dict | None = None):
        self.id = next(_ids)
        self.name = str(name)
        self._source = source
        self.rate_hz = float(rate_hz)
        self.workdir = Path(workdir) if workdir is not None else None
        self._save_result = save_result
        self.params = dict(params or {})
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
        self._subs: list[Callable] = []
        self._lock = threading.Lock()
        self._pending: JobEvent | None = None
        self._wake = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._persist()

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
        with self._lock:
            self._subs.append(callback)
        self._ensure_dispatcher()

        def unsubscribe():
            with self._lock:
                if callback in self._subs:
                    self._subs.remove(callback)

        return unsubscribe

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
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=self.name, total=None)
        try:
            end = None if timeout is None else time.time() + timeout
            while not self._done.wait(0.1):
                if bar is not None and self.progress is not None:
                    bar.total = getattr(self.progress, "total", None)
                    bar.n = self.progress.iteration
                    loss = getattr(self.progress, "loss", None)
                    if loss is not None:
                        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    bar.refresh()
                if end is not None and time.time() > end:
                    raise TimeoutError(f"job {self.id} ({self.name}) still {self.state.value} after {timeout} s")
        finally:
            if bar is not None:
                bar.close()
        if self.state == State.FAILED and raise_on_error and self.error is not None:
            raise self.error
        return self.result

    # ------------------------------------------------------------------ running
    def start(self) -> "Job":
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
        self._log(f"started {self.name}")
        self._post(JobEvent(self, self.state, None))
        gen = None
        try:
            gen = self._source() if callable(self._source) and not isinstance(self._source, Iterator) else self._source
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
            self._store_result()
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
                except Exception:  # pragma: no cover
                    pass

    # ------------------------------------------------------------------ internals
    def _cancelled(self, gen):
        # closing the generator runs its finally-blocks (algorithms may checkpoint there)
        try:
            gen.close()
        except Exception:  # pragma: no cover
            pass
        self._finish(State.CANCELLED, f"cancelled after {self.elapsed:.1f} s"
                     + (f" at iteration {self.progress.iteration}" if self.progress is not None else ""))

    def _on_progress(self, ev):
        metrics = getattr(ev, "metrics", None) or {}
        ckpt = metrics.get("checkpoint") if isinstance(metrics, dict) else None
        if ckpt is not None:
            self._write_checkpoint(ckpt)
            metrics = {k: v for k, v in metrics.items() if k != "checkpoint"}
            try:
                ev = type(ev)(**{**ev.__dict__, "metrics": metrics})
            except TypeError:  # pragma: no cover - foreign event types
                pass
        self.progress = ev
        loss = getattr(ev, "loss", None)
        if loss is not None:
            self.history.append((getattr(ev, "iteration", len(self.history) + 1), float(loss)))
        self._post(JobEvent(self, self.state, ev))

    def _write_checkpoint(self, ckpt: dict):
        if self.workdir is None:
            return
        import torch

        path = self.workdir / "checkpoint.pt"
        fd, tmp = tempfile.mkstemp(prefix="checkpoint.", suffix=".tmp", dir=self.workdir)
        os.close(fd)
        try:
            torch.save(ckpt, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _store_result(self):
        if self.workdir is None or self.result is None:
            return
        path = self.workdir / "result.h5"
        if self._save_result is not None:
            self._save_result(self.result, path)
            return
        import xarray as xr

        if isinstance(self.result, (xr.DataArray, xr.Dataset)):
            from . import io

            io.save(self.result, path, overwrite=True, producer=f"xrdwidgets job {self.name}",
                    parameters=self.params)

    def _finish(self, state: State, message: str):
        with self._lock:
            if self.state.finished:
                return
            self.state = state
            self.message = message
            self.finished = time.time()
        self._log(message)
        self._persist()
        self._done.set()
        self._post(JobEvent(self, state, self.progress), force=True)

    def _log(self, line: str):
        stamp = time.strftime("%H:%M:%S")
        self.log_lines.append(f"{stamp} {line}")
        if self.workdir is not None:
            with open(self.workdir / "log.txt", "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} {line}\n")

    def _persist(self):
        if self.workdir is None:
            return
        p = self.progress
        info = {
            "id": self.id, "name": self.name, "state": self.state.value, "message": self.message,
            "created": self.created, "started": self.started, "finished": self.finished,
            "iteration": getattr(p, "iteration", None), "total": getattr(p, "total", None),
            "loss": getattr(p, "loss", None), "params": self.params,
            "error": None if self.error is None else describe_error(self.error),
        }
        _atomic_write_text(self.workdir / "job.json", json.dumps(info, indent=1, default=str))

    # dispatcher: coalesces events so subscribers see at most rate_hz updates, always the latest
    def _ensure_dispatcher(self):
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                                    name=f"xrdwidgets-job-{self.id}-events")
                self._dispatcher.start()

    def _post(self, event: JobEvent, force: bool = False):
        with self._lock:
            if not self._subs:
                return
            self._pending = event  # only the latest matters; the final state is always posted last
        self._wake.set()

    def _dispatch(self):
        interval = 1.0 / self.rate_hz if self.rate_hz > 0 else 0.0
        last_state = None
        while True:
            self._wake.wait()
            with self._lock:
                ev, self._pending = self._pending, None
                self._wake.clear()
                subs = list(self._subs)
            if ev is not None:
                for cb in subs:
                    try:
                        cb(ev)
                    except Exception:  # a broken view must not kill the job
                        log.exception("job %s: subscriber %r failed", self.id, cb)
                last_state = ev.state
            if last_state is not None and last_state.finished and self._pending is None:
                return
            time.sleep(interval)


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


def run(source, *, name: str = "job", queue: bool | JobQueue = False, **kwargs) -> Job:
    """Start an algorithm generator in the background and return its :class:`Job` at once.

    Parameters
    ----------
    source : generator or callable returning one
    name : str
    queue : bool or JobQueue
        ``False``: a thread of its own (starts now). ``True``: the default queue (jobs run one
        after another); or a given :class:`JobQueue`.
    **kwargs
        ``rate_hz``, ``workdir``, ``save_result``, ``params`` (see :class:`Job`).
    """
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
