"""Readers of raw detector frames: HDF5/NeXus stacks and single images (fabio), lazy and read-only.

:func:`open_frames` gives a :class:`FrameSource`: the frame count and shape, the files, the motor
positions when the file has them, and chunked reading (:meth:`FrameSource.iter_chunks`, never
all frames in memory). Everything that can be checked without reading the frames is checked when
the source is opened: files present (external links and virtual-dataset sources included), every
part with the same frame shape and dtype, the compression filters available (``hdf5plugin``
registers bitshuffle, LZ4, blosc, …), the data chunks inside the file (a truncated file). A frame
that still cannot be read raises :class:`FrameReadError` naming its index, file and dataset.

Files are only ever opened read-only.

Supported inputs
    * an HDF5/NeXus file (``.h5``, ``.hdf5``, ``.nxs``, ``.nx5``): an Eiger master file (the
      ``entry/data/data_000001, …`` links), a virtual dataset or a plain 3-D dataset
      (``dataset=`` names it; default: ``entry/data/data``, ``entry/instrument/detector/data``
      or the first 3-D dataset found);
    * several HDF5 files (a list, read one after the other);
    * single images fabio reads (CBF, EDF, TIFF, …): a list, a folder or a glob pattern; sorted
      by name when a folder or pattern is given.
"""
from __future__ import annotations

import glob
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import DataError

log = logging.getLogger(__name__)

__all__ = ["FrameSource", "FrameReadError", "open_frames", "HDF5_SUFFIXES", "MOTOR_PATHS"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".nx")
IMAGE_SUFFIXES = (".cbf", ".edf", ".tif", ".tiff", ".img", ".mccd", ".sfrm", ".mar3450", ".h5img")

#: Where motor positions are looked for (first found wins), per motor.
MOTOR_PATHS = {
    "translation": ("entry/sample/translation", "entry/instrument/positioners/translation",
                    "entry/sample/transformations/translation", "entry/sample/y"),
    "rotation": ("entry/sample/rotation", "entry/instrument/positioners/rotation",
                 "entry/sample/transformations/rotation", "entry/sample/goniometer/omega",
                 "entry/sample/omega"),
}
_DEFAULT_DATASETS = ("entry/data/data", "entry/instrument/detector/data")


class FrameReadError(DataError, OSError):
    """Raw frames cannot be read; the message names the file, dataset, frame and what was found."""


@dataclass(frozen=True)
class _Part:
    file: Path
    dataset: str | None   # None: a single image (fabio)
    start: int            # first global frame index
    n: int


def _h5():
    import h5py
    import hdf5plugin  # noqa: F401  (registers the compression filters)

    return h5py


def _open_h5_file(path: Path):
    h5py = _h5()
    if not path.is_file():
        raise FrameReadError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FrameReadError(f"{path}: cannot be opened as HDF5 (read-only): {exc}") from exc


def _check_filters(dset, where):
    h5py = _h5()
    dcpl = dset.id.get_create_plist()
    for i in range(dcpl.get_nfilters()):
        code, _flags, _vals, name = dcpl.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            nm = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            raise FrameReadError(f"{where}: compressed with HDF5 filter {code} ({nm!r}), which is not "
                                 "available; expected it registered (install/import hdf5plugin)")


def _check_chunks(dset, path: Path, where):
    """A truncated file: a data chunk that ends past the end of the file."""
    if dset.chunks is None or dset.is_virtual:
        return
    size = path.stat().st_size
    end = [0]

    def visit(info):
        if info.byte_offset is not None:
            end[0] = max(end[0], info.byte_offset + info.size)

    try:
        dset.id.chunk_iter(visit)
    except (AttributeError, OSError, RuntimeError):  # older HDF5: no chunk_iter
        return
    if end[0] > size:
        raise FrameReadError(f"{where}: truncated file: frame data reaches byte {end[0]}, the file "
                             f"has {size} bytes")


