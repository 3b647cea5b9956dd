"""Frames → sinogram stack: integrate a whole scan, out of core and resumable.

:func:`iterate_integration` is an algorithm generator (like every reconstruction): it yields
:class:`~xrdwidgets.base.progress.Progress` events (one per chunk of frames, with ``frames``,
``frames_per_s`` and ``eta_s`` in ``metrics``) and returns the sinogram stack
``(translation, angle, tth | q)``. :func:`integrate` runs it to the end. The same generator runs
in a notebook, under ``xrdwidgets integrate`` (progress bar) and as a background job
(:func:`xrdwidgets.jobs.run`).

Out of core and resumable
    With ``out=`` the patterns of each chunk of frames are written, as soon as the chunk is
    integrated, to a work store ``<out>.partial.zarr`` beside the output (a zarr array frames ×
    bins, one zarr chunk per frame chunk, and a marker file per finished chunk). A cancelled or
    killed run started again with the same inputs continues with the chunks that have no
    marker; the work store records a fingerprint of the inputs (frame files, PONI, mask,
    settings, plan) and refuses to mix different runs. When every chunk is done the stack is
    assembled (lazily, dask) into ``out`` (HDF5 ``.h5``, or zarr ``.zarr``) and the work store
    is removed. Raw files are only read.

Provenance (attrs of the result)
    ``integrate_poni`` (the PONI text), ``integrate_poni_file``, ``integrate_mask_file`` and its
    SHA-256, ``integrate_settings`` (JSON: unit, bins, method, trim, engine …),
    ``integrate_plan`` (JSON), ``integrate_frame_files`` and ``integrate_frame_sha256`` (JSON
    lists), and the usual ``provenance_*`` keys.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .. import data as _data
from ..data import DataError
from ..base.progress import Progress, run_to_end
from .calibration import file_sha256, load_image, load_poni, scan_geometry
from .engines import UNITS, IntegrationOptions, Integrator
from .plan import ScanPlan, ScanPlanError, plan_from_motors
from .readers import FrameSource, open_frames
from ..base.errors import InputTypeError

log = logging.getLogger(__name__)

__all__ = ["iterate_integration", "integrate", "integrate_frames", "resolve_plan", "work_store",
           "stack_from_patterns", "combined_mask", "poni_text", "IntegrationRun", "prepare_integration",
           "integrate_chunk", "store_chunk", "finish_integration", "integration_progress"]

_DONE = "done"
_FINGERPRINT = "xrdwidgets_integrate_fingerprint"


def work_store(out) -> Path:
    """The work store of an output path: ``<out>.partial.zarr``."""
    out = Path(out)
    return out.with_name(out.name + ".partial.zarr")


def resolve_plan(source: FrameSource, plan=None, *, n_translations=None, n_angles=None,
                 order: str = "raster", use_motors: bool = True) -> ScanPlan:
    """The scan plan: given, else from the file's motor positions, else a regular grid.

    Raises
    ------
    ScanPlanError
        The frame count does not fit, or nothing says how frames map to the grid.
    """
    if plan is None and use_motors and {"translation", "rotation"} <= set(source.motors):
        units = source.motor_units.get("translation") or "mm"
        plan = plan_from_motors(source.motors["translation"], source.motors["rotation"],
                                n_translations=n_translations, n_angles=n_angles,
                                translation_units=units)
    elif plan is None:
        if n_translations is None and n_angles is None:
            raise ScanPlanError(f"{source.name}: no motor positions (translation, rotation) in the "
                                "file; give the scan plan (n_translations, n_angles and order, or plan=)")
        n = source.n_frames
        if n_translations is None:
            n_translations = n // int(n_angles)
        if n_angles is None:
            n_angles = n // int(n_translations)
        plan = ScanPlan.regular(int(n_translations), int(n_angles), order=order)
    plan.check_frames(source.n_frames, where=source.name)
    return plan


def _fingerprint(source, poni_text, mask_info, integ, plan, chunk):
    return json.dumps({"files": [str(f) for f in source.files], "n_frames": source.n_frames,
                       "frame_shape": list(source.frame_shape), "poni": poni_text, "mask": mask_info,
                       "settings": integ.describe(), "plan": plan.to_dict(), "chunk": int(chunk),
                       "cells": np.asarray(plan.frame_cells()).ravel().tolist()[:2000]},
                      sort_keys=True, default=str)


def _open_store(path: Path, n_frames, bins, chunk, fingerprint, overwrite):
    import zarr

    if path.exists() and overwrite:
        shutil.rmtree(path)
    if path.exists():
        grp = zarr.open_group(str(path), mode="r+")
        found = grp.attrs.get(_FINGERPRINT)
        if found != fingerprint:
            raise DataError(f"{path}: work store of a different integration (other frames, PONI, mask, "
                            "settings or plan); remove it or pass overwrite=True to start again")
        arr = grp["patterns"]
    else:
        grp = zarr.open_group(str(path), mode="w")
        arr = grp.create_array("patterns", shape=(n_frames, bins), chunks=(chunk, bins), dtype="float32",
                               fill_value=np.nan)
        grp.attrs[_FINGERPRINT] = fingerprint
    (path / _DONE).mkdir(exist_ok=True)
    return arr


def poni_text(poni, ai) -> str:
    """The calibration as text for provenance: the PONI file's content, else ``str(ai)``."""
    if isinstance(poni, (str, Path)) and Path(poni).is_file():
        return Path(poni).read_text(errors="replace")
    return str(ai)


