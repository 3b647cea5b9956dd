"""A job's work folder: checkpoints (encoded for safe loading, with sha256 checksums), result
parts, ``job.json``, ``log.txt`` and ``result.h5``, all written atomically.

``checkpoint.pt`` (format version 2) wraps its content with a sha256 and lists a sha256 of every
part (``chunks/<name>.npy``) as written; reading verifies them. Checkpoint dicts hold tensors,
numpy arrays (numeric/bool) and plain Python values, stored so that :func:`load_checkpoint` reads
them with ``torch.load(weights_only=True)`` (no pickled code runs when a checkpoint is read).
:class:`WorkFolder` is what a :class:`~xrdwidgets.jobs.job.Job` holds: the folder's lock
(:mod:`xrdwidgets.jobs.lock`) and the files it writes there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import shutil
import weakref
from collections import OrderedDict
from io import BytesIO
from pathlib import Path

import numpy as np

from ..base.atomic import atomic_path, atomic_torch_save, atomic_write_text
from ..base.checks import check_writable
from ..base.errors import InputError, InputTypeError, StateError
from .events import State
from .lock import acquire, process_alive, this_process

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FILE", "RESULT_FILE", "CHUNKS_DIR", "JOB_FILE", "CheckpointError",
           "OtherComputationError", "WorkFolder", "load_checkpoint", "merge_checkpoint", "read_checkpoint",
           "read_job_file", "job_info"]

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


class OtherComputationError(StateError):
    """A finished work folder whose result belongs to other data or parameters."""


# ---------------------------------------------------------------------------- checkpoint files
_SAFE_LEAVES = (type(None), bool, int, float, complex, str, bytes)


def _encode(obj, where: str):
    """``obj`` with numpy arrays as tagged tensors, so that ``weights_only`` loading reads it."""
    import torch

    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":
            raise InputTypeError(f"{where}: a numpy array of dtype {obj.dtype} cannot be stored in a checkpoint "
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
    raise InputTypeError(f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a "
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
    file readable with ``weights_only=True``); :func:`read_checkpoint` checks the hash before it
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


def read_checkpoint(workdir, *, trusted: bool = False, damaged: str = "raise"):
    """``(state, meta)`` of ``workdir/checkpoint.pt``, or ``(None, {})`` when there is none.

    Parameters
    ----------
    workdir : path-like
        The job's folder.
    trusted : bool
        As in :func:`load_checkpoint`.
    damaged : {"raise", "drop"}
        ``"drop"``: a part whose checksum does not match is left out (logged, listed in
        ``meta["damaged"]``) so that the algorithm recomputes it; ``"raise"``: a CheckpointError.

    Returns
    -------
    state : dict or None
        As :func:`load_checkpoint` gives it.
    meta : dict
        ``iteration``, ``total``, ``saved``, ``job``, ``chunk_files``, ``chunk_sha256``,
        ``uses_chunks``, ``damaged`` (what :meth:`WorkFolder.adopt` takes).
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
    return read_checkpoint(workdir, trusted=trusted)[0]


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




