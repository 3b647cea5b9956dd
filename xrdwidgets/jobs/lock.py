"""An exclusive lock on a job's work folder, and whether the process that wrote a job is alive.

One job at a time may use a work folder: two jobs writing ``checkpoint.pt``, ``chunks/`` and
``result.h5`` in one folder mix their results (one job's "done" would hand back the other's
volume). :func:`acquire` takes the folder's lock file ``job.lock`` with ``fcntl.flock`` (held as
long as the returned :class:`WorkdirLock` is open; the operating system drops it when the process
dies, whatever the way) and writes the holder into it: pid, host, job name, start time. A second
job, in this process or another, gets a :class:`WorkdirBusyError` that names the holder. A lock
file left by a dead process (its ``flock`` is gone with it) is taken over, with a log line naming
the former holder. Where ``fcntl`` is missing (Windows) the file is created exclusively instead,
and a holder whose pid is gone on this host is taken as stale.

:func:`process_alive` tells whether the process a ``job.json`` names still runs (pid, host and
the process's start time, so that a reused pid is not mistaken for the job's).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from ..base.errors import BusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

__all__ = ["LOCK_FILE", "WorkdirBusyError", "WorkdirLock", "acquire", "process_alive", "this_process"]

#: Name of the lock file inside a work folder.
LOCK_FILE = "job.lock"


class WorkdirBusyError(BusyError):
    """The work folder is in use by another job (the message names it)."""


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # no psutil, no such process, no access
        return None


_me: dict = {}


def this_process() -> dict:
    """``{"pid", "host", "pid_started"}`` of the calling process (recorded in ``job.json`` and locks)."""
    pid = os.getpid()
    if _me.get("pid") != pid:  # first call, or a forked child
        _me.clear()
        _me.update(pid=pid, host=socket.gethostname(), pid_started=_process_start(pid))
    return dict(_me)


def process_alive(info: dict) -> bool | None:
    """Whether the process named by ``info`` (``pid``, ``host``, optional ``pid_started``) runs.

    Returns
    -------
    bool or None
        ``None`` when it cannot be told: no pid recorded, or another host.
    """
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    except OSError:  # pragma: no cover - e.g. Windows without such a process
        return False
    started = info.get("pid_started")
    if isinstance(started, (int, float)):
        now = _process_start(pid)
        if now is not None and abs(now - started) > 1.0:
            return False  # the pid was reused by another process
    return True


def _describe(info: dict | None) -> str:
    if not info:
        return "a job whose details are not written yet"
    started = info.get("started")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
            if isinstance(started, (int, float)) else "at an unknown time")
    return (f"job {info.get('job')!r} (pid {info.get('pid')} on host {info.get('host')}, "
            f"started {when})")


def _read(path: Path) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


@dataclass
class WorkdirLock:
    """A held work-folder lock; :meth:`release` (idempotent) frees it and removes the file.

    Attributes
    ----------
    path : Path
        The lock file.
    holder : dict
        What it records: ``pid``, ``host``, ``pid_started``, ``job``, ``started`` (epoch s).
    previous : dict or None
        The record of a stale lock this one took over.
    """

    path: Path
    holder: dict
    previous: dict | None = None
    _fd: int | None = field(default=None, repr=False)
    _released: bool = field(default=False, repr=False)

    def release(self):
        if self._released:
            return
        self._released = True
        try:
            self.path.unlink(missing_ok=True)  # while still held: no one takes a file being removed
        except OSError:  # pragma: no cover - read-only folder; the flock still goes
            log.debug("cannot remove %s", self.path, exc_info=True)
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


def _busy(folder: Path, info: dict | None) -> WorkdirBusyError:
    return WorkdirBusyError(
        f"work folder {folder} is in use by {_describe(info)} (lock file {folder / LOCK_FILE}); "
        "wait for that job to end or cancel it, or choose another workdir")


def acquire(folder, job: str) -> WorkdirLock:
    """Take the exclusive lock of the work folder ``folder`` (which must exist) for ``job``.

    Raises
    ------
    WorkdirBusyError
        Another job (this process or another) holds it; the message names the holder.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    holder = {**this_process(), "job": str(job), "started": time.time()}
    if fcntl is None:  # pragma: no cover - Windows
        return _acquire_exclusive(folder, path, holder)
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(folder, _read(path)) from None
        except OSError:  # pragma: no cover - a file system without flock
            os.close(fd)
            return _acquire_exclusive(folder, path, holder)
        try:  # the file may have been removed by its former holder between open and flock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = _read(path)
        if previous:
            log.warning("work folder %s: taking over the lock of %s, which is no longer running",
                        folder, _describe(previous))
        data = json.dumps(holder).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return WorkdirLock(path, holder, previous, fd)
    raise _busy(folder, _read(path))  # pragma: no cover - a lock file churning 20 times


def _acquire_exclusive(folder: Path, path: Path, holder: dict) -> WorkdirLock:  # pragma: no cover
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            previous = _read(path)
            if previous and process_alive(previous) is False:
                log.warning("work folder %s: taking over the lock of %s, which is no longer running",
                            folder, _describe(previous))
                path.unlink(missing_ok=True)
                continue
            raise _busy(folder, previous) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(holder))
        return WorkdirLock(path, holder, None, None)
    raise _busy(folder, _read(path))