def combined_mask(mask, frame_shape, file_mask=None):
    """The user's mask OR'ed with the detector file's own pixel mask, and its provenance.

    Parameters
    ----------
    mask : array or path, optional
        User mask (rows, cols), True = masked; a path is read with :func:`load_image`.
    frame_shape : tuple of int
        (rows, cols) of the frames, checked against the mask.
    file_mask : bool array (rows, cols), optional
        The pixel mask stored with the frames (pass None to ignore it).

    Returns
    -------
    mask : bool array (rows, cols) or None
        None when nothing is masked.
    info : dict
        Provenance: the mask file and its SHA-256 (or its pixel count), ``file_pixel_mask`` pixels.
    """
    parts, info = [], {}
    if mask is not None:
        parts.append(load_image(mask, "mask", frame_shape))
        if isinstance(mask, (str, Path)):
            p = str(mask).split("::")[0]
            info = {"file": str(mask), "sha256": file_sha256(p)}
        else:
            info = {"file": None, "pixels": int(parts[-1].sum())}
    if file_mask is not None:
        parts.append(file_mask)
        info["file_pixel_mask"] = int(file_mask.sum())
    if not parts:
        return None, info
    m = parts[0]
    for p in parts[1:]:
        m = m | p
    return m, info


def _angle_range(angles):
    a = np.asarray(angles, float)
    span = 180.0 if a.size < 2 or a[-1] - a[0] < 180.0 else 360.0
    return (float(a[0]), float(a[0] + span))


@dataclass
class IntegrationRun:
    """A prepared integration: inputs checked, integrator built, work store open.

    Made by :func:`prepare_integration`; :func:`integrate_chunk` does one chunk of frames,
    :func:`finish_integration` assembles the stack. The local loop of
    :func:`iterate_integration` and the tasks of a cluster run
    (:func:`xrdwidgets.distributed.iterate_integration_distributed`) share these three steps.

    Attributes
    ----------
    source : FrameSource
    ai : pyFAI integrator
    plan : ScanPlan
    integ : Integrator
    chunk, n_chunks : int
        Frames per chunk, number of chunks.
    provenance : str
        The PONI text.
    mask_info : dict
    out : pathlib.Path or None
        The output file (None: in memory).
    patterns : zarr array or numpy.ndarray
        ``(n_frames, bins)`` float32, NaN where not integrated yet.
    done : set of int
        Chunks finished (their marker exists).
    poni :
        As given (for provenance).
    owns_source : bool
        The source was opened here (closed by :meth:`close`).
    """

    source: FrameSource
    ai: object
    plan: ScanPlan
    integ: Integrator
    chunk: int
    n_chunks: int
    provenance: str
    mask_info: dict
    out: Path | None
    patterns: object
    done: set
    poni: object
    owns_source: bool

    @property
    def pending(self) -> list[int]:
        """Chunks not done yet, in order."""
        return [k for k in range(self.n_chunks) if k not in self.done]

    def frames_of(self, k: int) -> tuple[int, int]:
        """``(start, stop)`` frame indices of chunk ``k``."""
        return k * self.chunk, min(self.plan.n_frames, (k + 1) * self.chunk)

    def close(self) -> None:
        if self.owns_source:
            self.source.close()


