"""Chemical phantoms: phase maps × powder patterns → a volume ``(y, x, tth)`` with its ground truth.

Every pixel's pattern is ``Σ_phase fraction[phase, y, x] · pattern[phase](strain, size)`` (+ an
optional background pattern weighted by the total phase fraction). Patterns come from
:func:`xrdwidgets.sim.patterns.powder_patterns` on their absolute scale (integrated line
intensity independent of crystallite size), times one factor per phase (``pattern_scale``): with
``normalise="max"`` the phase's reference pattern (no strain, ``size_nm``) peaks at 1, and the
strained / size-broadened patterns of that phase keep the same factor, so a smaller crystallite
gives broader, lower peaks of the same area.

Per-pixel patterns are computed only where a strain or size map differs from the reference
values, and only once per distinct (strain, size) pair; everything else is one matrix product.

The returned :class:`xarray.Dataset` holds the volume and its truth: ``volume`` (y, x, tth),
``phase_maps`` (phase, y, x), ``patterns`` (phase, tth), ``pattern_scale`` (phase), and when
given ``strain`` / ``size`` (phase, y, x) and ``background`` (tth); geometry and provenance in
attrs. :func:`xrdwidgets.sim.scan.acquire` scans it; :func:`xrdwidgets.sim.thick_sample.parallax_scan`
re-uses its maps and pattern parameters.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from ..base.errors import InputError
from .. import data as _data
from ..data import DataError
from ..geometry import ScanGeometry

log = logging.getLogger(__name__)

__all__ = ["reference_patterns", "pattern_scales", "chemical_phantom"]


def _patterns_module():
    from . import patterns  # colleagues' module; imported lazily so the error names it

    return patterns


def pattern_scales(phases, tth, *, energy_keV: float, size_nm: float = 50.0, normalise="max",
                   eta: float = 0.5, instrumental_fwhm_deg: float = 0.01) -> np.ndarray:
    """Per-phase factor applied to absolute-scale patterns (``normalise="max"``: 1 / max of the
    phase's reference pattern on ``tth``; ``None``: 1).

    Returns
    -------
    numpy.ndarray, shape (n_phase,)
    """
    raw = _raw_reference(phases, tth, energy_keV=energy_keV, size_nm=size_nm, eta=eta,
                         instrumental_fwhm_deg=instrumental_fwhm_deg)
    return _scales(raw, phases, normalise)


def _raw_reference(phases, tth, *, energy_keV, size_nm, eta, instrumental_fwhm_deg):
    pm = _patterns_module()
    return np.stack([
        pm.powder_pattern(p, tth, energy_keV=energy_keV, size_nm=size_nm, strain=0.0, eta=eta,
                          instrumental_fwhm_deg=instrumental_fwhm_deg, normalise=None)
        for p in phases
    ])


def _scales(raw, phases, normalise):
    if normalise not in ("max", None):
        raise InputError(f"normalise: expected 'max' or None, found {normalise!r}")
    if normalise is None:
        return np.ones(len(phases))
    peak = raw.max(axis=1)
    bad = [p for p, v in zip(phases, peak) if not v > 0]
    if bad:
        raise DataError(f"phases {bad} have no line within the 2θ range "
                        f"(pattern is zero); widen tth or drop them")
    return 1.0 / peak


def reference_patterns(phases, tth, *, energy_keV: float, size_nm: float = 50.0, normalise="max",
                       eta: float = 0.5, instrumental_fwhm_deg: float = 0.01) -> np.ndarray:
    """Reference powder patterns of named phases (no strain, crystallite size ``size_nm``).

    Parameters
    ----------
    phases : sequence of str
        Phase names (see :func:`xrdwidgets.sim.structures.list_phases`).
    tth : array (n_tth,)
        Strictly increasing 2θ in degrees.
    energy_keV : float
    size_nm : float
        Crystallite size (Scherrer width).
    normalise : {"max", None}
        "max": each pattern peaks at 1; None: absolute scale (electrons²/Å⁶ per degree).
    eta, instrumental_fwhm_deg :
        Pseudo-Voigt Lorentzian fraction and instrumental FWHM (deg), as in ``powder_patterns``.

    Returns
    -------
    numpy.ndarray, shape (n_phase, n_tth)
    """
    phases = list(phases)
    raw = _raw_reference(phases, tth, energy_keV=energy_keV, size_nm=size_nm, eta=eta,
                         instrumental_fwhm_deg=instrumental_fwhm_deg)
    return raw * _scales(raw, phases, normalise)[:, None]


# ---------------------------------------------------------------------------- input checks
def _as_map(value, name, shape=None):
    if isinstance(value, xr.DataArray):
        if set(value.dims) != {"y", "x"}:
            raise DataError(f"{name}: expected a DataArray with dims ('y', 'x'), found {value.dims}")
        value = value.transpose("y", "x").values
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D map (y, x), found shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise DataError(f"{name}: expected shape {shape} (the phase maps' shape), found {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: expected finite values, found {int(np.sum(~np.isfinite(arr)))} NaN/inf")
    return arr


def _phase_maps(phase_maps):
    if isinstance(phase_maps, xr.DataArray):
        if "phase" not in phase_maps.dims:
            raise DataError(f"phase_maps: expected a dict name -> (y, x) map or a DataArray (phase, y, x), "
                            f"found dims {phase_maps.dims}")
        phase_maps = {str(p): phase_maps.sel(phase=p) for p in phase_maps["phase"].values}
    if not isinstance(phase_maps, dict) or not phase_maps:
        raise DataError(f"phase_maps: expected a non-empty dict phase name -> (y, x) map, "
                        f"found {type(phase_maps).__name__}")
    names = [str(k) for k in phase_maps]
    first = _as_map(next(iter(phase_maps.values())), f"phase_maps[{names[0]!r}]")
    maps = np.stack([_as_map(v, f"phase_maps[{k!r}]", first.shape) for k, v in phase_maps.items()])
    if np.any(maps < 0):
        k = int(np.argmax((maps < 0).reshape(len(names), -1).any(axis=1)))
        raise DataError(f"phase_maps[{names[k]!r}]: expected fractions >= 0, found min {maps[k].min():.3g}")
    return names, maps


def _per_phase_maps(value, names, shape, name, default):
    """dict / single map / scalar / None → (n_phase, ny, nx) array and the given flag per phase."""
    given = np.zeros(len(names), bool)
    out = np.full((len(names),) + shape, float(default))
    if value is None:
        return out, given
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise DataError(f"{name}: keys {unknown} are not phases of phase_maps {names}")
        for k, v in value.items():
            i = names.index(k)
            out[i] = _as_map(v, f"{name}[{k!r}]", shape) if np.ndim(v) else float(v)
            given[i] = True
        return out, given
    if np.ndim(value) == 0:
        out[:] = float(value)
    else:
        out[:] = _as_map(value, name, shape)[None]
    given[:] = True
    return out, given


def _background(background, tth):
    if background is None:
        return None
    if isinstance(background, xr.DataArray):
        background = background.values
    bg = np.asarray(background, float)
    if bg.ndim == 0:
        bg = np.full(tth.size, float(bg))
    if bg.shape != tth.shape or not np.all(np.isfinite(bg)):
        raise DataError(f"background: expected a number or a finite pattern of {tth.size} values (tth), "
                        f"found shape {bg.shape}")
    return bg


# ---------------------------------------------------------------------------- the phantom
def chemical_phantom(phase_maps, tth, *, energy_keV: float, strain_maps=None, size_maps=None,
                     size_nm: float = 50.0, geometry: ScanGeometry | None = None, background=None,
                     normalise="max", eta: float = 0.5, instrumental_fwhm_deg: float = 0.01) -> xr.Dataset:
    """A chemical (XRD-CT) phantom: phase maps × powder patterns, with the truth kept.

    Parameters
    ----------
    phase_maps : dict[str, array (y, x)] or DataArray (phase, y, x)
        Volume fraction (≥ 0) of each phase per pixel, keyed by phase name (``"Ni"``, ``"CeO2"``,
        …), e.g. ``{"Ni": phantom.raster(n)}``. All maps share one shape ``(ny, nx)``.
    tth : array (n_tth,)
        Strictly increasing 2θ axis in degrees.
    energy_keV : float
        X-ray energy.
    strain_maps : dict[str, array (y, x) or float], array (y, x) or float, optional
        Isotropic lattice strain ε per pixel (d → d(1 + ε)); a single map / number applies to
        every phase; phases left out have ε = 0.
    size_maps : like ``strain_maps``, optional
        Crystallite size in nm per pixel; phases left out have ``size_nm``.
    size_nm : float
        Crystallite size of the reference patterns (and where no size map is given).
    geometry : ScanGeometry, optional
        Stored in attrs (its ``translation_step_mm`` is the pixel size); ``energy_keV`` is set.
    background : float or array (n_tth,), optional
        Pattern added to every pixel × its total phase fraction (e.g. amorphous scattering).
    normalise : {"max", None}
        Per-phase scale, see the module docstring.
    eta, instrumental_fwhm_deg :
        Pseudo-Voigt Lorentzian fraction and instrumental FWHM in degrees.

    Returns
    -------
    xarray.Dataset
        ``volume`` (y, x, tth), ``phase_maps`` (phase, y, x), ``patterns`` (phase, tth),
        ``pattern_scale`` (phase); ``strain`` / ``size`` (phase, y, x) and ``background`` (tth)
        when given. Attrs: geometry, provenance and the pattern parameters (``energy_keV``,
        ``size_nm``, ``eta``, ``instrumental_fwhm_deg``, ``normalise``).
    """
    pm = _patterns_module()
    if normalise not in ("max", None):
        raise InputError(f"normalise: expected 'max' or None, found {normalise!r}")
    names, maps = _phase_maps(phase_maps)
    n_p, ny, nx = maps.shape
    tth = np.asarray(tth, float).ravel()
    energy_keV = float(energy_keV)
    strain, strain_given = _per_phase_maps(strain_maps, names, (ny, nx), "strain_maps", 0.0)
    size, size_given = _per_phase_maps(size_maps, names, (ny, nx), "size_maps", size_nm)
    if np.any(strain <= -1):
        raise DataError(f"strain_maps: expected strain > -1, found min {strain.min():.3g}")
    if np.any(size <= 0):
        raise DataError(f"size_maps: expected sizes > 0 nm, found min {size.min():.3g}")
    bg = _background(background, tth)
    kw = dict(energy_keV=energy_keV, eta=eta, instrumental_fwhm_deg=instrumental_fwhm_deg)

    raw = _raw_reference(names, tth, size_nm=size_nm, **kw)  # (P, T), absolute scale
    scale = _scales(raw, names, normalise)
    ref = raw * scale[:, None]
    vol = (maps.reshape(n_p, -1).T @ ref).reshape(ny, nx, tth.size)
    n_special = 0
    for k, name in enumerate(names):
        if not (strain_given[k] or size_given[k]):
            continue
        sel = (maps[k] > 0) & ((strain[k] != 0.0) | (size[k] != size_nm))
        if not sel.any():
            continue
        pairs, inverse = np.unique(np.stack([strain[k][sel], size[k][sel]], axis=1), axis=0,
                                   return_inverse=True)
        pats = pm.powder_patterns(name, tth, strain=pairs[:, 0], size_nm=pairs[:, 1], normalise=None,
                                  **kw) * scale[k]
        vol[sel] += maps[k][sel][:, None] * (pats[inverse.ravel()] - ref[k][None, :])
        n_special += int(pairs.shape[0])
    if bg is not None:
        vol += maps.sum(axis=0)[:, :, None] * bg[None, None, :]
    log.debug("chemical_phantom: %d phases, %dx%d px, %d channels, %d distinct strained/sized patterns",
              n_p, ny, nx, tth.size, n_special)

    geom = (geometry or ScanGeometry()).replace(energy_keV=energy_keV)
    params = dict(phases=names, energy_keV=energy_keV, size_nm=size_nm, normalise=normalise, eta=eta,
                  instrumental_fwhm_deg=instrumental_fwhm_deg, strain_maps=bool(strain_given.any()),
                  size_maps=bool(size_given.any()), background=bg is not None)
    prov = _data.provenance("xrdwidgets.sim.chemical.chemical_phantom", params)
    da = _data.volume(vol, spectral=tth, geometry=geom, units="1", attrs=prov)
    da.attrs["long_name"] = "diffracted intensity per unit path"
    yx = {"y": da["y"], "x": da["x"]}
    dv = {
        "volume": da,
        "phase_maps": xr.DataArray(maps, dims=("phase", "y", "x"), coords={"phase": names, **yx},
                                   attrs={"units": "1", "long_name": "phase volume fraction"}),
        "patterns": xr.DataArray(ref, dims=("phase", "tth"), coords={"phase": names, "tth": da["tth"]},
                                 attrs={"units": "1", "long_name": "reference pattern (no strain, size_nm)"}),
        "pattern_scale": xr.DataArray(scale, dims=("phase",), coords={"phase": names},
                                      attrs={"units": "1", "long_name": "factor on absolute-scale patterns"}),
    }
    if strain_given.any():
        dv["strain"] = xr.DataArray(strain, dims=("phase", "y", "x"), coords={"phase": names, **yx},
                                    attrs={"units": "1", "long_name": "isotropic lattice strain"})
    if size_given.any():
        dv["size"] = xr.DataArray(size, dims=("phase", "y", "x"), coords={"phase": names, **yx},
                                  attrs={"units": "nm", "long_name": "crystallite size"})
    if bg is not None:
        dv["background"] = xr.DataArray(bg, dims=("tth",), coords={"tth": da["tth"]},
                                        attrs={"units": "1", "long_name": "background per unit phase fraction"})
    attrs = dict(geom.to_attrs())
    attrs.update(prov)
    attrs.update({"energy_keV": energy_keV, "size_nm": float(size_nm), "eta": float(eta),
                  "instrumental_fwhm_deg": float(instrumental_fwhm_deg),
                  "normalise": "none" if normalise is None else str(normalise)})
    return xr.Dataset(dv, attrs=attrs)
