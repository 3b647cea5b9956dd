"""Raw detector frames of a pencil-beam XRD-CT scan: the test oracle of :mod:`xrdwidgets.integrate`.

The sample (the demo's chemical phantom: CeO2 support, Ni particles, TiO2 binder, see
:mod:`xrdwidgets.sim.demo`) is scanned by the simulator's own ray tracer
(:func:`xrdwidgets.sim.scan.acquire`) into 1-D patterns per scan point; each pattern is then
drawn on a flat 2-D detector through a real pyFAI geometry:

* every pixel is split into ``oversample²`` sub-pixels; the 2θ of each comes from pyFAI's
  geometry (``ai.tth(row, col)``, any tilt) and the 1-D pattern is interpolated there, so ring
  radii and intensities are right independently of pyFAI's binning;
* the pixel value is the pattern times the relative solid angle ``cos³ α`` of the pixel (α: the
  angle between the ray and the detector normal, for an untilted detector ``α = 2θ``), and
  optionally pyFAI's polarisation factor — exactly what pyFAI's corrections remove;
* Poisson noise at a dose (expected counts at the brightest pixel), a few bright single-crystal
  spots on chosen frames, detector gaps (rows/columns read as 2³²−1 like an Eiger, masked in
  the master file and a mask file);
* a *thick* sample: instead of the line integral, every point along the beam draws its own
  rings from its own distance to the detector (``distance - s``), so the parallax of a thick
  sample comes from first principles (independent of :mod:`xrdwidgets.ops.parallax`).

Files: an Eiger-like NeXus master ``<name>_master.h5`` whose ``entry/data/data_000001, …``
are external links to data files ``<name>_data_00000k.h5`` (``entry/data/data``, frames ×
rows × columns, uint32, bitshuffle-LZ4 via ``hdf5plugin``), motor positions
``entry/sample/translation`` (mm) and ``entry/sample/rotation`` (deg) per frame, the pixel mask
at ``entry/instrument/detector/detectorSpecific/pixel_mask``; a PONI file and a mask file (EDF).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ..base.errors import InputError
from ..geometry import ScanGeometry

log = logging.getLogger(__name__)

__all__ = ["GAP_VALUE", "RawScan", "detector_tth", "render_pattern", "gap_mask", "add_spots",
           "simulate_raw_scan", "write_eiger", "write_images"]

#: Value of gap / dead pixels in the frames (as an Eiger writes them in uint32).
GAP_VALUE = np.uint32(2**32 - 1)


def _subpixel_coords(shape, oversample):
    ny, nx = shape
    k = int(oversample)
    off = (np.arange(k) + 0.5) / k
    rows = (np.arange(ny)[:, None] + off[None, :]).ravel()
    cols = (np.arange(nx)[:, None] + off[None, :]).ravel()
    return np.meshgrid(rows, cols, indexing="ij")


def detector_tth(ai, shape, *, oversample: int = 2, distance_mm: float | None = None):
    """2θ (deg) and relative solid angle of sub-pixels, shape ``(ny, nx, oversample²)``.

    Parameters
    ----------
    ai : pyFAI AzimuthalIntegrator
    shape : (ny, nx)
    oversample : int
        Sub-pixels per pixel side.
    distance_mm : float, optional
        Put the detector at this distance instead (the geometry of a sample point nearer to or
        further from the detector than the rotation axis).

    Returns
    -------
    tth_deg, solid : numpy.ndarray, each ``(ny, nx, oversample²)``
        ``solid = cos³ α`` with α the incidence angle on the detector, relative to the normal.
    """
    k = int(oversample)
    if distance_mm is not None:
        ai = _with_distance(ai, distance_mm)
    d1, d2 = _subpixel_coords(shape, k)
    tth = np.asarray(ai.tth(d1 - 0.5, d2 - 0.5), float)  # pyFAI: pixel centres at integer + 0.5 -> -0.5
    # incidence angle from the lab-frame position of each sub-pixel (pyFAI: z along the beam)
    z, y, x = ai.calc_pos_zyx(d0=None, d1=d1 - 0.5, d2=d2 - 0.5)
    # detector normal in the lab frame: position of the PONI is the foot of the normal from the sample
    n = np.asarray(ai.calc_pos_zyx(d0=None, d1=np.array([ai.poni1 / ai.detector.pixel1 - 0.5]),
                                   d2=np.array([ai.poni2 / ai.detector.pixel2 - 0.5])), float).ravel()
    n = n / np.linalg.norm(n)
    r = np.sqrt(z * z + y * y + x * x)
    cos_a = (z * n[0] + y * n[1] + x * n[2]) / r
    ny, nx = shape

    def fold(a):
        return np.asarray(a, float).reshape(ny, k, nx, k).transpose(0, 2, 1, 3).reshape(ny, nx, k * k)

    return np.degrees(fold(tth)), fold(cos_a) ** 3


def _with_distance(ai, distance_mm):
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    return AzimuthalIntegrator(dist=distance_mm * 1e-3, poni1=ai.poni1, poni2=ai.poni2, rot1=ai.rot1,
                               rot2=ai.rot2, rot3=ai.rot3, detector=ai.detector, wavelength=ai.wavelength)


def render_pattern(tth_sub, solid_sub, tth, pattern):
    """Draw 1-D patterns on the detector: sub-pixel mean of ``pattern(2θ) · cos³ α``.

    Parameters
    ----------
    tth_sub, solid_sub : array (ny, nx, k)
        From :func:`detector_tth`.
    tth : array (n_tth,)
        Increasing 2θ axis of the patterns (deg); zero outside it.
    pattern : array (n_tth,) or (n_frames, n_tth)

    Returns
    -------
    numpy.ndarray (ny, nx) or (n_frames, ny, nx), float64
    """
    pat = np.atleast_2d(np.asarray(pattern, float))
    tth = np.asarray(tth, float)
    # linear interpolation as a fixed (index, weight) pair, shared by all frames
    x = tth_sub.ravel()
    j = np.clip(np.searchsorted(tth, x) - 1, 0, tth.size - 2)
    w = np.clip((x - tth[j]) / (tth[j + 1] - tth[j]), 0.0, 1.0)
    inside = (x >= tth[0]) & (x <= tth[-1])
    vals = (pat[:, j] * (1 - w) + pat[:, j + 1] * w) * inside
    vals = vals.reshape((pat.shape[0],) + tth_sub.shape) * solid_sub
    out = vals.mean(axis=-1)
    return out[0] if np.ndim(pattern) == 1 else out


def gap_mask(shape, *, n_modules=(2, 2), gap: int = 2) -> np.ndarray:
    """Eiger-like module gaps: ``True`` on ``gap``-pixel bands between ``n_modules`` (rows, cols)."""
    ny, nx = shape
    m = np.zeros(shape, bool)
    for k in range(1, n_modules[0]):
        r = k * ny // n_modules[0]
        m[r - gap // 2:r - gap // 2 + gap, :] = True
    for k in range(1, n_modules[1]):
        c = k * nx // n_modules[1]
        m[:, c - gap // 2:c - gap // 2 + gap] = True
    return m


def add_spots(frame, rng, *, n_spots: int, brightness: float, sigma_px: float = 0.7, mask=None):
    """Add ``n_spots`` Gaussian single-crystal spots (peak ``brightness``) at random pixels.

    Returns the list of spot centres ``[(row, col), …]``.
    """
    ny, nx = frame.shape
    rr, cc = np.mgrid[:ny, :nx]
    centres = []
    while len(centres) < n_spots:
        r, c = rng.uniform(2, ny - 3), rng.uniform(2, nx - 3)
        if mask is not None and mask[int(r), int(c)]:
            continue
        frame += brightness * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma_px ** 2))
        centres.append((float(r), float(c)))
    return centres


@dataclass
class RawScan:
    """What :func:`simulate_raw_scan` wrote, and its truth.

    Attributes
    ----------
    master, poni, mask : Path
        NeXus master file, PONI file, mask file (EDF; True/1 = gap).
    data_files : list of Path
    truth : xarray.Dataset
        ``sinogram`` (translation, angle, tth): the expected azimuthally integrated pattern of
        every scan point (counts per pixel of normal incidence, noise-free, no spots);
        ``frame_index`` (translation, angle): the frame of each point; ``phase_maps``.
    plan : xrdwidgets.integrate.plan.ScanPlan
    spots : dict
        ``{frame index: [(row, col), …]}`` of the single-crystal spots added.
    geometry : ScanGeometry
    """

    master: Path
    poni: Path
    mask: Path
    data_files: list
    truth: xr.Dataset
    plan: object
    spots: dict = field(default_factory=dict)
    geometry: ScanGeometry | None = None


def write_eiger(folder, name, frames_iter, *, n_frames, shape, frames_per_file: int = 100,
                motors: dict | None = None, pixel_mask=None, compression: str = "bitshuffle-lz4",
                dtype=np.uint32):
    """Write frames as an Eiger-like master file + external-link data files.

    Parameters
    ----------
    folder : path-like
    name : str
        File stem: ``<name>_master.h5`` and ``<name>_data_%06d.h5``.
    frames_iter : iterable of arrays (ny, nx)
        The frames in acquisition order (consumed one by one, never all in memory).
    n_frames, shape :
        Frame count and ``(ny, nx)``.
    motors : dict, optional
        ``{"translation": (n_frames,) mm, "rotation": (n_frames,) deg}``.
    compression : {"bitshuffle-lz4", "blosc-lz4", "gzip", None}

    Returns
    -------
    (master path, list of data paths)
    """
    import h5py
    import hdf5plugin

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    comp = {"bitshuffle-lz4": lambda: dict(hdf5plugin.Bitshuffle(cname="lz4")),
            "blosc-lz4": lambda: dict(hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE)),
            "gzip": lambda: {"compression": "gzip"}, None: lambda: {}}[compression]()
    master = folder / f"{name}_master.h5"
    data_files = []
    it = iter(frames_iter)
    with h5py.File(master, "w") as m:
        entry = m.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        grp = entry.create_group("data")
        grp.attrs["NX_class"] = "NXdata"
        det = entry.create_group("instrument/detector/detectorSpecific")
        if pixel_mask is not None:
            det.create_dataset("pixel_mask", data=np.asarray(pixel_mask, np.uint32))
        if motors:
            smp = entry.create_group("sample")
            for k, v in motors.items():
                ds = smp.create_dataset(k, data=np.asarray(v, float))
                ds.attrs["units"] = "deg" if k == "rotation" else "mm"
        for k, start in enumerate(range(0, n_frames, frames_per_file)):
            n = min(frames_per_file, n_frames - start)
            dpath = folder / f"{name}_data_{k + 1:06d}.h5"
            with h5py.File(dpath, "w") as f:
                d = f.create_dataset("entry/data/data", shape=(n,) + tuple(shape), dtype=dtype,
                                     chunks=(1,) + tuple(shape), **comp)
                for i in range(n):
                    d[i] = next(it)
                d.attrs["image_nr_low"] = start + 1
                d.attrs["image_nr_high"] = start + n
            grp[f"data_{k + 1:06d}"] = h5py.ExternalLink(dpath.name, "/entry/data/data")
            data_files.append(dpath)
    return master, data_files


def write_images(frames, folder, name, fmt="edf"):
    """Write frames as single images with fabio (``fmt`` in edf, cbf, tif); returns the paths."""
    import fabio.cbfimage
    import fabio.edfimage
    import fabio.tifimage

    cls = {"edf": fabio.edfimage.EdfImage, "cbf": fabio.cbfimage.CbfImage,
           "tif": fabio.tifimage.TifImage}[fmt]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, fr in enumerate(frames):
        arr = np.asarray(fr)
        if fmt == "cbf":
            arr = arr.astype(np.int32)
        p = folder / f"{name}_{i:05d}.{fmt}"
        cls(data=arr).write(str(p))
        paths.append(p)
    return paths


def _thick_patterns(volume, tth, angles, n_t, translation_step, pixel_mm, cells, ai, tth_sub_shape,
                    oversample, samples_per_pixel=2):
    """Frames of a thick sample: each point along the beam draws its rings from its own distance."""
    from .raytrace import interpolation_weights, ray_points

    ny, nx, nc = volume.shape
    pad = 2
    vol = np.pad(volume, ((pad, pad), (pad, pad), (0, 0)))
    flat = vol.reshape(-1, nc)
    half = math.hypot(ny, nx) / 2.0
    ns = int(math.ceil(2 * half * samples_per_pixel))
    h = 2 * half / ns
    s = -half + (np.arange(ns) + 0.5) * h
    d0 = ai.dist * 1e3
    geo = {}
    for t_idx, a_idx in cells:
        p = (np.array([t_idx]) - (n_t - 1) / 2.0) * translation_step
        y, x = ray_points((ny, nx), np.radians(np.array(angles[a_idx])), p, s)
        y, x = y.ravel() + pad, x.ravel() + pad
        ok = (y >= 0) & (y < vol.shape[0] - 1) & (x >= 0) & (x < vol.shape[1] - 1)
        frame = 0.0
        for k in np.flatnonzero(ok):
            pix, w = interpolation_weights(y[k:k + 1], x[k:k + 1], vol.shape[:2])
            pat = (w[0] @ flat[pix[0]]) * h
            if not np.any(pat):
                continue
            key = round(float(s[k]), 9)
            if key not in geo:
                dist = d0 - s[k] * pixel_mm
                tsub, ssub = detector_tth(ai, tth_sub_shape, oversample=oversample, distance_mm=dist)
                geo[key] = (tsub, ssub * (d0 / dist) ** 2)   # nearer points subtend more
            frame = frame + render_pattern(geo[key][0], geo[key][1], tth, pat)
        yield np.broadcast_to(frame, tth_sub_shape) if np.ndim(frame) == 0 else frame


def simulate_raw_scan(folder, *, name: str = "scan", n_translations: int = 8, n_angles: int = 6,
                      shape=(64, 64), pixel_size_mm: float = 0.172, distance_mm: float | None = None,
                      energy_keV: float = 60.0, n_tth: int = 1400, order: str = "zigzag",
                      n_subsets: int = 2, continuous: bool = False, dose: float | None = 2000.0,
                      n_spot_frames: int = 3, spots_per_frame: int = 3, spot_brightness: float = 30.0,
                      gaps: bool = True, thick: bool = False, sample_size_mm: float | None = None,
                      oversample: int = 2, polarization_factor: float | None = None,
                      instrumental_fwhm_deg: float = 0.08, frames_per_file: int = 20,
                      compression: str = "bitshuffle-lz4", motors: bool = True, phase_maps: dict | None = None,
                      air_margin: int = 0, angle_range_deg=(0.0, 180.0), seed: int = 0) -> RawScan:
    """Simulate a raw pencil-beam XRD-CT scan and write it like an Eiger.

    Parameters
    ----------
    folder : path-like
        Output folder (created); files are named after ``name``.
    n_translations, n_angles : int
        Scan grid (the phantom has ``n_translations`` pixels across); angles over 0–180°.
    shape : (ny, nx)
        Detector shape (rows, columns).
    pixel_size_mm : float
    distance_mm : float, optional
        Sample–detector distance; default: the demo's 2θ range (up to 9.5°) reaches the edge
        of the detector along a row through the beam centre.
    energy_keV : float
    n_tth : int
        Points of the 1-D truth patterns on 2θ 1.5°–(corner 2θ) (fine enough to interpolate).
    order : str
        Acquisition order, one of :data:`xrdwidgets.integrate.plan.PLAN_ORDERS`.
    continuous : bool
        Continuous rotation: recorded angles scatter by ±0.15 angle step around the grid.
    dose : float or None
        Expected counts at the brightest pixel (Poisson noise); ``None``: noise-free floats
        scaled to the same peak, written as float32.
    n_spot_frames, spots_per_frame, spot_brightness :
        Single-crystal spots: on ``n_spot_frames`` random frames, spots of peak
        ``spot_brightness × dose`` (or × the peak pixel value without noise).
    gaps : bool
        Eiger module gaps (2×2 modules, 2-pixel gaps).
    thick : bool
        Thick sample: rings drawn from each point's own distance (parallax), see the module
        docstring; ``sample_size_mm`` sets the sample width (default 8 % of the distance).
    oversample : int
        Sub-pixels per pixel side.
    polarization_factor : float, optional
        Multiply frames by pyFAI's polarisation factor for this value.
    instrumental_fwhm_deg : float
        Peak width added to the phases' own.
    frames_per_file : int
    compression : {"bitshuffle-lz4", "blosc-lz4", "gzip", None}
    motors : bool
        Write motor positions in the master file.
    phase_maps : dict, optional
        ``{phase: (n_translations, n_translations) volume fractions}``; default: the demo's
        sample (:func:`xrdwidgets.sim.demo.demo_phase_maps`).
    air_margin : int
        Translations of air on each side: the sample image has ``n_translations - 2 ×
        air_margin`` pixels (of one translation step) across.
    angle_range_deg : (float, float)
        Rotation range, stop excluded: ``(0, 180)`` (default) or ``(0, 360)`` (a full turn: with
        a thick sample every point is seen from both sides, the classical parallax baseline).
    seed : int

    Returns
    -------
    RawScan
    """
    import fabio.edfimage

    from ..integrate.calibration import make_integrator, write_poni
    from ..integrate.plan import ScanPlan
    from .chemical import chemical_phantom
    from .demo import demo_phase_maps
    from .scan import acquire

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ny, nx = (int(v) for v in shape)
    lam = 12.398419843320026 / energy_keV
    if distance_mm is None:
        distance_mm = (min(ny, nx) / 2.0) * pixel_size_mm / math.tan(math.radians(9.5))
    ai = make_integrator(distance_mm=distance_mm, pixel_size_mm=pixel_size_mm, shape=(ny, nx),
                         wavelength_A=lam)
    poni = write_poni(ai, folder / f"{name}.poni")
    tth_sub, solid = detector_tth(ai, (ny, nx), oversample=oversample)
    if polarization_factor is not None:
        solid = solid * np.asarray(ai.polarization(shape=(ny, nx), factor=polarization_factor))[..., None]
    tth = np.linspace(1.5, float(tth_sub.max()) + 0.05, n_tth)
    n = int(n_translations)
    sample_mm = sample_size_mm or (0.08 * distance_mm if thick else n * 0.01)
    step_mm = sample_mm / n
    geom = ScanGeometry(energy_keV=energy_keV, distance_mm=distance_mm, translation_step_mm=step_mm,
                        pixel_size_mm=pixel_size_mm)
    n_px = n - 2 * int(air_margin)
    if n_px < 2:
        raise InputError(f"air_margin: expected fewer than {n // 2} translations per side, found {air_margin}")
    maps = demo_phase_maps(n_px) if phase_maps is None else dict(phase_maps)
    truth_vol = chemical_phantom(maps, tth, energy_keV=energy_keV, geometry=geom,
                                 instrumental_fwhm_deg=instrumental_fwhm_deg)
    angle_range = tuple(float(v) for v in angle_range_deg)
    scan = acquire(truth_vol, n_angles=n_angles, n_translations=n, dose=None, keep_truth=False,
                   angle_range_deg=angle_range)
    sino = np.asarray(scan["sinogram"].values, float)                   # (t, a, tth)
    plan = ScanPlan.regular(n, n_angles, translation_step_mm=step_mm, order=order, n_subsets=n_subsets,
                            angle_range_deg=angle_range)
    cells = plan.frame_cells()
    n_frames = cells.shape[0]
    mask = gap_mask((ny, nx)) if gaps else np.zeros((ny, nx), bool)
    # peak pixel value of the noise-free frames sets the count scale
    peak_frame = render_pattern(tth_sub, solid, tth, sino.reshape(-1, tth.size).max(axis=0))
    scale = (dose or 1000.0) / float(peak_frame.max())
    spot_frames = set(rng.choice(n_frames, size=min(n_spot_frames, n_frames), replace=False).tolist())
    spots = {}
    angles = scan["angle"].values

    if thick:
        src = _thick_patterns(np.asarray(truth_vol["volume"].values, float), tth, angles, n, 1.0,
                              step_mm, cells, ai, (ny, nx), oversample)
    else:
        src = (render_pattern(tth_sub, solid, tth, sino[t, a]) for t, a in cells)

    def frames():
        for i, clean in enumerate(src):
            fr = np.array(clean, float) * scale
            if i in spot_frames:
                spots[i] = add_spots(fr, rng, n_spots=spots_per_frame,
                                     brightness=spot_brightness * (dose or 1000.0), mask=mask)
            if dose is not None:
                fr = rng.poisson(fr).astype(np.uint32)
                fr[mask] = GAP_VALUE
            else:
                fr = fr.astype(np.float32)
                fr[mask] = np.nan
            yield fr

    mot = None
    if motors:
        t_pos = plan.translations[cells[:, 0]]
        a_pos = plan.angles[cells[:, 1]].copy()
        if continuous:
            a_pos += rng.uniform(-0.15, 0.15, n_frames) * (plan.angles[1] - plan.angles[0])
        mot = {"translation": t_pos, "rotation": a_pos}
    master, data_files = write_eiger(folder, name, frames(), n_frames=n_frames, shape=(ny, nx),
                                     frames_per_file=frames_per_file, motors=mot, pixel_mask=mask,
                                     compression=compression,
                                     dtype=np.uint32 if dose is not None else np.float32)
    mask_path = folder / f"{name}_mask.edf"
    fabio.edfimage.EdfImage(data=mask.astype(np.int8)).write(str(mask_path))
    idx = plan.acquisition_index()
    coords = {"translation": plan.translations, "angle": plan.angles, "tth": tth}
    truth = xr.Dataset(
        {"sinogram": (("translation", "angle", "tth"), (sino * scale).astype(np.float32),
                      {"units": "counts", "long_name": "expected integrated pattern (no noise, no spots)"}),
         "frame_index": (("translation", "angle"), idx, {"long_name": "frame of each scan point"}),
         "phase_maps": (("phase", "y", "x"), np.stack(list(maps.values())))},
        coords={**coords, "phase": list(maps)})
    truth["translation"].attrs["units"] = "mm"
    truth["angle"].attrs["units"] = "deg"
    truth["tth"].attrs["units"] = "deg"
    truth.attrs.update(geom.replace(angle_range_deg=angle_range).to_attrs())
    truth.attrs.update({"scale": scale, "thick": int(thick), "order": order})
    log.info("simulated %d frames %s into %s", n_frames, (ny, nx), master)
    return RawScan(master=master, poni=poni, mask=mask_path, data_files=data_files, truth=truth,
                   plan=plan, spots=spots, geometry=geom)