def prepare_integration(raw, poni, *, out=None, plan: ScanPlan | None = None, n_translations=None,
                        n_angles=None, order: str = "raster", mask=None, dark=None, flat=None,
                        options: IntegrationOptions | None = None, chunk: int = 64, dataset=None,
                        use_file_mask: bool = True, use_motors: bool = True, overwrite: bool = False,
                        **option_kwargs) -> IntegrationRun:
    """Check the inputs, build the integrator and open (or resume) the work store.

    Parameters as :func:`iterate_integration`. Every check runs here, before any frame is
    integrated.
    """
    if options is None:
        options = IntegrationOptions(**option_kwargs)
    elif option_kwargs:
        raise InputTypeError(f"give options= or option keywords, not both ({sorted(option_kwargs)})")
    source = raw if isinstance(raw, FrameSource) else open_frames(raw, dataset=dataset)
    try:
        out = None if out is None else Path(out)
        if out is not None and out.exists() and not overwrite:
            raise FileExistsError(f"{out}: exists; pass overwrite=True to replace it")
        ai = load_poni(poni, shape=source.frame_shape)
        plan = resolve_plan(source, plan, n_translations=n_translations, n_angles=n_angles, order=order,
                            use_motors=use_motors)
        full_mask, mask_info = combined_mask(mask, source.frame_shape, source.pixel_mask if use_file_mask else None)
        integ = Integrator(ai, source.frame_shape, options, mask=full_mask, dark=dark, flat=flat)
        n, bins, chunk = plan.n_frames, options.bins, max(1, int(chunk))
        n_chunks = math.ceil(n / chunk)
        provenance = poni_text(poni, ai)
        if out is not None:
            store = work_store(out)
            arr = _open_store(store, n, bins, chunk,
                              _fingerprint(source, provenance, mask_info, integ, plan, chunk), overwrite)
            done = {int(p.name) for p in (store / _DONE).iterdir() if p.name.isdigit()}
        else:
            arr = np.full((n, bins), np.nan, np.float32)
            done = set()
    except BaseException:
        if source is not raw:
            source.close()
        raise
    return IntegrationRun(source, ai, plan, integ, chunk, n_chunks, provenance, mask_info, out, arr, done, poni,
                          source is not raw)


def store_chunk(run: IntegrationRun, k: int, patterns: np.ndarray) -> None:
    """Write the patterns of chunk ``k`` (``(frames, bins)``) and mark it done."""
    start, stop = run.frames_of(k)
    run.patterns[start:stop] = patterns
    if run.out is not None:
        (work_store(run.out) / _DONE / str(k)).touch()
    run.done.add(k)


def integrate_chunk(run: IntegrationRun, k: int) -> int:
    """Read, integrate and store chunk ``k``; returns the number of frames."""
    start, stop = run.frames_of(k)
    store_chunk(run, k, run.integ.integrate(run.source.read(start, stop)))
    return stop - start


def finish_integration(run: IntegrationRun, *, overwrite: bool = False, checksums: bool = True) -> xr.DataArray:
    """The sinogram stack of a run whose chunks are all done (written to ``run.out`` if set)."""
    missing = run.pending
    if missing:
        raise RuntimeError(f"{run.out or 'integration'}: chunks {missing[:10]}{'...' if len(missing) > 10 else ''} "
                           "are not integrated yet")
    if run.out is not None:
        import dask.array as dsa

        patterns = dsa.from_zarr(run.patterns)
    else:
        patterns = run.patterns
    da = stack_from_patterns(patterns, run.plan, run.integ, run.ai, poni=run.poni, poni_text=run.provenance,
                             mask_info=run.mask_info, files=run.source.files, raw_name=run.source.name,
                             checksums=checksums)
    out = run.out
    if out is None:
        return da
    import dask

    with dask.config.set(scheduler="threads"):  # the work store is read here, also with a default Client
        return _write_result(run, da, overwrite)


