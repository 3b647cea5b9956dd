"""The embedded demo: a deterministic 3-phase XRD-CT sinogram stack with its ground truth.

The sample is a model catalyst body seen in cross-section: a ceria (CeO2) support disc with a
pore, nickel (Ni) particles whose lattice is strained towards the rim, and a rutile (TiO2)
binder crescent whose crystallites grow from left to right. It is scanned by a pencil beam at
60 keV (0–180°, raster order) with Poisson noise.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import xarray as xr

from ..base.errors import InputError
from ..geometry import ScanGeometry
from .chemical import chemical_phantom
from .scan import acquire
from .shapes import Circle, Ellipse, Phantom

log = logging.getLogger(__name__)

__all__ = ["demo", "demo_phase_maps", "DEMO_SIZES", "DEMO_CACHE_ENV", "write_demo_cache", "demo_with_fbp"]

#: Environment variable naming a folder of precomputed demos and their FBP (set by
#: ``xrdwidgets app`` for its kernels, see :func:`write_demo_cache`).
DEMO_CACHE_ENV = "XRDWIDGETS_DEMO_CACHE"

#: (n_translations = image size, n_angles, n_channels) of the named sizes.
DEMO_SIZES = {"default": (100, 120, 300), "small": (40, 48, 100), "tiny": (24, 30, 60)}

#: 2θ range (deg) of the demo at 60 keV: ceria, Ni and rutile lines.
TTH_RANGE = (2.5, 9.5)


def demo_phase_maps(n: int) -> dict:
    """Volume-fraction maps ``{phase: (y, x) array}`` of the demo sample on ``n × n`` pixels.

    Exact area fractions of analytic shapes (image extent [-1, 1]²); fractions add up to ≤ 1.
    """
    body = Phantom([Circle(1.0, (0.0, 0.0), 0.86), Ellipse(-1.0, (-0.25, 0.3), (0.16, 0.10), 30.0)])
    ni = Phantom([Circle(0.9, c, r) for c, r in (
        ((0.35, -0.25), 0.12), ((-0.45, -0.35), 0.09), ((0.05, 0.45), 0.1), ((0.5, 0.35), 0.07),
        ((-0.1, -0.6), 0.08), ((0.15, 0.05), 0.06))])
    tio2 = Phantom([Circle(1.0, (-0.15, 0.05), 0.8), Circle(-1.0, (0.05, 0.0), 0.8)])
    b = np.clip(body.raster(n), 0, 1)
    t = np.clip(tio2.raster(n), 0, 1) * b
    nm = np.clip(ni.raster(n), 0, 1) * b * (1 - t)
    ce = np.clip(b - t - nm, 0, 1)
    return {"CeO2": ce, "Ni": nm, "TiO2": t}


def demo(*, seed: int = 0, size: str = "default", energy_keV: float = 60.0, dose: float | None = 4000.0,
         n_translations: int | None = None, n_angles: int | None = None,
         n_channels: int | None = None) -> xr.Dataset:
    """Deterministic multi-phase XRD-CT demo dataset with ground truth.

    Parameters
    ----------
    seed : int
        Seed of the Poisson noise (the sample itself is fixed).
    size : {"default", "small", "tiny"}
        ``default``: 100 translations × 120 angles × 300 channels; ``small``: 40 × 48 × 100;
        ``tiny``: 24 × 30 × 60 (tests). ``n_translations``/``n_angles``/``n_channels`` override.
    energy_keV : float
        X-ray energy (keV).
    dose : float or None
        Expected counts at the brightest sinogram point (Poisson noise); ``None``: noise-free.

    Returns
    -------
    xarray.Dataset
        ``sinogram`` (translation, angle, tth) in counts; ground truth ``volume`` (y, x, tth),
        ``phase_maps`` (phase, y, x), ``patterns`` (phase, tth), ``strain``/``size`` maps, and
        the acquisition truths of :func:`xrdwidgets.sim.scan.acquire`. Coordinates: translation
        and x/y in mm (10 µm steps), angle and tth in degrees.
    """
    if size not in DEMO_SIZES:
        raise InputError(f"demo: size must be one of {sorted(DEMO_SIZES)}, found {size!r}")
    n, na, nc = DEMO_SIZES[size]
    n = int(n_translations or n)
    na = int(n_angles or na)
    nc = int(n_channels or nc)
    tth = np.linspace(*TTH_RANGE, nc)
    geom = ScanGeometry(energy_keV=energy_keV, distance_mm=900.0, translation_step_mm=0.01,
                        pixel_size_mm=0.172)
    maps = demo_phase_maps(n)
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) / (n / 2)
    r = np.hypot(xx, yy)
    strain = {"Ni": 2.5e-3 * r ** 2}                       # lattice expands towards the rim
    sizes = {"TiO2": 12.0 + 30.0 * (xx + 1) / 2}            # crystallites grow left → right
    truth = chemical_phantom(maps, tth, energy_keV=energy_keV, strain_maps=strain, size_maps=sizes,
                             size_nm=40.0, geometry=geom, instrumental_fwhm_deg=0.03)
    scan = acquire(truth, n_angles=na, angle_range_deg=(0.0, 180.0), n_translations=n,
                   dose=dose, seed=seed)
    ds = scan.merge(truth.drop_vars([v for v in truth.data_vars if v in scan.data_vars]),
                    combine_attrs="override")
    ds = ds.drop_vars([v for v in ("ideal",) if v in ds.data_vars])  # equal to clean here
    for v in ("sinogram", "clean", "volume"):
        ds[v] = ds[v].astype(np.float32)
    ds.attrs.update(scan["sinogram"].attrs)
    ds.attrs["title"] = "xrdwidgets demo: CeO2 support, Ni particles, TiO2 binder (60 keV)"
    return ds


def _cache_files(folder, size: str) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / f"demo-{size}.h5", folder / f"demo-{size}-fbp.h5"


def write_demo_cache(folder, sizes=("small",)) -> list[Path]:
    """Simulate the demo of each size, reconstruct it (FBP), and write both into ``folder``.

    A dashboard server does this once at start and passes ``folder`` to its kernels in
    :data:`DEMO_CACHE_ENV`, so a page visit reads the demo (milliseconds) instead of simulating
    and reconstructing it, and does not import torch before it is needed. The folder should be
    private to the server (its run folder); existing files there are replaced.

    Returns
    -------
    list of Path
        The files written.
    """
    from .. import io
    from ..recon.fbp import fbp

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for size in sizes:
        ds = demo(size=size)
        for obj, path in zip((ds, fbp(ds["sinogram"])), _cache_files(folder, size)):
            io.save(obj, path, overwrite=True, producer="xrdwidgets demo cache")  # atomic
            written.append(path)
    return written


def demo_with_fbp(size: str = "small", *, reconstruct: bool = True):
    """The demo dataset of ``size`` and its FBP volume (``None`` unless ``reconstruct``).

    Read from the folder in :data:`DEMO_CACHE_ENV` when it holds them (see
    :func:`write_demo_cache`); computed otherwise (and when a cached file cannot be read, which
    is logged).

    Returns
    -------
    (xarray.Dataset, xarray.DataArray or None)
        The dataset of :func:`demo` and the FBP volume ``(y, x, tth)``.
    """
    if size not in DEMO_SIZES:
        raise InputError(f"demo_with_fbp: size must be one of {tuple(DEMO_SIZES)}, found {size!r}")
    folder = os.environ.get(DEMO_CACHE_ENV)
    if folder:
        from .. import io

        data_file, fbp_file = _cache_files(folder, size)
        if data_file.is_file() and (fbp_file.is_file() or not reconstruct):
            try:
                ds = io.load(data_file)
                return ds, (io.load(fbp_file) if reconstruct else None)
            except (OSError, ValueError) as exc:
                log.warning("demo cache %s unreadable (%s); computing the demo", folder, exc)
    ds = demo(size=size)
    if not reconstruct:
        return ds, None
    from ..recon.fbp import fbp

    return ds, fbp(ds["sinogram"])
