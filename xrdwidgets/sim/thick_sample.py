"""Thick-sample parallax in pencil-beam XRD-CT, simulated by ray tracing over peak lists.

In a pencil-beam measurement every voxel along the beam diffracts. A voxel at position ``s``
along the beam (towards the detector, relative to the rotation axis) is at ``L - s`` from the
detector (``L = distance_mm``), so its Debye–Scherrer ring of true angle 2θ has radius
``r = (L - s) tan 2θ``; azimuthal integration calibrated for the distance ``L`` reads it as

    2θ' = atan((L - s) / L · tan 2θ)

— a shift to lower 2θ for voxels nearer the detector, growing with tan 2θ. Over a thick sample
this shifts, broadens and splits the measured peaks.

This module is the test oracle of parallax-aware reconstruction, so it is written independently
of any shift operator on patterns: for each ray (the same rays and sample points as
:func:`xrdwidgets.sim.scan.ray_trace`, whose geometry conventions apply: ``s`` grows along the beam
direction ``(x, y) = (sin θ, cos θ)``) every sample point carries the phase fractions (bilinear in
the phase maps) and, where maps are given, its local strain and crystallite size
(fraction-weighted bilinear); every reflection of every phase (positions and intensities as
:func:`xrdwidgets.sim.patterns.reflection_lines`: ``I = m |F|² LP / V²``) is placed at its apparent 2θ'
for that depth with a pseudo-Voigt profile (Scherrer ⊕ instrumental FWHM at the true 2θ) of
area ``I × pattern_scale × fraction × path step``. With ``L → ∞`` this is the plain ray-traced scan of the
chemical phantom's volume.

For phases with uniform strain and size the sum over points is reorganised exactly: 2θ' depends
only on ``s``, so the pattern of each sample depth is computed once and rays are
``fractions (ray, depth) @ patterns (depth, tth)``. Phases with strain / size maps are evaluated
point by point.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp
import xarray as xr

from ..base.errors import InputError
from .. import data as _data
from ..conversions import wavelength_from_energy
from ..data import DataError
from ..geometry import ScanGeometry
from . import raytrace as _rt
from . import scan as _scan

log = logging.getLogger(__name__)

__all__ = ["apparent_tth", "phase_lines", "parallax_scan"]

_TAIL_FWHM = 50.0  # lines farther than this many FWHM outside the 2θ axis are left out (as patterns.py)
_BLOCK = 2_000_000  # float64 elements per temporary (points, lines, tth) block


def apparent_tth(tth_deg, depth_mm, distance_mm):
    """2θ read by azimuthal integration calibrated at ``distance_mm`` for a voxel at ``depth_mm``.

    ``2θ' = atan((L - s) / L · tan 2θ)`` (evaluated as ``atan2((L - s) sin 2θ, L cos 2θ)``).

    Parameters
    ----------
    tth_deg : array
        True 2θ in degrees.
    depth_mm : array
        Position ``s`` along the beam from the rotation axis, positive towards the detector, mm.
    distance_mm : float
        Rotation axis to detector distance ``L``, mm (``np.inf``: no parallax).

    Returns
    -------
    numpy.ndarray
        Apparent 2θ' in degrees (broadcast shape).
    """
    t = np.deg2rad(np.asarray(tth_deg, float))
    s = np.asarray(depth_mm, float)
    L = float(distance_mm)
    if math.isinf(L):
        return np.rad2deg(np.broadcast_to(t, np.broadcast_shapes(t.shape, s.shape)).copy())
    return np.rad2deg(np.arctan2((L - s) * np.sin(t), L * np.cos(t)))


# ---------------------------------------------------------------------------- line lists
def phase_lines(phase, *, energy_keV: float, tth_range=None):
    """Strain-free line list of a phase: ``d`` (Å), ``m·|F|²`` and the cell volume (Å³).

    Positions and intensities under a strain ε follow from :func:`_lines_at`:
    ``d → d(1 + ε)``, ``2θ = 2 asin(λ / 2d)``, ``I = m |F|² LP(2θ) / (V (1 + ε)³)²`` — the model
    of :func:`xrdwidgets.sim.patterns.reflection_lines`.

    Returns
    -------
    dict
        ``d`` (R,), ``mf2`` (R,), ``volume`` (float), ``name``.
    """
    from . import patterns as pm
    from .structures import get_phase

    ph = get_phase(phase)
    table = pm.reflection_table(ph, energy_keV=energy_keV, strain=0.0)
    return {"d": np.asarray(table["d"], float), "mf2": np.asarray(table["multiplicity"] * table["f2"], float),
            "volume": float(ph.cell_volume), "name": ph.name}


def _lines_at(lines, strain, wavelength_A):
    """Positions (deg) and intensities of ``lines`` at strains ``strain`` (N,) → (N, R) each."""
    from .patterns import lorentz_polarisation

    eps = np.asarray(strain, float)[:, None]
    sarg = wavelength_A / (2.0 * lines["d"][None, :] * (1.0 + eps))
    ok = sarg < 1.0
    tth = np.rad2deg(2.0 * np.arcsin(np.where(ok, sarg, 0.5)))
    inten = lines["mf2"][None, :] * lorentz_polarisation(tth) / (lines["volume"] * (1.0 + eps) ** 3) ** 2
    return tth, np.where(ok, inten, 0.0)


def _widths(tth, size_nm, wavelength_A, instrumental_fwhm_deg):
    from .patterns import scherrer_fwhm

    return np.sqrt(instrumental_fwhm_deg ** 2 + scherrer_fwhm(tth, size_nm, wavelength_A) ** 2)


def _profiles(tth_axis, centre, fwhm, amplitude, eta):
    """Σ_r amplitude · PV(tth; centre, fwhm, eta) over the last axis of centre → (..., T)."""
    from .patterns import pseudo_voigt

    n = int(np.prod(centre.shape[:-1])) if centre.ndim > 1 else 1
    r = centre.shape[-1]
    c2 = centre.reshape(n, r)
    w2 = np.broadcast_to(fwhm, centre.shape).reshape(n, r)
    a2 = np.broadcast_to(amplitude, centre.shape).reshape(n, r)
    out = np.zeros((n, tth_axis.size))
    block = max(1, _BLOCK // max(1, r * tth_axis.size))
    for i in range(0, n, block):
        sl = slice(i, i + block)
        pv = pseudo_voigt(tth_axis[None, None, :], c2[sl, :, None], w2[sl, :, None], eta)
        out[sl] = np.einsum("nr,nrt->nt", a2[sl], pv)
    return out.reshape(centre.shape[:-1] + (tth_axis.size,))


def _keep_mask(tth_true, width, tth_axis):
    margin = _TAIL_FWHM * width
    return (tth_true > tth_axis[0] - margin) & (tth_true < tth_axis[-1] + margin)


# ---------------------------------------------------------------------------- inputs
def _phantom_input(phantom, tth, energy_keV, strain_maps, size_maps, size_nm, normalise, eta,
                   instrumental_fwhm_deg, geometry):
    """A chemical-phantom Dataset from either a Dataset or phase maps."""
    if isinstance(phantom, xr.Dataset):
        need = [v for v in ("phase_maps", "pattern_scale") if v not in phantom]
        if need:
            raise DataError(f"phantom: expected a chemical_phantom Dataset with variables phase_maps and "
                            f"pattern_scale, missing {need}")
        return phantom
    if tth is None or energy_keV is None:
        raise InputError("parallax_scan: with phase maps (not a chemical_phantom Dataset) give tth= and energy_keV=")
    from .chemical import chemical_phantom

    return chemical_phantom(phantom, tth, energy_keV=energy_keV, strain_maps=strain_maps, size_maps=size_maps,
                            size_nm=size_nm, normalise=normalise, eta=eta,
                            instrumental_fwhm_deg=instrumental_fwhm_deg, geometry=geometry)


def parallax_scan(phantom, tth=None, *, distance_mm: float, pixel_size_mm: float | None = None,
                  energy_keV: float | None = None, strain_maps=None, size_maps=None, size_nm: float = 50.0,
                  normalise="max", eta: float = 0.5, instrumental_fwhm_deg: float = 0.01,
                  angles=None, n_angles: int | None = None, angle_range_deg=(0.0, 180.0),
                  n_translations: int | None = None, centre_offset: float = 0.0, sample_step: float = 0.25,
                  n_subrays: int = 1, beam_width: float = 1.0, reference: bool = True,
                  geometry: ScanGeometry | None = None) -> xr.Dataset:
    """Pencil-beam scan with thick-sample parallax, by ray tracing over the phases' peak lists.

    Parameters
    ----------
    phantom : xarray.Dataset or dict[str, array (y, x)]
        A :func:`~xrdwidgets.sim.chemical.chemical_phantom` Dataset (its phase maps, strain / size
        maps, 2θ axis, energy and pattern parameters are used), or phase maps (then give ``tth``,
        ``energy_keV`` and optionally ``strain_maps``, ``size_maps``, ``size_nm``, ``normalise``,
        ``eta``, ``instrumental_fwhm_deg`` as for ``chemical_phantom``).
    tth : array (n_tth,), optional
        2θ axis in degrees (phase-map input only).
    distance_mm : float
        Rotation axis to detector distance L in mm (``np.inf``: no parallax).
    pixel_size_mm : float, optional
        Pixel size = translation step in mm; default the phantom geometry's ``translation_step_mm``.
    angles, n_angles, angle_range_deg, n_translations, centre_offset :
        The scan, as :func:`xrdwidgets.sim.scan.acquire` (translation step: one pixel).
    sample_step, n_subrays, beam_width :
        Ray sampling, as :func:`xrdwidgets.sim.scan.ray_trace` (bilinear phase fractions).
    reference : bool
        Also compute the same scan without parallax (L → ∞) as ``reference``.

    Returns
    -------
    xarray.Dataset
        ``sinogram`` (translation, angle, tth) with parallax and ``reference`` without (same units
        as a ray-traced scan of the phantom volume: pattern × pixels); attrs: geometry
        (``distance_mm``, ``translation_step_mm``, ``energy_keV``, centre offset, angle range),
        provenance.
    """
    ds = _phantom_input(phantom, tth, energy_keV, strain_maps, size_maps, size_nm, normalise, eta,
                        instrumental_fwhm_deg, geometry)
    g_in = geometry or _data.get_geometry(ds) or ScanGeometry()
    energy = float(ds.attrs.get("energy_keV", g_in.energy_keV or np.nan))
    if not np.isfinite(energy) or energy <= 0:
        raise DataError("phantom: no X-ray energy found (attrs energy_keV / geometry_energy_keV)")
    lam = wavelength_from_energy(energy)
    tth_axis = np.asarray(ds["tth"].values, float)
    px = pixel_size_mm if pixel_size_mm is not None else g_in.translation_step_mm
    if px is None:
        raise InputError("pixel_size_mm: give the pixel size (= translation step) in mm, or store it as "
                         "the phantom geometry's translation_step_mm")
    px = _rt.check_number("pixel_size_mm", px, positive=True)
    L = float(distance_mm)
    if not L > 0:
        raise InputError(f"distance_mm: expected a positive distance (mm) or inf, found {distance_mm!r}")
    eta_v = float(ds.attrs.get("eta", eta))
    instr = float(ds.attrs.get("instrumental_fwhm_deg", instrumental_fwhm_deg))
    size_ref = float(ds.attrs.get("size_nm", size_nm))

    names = [str(p) for p in ds["phase"].values]
    maps = np.asarray(ds["phase_maps"].transpose("phase", "y", "x").values, float)
    n_p, ny, nx = maps.shape
    scale = np.asarray(ds["pattern_scale"].values, float)
    strain = (np.asarray(ds["strain"].transpose("phase", "y", "x").values, float) if "strain" in ds
              else np.zeros_like(maps))
    size = (np.asarray(ds["size"].transpose("phase", "y", "x").values, float) if "size" in ds
            else np.full_like(maps, size_ref))
    eps_u, size_u, varying = np.zeros(n_p), np.full(n_p, size_ref), np.zeros(n_p, bool)
    for k in range(n_p):
        present = maps[k] > 0
        if present.any():
            e, z = strain[k][present], size[k][present]
            eps_u[k], size_u[k] = e[0], z[0]
            varying[k] = bool(np.any(e != e[0]) or np.any(z != z[0]))
    lines = [phase_lines(n, energy_keV=energy) for n in names]

    ang, arange = _scan.resolve_angles(angles, n_angles, angle_range_deg)
    n_t = _rt.check_count("n_translations", n_translations if n_translations is not None else max(ny, nx))
    n_sub = _rt.check_count("n_subrays", n_subrays)
    centre_offset = _rt.check_number("centre_offset", centre_offset)
    s, h = _rt.sample_positions((ny, nx), _rt.check_number("sample_step", sample_step, positive=True), 1.0)
    depth = s * px
    if math.isfinite(L) and L <= np.abs(depth).max():
        raise InputError(f"distance_mm: the detector ({L} mm) must lie beyond the sample "
                         f"(rays reach {np.abs(depth).max():.3g} mm from the axis)")

    # per-depth patterns of the uniform phases: (K, T) with and without parallax
    dists = [L] + ([math.inf] if reference and math.isfinite(L) else [])
    depth_patterns = {}
    for k in range(n_p):
        if varying[k]:
            continue
        pos, inten = _lines_at(lines[k], eps_u[k:k + 1], lam)
        w = _widths(pos, size_u[k], lam, instr)
        keep = _keep_mask(pos, w, tth_axis) & (inten > 0)
        pos, inten, w = pos[keep], inten[keep] * scale[k], w[keep]
        for dist in dists:
            app = apparent_tth(pos[None, :], depth[:, None], dist)  # (K, R)
            depth_patterns[k, dist] = _profiles(tth_axis, app, w[None, :], inten[None, :], eta_v)

    # ray geometry (shared with scan.ray_trace)
    p = _rt.ray_offsets(n_t, centre_offset=centre_offset, n_angles=ang.size)
    sub = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * float(beam_width)
    p_rays = (p.T[:, :, None] + sub[None, None, :]).reshape(ang.size, n_t * n_sub)
    theta = np.deg2rad(ang)
    pad = np.pad(maps, ((0, 0), (1, 1), (1, 1)))
    cshape = pad.shape[1:]
    cols = [pad.reshape(n_p, -1).T]
    if varying.any():
        cols += [(np.pad(maps * strain, ((0, 0), (1, 1), (1, 1)))).reshape(n_p, -1).T,
                 (np.pad(maps * size, ((0, 0), (1, 1), (1, 1)))).reshape(n_p, -1).T]
    table = np.concatenate(cols, axis=1)  # (n_pix, P or 3P)
    n_rays = n_t * n_sub
    per_angle = n_rays * s.size * 4
    chunk = max(1, int(2_000_000 // per_angle))
    out = {dist: np.zeros((n_t, ang.size, tth_axis.size)) for dist in dists}
    wstep = h / n_sub
    for a0 in range(0, ang.size, chunk):
        a1 = min(ang.size, a0 + chunk)
        na = a1 - a0
        y, x = _rt.ray_points((ny, nx), theta[a0:a1], p_rays[a0:a1], s)  # (na, n_rays, K)
        inside = (y > -1) & (y < ny) & (x > -1) & (x < nx)
        flat_idx = np.flatnonzero(inside)  # into (na * n_rays * K)
        pix, wts = _rt.interpolation_weights(y.ravel()[flat_idx] + 1, x.ravel()[flat_idx] + 1, cshape, 1)
        vals = np.einsum("nk,nkc->nc", wts, table[pix])  # (n_inside, P or 3P)
        frac = vals[:, :n_p]
        ray_of = flat_idx // s.size  # local ray index (angle-major)
        k_of = flat_idx % s.size
        for k in range(n_p):
            fk = frac[:, k]
            nz = fk > 1e-12
            if not nz.any():
                continue
            if not varying[k]:
                G = np.bincount(ray_of[nz] * s.size + k_of[nz], fk[nz] * wstep,
                                minlength=na * n_rays * s.size).reshape(na * n_rays, s.size)
                for dist in dists:
                    res = G @ depth_patterns[k, dist]  # (na*n_rays, T)
                    out[dist][:, a0:a1] += res.reshape(na, n_t, n_sub, -1).sum(axis=2).transpose(1, 0, 2)
                continue
            f = fk[nz]
            eps = vals[nz, n_p + k] / f
            siz = vals[nz, 2 * n_p + k] / f
            pos, inten = _lines_at(lines[k], eps, lam)  # (N, R)
            w = _widths(pos, siz[:, None], lam, instr)
            keep = _keep_mask(pos, w, tth_axis) & (inten > 0)
            amp = np.where(keep, inten, 0.0) * scale[k] * (f * wstep)[:, None]
            used = np.flatnonzero(keep.any(axis=0))
            A = sp.csr_matrix((np.ones(f.size), (ray_of[nz], np.arange(f.size))), shape=(na * n_rays, f.size))
            for dist in dists:
                app = apparent_tth(pos[:, used], depth[k_of[nz]][:, None], dist)
                pats = _profiles(tth_axis, app, w[:, used], amp[:, used], eta_v)  # (N, T)
                res = A @ pats
                out[dist][:, a0:a1] += res.reshape(na, n_t, n_sub, -1).sum(axis=2).transpose(1, 0, 2)
    log.debug("parallax_scan: %d phases, %dx%d px, %d x %d rays, L=%g mm, pixel %g mm",
              n_p, ny, nx, n_t, ang.size, L, px)

    geom = g_in.replace(energy_keV=energy, distance_mm=None if math.isinf(L) else L, translation_step_mm=px,
                        angle_range_deg=arange, centre_offset=centre_offset)
    params = dict(distance_mm=L, pixel_size_mm=px, energy_keV=energy, phases=names, n_translations=n_t,
                  n_angles=ang.size, angle_range_deg=arange, centre_offset=centre_offset,
                  sample_step=sample_step, n_subrays=n_sub, beam_width=beam_width)
    prov = _data.provenance("xrdwidgets.sim.thick_sample.parallax_scan", params)
    kw = dict(angle=ang, spectral=tth_axis, geometry=geom, units="1", attrs=prov)
    sino = _data.sinogram_stack(out[L], name="sinogram", **kw)
    dv = {"sinogram": sino}
    if reference:
        dv["reference"] = _data.sinogram_stack(out[math.inf], name="reference", **kw)
        dv["reference"].attrs["long_name"] = "sinogram without parallax (L → ∞)"
    attrs = dict(geom.to_attrs())
    attrs.update(prov)
    attrs["distance_mm"] = L
    return xr.Dataset(dv, attrs=attrs)
