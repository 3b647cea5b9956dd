"""A multi-phase grain sample scanned by a pencil beam: the simulation of the app's data panel.

:func:`iterate_grain_scan` (a generator of progress events) and :func:`grain_scan` (run to the
end) make a disk of Voronoi grains, each of one of the chosen phases, and scan it with Poisson
noise, by ray tracing or, with a detector distance, with thick-sample parallax.
"""
from __future__ import annotations

import logging

import numpy as np

from ..base.errors import InputError
from ..base.progress import Progress
from ..geometry import ScanGeometry
from .chemical import chemical_phantom
from .phantoms import voronoi_grains
from .scan import acquire, measure
from .structures import get_phase
from .thick_sample import parallax_scan

log = logging.getLogger(__name__)

__all__ = ["iterate_grain_scan", "grain_scan", "GRAIN_SCAN_TTH_RANGE", "GRAIN_SCAN_ENERGY_KEV",
           "GRAIN_SCAN_STEP_MM"]

#: 2θ range (deg) and energy (keV) of the scans (the demo's: lines of every phase fall in it).
GRAIN_SCAN_TTH_RANGE = (2.5, 9.5)
GRAIN_SCAN_ENERGY_KEV = 60.0
#: Translation step (mm): a 48-pixel sample is 2.4 mm across.
GRAIN_SCAN_STEP_MM = 0.05


def iterate_grain_scan(phases, *, size: int = 48, n_angles: int | None = None, n_channels: int = 200,
                       dose: float | None = 1e4, parallax_mm: float | None = None, n_grains: int = 12,
                       seed: int = 0):
    """Simulate a scan of a multi-phase grain phantom, as a generator of progress events.

    The sample is a disk of ``n_grains`` Voronoi grains (:func:`~xrdwidgets.sim.phantoms.voronoi_grains`),
    each made of one of ``phases`` (assigned at random, every phase at least once), with the
    phases' powder patterns (:func:`~xrdwidgets.sim.chemical.chemical_phantom`) at 60 keV over
    2θ 2.5–9.5°, pixel = translation step = 50 µm. It is scanned over 0–180° by ray tracing
    (:func:`~xrdwidgets.sim.scan.acquire`) or, with ``parallax_mm``, by the thick-sample parallax
    model (:func:`~xrdwidgets.sim.thick_sample.parallax_scan`) followed by the same Poisson noise model
    (:func:`~xrdwidgets.sim.scan.measure`).

    Parameters
    ----------
    phases : sequence of str
        Phase names from :func:`xrdwidgets.sim.structures.list_phases` (at least one).
    size : int
        Image size = number of translations.
    n_angles : int, optional
        Default ``round(1.2 * size)``.
    n_channels : int
        Number of 2θ channels.
    dose : float or None
        Expected counts at the brightest point (Poisson noise); ``None``: noise-free.
    parallax_mm : float or None
        Rotation axis to detector distance (mm) for the parallax model; ``None``: no parallax.
    n_grains : int
    seed : int
        Seeds the grains, their phases and the noise.

    Yields
    ------
    Progress
        After the phantom (1 of 2) and the scan (2 of 2).

    Returns
    -------
    xarray.Dataset
        ``sinogram`` (translation, angle, tth) and the truth: ``clean``, ``volume``,
        ``phase_maps``, ``patterns``, …
    """
    names = [get_phase(p).name for p in phases]
    if not names:
        raise InputError("choose at least one phase to simulate")
    if len(set(names)) != len(names):
        raise InputError(f"phases: each phase once, found {names}")
    n = int(size)
    if not 8 <= n <= 512:
        raise InputError(f"size: expected 8 to 512 pixels, found {size!r}")
    na = int(n_angles) if n_angles is not None else max(2, round(1.2 * n))
    n_grains = max(int(n_grains), len(names))
    rng = np.random.default_rng(seed)
    labels = voronoi_grains(n, n_grains, seed=seed)
    owner = rng.permutation(np.arange(n_grains) % len(names))  # every phase owns >= 1 grain
    maps = {p: ((labels > 0) & (owner[np.maximum(labels, 1) - 1] == k)).astype(float)
            for k, p in enumerate(names)}
    tth = np.linspace(*GRAIN_SCAN_TTH_RANGE, int(n_channels))
    geom = ScanGeometry(energy_keV=GRAIN_SCAN_ENERGY_KEV, distance_mm=parallax_mm or 900.0,
                        translation_step_mm=GRAIN_SCAN_STEP_MM, pixel_size_mm=0.172)
    truth = chemical_phantom(maps, tth, energy_keV=GRAIN_SCAN_ENERGY_KEV, geometry=geom, size_nm=40.0,
                             instrumental_fwhm_deg=0.03)
    yield Progress(1, 2, metrics={"step": "phantom"})
    scan = _scan(truth, n, na, dose, parallax_mm, seed)
    yield Progress(2, 2, metrics={"step": "scan"})
    ds = scan.merge(truth.drop_vars([v for v in truth.data_vars if v in scan.data_vars]),
                    combine_attrs="override")
    ds = ds.drop_vars([v for v in ("ideal",) if v in ds.data_vars])
    ds.attrs.update(scan["sinogram"].attrs)
    ds.attrs["title"] = (f"simulated {', '.join(names)} grains, {n} px, "
                         + (f"dose {dose:g}" if dose else "noise-free")
                         + (f", parallax L = {parallax_mm:g} mm" if parallax_mm else ""))
    return ds


def _scan(truth, n, na, dose, parallax_mm, seed):
    if not parallax_mm:
        return acquire(truth, n_angles=na, n_translations=n, dose=dose, seed=seed)
    ps = parallax_scan(truth, distance_mm=float(parallax_mm), n_angles=na, n_translations=n,
                       reference=False)
    clean = ps["sinogram"]
    res = measure(lambda offsets: clean.values, n, clean["angle"].values, clean["tth"].values,
                  dose=dose, seed=seed, keep_truth=False)
    out = ps.copy()
    out["clean"] = clean * res["scale"]
    out["sinogram"] = clean.copy(data=res["sinogram"])
    if dose:
        out["sinogram"].attrs["units"] = out["clean"].attrs["units"] = "counts"
    return out


def grain_scan(phases, **kwargs):
    """Run :func:`iterate_grain_scan` to the end and return its Dataset.

    Parameters
    ----------
    phases : sequence of str
        Phase names from :func:`xrdwidgets.sim.structures.list_phases` (at least one).
    **kwargs
        ``size``, ``n_angles``, ``n_channels``, ``dose``, ``parallax_mm``, ``n_grains``, ``seed``
        as :func:`iterate_grain_scan`.

    Returns
    -------
    xarray.Dataset
        ``sinogram`` (translation, angle, tth) and the truth (``clean``, ``volume``,
        ``phase_maps``, ``patterns``, …).
    """
    gen = iterate_grain_scan(phases, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
