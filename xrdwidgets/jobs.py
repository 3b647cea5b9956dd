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
    :mod:`xrdwidgets.workdir_lock`) from its creation to its end; a second job, in this process
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
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import itertools
import json
import logging
import pickle
import queue as _queue
import re
import shutil
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from .base.atomic import atomic_path, atomic_torch_save, atomic_write_text
from .base.checks import check_writable
from .workdir_lock import LOCK_FILE, WorkdirBusyError, process_alive, this_process
from .workdir_lock import acquire as _acquire_lock
from .base.errors import StateError

log = logging.getLogger(__name__)

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

#: File names inside a job's workdir.
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.h5"
CHUNKS_DIR = "chunks"
JOB_FILE = "job.json"
_FORMAT = "xrdwidgets.checkpoint"
_FORMAT_VERSION = 2  # 2: a sha256 of the content and of every part; 1 (read only): none
_NDARRAY = "__xrdwidgets_ndarray__"
_CHUNK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class CheckpointError(StateError):
    """A checkpoint that cannot be read (damaged, missing parts, unsafe content)."""


class _OtherComputation(StateError):
    """A finished work folder whose result belongs to other data or parameters."""


class State(str, enum.Enum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Only in :func:`job_info`: ``job.json`` says running (or queued) but its process is gone.
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


# ---------------------------------------------------------------------------- checkpoint files
_SAFE_LEAVES = (type(None), bool, int, float, complex, str, bytes)


def _encode(obj, where: str):
    """``obj`` with numpy arrays as tagged tensors, so that ``weights_only`` loading reads it."""
    import torch

    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":
            raise TypeError(f"{where}: a numpy array of dtype {obj.dtype} cannot be stored in a checkpoint "
                            "(numeric or bool arrays only)")
        arr = np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("="))
        return {_NDARRAY: torch.from_numpy(arr)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (_SAFE_LEAVES, torch.Tensor, torch.dtype, torch.device, torch.Size)):
        return obj
    if isinstance(obj, dict):
        out = {k: _encode(v, f"{where}[{k!r}]") for k, v in obj.items()}
        if isinstance(obj, OrderedDict):  # torch state dicts: keep the class and _metadata
            out = OrderedDict(out)
            if hasattr(obj, "_metadata"):
                out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, list):
            return items
        if isinstance(obj, (set, frozenset)):
            return type(obj)(items)
        return tuple(items)  # named tuples are stored as plain tuples
    raise TypeError(f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a "
                    "checkpoint; use tensors, numpy arrays, numbers, str, bool, None, dict, list or tuple")


def _decode(obj):
    if isinstance(obj, dict):
        if len(obj) == 1 and _NDARRAY in obj:
            return obj[_NDARRAY].numpy()
        out = {k: _decode(v) for k, v in obj.items()}
        if isinstance(obj, OrderedDict):
            out = OrderedDict(out)
            if hasattr(obj, "_metadata"):
                out._metadata = obj._metadata
        return out
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, (tuple, set, frozenset)):
        return type(obj)(_decode(v) for v in obj)
    return obj


_atomic_torch_save = atomic_torch_save


class _HashingWriter:
    """A binary file that hashes what is written to it (``np.save`` writes through it)."""

    def __init__(self, fh):
        self.fh, self.hash = fh, hashlib.sha256()

    def write(self, data):
        self.hash.update(data)
        return self.fh.write(data)


def _atomic_save_npy(path: Path, arr) -> str:
    """Write ``arr`` to ``path`` (``.npy``) atomically; returns the sha256 of the file's bytes."""
    if hasattr(arr, "detach"):  # a torch tensor
        arr = arr.detach().cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        out = _HashingWriter(fh)
        np.save(out, np.asarray(arr), allow_pickle=False)
    return out.hash.hexdigest()


