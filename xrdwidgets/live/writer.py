"""A simulated acquisition: frames written one by one into an SWMR HDF5 file, like a detector.

Used by the live tests, ``benchmarks/bench_live.py`` and the dashboard demo. The file holds
``entry/data/data`` (frames × rows × columns, growing along the first axis, one chunk per
frame), ``entry/data/frames_written`` (the count of complete frames, updated after each frame
is written and flushed), and optionally the detector pixel mask. A writer *restart* is a second
call with ``start > 0``: the file is re-opened in append mode and the scan continues. At the
end (``done=True``) a marker ``<file>.done`` is created.

The module only needs numpy and h5py so that it runs as a light script in another process::

    python xrdwidgets/live/writer.py FRAMES.npy OUT.h5 --start 0 --stop 24 --rate 100 [--done]

and prints nothing; with ``--times T.npy`` it saves the wall-clock time (``time.time()``) at
which each frame became complete.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

__all__ = ["write_frames", "DATASET", "COUNT"]

DATASET = "entry/data/data"
COUNT = "entry/data/frames_written"
_PIXEL_MASK = "entry/instrument/detector/detectorSpecific/pixel_mask"


def write_frames(path, frames, *, start: int = 0, stop: int | None = None, rate_hz: float | None = None,
                 pixel_mask=None, done: bool = True, compression=None) -> np.ndarray:
    """Append ``frames[start:stop]`` to an SWMR HDF5 file, one frame at a time.

    Parameters
    ----------
    path : path-like
        Output file; created when ``start == 0`` (an existing file is refused), else re-opened
        (it must hold exactly ``start`` complete frames).
    frames : array-like (n, rows, columns)
        Frame ``i`` is read as ``frames[i]`` (an array, a memory map, an h5py dataset).
    rate_hz : float, optional
        Frames per second (default: as fast as possible).
    pixel_mask : array (rows, columns), optional
        Written at ``entry/instrument/detector/detectorSpecific/pixel_mask`` (``start == 0``).
    done : bool
        Create ``<path>.done`` after the last frame.
    compression : dict, optional
        h5py filter keywords (e.g. ``dict(hdf5plugin.Bitshuffle())``).

    Returns
    -------
    numpy.ndarray
        ``time.time()`` at which each frame was complete (after its count was flushed).
    """
    import h5py

    path = Path(path)
    stop = len(frames) if stop is None else int(stop)
    first = np.asarray(frames[start])
    if start == 0:
        if path.exists():
            raise FileExistsError(f"{path}: exists; the simulated writer does not replace files")
        f = h5py.File(path, "w", libver="latest")
        d = f.create_dataset(DATASET, shape=(0,) + first.shape, maxshape=(None,) + first.shape,
                             chunks=(1,) + first.shape, dtype=first.dtype, **(compression or {}))
        c = f.create_dataset(COUNT, shape=(1,), dtype=np.int64, data=[0])
        if pixel_mask is not None:
            f.create_dataset(_PIXEL_MASK, data=np.asarray(pixel_mask, np.uint32))
    else:
        f = h5py.File(path, "a", libver="latest")
        d, c = f[DATASET], f[COUNT]
        if int(c[0]) != start or d.shape[0] != start:
            f.close()
            raise ValueError(f"{path}: {int(c[0])} frames written, cannot continue at frame {start}")
    f.swmr_mode = True
    times = np.empty(stop - start)
    t0 = time.perf_counter()
    try:
        for k, i in enumerate(range(start, stop)):
            if rate_hz:
                wait = t0 + k / rate_hz - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            d.resize(i + 1, axis=0)
            d[i] = np.asarray(frames[i])
            d.flush()
            c[0] = i + 1
            c.flush()
            times[k] = time.time()
    finally:
        f.close()
    if done:
        path.with_name(path.name + ".done").touch()
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description="simulated detector: write frames into an SWMR HDF5 file")
    p.add_argument("frames", help=".npy file (n, rows, columns)")
    p.add_argument("out")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int)
    p.add_argument("--rate", type=float)
    p.add_argument("--mask", help=".npy pixel mask")
    p.add_argument("--done", action="store_true")
    p.add_argument("--times", help="save frame completion times (.npy)")
    a = p.parse_args(argv)
    frames = np.load(a.frames, mmap_mode="r")
    mask = np.load(a.mask) if a.mask else None
    t = write_frames(a.out, frames, start=a.start, stop=a.stop, rate_hz=a.rate, pixel_mask=mask, done=a.done)
    if a.times:
        np.save(a.times, t)


if __name__ == "__main__":
    main()
