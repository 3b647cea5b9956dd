"""What a job tells its subscribers: its :class:`State`, :class:`JobEvent` and the rate-limited
:class:`Dispatcher` that delivers them in a thread of its own (never the worker's).

Subscribers see at most ``rate_hz`` updates per second, always the latest one; the final state is
always delivered last. They must only set widget traits (no ``display()``/``print`` into Output
widgets from threads).
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .job import Job

log = logging.getLogger(__name__)

__all__ = ["State", "JobEvent", "Dispatcher", "describe_error"]


class State(str, enum.Enum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Only in :func:`~xrdwidgets.jobs.workfolder.job_info`: ``job.json`` says running (or queued) but
    #: its process is gone.
    CRASHED = "crashed"

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED, State.CRASHED)


@dataclass(frozen=True)
class JobEvent:
    """What subscribers receive: the job's state and its latest progress (may be ``None``)."""

    job: Job
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


class Dispatcher:
    """Delivers a job's events to its subscribers from one thread, at most ``rate_hz`` a second.

    Events are coalesced: only the latest one waiting is delivered (a preview not yet delivered
    rides on the newer event). The thread starts with the first subscriber and ends after it has
    delivered a finished state.

    Parameters
    ----------
    rate_hz : float
        Most deliveries per second (``<= 0``: no pause between deliveries).
    name : str
        Name of the delivery thread.
    """

    def __init__(self, rate_hz: float, name: str):
        self.rate_hz = float(rate_hz)
        self.name = name
        self._subs: list[Callable] = []
        self._lock = threading.Lock()
        self._pending: JobEvent | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it."""
        with self._lock:
            self._subs.append(callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
                self._thread.start()

        def unsubscribe():
            with self._lock:
                if callback in self._subs:
                    self._subs.remove(callback)

        return unsubscribe

    def post(self, event: JobEvent):
        """Queue ``event`` for delivery (it replaces any event not yet delivered)."""
        with self._lock:
            if not self._subs:
                return
            prev = self._pending
            if (prev is not None and event.progress is not None and prev.progress is not None
                    and getattr(event.progress, "preview", None) is None
                    and getattr(prev.progress, "preview", None) is not None):
                # a preview not yet delivered rides on the newer event: throttling must not
                # starve the preview when algorithms send one only every few iterations
                try:
                    event = JobEvent(event.job, event.state,
                                     dataclasses.replace(event.progress, preview=prev.progress.preview))
                except TypeError:  # pragma: no cover - foreign event types
                    pass
            self._pending = event  # only the latest matters; the final state is always posted last
        self._wake.set()

    def _run(self):
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
                        log.exception("%s: subscriber %r failed", self.name, cb)
                last_state = ev.state
            if last_state is not None and last_state.finished and self._pending is None:
                return
            time.sleep(interval)
