"""Pencil-beam XRD-CT acquisition: the simulator's own forward model and the scan's imperfections.

Two forward models produce a sinogram stack ``(translation, angle, tth)``:

* :func:`ray_trace` / :func:`acquire` — a ray tracer in NumPy. For every angle and translation
  the volume is integrated along the pencil-beam line by sampling points with a fine step
  (``sample_step`` ≤ 0.25 pixel, midpoint rule) and interpolating (bilinear, or cubic B-spline
  on a zero-padded, spline-prefiltered volume) — optionally averaged over several sub-rays across
  the beam width (a box beam profile of ``beam_width`` translation steps). The samples of one
  chunk of rays are collected into a sparse ray × pixel weight matrix, so one sparse product
  integrates all channels at once.
* :func:`acquire_analytic` — exact line integrals of phantoms made of shapes
  (:meth:`Phantom.line_integrals`): ``sinogram = Σ_phase chord(phase) ⊗ pattern(phase)``.
  This is the data reconstruction tests should use (no inverse crime).

Both then apply the same measurement model (:func:`measure`): rotation-centre offset and motor
jitter (in the geometry of the rays), air scatter, beam decay following the acquisition time,
and Poisson noise at a chosen dose. The injected truths come back with the data.

Geometry (the same as :mod:`xrdwidgets.ops.projector` and scikit-image's ``radon``)
-----------------------------------------------------------------------------------
* Image axes ``(y, x)`` = (row, column); pixel centres at integer indices; the rotation axis at
  the image centre, index ``((ny - 1) / 2, (nx - 1) / 2)``.
* At angle θ (degrees, counter-clockwise) the translation direction is ``(x, y) = (cos θ, -sin θ)``
  and the beam travels along ``(x, y) = (sin θ, cos θ)``: the ray at signed distance ``p`` from the
  rotation axis passes through ``x = cx + p cos θ + s sin θ``, ``y = cy - p sin θ + s cos θ``;
  ``s`` is the position along the beam, increasing towards the detector, 0 at the rotation axis.
  Equivalently a pixel ``(r, c)`` projects to ``p = (c - cx) cos θ - (r - cy) sin θ``.
* Translation ``i`` of ``n_t`` (step ``translation_step`` pixels) is at
  ``p = (i - (n_t - 1) / 2 - centre_offset - jitter[angle]) · translation_step``: the rotation axis
  sits at ``centre_offset`` steps from the middle of the range, and a positive offset or jitter
  moves the projection towards higher translation indices.
* Line integrals are in pixel units (sum over pixels along the ray), so an image of ``n`` pixels
  scanned with ``n`` translations of one pixel matches ``skimage.transform.radon(image, theta,
  circle=True)`` for odd ``n`` (scikit-image puts the centre at ``n // 2``: half a pixel off for
  even ``n``).

Acquisition order
-----------------
A *line* is one projection (all translations at one angle). ``"raster"``: lines in angle order,
each scanned towards higher translation indices; ``"zigzag"``: alternate lines scanned backwards;
``"interlaced"``: the angles are acquired in ``n_subsets`` interlaced subsets (angle indices
``m, m + k, m + 2k, ...`` for ``m = 0..k-1``), each line forwards; ``"interlaced-zigzag"``: both.
The acquisition index of every point (translation, angle) is returned; decay follows it.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from ..base.errors import InputError
from .. import data as _data
from ..data import DataError
from ..geometry import ScanGeometry
from .measurement import (  # noqa: F401  (the scan's public API, importable from here)
    DECAY_KINDS, SCAN_ORDERS, acquisition_order, air_scatter, beam_decay, measure,
)
from .raytrace import (  # noqa: F401
    check_angles, check_count, check_number, interpolation_weights, ray_offsets, ray_trace,
)

log = logging.getLogger(__name__)

__all__ = [
    "SCAN_ORDERS", "DECAY_KINDS", "ray_trace", "acquisition_order", "beam_decay", "air_scatter",
    "measure", "acquire", "acquire_analytic",
]


def _volume_input(volume, name="volume"):
    """(ny, nx, C) array, spectral name and coordinate, geometry, from an array or xarray."""
    if isinstance(volume, (xr.DataArray, xr.Dataset)):
        da = _data.validate_volume(_data.as_dataarray(volume, "volume"), name=name)
        extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
        if extra:
            raise DataError(f"{name}: expected a single volume (y, x, spectral), found extra dims {extra}; "
                            f"select one, e.g. volume.isel({extra[0]}=0)")
        sdim = _data.spectral_dim(da)
        return (np.asarray(da.values, float), sdim, np.asarray(da[sdim].values, float),
                _data.get_geometry(da), da.attrs.get("units", "1"))
    arr = np.asarray(volume, float)
    if arr.ndim != 3:
        raise DataError(f"{name}: expected a DataArray/Dataset volume or an array (y, x, channel), "
                        f"found shape {arr.shape}")
    return arr, "channel", np.arange(arr.shape[2], dtype=float), None, "1"


def resolve_angles(angles, n_angles, angle_range_deg):
    """Scan angles (degrees, increasing) and their range: ``angles`` as given, or ``n_angles``
    over ``angle_range_deg`` (as :class:`~xrdwidgets.geometry.ScanGeometry`); returns ``(angles, (start, stop))``."""
    if angles is not None:
        a = check_angles(angles, "angles")
        if a.size > 1 and not np.all(np.diff(a) > 0):
            raise InputError("angles: expected strictly increasing angles (deg); the acquisition "
                             "sequence is set by scan_order, not by the angle coordinate")
        # recorded range: 180° from the first angle, or 360° when the angles span more than 180°
        span = 180.0 if a[-1] - a[0] < 180.0 else 360.0
        return a, (float(a[0]), float(a[0] + span))
    if n_angles is None:
        raise InputError("give angles= (deg) or n_angles= (with angle_range_deg=(0, 180) or (0, 360))")
    n = check_count("n_angles", n_angles)
    g = ScanGeometry(angle_range_deg=angle_range_deg)
    return g.angles(n), g.angle_range_deg


def _to_dataset(res, angles, spectral, sdim, geometry, units, producer, params, extra_attrs=None):
    """Wrap :func:`measure` output as an xarray Dataset (sinogram + truths)."""
    n_t = res["sinogram"].shape[0]
    units = "counts" if params.get("dose") is not None else units
    kw = dict(angle=angles, spectral=spectral, spectral_dim=sdim, geometry=geometry, units=units)
    sino = _data.sinogram_stack(res["sinogram"], name="sinogram", **kw)
    if geometry is None or geometry.translation_step_mm is None:
        sino["translation"].attrs["units"] = _data.PIXEL_UNITS
    coords = {c: sino[c] for c in sino.coords}
    ta = ("translation", "angle")
    tas = ("translation", "angle", sdim)
    dv = {"sinogram": sino}
    for k in ("clean", "ideal"):
        if k in res:
            dv[k] = xr.DataArray(res[k], dims=tas, coords=coords,
                                 attrs={"units": units, "long_name": {"clean": "noise-free measurement",
                                        "ideal": "ideal sinogram (no jitter, offset, air, decay, noise)"}[k]})
    dv["air"] = xr.DataArray(res["air"], dims=(sdim,), attrs={"units": units, "long_name": "air scatter (before decay)"})
    dv["decay"] = xr.DataArray(res["decay"], dims=("angle",), attrs={"units": "1", "long_name": "beam decay factor per projection"})
    dv["decay_point"] = xr.DataArray(res["decay_point"], dims=ta, attrs={"units": "1", "long_name": "beam decay factor per point"})
    dv["jitter"] = xr.DataArray(res["jitter"], dims=("angle",), attrs={"units": "steps", "long_name": "motor jitter (projection shift)"})
    dv["acquisition_index"] = xr.DataArray(res["acquisition_index"], dims=ta,
                                           attrs={"units": "1", "long_name": "acquisition order of each point"})
    dv["line_index"] = xr.DataArray(res["line_index"], dims=("angle",), attrs={"units": "1", "long_name": "acquisition order of each projection"})
    attrs = {k: v for k, v in sino.attrs.items() if k.startswith("geometry_")}
    attrs.update({"scale": float(res["scale"]), "centre_offset": float(params.get("centre_offset", 0.0)),
                  "scan_order": str(params.get("scan_order", "raster")), "n_translations": int(n_t)})
    attrs.update(extra_attrs or {})
    attrs.update(_data.provenance(producer, params))
    ds = xr.Dataset(dv, coords=coords, attrs=attrs)
    ds["sinogram"].attrs.update(_data.provenance(producer, params))
    return ds


def _params(**kw):
    """JSON-friendly record of the scan parameters (arrays and callables summarised)."""
    seed, decay, air, jitter = kw["seed"], kw["decay"], kw["air"], kw["jitter"]
    kw["seed"] = int(seed) if isinstance(seed, (int, np.integer)) else None
    kw["decay"] = decay if decay is None or isinstance(decay, str) else "custom"
    kw["air"] = float(air) if air is not None and np.ndim(air) == 0 else (None if air is None else "pattern")
    kw["jitter"] = float(jitter) if np.ndim(jitter) == 0 else "array"
    return kw


def _output_geometry(geometry, angle_range, centre_offset, translation_step):
    g = geometry or ScanGeometry()
    step_mm = None if g.translation_step_mm is None else g.translation_step_mm * translation_step
    return g.replace(angle_range_deg=angle_range, centre_offset=centre_offset, translation_step_mm=step_mm)


def acquire(volume, *, angles=None, n_angles: int | None = None, angle_range_deg=(0.0, 180.0),
            n_translations: int | None = None, translation_step: float = 1.0, scan_order: str = "raster",
            n_subsets: int = 4, dose: float | None = None, seed=0, decay=None, decay_strength: float = 0.2,
            decay_period: float = 0.25, decay_per_point: bool = False, air=None, jitter=0.0,
            centre_offset: float = 0.0, sample_step: float = 0.25, order: int = 1, n_subrays: int = 1,
            keep_truth: bool = True, geometry: ScanGeometry | None = None) -> xr.Dataset:
    """Simulate a pencil-beam XRD-CT scan of a volume by ray tracing.

    Parameters
    ----------
    volume : xarray.DataArray or Dataset (y, x, spectral), or array (y, x, channel)
        The sample, e.g. ``chemical_phantom(...)`` (its ``volume`` variable is used). The pixel
        size is the volume's ``translation_step_mm`` geometry when given.
    angles : array, optional
        Strictly increasing angles in degrees; or ``n_angles`` over ``angle_range_deg``
        (``(0, 180)`` or ``(0, 360)``, stop excluded).
    n_translations : int, optional
        Default: image width / ``translation_step``.
    translation_step : float
        Translation step in volume pixels.
    scan_order, n_subsets, dose, seed, decay, decay_strength, decay_period, decay_per_point, air,
    jitter, centre_offset, keep_truth :
        The measurement model, see :func:`measure`.
    sample_step, order, n_subrays :
        Ray tracing, see :func:`ray_trace`.
    geometry : ScanGeometry, optional
        Default: the volume's geometry. The output's geometry gets the angle range, centre offset
        and translation step (mm) of this scan.

    Returns
    -------
    xarray.Dataset
        ``sinogram`` (translation, angle, spectral) — the measurement (counts when ``dose``);
        truths: ``clean``, ``ideal`` (same dims), ``air`` (spectral), ``decay`` and ``jitter``
        (angle), ``decay_point`` and ``acquisition_index`` (translation, angle), ``line_index``
        (angle); attrs: geometry, ``scale``, ``centre_offset``, ``scan_order``, provenance.
    """
    vol, sdim, spectral, vgeom, units = _volume_input(volume)
    ang, arange = resolve_angles(angles, n_angles, angle_range_deg)
    ny, nx, _ = vol.shape
    translation_step = check_number("translation_step", translation_step, positive=True)
    if n_translations is None:
        n_translations = max(1, int(round(max(ny, nx) / translation_step)))
    n_t = check_count("n_translations", n_translations)

    def project(offsets):
        return ray_trace(vol, ang, n_translations=n_t, translation_step=translation_step,
                         shifts=offsets, sample_step=sample_step, order=order, n_subrays=n_subrays)

    params = _params(n_translations=n_t, n_angles=ang.size, angle_range_deg=arange,
                     translation_step=translation_step, scan_order=scan_order, n_subsets=n_subsets, dose=dose,
                     seed=seed, decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                     decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                     sample_step=sample_step, order=order, n_subrays=n_subrays)
    res = measure(project, n_t, ang, spectral, scan_order=scan_order, n_subsets=n_subsets, dose=dose,
                  seed=seed, decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                  decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                  keep_truth=keep_truth)
    geom = _output_geometry(geometry or vgeom, arange, centre_offset, translation_step)
    return _to_dataset(res, ang, spectral, sdim, geom, units, "xrdwidgets.sim.scan.acquire", params)


def _phase_patterns(names, tth, patterns, energy_keV, size_nm):
    """(n_phase, n_tth) reference patterns: given, or computed from the phase names."""
    if patterns is not None:
        if isinstance(patterns, xr.DataArray):
            if "phase" not in patterns.dims:
                raise DataError(f"patterns: expected dims ('phase', spectral), found {patterns.dims}")
            return np.stack([np.asarray(patterns.sel(phase=n).values, float).ravel() for n in names])
        if isinstance(patterns, dict):
            missing = [n for n in names if n not in patterns]
            if missing:
                raise InputError(f"patterns: no pattern for phases {missing}; found keys {list(patterns)}")
            return np.stack([np.asarray(patterns[n], float).ravel() for n in names])
        arr = np.asarray(patterns, float)
        if arr.ndim != 2 or arr.shape[0] != len(names):
            raise InputError(f"patterns: expected a dict, a DataArray (phase, tth) or an array "
                             f"({len(names)}, n_tth), found shape {arr.shape}")
        return arr
    if energy_keV is None:
        raise InputError("acquire_analytic: give patterns= or energy_keV= (to compute powder patterns "
                         "of the named phases)")
    from .chemical import reference_patterns
    return reference_patterns(names, tth, energy_keV=energy_keV, size_nm=size_nm)


def _pixel_phantoms(phantoms, n):
    """dict of Phantom / Shape / PixelPhantom → dict of objects with pixel-unit line integrals, n."""
    if not isinstance(phantoms, dict) or not phantoms:
        raise InputError(f"phantoms: expected a non-empty dict phase name -> Phantom, found {type(phantoms).__name__}")
    out, sizes = {}, set()
    for name, ph in phantoms.items():
        if hasattr(ph, "in_pixels") and not hasattr(ph, "pixel_size"):
            if n is None:
                raise InputError(f"phantoms[{name!r}]: a Phantom in image units needs n= (the image size in "
                                 "pixels; translations and line integrals are in pixels)")
            ph = ph.in_pixels(check_count("n", n))
        if not hasattr(ph, "line_integrals"):
            raise InputError(f"phantoms[{name!r}]: expected a Phantom, Shape or PixelPhantom, found "
                             f"{type(ph).__name__}")
        if hasattr(ph, "n"):
            sizes.add(int(ph.n))
        out[str(name)] = ph
    if len(sizes) > 1:
        raise InputError(f"phantoms: PixelPhantoms of different sizes {sorted(sizes)}; use one grid")
    return out, (sizes.pop() if sizes else n)


def acquire_analytic(phantoms: dict, tth, *, n: int | None = None, patterns=None,
                     energy_keV: float | None = None, size_nm: float = 50.0, angles=None,
                     n_angles: int | None = None, angle_range_deg=(0.0, 180.0), n_translations: int | None = None,
                     translation_step: float = 1.0, scan_order: str = "raster", n_subsets: int = 4,
                     dose: float | None = None, seed=0, decay=None, decay_strength: float = 0.2,
                     decay_period: float = 0.25, decay_per_point: bool = False, air=None, jitter=0.0,
                     centre_offset: float = 0.0, keep_truth: bool = True,
                     geometry: ScanGeometry | None = None) -> xr.Dataset:
    """Simulate a scan with exact line integrals of shape phantoms (one per phase).

    ``sinogram[t, a, :] = Σ_phase chord_phase(p_t, angle_a) · pattern[phase]`` with the exact
    line integrals of :mod:`xrdwidgets.sim.shapes` in pixel units (the phantom seen on an ``n × n``
    grid, :meth:`Phantom.in_pixels`), then the measurement model of :func:`measure`. It matches
    :func:`acquire` of the chemical phantom built from the phantoms' rasters up to discretisation.

    Parameters
    ----------
    phantoms : dict[str, Phantom | Shape | PixelPhantom]
        Phase name → its fraction phantom (values = volume fractions).
    tth : array (n_tth,)
        2θ in degrees.
    n : int, optional
        Image size in pixels (needed for Phantom / Shape values; a PixelPhantom carries it).
    patterns : dict, DataArray (phase, tth) or array (n_phase, n_tth), optional
        Pattern of each phase; default :func:`~xrdwidgets.sim.chemical.reference_patterns` of the
        phase names at ``energy_keV`` and ``size_nm`` (each peaking at 1, as ``chemical_phantom``).
    n_translations : int, optional
        Default ``n / translation_step``.
    angles, n_angles, angle_range_deg, translation_step, scan_order, n_subsets, dose, seed, decay,
    decay_strength, decay_period, decay_per_point, air, jitter, centre_offset, keep_truth, geometry :
        As in :func:`acquire` / :func:`measure`.

    Returns
    -------
    xarray.Dataset
        As :func:`acquire`; also ``patterns`` (phase, tth).
    """
    phantoms, n = _pixel_phantoms(phantoms, n)
    names = list(phantoms)
    tth = np.asarray(tth, float).ravel()
    pats = _phase_patterns(names, tth, patterns, energy_keV, size_nm)
    if pats.shape != (len(names), tth.size):
        raise InputError(f"patterns: expected shape {(len(names), tth.size)}, found {pats.shape}")
    ang, arange = resolve_angles(angles, n_angles, angle_range_deg)
    translation_step = check_number("translation_step", translation_step, positive=True)
    if n_translations is None:
        if n is None:
            raise InputError("n_translations: give the number of translations (or n, the image size)")
        n_translations = max(1, int(round(n / translation_step)))
    n_t = check_count("n_translations", n_translations)

    def project(offsets):
        p = ray_offsets(n_t, translation_step=translation_step, shifts=offsets, n_angles=ang.size)
        chords = np.empty((n_t, ang.size, len(names)))
        if np.allclose(offsets, offsets[0]):
            for k, name in enumerate(names):
                chords[:, :, k] = phantoms[name].line_integrals(p[:, 0], ang)
        else:
            for j in range(ang.size):
                for k, name in enumerate(names):
                    chords[:, j, k] = phantoms[name].line_integrals(p[:, j], ang[j:j + 1])[:, 0]
        return chords @ pats

    params = _params(phases=names, n=n, n_translations=n_t, n_angles=ang.size, angle_range_deg=arange,
                     translation_step=translation_step, scan_order=scan_order, n_subsets=n_subsets, dose=dose,
                     seed=seed, decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                     decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                     energy_keV=energy_keV, size_nm=size_nm)
    res = measure(project, n_t, ang, tth, scan_order=scan_order, n_subsets=n_subsets, dose=dose, seed=seed,
                  decay=decay, decay_strength=decay_strength, decay_period=decay_period,
                  decay_per_point=decay_per_point, air=air, jitter=jitter, centre_offset=centre_offset,
                  keep_truth=keep_truth)
    g = geometry or ScanGeometry(energy_keV=energy_keV)
    geom = _output_geometry(g, arange, centre_offset, translation_step)
    ds = _to_dataset(res, ang, tth, "tth", geom, "1", "xrdwidgets.sim.scan.acquire_analytic", params)
    ds["patterns"] = xr.DataArray(pats, dims=("phase", "tth"), coords={"phase": names, "tth": ds["tth"]},
                                  attrs={"units": "1", "long_name": "reference pattern per phase"})
    return ds
