"""Conversions between the spectral axes of diffraction data.

All functions are vectorised over NumPy arrays (scalars work too).

Units used throughout the package:

==========  ======  ==========================================
quantity    unit    meaning
==========  ======  ==========================================
``tth``     deg     scattering angle 2θ
``q``       1/Å     momentum transfer, q = 4π sin(θ) / λ
``d``       Å       lattice spacing, d = λ / (2 sin θ) = 2π / q
``energy``  keV     photon energy (energy-dispersive data)
λ           Å       wavelength, λ = hc / E
==========  ======  ==========================================
"""
from __future__ import annotations

import numpy as np
from .base.errors import InputError

#: h·c in keV·Å (CODATA 2018: 12.398419843320026 keV·Å).
HC_KEV_ANGSTROM = 12.398419843320026

__all__ = [
    "HC_KEV_ANGSTROM",
    "wavelength_from_energy",
    "energy_from_wavelength",
    "tth_to_q",
    "q_to_tth",
    "tth_to_d",
    "d_to_tth",
    "q_to_d",
    "d_to_q",
    "energy_to_d",
    "d_to_energy",
    "energy_to_q",
    "q_to_energy",
]


def _positive(name, value):
    arr = np.asarray(value, dtype=float)
    if np.any(~np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(f"{name} must be finite and > 0; found {value!r}")
    return arr


def _ret(arr):
    return float(arr) if np.ndim(arr) == 0 else arr


def wavelength_from_energy(energy_keV):
    """Wavelength in Å of photons of ``energy_keV`` keV (λ = hc/E)."""
    return _ret(HC_KEV_ANGSTROM / _positive("energy_keV", energy_keV))


def energy_from_wavelength(wavelength_A):
    """Photon energy in keV for a wavelength in Å (E = hc/λ)."""
    return _ret(HC_KEV_ANGSTROM / _positive("wavelength_A", wavelength_A))


def tth_to_q(tth_deg, wavelength_A):
    """2θ in degrees → q in 1/Å for wavelength ``wavelength_A`` (Å)."""
    lam = _positive("wavelength_A", wavelength_A)
    return _ret(4.0 * np.pi * np.sin(np.deg2rad(np.asarray(tth_deg, float)) / 2.0) / lam)


def q_to_tth(q, wavelength_A):
    """q in 1/Å → 2θ in degrees; raises if q·λ/4π > 1 (not reachable)."""
    lam = _positive("wavelength_A", wavelength_A)
    s = np.asarray(q, float) * lam / (4.0 * np.pi)
    if np.any(np.abs(s) > 1):
        raise InputError(
            f"q = {np.max(np.abs(q)):.4g} 1/Å is beyond the limit 4π/λ = {4 * np.pi / lam:.4g} 1/Å "
            f"for wavelength {float(lam):.4g} Å"
        )
    return _ret(np.rad2deg(2.0 * np.arcsin(s)))


def tth_to_d(tth_deg, wavelength_A):
    """2θ in degrees → d-spacing in Å (Bragg's law, d = λ / 2 sin θ)."""
    lam = _positive("wavelength_A", wavelength_A)
    s = np.sin(np.deg2rad(np.asarray(tth_deg, float)) / 2.0)
    with np.errstate(divide="ignore"):
        return _ret(lam / (2.0 * s))


def d_to_tth(d_A, wavelength_A):
    """d-spacing in Å → 2θ in degrees; raises if λ/2d > 1 (reflection not reachable)."""
    lam = _positive("wavelength_A", wavelength_A)
    s = lam / (2.0 * _positive("d_A", d_A))
    if np.any(s > 1):
        raise InputError(
            f"d = {np.min(d_A):.4g} Å is below the limit λ/2 = {float(lam) / 2:.4g} Å for wavelength "
            f"{float(lam):.4g} Å"
        )
    return _ret(np.rad2deg(2.0 * np.arcsin(s)))


def q_to_d(q):
    """q in 1/Å → d in Å (d = 2π / q)."""
    return _ret(2.0 * np.pi / _positive("q", q))


def d_to_q(d_A):
    """d in Å → q in 1/Å (q = 2π / d)."""
    return _ret(2.0 * np.pi / _positive("d_A", d_A))


def energy_to_d(energy_keV, tth_deg):
    """Energy-dispersive: photon energy in keV at fixed 2θ (deg) → d in Å."""
    lam = HC_KEV_ANGSTROM / _positive("energy_keV", energy_keV)
    return tth_to_d(tth_deg, lam)


def d_to_energy(d_A, tth_deg):
    """Energy-dispersive: d in Å at fixed 2θ (deg) → photon energy in keV."""
    s = np.sin(np.deg2rad(_positive("tth_deg", tth_deg)) / 2.0)
    return _ret(HC_KEV_ANGSTROM / (2.0 * _positive("d_A", d_A) * s))


def energy_to_q(energy_keV, tth_deg):
    """Energy-dispersive: photon energy in keV at fixed 2θ (deg) → q in 1/Å."""
    return d_to_q(energy_to_d(energy_keV, tth_deg))


def q_to_energy(q, tth_deg):
    """Energy-dispersive: q in 1/Å at fixed 2θ (deg) → photon energy in keV."""
    return d_to_energy(q_to_d(q), tth_deg)