def _check_virtual(dset, path: Path, where):
    if not dset.is_virtual:
        return
    for src in dset.virtual_sources():
        f = src.file_name
        if f == ".":
            continue
        p = Path(f) if os.path.isabs(f) else path.parent / f
        if not p.is_file():
            raise FrameReadError(f"{where}: virtual dataset source {f!r} (dataset {src.dset_name}) "
                                 f"not found (looked for {p})")


def _find_dataset(f, path: Path, dataset):
    """(list of (file, dataset) parts) for one HDF5 file."""
    h5py = _h5()
    if dataset is not None:
        if dataset not in f:
            raise FrameReadError(f"{path}: no dataset {dataset!r}")
        return [(path, dataset)]
    grp = f.get("entry/data")
    if isinstance(grp, h5py.Group):
        links = sorted(k for k in grp if k.startswith("data_"))
        if links:
            parts = []
            for k in links:
                link = grp.get(k, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    target = Path(link.filename)
                    target = target if target.is_absolute() else path.parent / target
                    if not target.is_file():
                        raise FrameReadError(f"{path}: entry/data/{k} links to {link.filename!r} "
                                             f"({target}), which is not found")
                    parts.append((target, link.path))
                else:
                    parts.append((path, f"entry/data/{k}"))
            return parts
    for d in _DEFAULT_DATASETS:
        obj = f.get(d)
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            return [(path, d)]
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3 and obj.dtype.kind in "uif" and not found:
            found.append(name)

    f.visititems(visit)
    if not found:
        raise FrameReadError(f"{path}: no 3-D frame dataset found; expected entry/data/data_000001 links, "
                             f"{' or '.join(_DEFAULT_DATASETS)}, or give dataset=")
    return [(path, found[0])]


class FrameSource:
    """Frames of a scan, read lazily in chunks (built by :func:`open_frames`).

    Attributes
    ----------
    n_frames : int
    frame_shape : (ny, nx)
        Rows, columns.
    dtype : numpy.dtype
    files : list of Path
        Every file frames are read from (in order).
    motors : dict
        ``{"translation": (n_frames,) array, "rotation": (n_frames,) array}`` when the file has
        them (units in :attr:`motor_units`), else empty.
    pixel_mask : numpy.ndarray or None
        Detector pixel mask from the file (``True`` = bad), when present.
    name : str
        The input as given (for messages).
    """

    def __init__(self, parts, frame_shape, dtype, *, name, motors=None, motor_units=None, pixel_mask=None):
        self._parts = list(parts)
        self.n_frames = sum(p.n for p in self._parts)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.dtype = np.dtype(dtype)
        self.name = str(name)
        self.motors = dict(motors or {})
        self.motor_units = dict(motor_units or {})
        self.pixel_mask = pixel_mask
        self._handles = {}
        self._lock = threading.Lock()

    def __repr__(self):
        return (f"FrameSource({self.name!r}, n_frames={self.n_frames}, frame_shape={self.frame_shape}, "
                f"dtype={self.dtype}, files={len(self.files)})")

    def __len__(self):
        return self.n_frames

    @property
    def files(self) -> list:
        return list(dict.fromkeys(p.file for p in self._parts))

    def where(self, index: int) -> str:
        """``file::dataset[local index]`` of a frame."""
        for p in self._parts:
            if p.start <= index < p.start + p.n:
                return f"{p.file}" + (f"::{p.dataset}[{index - p.start}]" if p.dataset else "")
        raise IndexError(f"frame {index} outside 0..{self.n_frames - 1}")

    def _dataset(self, part):
        key = (part.file, part.dataset)
        h = self._handles.get(key)
        if h is None:
            f = self._handles.get(part.file)
            if f is None:
                f = self._handles[part.file] = _open_h5_file(part.file)
            h = self._handles[key] = f[part.dataset]
        return h

    def _read_part(self, part, lo, hi, out):
        """Frames ``lo..hi`` (local to the part) into ``out``."""
        if part.dataset is None:
            out[0] = self._read_image(part)
            return
        d = self._dataset(part)
        try:
            d.read_direct(out, np.s_[lo:hi], np.s_[0:hi - lo])
        except (OSError, ValueError, RuntimeError) as exc:
            # find the first bad frame for the message
            for k in range(lo, hi):
                try:
                    d[k]
                except Exception:  # noqa: BLE001
                    raise FrameReadError(f"frame {part.start + k} ({part.file}::{part.dataset}[{k}]): "
                                         f"cannot be read: {exc}") from exc
            raise FrameReadError(f"frames {part.start + lo}..{part.start + hi - 1} ({part.file}::"
                                 f"{part.dataset}): cannot be read: {exc}") from exc

    def _read_image(self, part):
        import fabio

        try:
            with fabio.open(str(part.file)) as img:
                arr = np.asarray(img.data)
        except Exception as exc:  # fabio raises many kinds
            raise FrameReadError(f"frame {part.start} ({part.file}): cannot be read: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if arr.shape != self.frame_shape or arr.dtype != self.dtype:
            raise FrameReadError(f"frame {part.start} ({part.file}): expected shape {self.frame_shape} "
                                 f"and dtype {self.dtype} (as frame 0), found {arr.shape} {arr.dtype}")
        return arr

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop-1`` as an array ``(n, ny, nx)`` of :attr:`dtype`."""
        start, stop = max(0, int(start)), min(self.n_frames, int(stop))
        out = np.empty((max(0, stop - start),) + self.frame_shape, self.dtype)
        with self._lock:
            for p in self._parts:
                lo, hi = max(start, p.start), min(stop, p.start + p.n)
                if lo < hi:
                    self._read_part(p, lo - p.start, hi - p.start, out[lo - start:hi - start])
        return out

    def iter_chunks(self, chunk: int, *, start: int = 0, stop: int | None = None, prefetch: int = 2,
                    indices=None):
        """Yield ``(first index, frames (n, ny, nx))`` chunk after chunk.

        Parameters
        ----------
        chunk : int
            Frames per chunk.
        start, stop : int
            Frame range (default all).
        prefetch : int
            Chunks read ahead in a background thread (0: read in the caller's thread).
        indices : iterable of int, optional
            Chunk start indices to read (each ``chunk`` long), instead of ``start..stop``.
        """
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        starts = list(range(int(start), stop, int(chunk))) if indices is None else [int(i) for i in indices]
        if prefetch <= 0:
            for s in starts:
                yield s, self.read(s, min(s + chunk, stop))
            return
        q: queue.Queue = queue.Queue(maxsize=int(prefetch))
        halt = threading.Event()

        def work():
            try:
                for s in starts:
                    if halt.is_set():
                        return
                    q.put((s, self.read(s, min(s + chunk, stop))))
                q.put(None)
            except BaseException as exc:  # noqa: BLE001  (handed to the consumer)
                q.put(exc)

        th = threading.Thread(target=work, name="frame-reader", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            while th.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass

    def close(self):
        """Close the open files."""
        for k, h in list(self._handles.items()):
            if not isinstance(k, tuple):
                try:
                    h.close()
                except Exception:  # noqa: BLE001
                    pass
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _read_motors(f, n, path, motor_paths):
    motors, units = {}, {}
    for key, cands in motor_paths.items():
        cands = (cands,) if isinstance(cands, str) else cands
        for c in cands:
            obj = f.get(c)
            if obj is not None and hasattr(obj, "shape"):
                v = np.asarray(obj[()], float).ravel()
                if v.size != n:
                    raise FrameReadError(f"{path}::{c}: {v.size} motor positions for {n} frames; "
                                         "expected one per frame")
                motors[key] = v
                units[key] = obj.attrs.get("units", "")
                if isinstance(units[key], bytes):
                    units[key] = units[key].decode()
                break
    return motors, units


def _open_hdf5(paths, dataset, motor_paths):
    parts, shape, dtype, first = [], None, None, None
    motors, units, pixel_mask = {}, {}, None
    start = 0
    for path in paths:
        f = _open_h5_file(path)
        try:
            for fpath, dname in _find_dataset(f, path, dataset):
                g = f if fpath == path else _open_h5_file(fpath)
                try:
                    d = g[dname]
                    where = f"{fpath}::{dname}"
                    if d.ndim not in (2, 3):
                        raise FrameReadError(f"{where}: expected frames (n, rows, columns), found shape {d.shape}")
                    fshape = d.shape[-2:]
                    if shape is None:
                        shape, dtype, first = fshape, d.dtype, where
                    elif fshape != shape or d.dtype != dtype:
                        raise FrameReadError(f"{where}: frames of shape {fshape} and dtype {d.dtype}; expected "
                                             f"{shape} {dtype} as in {first}")
                    _check_filters(d, where)
                    _check_virtual(d, fpath, where)
                    _check_chunks(d, fpath, where)
                    n = 1 if d.ndim == 2 else d.shape[0]
                    if d.ndim == 2:
                        raise FrameReadError(f"{where}: a single 2-D image; expected a 3-D stack")
                    parts.append(_Part(fpath, dname, start, n))
                    start += n
                finally:
                    if g is not f:
                        g.close()
            pm = f.get("entry/instrument/detector/detectorSpecific/pixel_mask")
            if pm is not None and pixel_mask is None:
                pixel_mask = np.asarray(pm[()]) != 0
            if len(paths) == 1:
                motors, units = _read_motors(f, start, path, motor_paths)
        finally:
            f.close()
    return FrameSource(parts, shape, dtype, name=str(paths[0] if len(paths) == 1 else paths),
                       motors=motors, motor_units=units, pixel_mask=pixel_mask)


def _open_images(paths):
    import fabio

    first = paths[0]
    try:
        with fabio.open(str(first)) as img:
            arr = np.asarray(img.data)
    except Exception as exc:  # noqa: BLE001
        raise FrameReadError(f"frame 0 ({first}): cannot be read: {type(exc).__name__}: {exc}") from exc
    for i, p in enumerate(paths):
        if not p.is_file():
            raise FrameReadError(f"frame {i} ({p}): file not found")
    parts = [_Part(p, None, i, 1) for i, p in enumerate(paths)]
    return FrameSource(parts, arr.shape, arr.dtype, name=str(first.parent))


def _expand(raw):
    if isinstance(raw, (list, tuple)):
        return [Path(p) for p in raw]
    s = str(raw)
    p = Path(s)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES + HDF5_SUFFIXES)
    if any(ch in s for ch in "*?["):
        return [Path(q) for q in sorted(glob.glob(s))]
    return [p]


def open_frames(raw, *, dataset: str | None = None, motor_paths: dict | None = None) -> FrameSource:
    """Open raw frames lazily (read-only) and check them before any frame is read.

    Parameters
    ----------
    raw : path-like, list of paths, folder or glob pattern
        See the module docstring.
    dataset : str, optional
        HDF5 dataset of the frames.
    motor_paths : dict, optional
        ``{"translation": path or paths, "rotation": ...}`` in the HDF5 file; default
        :data:`MOTOR_PATHS`.

    Returns
    -------
    FrameSource

    Raises
    ------
    FrameReadError
        Missing files, mixed frame shapes or dtypes, unavailable compression filter, truncated
        file; the message names the file and dataset.
    """
    paths = _expand(raw)
    if not paths:
        raise FrameReadError(f"{raw}: no frame files found")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FrameReadError(f"{missing[0]}: file not found" + (f" (and {len(missing) - 1} more)"
                                                                 if len(missing) > 1 else ""))
    h5 = [p.suffix.lower() in HDF5_SUFFIXES for p in paths]
    if all(h5):
        src = _open_hdf5(paths, dataset, motor_paths or MOTOR_PATHS)
    elif any(h5):
        raise FrameReadError(f"{raw}: mixes HDF5 files and single images; expected one kind")
    else:
        src = _open_images(paths)
    return src