def _sha256_file(path: Path, block: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _save_checkpoint_file(raw: dict, path: Path):
    """Write ``checkpoint.pt``: ``raw`` serialised by ``torch.save``, wrapped with its sha256.

    The file is ``{"format", "version": 2, "sha256", "payload": bytes}`` (itself a ``torch.save``
    file readable with ``weights_only=True``); :func:`_read_checkpoint` checks the hash before it
    reads the payload, so a flipped bit is reported, never loaded.
    """
    import torch

    buf = BytesIO()
    torch.save(raw, buf)
    payload = buf.getvalue()
    atomic_torch_save({"format": _FORMAT, "version": _FORMAT_VERSION,
                       "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}, path)


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"cannot read checkpoint {path}: {why}. The file is damaged or was not written by an "
        f"xrdwidgets job; restore a copy, or start afresh (overwrite=True, or delete {path.name} "
        f"and {CHUNKS_DIR}/ in {path.parent})")


def _torch_load(path: Path, source, trusted: bool):
    import torch

    try:
        return torch.load(source, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} holds Python objects outside the safe set (tensors, numpy arrays, "
                "plain values); it was not written by this version of xrdwidgets. Load it with "
                "load_checkpoint(workdir, trusted=True) only if you trust the file") from None
        raise _damaged(path, f"{type(exc).__name__}: {str(exc).splitlines()[-1] if str(exc) else ''}") from exc
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else "the file is empty or truncated"
        raise _damaged(path, f"{type(exc).__name__}: {text}") from exc


def _load_raw(path: Path, *, trusted: bool = False):
    """The content of a ``checkpoint.pt`` with its checksum verified: the dict a job wrote
    (``state``, ``chunks``, ``chunk_sha256``, ``iteration``...), or a bare legacy object."""
    raw = _torch_load(path, path, trusted)
    if not (isinstance(raw, dict) and raw.get("format") == _FORMAT):
        return raw  # a bare dict (trusted legacy file)
    version = raw.get("version")
    if version == 2:
        payload, digest = raw.get("payload"), raw.get("sha256")
        if not isinstance(payload, bytes) or not isinstance(digest, str):
            raise _damaged(path, "it has no payload or no checksum")
        found = hashlib.sha256(payload).hexdigest()
        if found != digest:
            raise _damaged(path, f"its sha256 checksum does not match its content (recorded {digest[:12]}…, "
                                 f"found {found[:12]}…)")
        inner = _torch_load(path, BytesIO(payload), trusted)
        if not isinstance(inner, dict):
            raise _damaged(path, f"its payload is a {type(inner).__name__}, not a dict")
        return {**inner, "format": _FORMAT, "version": 2}
    if version != 1:
        raise CheckpointError(f"checkpoint {path} has format version {version!r}; this "
                              f"xrdwidgets reads versions 1 and {_FORMAT_VERSION}")
    return raw


def _read_checkpoint(workdir, *, trusted: bool = False, damaged: str = "raise"):
    """``(state, meta)`` of ``workdir/checkpoint.pt``, or ``(None, {})`` when there is none.

    ``damaged="drop"``: a part whose checksum does not match is left out (logged, listed in
    ``meta["damaged"]``) so that the algorithm recomputes it; ``"raise"``: a CheckpointError.
    """
    workdir = Path(workdir)
    path = workdir / CHECKPOINT_FILE
    if not path.exists():
        return None, {}
    raw = _load_raw(path, trusted=trusted)
    if not (isinstance(raw, dict) and raw.get("format") == _FORMAT):
        return raw, {}
    state = _decode(raw.get("state"))
    files = raw.get("chunks")
    sums = raw.get("chunk_sha256") or {}
    kept, bad = {}, []
    if files is not None:
        chunks = {}
        for name, rel in files.items():
            if not (_CHUNK_NAME.fullmatch(str(name)) and rel == f"{CHUNKS_DIR}/{name}.npy"):
                raise _damaged(path, f"bad chunk entry {name!r}: {rel!r}")
            cpath = workdir / rel
            if not cpath.exists():
                raise CheckpointError(f"checkpoint {path} lists the part {cpath}, which is missing; "
                                      "restore it, or start afresh (overwrite=True)")
            want = sums.get(name)
            if want is not None and _sha256_file(cpath) != want:
                why = (f"cannot read {cpath} (a part of checkpoint {path}): its sha256 checksum does not "
                       "match the one recorded when it was written; the file is damaged")
                if damaged != "drop":
                    raise CheckpointError(why + "; restore it, or resume with a job, which recomputes "
                                                "damaged parts (xrdwidgets.jobs.resume)")
                log.warning("%s; it is left out and recomputed", why)
                bad.append(str(name))
                continue
            try:
                chunks[name] = np.load(cpath, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise CheckpointError(f"cannot read {cpath} (a part of checkpoint {path}): "
                                      f"{type(exc).__name__}: {exc}") from exc
            kept[name] = rel
        state = {**state, "chunks": chunks}
    meta = {k: raw.get(k) for k in ("iteration", "total", "saved", "job")}
    meta["chunk_files"] = kept
    meta["chunk_sha256"] = {k: v for k, v in sums.items() if k in kept}
    meta["uses_chunks"] = files is not None
    meta["damaged"] = bad
    return state, meta


def load_checkpoint(workdir, *, trusted: bool = False) -> dict | None:
    """The last checkpoint a job wrote in ``workdir`` (``None`` if there is none).

    Parameters
    ----------
    workdir : path-like
        The job's folder.
    trusted : bool
        Read with ``torch.load(weights_only=False)``, which runs pickled code: only for files
        you trust that hold other objects than tensors, arrays and plain values (checkpoints of
        older versions). Default: safe loading.

    Returns
    -------
    dict or None
        The checkpoint dict as the algorithm yielded it, numpy arrays included; with
        ``"chunks"`` holding *all* parts written so far as read-only memory maps.

    Raises
    ------
    CheckpointError
        The file (or one of its parts) is damaged or missing, or its checksum does not match
        (sha256 recorded when written); the message names it. A job that resumes leaves damaged
        parts out instead, so that they are recomputed.
    """
    return _read_checkpoint(workdir, trusted=trusted)[0]


def merge_checkpoint(previous: dict | None, new: dict) -> dict:
    """Accumulate checkpoints in memory as a job does on disk: ``new`` with the chunks of both.

    For running a resumable algorithm without a job::

        ck = None
        for ev in iterate_sirt(stack):
            if "checkpoint" in ev.metrics:
                ck = merge_checkpoint(ck, ev.metrics["checkpoint"])
        ...  # later: iterate_sirt(stack, checkpoint=ck)
    """
    if previous is None or "chunks" not in new:
        return dict(new)
    return {**new, "chunks": {**(previous.get("chunks") or {}), **(new.get("chunks") or {})}}


def _read_job_file(workdir) -> dict | None:
    path = Path(workdir) / JOB_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


#: Work folders whose lock a job of this process holds: resolved path → job id.
_held: dict[str, int] = {}


def _job_alive(workdir: Path, info: dict) -> bool | None:
    """Whether the job ``job.json`` describes still runs (None: cannot tell, e.g. another host)."""
    me = this_process()
    if info.get("pid") == me["pid"] and info.get("host") == me["host"]:
        return str(workdir.resolve()) in _held
    return process_alive(info)


def job_info(workdir) -> dict | None:
    """The ``job.json`` of a job's workdir as a dict (``None`` if there is none).

    A job recorded as ``running`` or ``queued`` whose process has ended (a crash, a kill, a
    closed kernel: ``job.json`` could not be updated) is reported with ``state`` ``"crashed"``,
    ``recorded_state`` the state in the file, and a ``message`` saying so; continue it with
    :func:`resume`. A job of another host is reported as recorded.

    Raises a ValueError naming the file when it is not valid JSON.
    """
    info = _read_job_file(workdir)
    if info is None or info.get("state") not in (State.RUNNING.value, State.QUEUED.value):
        return info
    if _job_alive(Path(workdir), info) is False:
        info = {**info, "state": State.CRASHED.value, "recorded_state": info["state"],
                "message": f"the process that ran this job (pid {info.get('pid')} on host {info.get('host')}) "
                           f"ended without finishing it (a crash, a kill or a closed kernel); continue "
                           f"it with xrdwidgets.jobs.resume({str(workdir)!r}, source)"}
    return info


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def _fingerprint_differences(old, new, where: str) -> list[str]:
    """What differs between a recorded fingerprint ``old`` (in ``where``) and ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [f"{k}={old.get(k, '<unset>')!r} in {where}, {new.get(k, '<unset>')!r} now"
                for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
    return [] if old == new else [f"{old!r} in {where}, {new!r} now"]


def _release_workdir(lock, key: str):
    if _held.get(key) is not None and not lock._released:
        _held.pop(key, None)
    lock.release()


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
        resume, a callable that also accepts ``checkpoint=`` (module docstring).
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
        Continue the job whose files are in ``workdir``: with a checkpoint there, the worker
        calls ``source(checkpoint=...)`` (``source`` must be such a callable); with
        ``result.h5`` there, the job ends at once, done, with that result (read with
        :func:`xrdwidgets.io.load`; ``None`` with a custom ``save_result``); with neither, it
        starts from the beginning. Before a finished result is given back, the source is
        called with the folder's last checkpoint (which does not run it: the algorithm checks
        the checkpoint's fingerprint against its data and parameters at the call); a mismatch
        fails the job with the algorithm's message of what differs, and the result is not
        returned. A part of the checkpoint whose checksum does not match is left out and
        recomputed (``resumed_from["damaged"]``), never merged.
    overwrite : bool
        Discard the result, checkpoint and parts a former job left in ``workdir`` (also the way
        to recompute a finished folder).

    Notes
    -----
    A job with a ``workdir`` holds the folder's exclusive lock (``job.lock``,
    :mod:`xrdwidgets.workdir_lock`) from its creation to its end; the folder must be writable
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
            raise ValueError("Job: resume=True and overwrite=True exclude each other")
        if resume and workdir is None:
            raise ValueError("Job: resume=True needs workdir= (the folder of the job to continue)")
        self.id = next(_ids)
        self.name = str(name)
        self._source = source
        self.rate_hz = float(rate_hz)
        self.workdir = Path(workdir) if workdir is not None else None
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
        self._subs: list[Callable] = []
        self._lock = threading.Lock()
        self._pending: JobEvent | None = None
        self._wake = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self.resume = bool(resume)
        self.resumed_from: dict | None = None   # what this job continues (iteration, parts, file)
        self.last_checkpoint: dict | None = None  # iteration/time of the last checkpoint written
        self._checkpoint: dict | None = None     # loaded for the worker, dropped once used
        self._chunk_files: dict[str, str] = {}   # parts written so far: name → relative path
        self._chunk_sums: dict[str, str] = {}    # their sha256
        self._uses_chunks = False
        self._ckpt_raw: dict | None = None       # last checkpoint.pt content, without parts
        self._final_checkpoint: dict | None = None  # of a finished folder: checked before "already done"
        self._already_done = False
        self._workdir_lock = None
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            check_writable(self.workdir, what="job workdir")
            self._workdir_lock = _acquire_lock(self.workdir, self.name)
            key = str(self.workdir.resolve())
            _held[key] = self.id
            # a job object dropped without running still frees the folder
            weakref.finalize(self, _release_workdir, self._workdir_lock, key)
            try:
                if self._workdir_lock.previous:
                    self._log(f"took over the lock of {self._workdir_lock.previous.get('job')!r} "
                              f"(pid {self._workdir_lock.previous.get('pid')}), which is no longer running")
                self._take_workdir(overwrite=bool(overwrite))
                self._persist()
            except BaseException:
                self._release_workdir()
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
            self._take_finished_result()
            return
        rf = self.resumed_from
        self._log(f"started {self.name}" + ("" if rf is None else
                  f", resuming from the checkpoint at iteration {rf['iteration']}"
                  + (f" ({rf['chunks']} finished part(s))" if rf.get("chunks") else "")))
        self._persist()
        self._post(JobEvent(self, self.state, None))
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
            if self._store_result():
                self._drop_chunks()
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

    # ------------------------------------------------------------------ workdir
    def _take_workdir(self, overwrite: bool):
        """Check what a former job left in the workdir; load the checkpoint to resume from."""
        wd = self.workdir
        result, ck, chunks = wd / RESULT_FILE, wd / CHECKPOINT_FILE, wd / CHUNKS_DIR
        if overwrite:
            gone = [p.name for p in (result, ck, chunks) if p.exists()]
            for p in (result, ck):
                p.unlink(missing_ok=True)
            shutil.rmtree(chunks, ignore_errors=True)
            if gone:
                self._log(f"overwrite: removed {', '.join(gone)} of a former job")
            return
        try:
            recorded = _read_job_file(wd) if self.resume else None
        except ValueError as exc:
            self._log(f"resume: {exc}; its fingerprint cannot be compared")
            recorded = None
        if recorded is not None:
            self._check_fingerprint(recorded)
        if not self.resume:
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
            self._already_done = True
            self.resumed_from = {"iteration": None, "result": str(result)}
            # what the finished job last checkpointed: the source is checked against it
            self._final_checkpoint = _read_checkpoint(wd)[0]
            if self._final_checkpoint is not None:
                self._require_resumable(ck, "check that the finished result belongs to it")
            return
        state, meta = _read_checkpoint(wd, damaged="drop")
        if state is None:
            self._log(f"resume: no checkpoint in {wd}, starting from the beginning")
            return
        self._require_resumable(ck, "be resumed")
        self._checkpoint = state
        self._chunk_files = dict(meta.get("chunk_files") or {})
        self._chunk_sums = dict(meta.get("chunk_sha256") or {})
        self._uses_chunks = bool(meta.get("uses_chunks"))
        self.resumed_from = {"iteration": meta.get("iteration"), "total": meta.get("total"),
                             "saved": meta.get("saved"), "chunks": len(self._chunk_files),
                             "checkpoint": str(ck)}
        if meta.get("damaged"):
            self.resumed_from["damaged"] = list(meta["damaged"])
            self._log(f"resume: damaged part(s) {', '.join(meta['damaged'])} (checksum mismatch) left out; "
                      "they are recomputed")

    def _require_resumable(self, ck: Path, purpose: str):
        if isinstance(self._source, Iterator) or not callable(self._source):
            raise TypeError(
                f"Job: {ck} exists, but the source is a generator object, which cannot {purpose}; "
                "pass a callable that accepts checkpoint= (e.g. functools.partial(iterate_sirt, stack, "
                "n_iter=50) or functools.partial(recon.iterate, stack, 'sirt', n_iter=50))")
        if not _accepts_checkpoint(self._source):
            raise ValueError(f"Job: {ck} exists, but the source {self._source!r} does not accept "
                             f"checkpoint=; it cannot {purpose}")

    def _check_fingerprint(self, recorded: dict):
        old = recorded.get("fingerprint")
        if old is None and self.fingerprint is None:
            return
        path = self.workdir / JOB_FILE
        if self.fingerprint is None:
            raise ValueError(f"Job: {path} records a fingerprint ({old!r}); pass the fingerprint= of this "
                             "computation to resume it")
        if old is None:
            self._log(f"resume: {path} records no fingerprint; this job's fingerprint cannot be compared")
            return
        diffs = _fingerprint_differences(old, self.fingerprint, str(path))
        if diffs:
            raise ValueError(f"Job: {self.workdir} holds another computation ({'; '.join(diffs)}); resume "
                             "with the same one, pass overwrite=True to recompute here, or choose another "
                             "workdir")

    def _check_finished_source(self):
        """Call the source with the finished folder's last checkpoint: the algorithm checks it
        against its own data and parameters at the call (nothing is run); raise if it refuses."""
        ck, self._final_checkpoint = self._final_checkpoint, None
        if ck is None:
            return
        try:
            gen = self._source(checkpoint=ck)
        except (ValueError, TypeError) as exc:
            raise _OtherComputation(
                f"{self.workdir} holds the result of another computation, not given back: {exc}. Pass "
                "overwrite=True to recompute it here, or choose another workdir") from exc
        if hasattr(gen, "close"):
            gen.close()

    def _take_finished_result(self):
        path = self.workdir / RESULT_FILE
        try:
            self._check_finished_source()
            if self._save_result is None:
                from . import io

                self.result = io.load(path)
            self._finish(State.DONE, f"already done: the result is in {path} (not run again)")
        except BaseException as exc:  # noqa: BLE001 - reported to the user, never lost
            self.error = exc
            self._log(traceback.format_exc())
            self._finish(State.FAILED, describe_error(exc) if isinstance(exc, _OtherComputation) else
                         f"cannot read the finished result {path}: {describe_error(exc)}")

    def _drop_chunks(self):
        """Once the result is stored: remove the parts, keep the small checkpoint state."""
        if not self._chunk_files or self.workdir is None:
            return
        self._chunk_files, self._chunk_sums = {}, {}
        path = self.workdir / CHECKPOINT_FILE
        raw = self._ckpt_raw
        if raw is None:  # resumed and finished without a checkpoint of its own: use the file's
            try:
                raw = _load_raw(path)
            except Exception:  # the result is stored; the checkpoint is obsolete
                log.debug("job %s: cannot re-read %s", self.id, path, exc_info=True)
                raw = None
        if isinstance(raw, dict) and "state" in raw:
            keep = {k: v for k, v in raw.items() if k not in ("format", "version")}
            _save_checkpoint_file({**keep, "chunks": {}, "chunk_sha256": {}}, path)
        else:
            path.unlink(missing_ok=True)  # it would list parts that are gone
        shutil.rmtree(self.workdir / CHUNKS_DIR, ignore_errors=True)

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
            self._write_checkpoint(ckpt, ev)
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

    def _write_checkpoint(self, ckpt: dict, ev=None):
        if self.workdir is None:
            return
        if not isinstance(ckpt, dict):
            raise TypeError(f"metrics['checkpoint'] must be a dict, found {type(ckpt).__name__}")
        state = ckpt
        parts = ckpt.get("chunks")
        if isinstance(parts, dict):
            self._uses_chunks = True
            state = {k: v for k, v in ckpt.items() if k != "chunks"}
            if parts:
                folder = self.workdir / CHUNKS_DIR
                folder.mkdir(exist_ok=True)
                for name, arr in parts.items():
                    name = str(name)
                    if not _CHUNK_NAME.fullmatch(name) or name in (".", ".."):
                        raise ValueError(f"checkpoint part name {name!r}: use letters, digits, '_', '-', '.'")
                    # parts first, then the list (with their checksums)
                    self._chunk_sums[name] = _atomic_save_npy(folder / f"{name}.npy", arr)
                    self._chunk_files[name] = f"{CHUNKS_DIR}/{name}.npy"
        it, total = getattr(ev, "iteration", None), getattr(ev, "total", None)
        raw = {"state": _encode(state, "checkpoint"),
               "chunks": dict(self._chunk_files) if self._uses_chunks else None,
               "chunk_sha256": dict(self._chunk_sums) if self._uses_chunks else None,
               "iteration": it, "total": total, "saved": time.time(), "job": self.name}
        _save_checkpoint_file(raw, self.workdir / CHECKPOINT_FILE)
        self._ckpt_raw = {k: v for k, v in raw.items() if k not in ("chunks", "chunk_sha256")}
        self.last_checkpoint = {"iteration": it, "total": total, "saved": raw["saved"],
                                "chunks": len(self._chunk_files)}
        self._persist()

    def _store_result(self) -> bool:
        """Write ``result.h5``; True when a result was stored."""
        if self.workdir is None or self.result is None:
            return False
        path = self.workdir / RESULT_FILE
        if self._save_result is not None:
            self._save_result(self.result, path)
            return True
        import xarray as xr

        if isinstance(self.result, (xr.DataArray, xr.Dataset)):
            from . import io

            # the workdir was checked when the job was made: this replaces no one else's result
            io.save(self.result, path, overwrite=True, producer=f"xrdwidgets job {self.name}",
                    parameters=self.params)
            return True
        return False

    def _finish(self, state: State, message: str):
        with self._lock:
            if self.state.finished:
                return
            self.state = state
            self.message = message
            self.finished = time.time()
        self._log(message)
        self._persist()
        self._release_workdir()  # before waiters wake: the folder is free when wait() returns
        self._done.set()
        self._post(JobEvent(self, state, self.progress), force=True)

    def _release_workdir(self):
        if self._workdir_lock is not None:
            _release_workdir(self._workdir_lock, str(self.workdir.resolve()))

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
            "checkpoint": self.last_checkpoint, "resumed_from": self.resumed_from,
            "fingerprint": self.fingerprint, **this_process(),
        }
        atomic_write_text(self.workdir / JOB_FILE, json.dumps(info, indent=1, default=str))

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
            raise TypeError("run: with client=, source must be a callable taking client= and store= "
                            "(e.g. functools.partial(recon.iterate, stack, 'sirt')), not a generator object")
        if store is None:
            if kwargs.get("workdir") is None:
                raise ValueError("run: a cluster job needs store= or workdir= (its results are written there)")
            store = Path(kwargs["workdir"]) / "volume.zarr"
        extra = {"overwrite": True} if kwargs.get("overwrite") else {}  # a fresh job: a fresh store
        source = functools.partial(source, client=client, store=store, **extra)
    elif store is not None:
        raise ValueError("run: store= is for cluster jobs; give client= too")
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
