"""Sources that follow an acquisition in progress: only complete frames, never a half-written one.

Each source is polled (:meth:`LiveSource.poll`) by the caller at the period it chooses and
hands out the items (detector frames ``(n, rows, columns)`` or integrated patterns
``(n, bins)``) that became complete since the previous poll, in acquisition order.

:class:`GrowingHDF5`
    One HDF5 dataset whose first axis grows while a writer appends (SWMR, or a writer that
    closes and re-opens the file). A frame counts as complete when

    * a *count* dataset (default ``frames_written`` beside the frame dataset, shape ``(1,)``
      or scalar) says so — the writer updates it after the frame is written and flushed; or,
      without a count dataset,
    * it was already inside the dataset's extent at the previous poll (the extent is stable
      over two polls: a writer extends the dataset and writes the frame in much less than a
      poll period).

    The file is opened read-only with ``swmr=True`` when it is in SWMR mode, without an HDF5
    file lock, and closed again at the end of every poll (so a writer can open, close, re-open
    or replace it while it is followed — in this process too); a read error just makes the
    poll empty.
:class:`FrameFolder`
    A folder where single-image files appear (any fabio format: CBF, EDF, TIFF, …), taken in
    name order. A file is complete when a marker ``<file>.done`` exists or when its size and
    modification time are unchanged over two polls (and it is not empty). A writer that stalls
    in the middle of a file for longer than a poll period defeats the second rule (fabio reads
    truncated images without an error): such writers should create the marker, or write
    under another name and rename.
Integrated patterns
    :class:`GrowingHDF5` on a 2-D dataset ``(n, bins)`` is a growing stack of already
    integrated patterns (``kind == "patterns"``); its radial axis is read from a 1-D dataset
    (``radial=``, default a sibling ``tth`` or ``q``) whose ``units`` attr says deg or 1/Å.

End of the scan
    :attr:`LiveSource.writer_done` is true once a marker file ``<file>.done`` (HDF5) or the
    folder's ``done_marker`` exists; the session also ends when the scan plan's frame count
    is reached.

Writer restarts
    Items already handed out are never read again. If a re-opened or replaced file holds
    fewer complete items than were already read (a writer that started the scan file again),
    the source logs a warning and waits for items beyond those already read.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..integrate.readers import IMAGE_SUFFIXES, FrameReadError

log = logging.getLogger(__name__)

__all__ = ["LiveSource", "GrowingHDF5", "FrameFolder", "open_live", "DONE_SUFFIX"]

#: Marker file of a finished writer: ``<file>.done``.
DONE_SUFFIX = ".done"
_FRAME_DATASETS = ("entry/data/data", "entry/instrument/detector/data", "entry/data/patterns")
_PIXEL_MASK = "entry/instrument/detector/detectorSpecific/pixel_mask"


class LiveSource:
    """Base of the sources: what a live session reads.

    Attributes
    ----------
    kind : {"frames", "patterns"}
    item_shape : tuple
        ``(rows, columns)`` of a frame or ``(bins,)`` of a pattern (known after the first poll
        that found the data).
    dtype : numpy.dtype
    consumed : int
        Items handed out so far.
    name : str
    """

    kind = "frames"

    def __init__(self, name):
        self.name = str(name)
        self.consumed = 0
        self.item_shape = None
        self.dtype = None
        self.pixel_mask = None
        self.radial = None
        self.radial_unit = None

    def poll(self) -> np.ndarray | None:
        """The items completed since the previous poll, ``(n,) + item_shape``, or ``None``."""
        raise NotImplementedError

    @property
    def writer_done(self) -> bool:
        """A writer-done marker was found."""
        return False

    @property
    def files(self) -> list:
        """The files read so far (provenance)."""
        return []

    def close(self):
        """Release open files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _h5py():
    import h5py
    import hdf5plugin  # noqa: F401  (registers the compression filters)

    return h5py