def _write_result(run: IntegrationRun, da: xr.DataArray, overwrite: bool) -> xr.DataArray:
    from .. import io

    out = run.out
    if out.suffix == ".zarr":
        io.save_zarr(da, out, overwrite=overwrite, producer="xrdwidgets.integrate")
        result = io.open_zarr(out)
    else:
        io.save(da, out, overwrite=overwrite, producer="xrdwidgets.integrate",
                parameters={"raw": run.source.name})
        result = io.load(out)
    shutil.rmtree(work_store(out), ignore_errors=True)
    return result


def iterate_integration(raw, poni, *, out=None, plan: ScanPlan | None = None, n_translations=None,
                        n_angles=None, order: str = "raster", mask=None, dark=None, flat=None,
                        options: IntegrationOptions | None = None, chunk: int = 64, dataset=None,
                        use_file_mask: bool = True, use_motors: bool = True, checksums: bool = True,
                        overwrite: bool = False, prefetch: int = 2, client=None, **option_kwargs):
    """Integrate a raw scan into a sinogram stack, chunk by chunk (a generator).

    Parameters
    ----------
    raw : path, list of paths, folder, glob or FrameSource
        The frames (see :func:`~xrdwidgets.integrate.readers.open_frames`).
    poni : path or pyFAI integrator
        Calibration; its wavelength gives the energy of the result's geometry.
    out : path, optional
        Output file (``.h5`` or ``.zarr``): makes the run out of core and resumable (module
        docstring). An existing output is only replaced with ``overwrite=True``.
    plan : ScanPlan, optional
        Default: from the motor positions in the file, else ``n_translations``, ``n_angles`` and
        ``order`` (see :func:`resolve_plan`).
    mask, dark, flat : array or path, optional
        Corrections (the file's own pixel mask is added when ``use_file_mask``).
    options : IntegrationOptions, optional
        Or its fields as keywords (``unit="q"``, ``bins=500``, ``method="trimmed"``, …).
    chunk : int
        Frames per batch (and per zarr chunk of the work store).
    checksums : bool
        Record the SHA-256 of every frame file in the result's attrs.
    client : distributed.Client, optional
        Integrate the chunks as tasks on this dask cluster
        (:func:`xrdwidgets.distributed.iterate_integration_distributed`); needs ``out`` and
        frame files that every worker can read.

    Yields
    ------
    Progress
        One per chunk: ``iteration`` = chunks done, ``total``, ``metrics`` with ``frames``,
        ``n_frames``, ``frames_per_s``, ``eta_s``.

    Returns
    -------
    xarray.DataArray
        ``sinogram`` (translation, angle, tth | q), float32, counts per pixel of normal
        incidence; coords in mm / deg / deg or 1/Å; geometry from the PONI and the plan.
    """
    kw = dict(out=out, plan=plan, n_translations=n_translations, n_angles=n_angles, order=order, mask=mask,
              dark=dark, flat=flat, options=options, chunk=chunk, dataset=dataset, use_file_mask=use_file_mask,
              use_motors=use_motors, overwrite=overwrite, **option_kwargs)
    if client is not None:
        from .. import distributed  # the execution layer; imported only for a cluster run

        return distributed.iterate_integration_distributed(raw, poni, client=client, checksums=checksums, **kw)
    run = prepare_integration(raw, poni, **kw)
    return _integrate_here(run, overwrite=overwrite, checksums=checksums, prefetch=prefetch)


def integration_progress(run: IntegrationRun, t0: float, frames_done: int) -> Progress:
    """The progress event of ``run`` (``frames_done`` by this call since ``t0``, perf_counter)."""
    n = run.plan.n_frames
    dt = time.perf_counter() - t0
    rate = frames_done / dt if dt > 0 and frames_done else float("nan")
    frames = sum(b - a for a, b in map(run.frames_of, run.done))
    left = n - frames
    return Progress(iteration=len(run.done), total=run.n_chunks,
                    metrics={"frames": frames, "n_frames": n, "frames_per_s": rate,
                             "eta_s": left / rate if rate > 0 else None})