# ---------------------------------------------------------------------------- job.json
def read_job_file(workdir) -> dict | None:
    """The ``job.json`` of ``workdir`` as written (``None`` if there is none).

    Raises
    ------
    StateError
        The file is not valid JSON (the message names it).
    """
    path = Path(workdir) / JOB_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc


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
    :func:`~xrdwidgets.jobs.resume`. A job of another host is reported as recorded.

    Raises a ValueError (:class:`~xrdwidgets.base.errors.StateError`) naming the file when it is
    not valid JSON.
    """
    info = read_job_file(workdir)
    if info is None or info.get("state") not in (State.RUNNING.value, State.QUEUED.value):
        return info
    if _job_alive(Path(workdir), info) is False:
        info = {**info, "state": State.CRASHED.value, "recorded_state": info["state"],
                "message": f"the process that ran this job (pid {info.get('pid')} on host {info.get('host')}) "
                           f"ended without finishing it (a crash, a kill or a closed kernel); continue "
                           f"it with xrdwidgets.jobs.resume({str(workdir)!r}, source)"}
    return info


# ---------------------------------------------------------------------------- the folder
def _release(lock, key: str):
    if _held.get(key) is not None and not lock._released:
        _held.pop(key, None)
    lock.release()


class WorkFolder:
    """The work folder of one job: its lock and the files the job writes there.

    Creating it creates the folder, checks that it can be written (a probe file) and takes its
    exclusive lock (:func:`xrdwidgets.jobs.lock.acquire`), held until :meth:`release` (or until
    the object is dropped).

    Parameters
    ----------
    path : path-like
        The folder.
    job : str
        The job's name (recorded in the lock).
    job_id : int
        The job's id in this process.

    Attributes
    ----------
    path : Path
    lock : WorkdirLock
    chunk_files, chunk_sha256 : dict
        Parts written so far: name → relative path, name → sha256.
    """

    def __init__(self, path, job: str, job_id: int):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        check_writable(self.path, what="job workdir")
        self.lock = acquire(self.path, job)
        self._key = str(self.path.resolve())
        _held[self._key] = job_id
        # a job dropped without running still frees the folder
        weakref.finalize(self, _release, self.lock, self._key)
        self.chunk_files: dict[str, str] = {}
        self.chunk_sha256: dict[str, str] = {}
        self.uses_chunks = False
        self._ckpt_raw: dict | None = None   # last checkpoint.pt content, without parts

    def release(self):
        """Free the folder's lock (idempotent)."""
        _release(self.lock, self._key)

    def append_log(self, line: str):
        """Add ``line`` (already time-stamped) to ``log.txt``."""
        with open(self.path / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{line}\n")

    def write_job_file(self, info: dict):
        """Write ``job.json`` atomically: ``info`` with this process's pid and host."""
        atomic_write_text(self.path / JOB_FILE, json.dumps({**info, **this_process()}, indent=1, default=str))

    def clear(self) -> list[str]:
        """Remove the result, checkpoint and parts of a former job; returns the names removed."""
        result, ck, chunks = self.path / RESULT_FILE, self.path / CHECKPOINT_FILE, self.path / CHUNKS_DIR
        gone = [p.name for p in (result, ck, chunks) if p.exists()]
        for p in (result, ck):
            p.unlink(missing_ok=True)
        shutil.rmtree(chunks, ignore_errors=True)
        return gone

    def adopt(self, meta: dict):
        """Continue the parts listed by a checkpoint read with :func:`read_checkpoint` (``meta``)."""
        self.chunk_files = dict(meta.get("chunk_files") or {})
        self.chunk_sha256 = dict(meta.get("chunk_sha256") or {})
        self.uses_chunks = bool(meta.get("uses_chunks"))

    def write_checkpoint(self, ckpt: dict, *, iteration=None, total=None, job: str = "", saved: float) -> dict:
        """Write ``ckpt`` (a checkpoint an algorithm yielded) to ``checkpoint.pt``, its new parts
        to ``chunks/`` first; returns ``{"iteration", "total", "saved", "chunks"}`` (parts so far).

        Raises
        ------
        InputTypeError
            ``ckpt`` is not a dict, or holds an object that cannot be stored safely.
        InputError
            A part's name is not made of letters, digits, ``_ - .``.
        """
        if not isinstance(ckpt, dict):
            raise InputTypeError(f"metrics['checkpoint'] must be a dict, found {type(ckpt).__name__}")
        state = ckpt
        parts = ckpt.get("chunks")
        if isinstance(parts, dict):
            self.uses_chunks = True
            state = {k: v for k, v in ckpt.items() if k != "chunks"}
            if parts:
                folder = self.path / CHUNKS_DIR
                folder.mkdir(exist_ok=True)
                for name, arr in parts.items():
                    name = str(name)
                    if not _CHUNK_NAME.fullmatch(name) or name in (".", ".."):
                        raise InputError(f"checkpoint part name {name!r}: use letters, digits, '_', '-', '.'")
                    # parts first, then the list (with their checksums)
                    self.chunk_sha256[name] = _atomic_save_npy(folder / f"{name}.npy", arr)
                    self.chunk_files[name] = f"{CHUNKS_DIR}/{name}.npy"
        raw = {"state": _encode(state, "checkpoint"),
               "chunks": dict(self.chunk_files) if self.uses_chunks else None,
               "chunk_sha256": dict(self.chunk_sha256) if self.uses_chunks else None,
               "iteration": iteration, "total": total, "saved": saved, "job": job}
        _save_checkpoint_file(raw, self.path / CHECKPOINT_FILE)
        self._ckpt_raw = {k: v for k, v in raw.items() if k not in ("chunks", "chunk_sha256")}
        return {"iteration": iteration, "total": total, "saved": saved, "chunks": len(self.chunk_files)}

    def drop_chunks(self):
        """Once the result is stored: remove the parts, keep the small checkpoint state."""
        if not self.chunk_files:
            return
        self.chunk_files, self.chunk_sha256 = {}, {}
        path = self.path / CHECKPOINT_FILE
        raw = self._ckpt_raw
        if raw is None:  # resumed and finished without a checkpoint of its own: use the file's
            try:
                raw = _load_raw(path)
            except Exception:  # the result is stored; the checkpoint is obsolete
                log.debug("%s: cannot re-read %s", self.path, path, exc_info=True)
                raw = None
        if isinstance(raw, dict) and "state" in raw:
            keep = {k: v for k, v in raw.items() if k not in ("format", "version")}
            _save_checkpoint_file({**keep, "chunks": {}, "chunk_sha256": {}}, path)
        else:
            path.unlink(missing_ok=True)  # it would list parts that are gone
        shutil.rmtree(self.path / CHUNKS_DIR, ignore_errors=True)

    def store_result(self, result, save_result=None, *, job: str = "job", params: dict | None = None) -> bool:
        """Write ``result.h5`` (``save_result(result, path)``, else :func:`xrdwidgets.io.save`
        for an xarray result); True when a result was stored."""
        if result is None:
            return False
        path = self.path / RESULT_FILE
        if save_result is not None:
            save_result(result, path)
            return True
        import xarray as xr

        if isinstance(result, (xr.DataArray, xr.Dataset)):
            from .. import io

            # the workdir was checked when the job was made: this replaces no one else's result
            io.save(result, path, overwrite=True, producer=f"xrdwidgets job {job}", parameters=params)
            return True
        return False

    def load_result(self):
        """The stored ``result.h5`` (:func:`xrdwidgets.io.load`)."""
        from .. import io

        return io.load(self.path / RESULT_FILE)