class GrowingHDF5(LiveSource):
    """Follow one HDF5 dataset that grows along its first axis (see the module docstring).

    Parameters
    ----------
    path : path-like
        The HDF5 file (it may not exist yet: polls return nothing until it does).
    dataset : str, optional
        Frames ``(n, rows, columns)`` or patterns ``(n, bins)``; default the first of
        ``entry/data/data``, ``entry/instrument/detector/data``, ``entry/data/patterns``.
    count : str or False, optional
        Dataset holding the number of complete items; default ``frames_written`` beside the
        dataset when present; ``False``: use the stable-extent rule.
    radial : str, optional
        Patterns: the dataset of the radial axis (default a sibling ``tth`` or ``q``).
    """

    def __init__(self, path, *, dataset: str | None = None, count=None, radial: str | None = None):
        super().__init__(path)
        self.path = Path(path)
        self._dataset_name = dataset
        self._count_name = count
        self._radial_name = radial
        self._f = None
        self._d = None
        self._c = None
        self._ino = None
        self._prev_extent = 0
        self._warned_short = False

    # ------------------------------------------------------------------ opening
    def _open(self):
        h5py = _h5py()
        st = os.stat(self.path)
        try:
            f = h5py.File(self.path, "r", swmr=True, locking=False)
        except OSError:
            f = h5py.File(self.path, "r", locking=False)   # not an SWMR file: a writer that closes it
        try:
            name = self._dataset_name or next((n for n in _FRAME_DATASETS if n in f), None)
            if name is None or name not in f:
                raise FrameReadError(f"{self.path}: no dataset {self._dataset_name or ' or '.join(_FRAME_DATASETS)}; "
                                     "give dataset=")
            d = f[name]
            if d.ndim not in (2, 3):
                raise FrameReadError(f"{self.path}::{name}: expected frames (n, rows, columns) or patterns "
                                     f"(n, bins), found shape {d.shape}")
            if self.item_shape is not None and (tuple(d.shape[1:]) != self.item_shape or d.dtype != self.dtype):
                raise FrameReadError(f"{self.path}::{name}: items of shape {d.shape[1:]} {d.dtype}, expected "
                                     f"{self.item_shape} {self.dtype} as before the file was re-opened")
            self.kind = "frames" if d.ndim == 3 else "patterns"
            self.item_shape, self.dtype = tuple(int(v) for v in d.shape[1:]), d.dtype
            parent = name.rsplit("/", 1)[0] if "/" in name else ""
            cname = self._count_name
            if cname is None:
                cand = f"{parent}/frames_written" if parent else "frames_written"
                cname = cand if cand in f else False
            self._c = f[cname] if cname else None
            if self.kind == "frames" and self.pixel_mask is None and _PIXEL_MASK in f:
                self.pixel_mask = np.asarray(f[_PIXEL_MASK][()]) != 0
            if self.kind == "patterns" and self.radial is None:
                self._read_radial(f, parent, name)
        except BaseException:
            f.close()
            raise
        self._f, self._d, self._ino = f, d, (st.st_dev, st.st_ino)

    def _read_radial(self, f, parent, name):
        cands = [self._radial_name] if self._radial_name else [f"{parent}/tth", f"{parent}/q"]
        for c in cands:
            if c and c in f:
                r = np.asarray(f[c][()], float).ravel()
                if r.size != self.item_shape[0]:
                    raise FrameReadError(f"{self.path}::{c}: {r.size} radial values for patterns of "
                                         f"{self.item_shape[0]} bins")
                units = f[c].attrs.get("units", "deg")
                units = units.decode() if isinstance(units, bytes) else str(units)
                self.radial, self.radial_unit = r, ("q" if "Å" in units or "A^-1" in units or
                                                    c.endswith("q") else "tth")
                return
        raise FrameReadError(f"{self.path}::{name}: patterns without a radial axis; expected a dataset "
                             f"{' or '.join(c for c in cands if c)} (give radial=)")

    def close(self):
        if self._f is not None:
            try:
                self._f.close()
            except Exception:  # noqa: BLE001
                pass
        self._f = self._d = self._c = None

    # ------------------------------------------------------------------ polling
    def _complete(self) -> int:
        self._d.refresh()
        extent = int(self._d.shape[0])
        if self._c is not None:
            self._c.refresh()
            n = min(extent, int(np.asarray(self._c[()]).ravel()[0]))
        else:   # stable-extent rule: what was there one poll ago is written
            n = min(extent, self._prev_extent)
        self._prev_extent = extent
        return n

    def poll(self):
        if not self.path.is_file():
            self.close()
            return None
        st = os.stat(self.path)
        if self._ino is not None and (st.st_dev, st.st_ino) != self._ino:
            log.info("%s: file replaced", self.path)
            self._prev_extent = 0
        try:
            if self._f is None:
                self._open()
            n = self._complete()
            if n <= self.consumed:
                if n < self.consumed and not self._warned_short:
                    self._warned_short = True
                    log.warning("%s: %d complete items after a writer restart, %d already read; waiting "
                                "for items beyond those", self.path, n, self.consumed)
                return None
            self._warned_short = False
            out = np.asarray(self._d[self.consumed:n])
        except FrameReadError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            # a writer in the middle of re-opening or replacing the file: try again next poll
            log.info("%s: not readable now (%s: %s); retrying at the next poll", self.path,
                     type(exc).__name__, exc)
            return None
        finally:
            self.close()   # never held between polls: a writer may re-open or replace the file
        self.consumed = n
        return out

    @property
    def writer_done(self) -> bool:
        return self.path.with_name(self.path.name + DONE_SUFFIX).exists()

    @property
    def files(self) -> list:
        return [self.path]