def _integrate_here(run: IntegrationRun, *, overwrite: bool, checksums: bool, prefetch: int):
    pending = run.pending
    if run.done:
        log.info("%s: resuming, %d of %d chunks already done", run.out, len(run.done), run.n_chunks)
    t0 = time.perf_counter()
    frames_done = 0
    try:
        for start, frames in run.source.iter_chunks(run.chunk, indices=[k * run.chunk for k in pending],
                                                    stop=run.plan.n_frames, prefetch=prefetch):
            store_chunk(run, start // run.chunk, run.integ.integrate(frames))
            frames_done += frames.shape[0]
            yield integration_progress(run, t0, frames_done)
    finally:
        run.close()
    return finish_integration(run, overwrite=overwrite, checksums=checksums)


def stack_from_patterns(patterns, plan: ScanPlan, integ: Integrator, ai, *, poni, poni_text: str,
                        mask_info: dict, files, raw_name: str, checksums: bool = True) -> xr.DataArray:
    """The sinogram stack of integrated patterns in acquisition order (offline and live paths).

    Parameters
    ----------
    patterns : array or dask array (n_frames, bins)
        Pattern of every frame, in acquisition (frame) order.
    plan : ScanPlan
        Grid cell of every frame.
    integ, ai :
        The :class:`Integrator` and pyFAI integrator that made the patterns (settings,
        radial axis, geometry).
    poni, poni_text, mask_info, files, raw_name, checksums :
        Provenance (see the module docstring).

    Returns
    -------
    xarray.DataArray
        ``sinogram`` (translation, angle, tth | q) with coords, geometry and provenance.
    """
    bins = integ.options.bins
    idx = plan.acquisition_index()
    data = patterns[idx.ravel()].reshape(idx.shape + (bins,))
    t = plan.translations
    step = float(np.median(np.diff(t))) if t.size > 1 else None
    geom = scan_geometry(ai, translation_step_mm=step if plan.translation_units == "mm" else None,
                         angle_range_deg=_angle_range(plan.angles))
    dim = integ.options.unit
    files = [str(f) for f in files]
    attrs = {"integrate_poni": poni_text,
             "integrate_poni_file": str(poni) if isinstance(poni, (str, Path)) else "",
             "integrate_mask": json.dumps(mask_info),
             "integrate_settings": json.dumps(integ.describe()),
             "integrate_plan": json.dumps(plan.to_dict()),
             "integrate_frame_files": json.dumps(files)}
    if checksums:
        attrs["integrate_frame_sha256"] = json.dumps([file_sha256(f) for f in files])
    attrs.update(_data.provenance("xrdwidgets.integrate", {"raw": raw_name, "n_frames": plan.n_frames}))
    da = _data.sinogram_stack(data, translation=t, angle=plan.angles, spectral=integ.radial,
                              spectral_dim=dim, geometry=geom, name="sinogram", units="counts",
                              attrs=attrs, validate_values=False)
    if plan.translation_units != "mm":
        da["translation"].attrs["units"] = _data.PIXEL_UNITS
    da[dim].attrs["units"] = UNITS[dim][1]
    return da


def integrate(raw, poni, **kwargs) -> xr.DataArray:
    """Integrate a raw scan into a sinogram stack (runs :func:`iterate_integration` to the end).

    ``callback=`` (optional) is called with every :class:`Progress`; other keywords as
    :func:`iterate_integration`.

    Examples
    --------
    >>> stack = integrate("scan_master.h5", "scan.poni", bins=500, method="trimmed", trim=10)
    """
    callback = kwargs.pop("callback", None)
    return run_to_end(iterate_integration(raw, poni, **kwargs), callback)


def integrate_frames(frames, poni, *, mask=None, dark=None, flat=None, **option_kwargs) -> xr.DataArray:
    """Patterns of a few frames in memory: ``(frame, tth | q)`` DataArray (previews, tests).

    Parameters
    ----------
    frames : array (n, ny, nx) or (ny, nx)
    poni : path or pyFAI integrator
    **option_kwargs
        Fields of :class:`IntegrationOptions`.
    """
    f = np.asarray(frames)
    f = f[None] if f.ndim == 2 else f
    ai = load_poni(poni, shape=f.shape[1:])
    opts = IntegrationOptions(**option_kwargs)
    integ = Integrator(ai, f.shape[1:], opts, mask=mask, dark=dark, flat=flat)
    dim = opts.unit
    da = xr.DataArray(integ.integrate(f), dims=("frame", dim),
                      coords={"frame": np.arange(f.shape[0]), dim: integ.radial}, name="pattern",
                      attrs={"units": "counts", "integrate_settings": json.dumps(integ.describe())})
    da[dim].attrs["units"] = UNITS[dim][1]
    return da