class FrameFolder(LiveSource):
    """Follow a folder where single-image frame files appear (see the module docstring).

    Parameters
    ----------
    folder : path-like
    pattern : str
        Glob of the frame files (default every file with a fabio image suffix).
    done_marker : str
        Name of the file the writer creates in the folder at the end of the scan.
    """

    def __init__(self, folder, *, pattern: str = "*", done_marker: str = "scan.done"):
        super().__init__(folder)
        self.folder = Path(folder)
        self.pattern = pattern
        self.done_marker = done_marker
        self._seen: dict = {}
        self._files: list = []

    def _candidates(self):
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob(self.pattern)
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    def _read(self, p):
        import fabio

        try:
            with fabio.open(str(p)) as img:
                arr = np.asarray(img.data)
        except Exception as exc:  # fabio raises many kinds
            raise FrameReadError(f"frame {self.consumed} ({p}): cannot be read: {type(exc).__name__}: "
                                 f"{exc}") from exc
        if self.item_shape is None:
            self.item_shape, self.dtype = arr.shape, arr.dtype
        elif arr.shape != self.item_shape or arr.dtype != self.dtype:
            raise FrameReadError(f"frame {self.consumed} ({p}): expected shape {self.item_shape} and dtype "
                                 f"{self.dtype} (as frame 0), found {arr.shape} {arr.dtype}")
        return arr

    def poll(self):
        files = self._candidates()[len(self._files):]
        out = []
        blocked = False          # frames are handed out in order: a file waits for the ones before it
        for p in files:
            try:
                st = p.stat()
            except OSError:
                blocked = True
                continue
            sig = (st.st_size, st.st_mtime_ns)
            ready = p.with_name(p.name + DONE_SUFFIX).exists() or (self._seen.get(p) == sig and st.st_size > 0)
            self._seen[p] = sig          # every file's signature is recorded at every poll
            if blocked or not ready:
                blocked = True
                continue
            out.append(self._read(p))
            self._files.append(p)
            self._seen.pop(p, None)
            self.consumed += 1
        return np.stack(out) if out else None

    @property
    def writer_done(self) -> bool:
        return (self.folder / self.done_marker).exists()

    @property
    def files(self) -> list:
        return list(self._files)


def open_live(source, **kwargs) -> LiveSource:
    """A live source for a path: a folder → :class:`FrameFolder`, else :class:`GrowingHDF5`.

    A :class:`LiveSource` is passed through; keywords go to the class.
    """
    if isinstance(source, LiveSource):
        return source
    p = Path(source)
    if p.is_dir():
        return FrameFolder(p, **kwargs)
    return GrowingHDF5(p, **kwargs)
