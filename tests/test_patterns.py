"""Powder patterns: profiles, Scherrer widths, line positions/intensities, strain, maps, bad input."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from xrdwidgets.conversions import d_to_tth, wavelength_from_energy
from xrdwidgets.sim import patterns
from xrdwidgets.sim.patterns import (
    lorentz_polarisation,
    powder_pattern,
    powder_patterns,
    pseudo_voigt,
    reflection_lines,
    reflection_table,
    scherrer_fwhm,
)
from xrdwidgets.sim.structures import get_phase, list_phases

STRONGEST = {
    "Ni": (1, 1, 1), "Cu": (1, 1, 1), "Al": (1, 1, 1), "Pt": (1, 1, 1), "Fe": (1, 1, 0),
    "Zn": (1, 0, 1), "CeO2": (1, 1, 1), "TiO2": (1, 1, 0), "MgO": (2, 0, 0), "SiC": (1, 1, 1),
    "Si": (1, 1, 1), "LaB6": (1, 1, 0),
}


def fwhm_of(x, y):
    """FWHM of a single peak sampled on x, by linear interpolation of the half-maximum crossings."""
    i = int(np.argmax(y))
    half = y[i] / 2
    lo = np.flatnonzero(y[:i] < half)[-1]
    hi = i + np.flatnonzero(y[i:] < half)[0]
    x_lo = np.interp(half, [y[lo], y[lo + 1]], [x[lo], x[lo + 1]])
    x_hi = np.interp(half, [y[hi], y[hi - 1]], [x[hi], x[hi - 1]])
    return x_hi - x_lo


# ----------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_pseudo_voigt_area_and_fwhm(eta):
    x = np.linspace(-40, 40, 400_001)
    w = 0.7
    y = pseudo_voigt(x, 0.5, w, eta)
    # area inside ±40 of a unit-area profile: Lorentzian tails beyond it are known analytically
    inside = eta * 2 / np.pi * (np.arctan(2 * 39.5 / w) + np.arctan(2 * 40.5 / w)) / 2 + (1 - eta)
    assert np.trapezoid(y, x) == pytest.approx(inside, rel=1e-6)
    assert fwhm_of(x, y) == pytest.approx(w, rel=1e-4)
    peak = eta * 2 / (np.pi * w) + (1 - eta) * 2 * math.sqrt(math.log(2) / math.pi) / w
    assert pseudo_voigt(0.5, 0.5, w, eta) == pytest.approx(peak)


def test_pseudo_voigt_broadcasts_and_checks():
    y = pseudo_voigt(np.linspace(0, 10, 50), np.array([[2.0], [5.0], [7.0]]), 0.3, 0.5)
    assert y.shape == (3, 50)
    with pytest.raises(ValueError, match="fwhm"):
        pseudo_voigt(0.0, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="eta"):
        pseudo_voigt(0.0, 0.0, 1.0, 1.5)


def test_scherrer_formula():
    # β = Kλ/(L cos θ): 10 nm, λ = 0.5 Å, 2θ = 10° → 0.9·0.5/(100·cos 5°) rad
    expected = math.degrees(0.9 * 0.5 / (100 * math.cos(math.radians(5))))
    assert scherrer_fwhm(10.0, 10.0, 0.5) == pytest.approx(expected)
    sizes = np.array([5.0, 10.0, 20.0, 40.0])
    w = scherrer_fwhm(10.0, sizes, 0.5)
    np.testing.assert_allclose(w * sizes, w[0] * sizes[0])  # ∝ 1/size
    assert scherrer_fwhm(10.0, np.inf, 0.5) == 0.0
    assert scherrer_fwhm(10.0, 10.0, 0.5, K=1.0) == pytest.approx(expected / 0.9)
    with pytest.raises(ValueError, match="size_nm"):
        scherrer_fwhm(10.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="tth_deg"):
        scherrer_fwhm(180.0, 10.0, 0.5)


def test_lorentz_polarisation():
    assert lorentz_polarisation(90.0) == pytest.approx(1 / (2 * 0.5 * math.sqrt(0.5)))
    lp = lorentz_polarisation(np.array([5.0, 10.0, 20.0]))
    assert np.all(np.diff(lp) < 0)


# ----------------------------------------------------------------------------- lines


@pytest.mark.parametrize("name", list_phases())
@pytest.mark.parametrize("energy", [30.0, 80.0])
def test_strongest_line_is_the_known_one(name, energy):
    table = reflection_table(name, energy_keV=energy)
    assert tuple(table["hkl"][np.argmax(table["intensity"])]) == STRONGEST[name]


def test_line_positions_follow_bragg_law():
    lam = wavelength_from_energy(60.0)
    tth, intensity = reflection_lines("Ni", energy_keV=60.0)
    np.testing.assert_allclose(tth, d_to_tth(get_phase("Ni").d_spacings(), lam), rtol=1e-12)
    assert np.all(np.diff(tth) >= 0) and np.all(intensity > 0)  # (333) and (511) coincide
    by_wavelength = reflection_lines("ni", wavelength_A=lam)
    np.testing.assert_allclose(by_wavelength.tth, tth)
    np.testing.assert_allclose(by_wavelength.intensity, intensity)
    # Cu Kα1 on Cu: (111) at 43.32° 2θ from a = 3.6150 Å (PDF 04-0836 lists the observed 43.297°)
    tth_cu, _ = reflection_lines("Cu", wavelength_A=1.5406)
    assert tth_cu[0] == pytest.approx(43.30, abs=0.03)


def test_unreachable_reflections_dropped_and_range():
    lam = 2.2  # Å: only d > 1.1 Å reachable
    table = reflection_table("Ni", wavelength_A=lam)
    assert np.all(table["d"] > lam / 2)
    assert len(table["d"]) == int(np.sum(get_phase("Ni").d_spacings() > lam / 2)) < len(get_phase("Ni").reflections)
    tth, _ = reflection_lines("TiO2", energy_keV=30.0, tth_range=(10, 20))
    assert tth.size and tth.min() >= 10 and tth.max() <= 20


def test_line_intensity_definition():
    phase = get_phase("CeO2")
    t = reflection_table(phase, energy_keV=45.0)
    expected = t["multiplicity"] * phase.structure_factors(45.0)[: len(t["tth"])] * lorentz_polarisation(t["tth"])
    np.testing.assert_allclose(t["intensity"], expected / phase.cell_volume**2, rtol=1e-12)


@pytest.mark.parametrize("eps", [1e-3, -2e-3])
def test_strain_shifts_lines(eps):
    lam = wavelength_from_energy(60.0)
    tth0, _ = reflection_lines("Pt", energy_keV=60.0)
    tth1, _ = reflection_lines("Pt", energy_keV=60.0, strain=eps)
    theta = np.deg2rad(tth0) / 2
    approx = np.rad2deg(-2 * eps * np.tan(theta))
    np.testing.assert_allclose(tth1 - tth0, approx, rtol=5e-3)  # first order in ε
    exact = d_to_tth(get_phase("Pt").d_spacings(eps), lam)
    np.testing.assert_allclose(tth1, exact, rtol=1e-12)
    # and in a pattern: the (111) maximum moves by the same amount
    x = np.linspace(tth0[0] - 0.3, tth0[0] + 0.3, 6001)
    p0 = powder_pattern("Pt", x, energy_keV=60.0, size_nm=np.inf, instrumental_fwhm_deg=0.02)
    p1 = powder_pattern("Pt", x, energy_keV=60.0, size_nm=np.inf, instrumental_fwhm_deg=0.02, strain=eps)
    assert x[np.argmax(p1)] - x[np.argmax(p0)] == pytest.approx(approx[0], abs=2e-4)


# ----------------------------------------------------------------------------- patterns


def test_pattern_width_is_quadrature_sum():
    lam = wavelength_from_energy(60.0)
    tth111 = d_to_tth(get_phase("Ni").reflections[0].d, lam)
    x = np.linspace(tth111 - 1.5, tth111 + 1.5, 30001)
    for size, instr in [(20.0, 0.0), (20.0, 0.05), (np.inf, 0.05)]:
        y = powder_pattern("Ni", x, energy_keV=60.0, size_nm=size, eta=0.0, instrumental_fwhm_deg=instr)
        scherrer = scherrer_fwhm(tth111, size, lam)
        assert fwhm_of(x, y) == pytest.approx(math.hypot(scherrer, instr), rel=1e-3)
    small = powder_pattern("Ni", x, energy_keV=60.0, size_nm=10.0, eta=0.0)
    large = powder_pattern("Ni", x, energy_keV=60.0, size_nm=40.0, eta=0.0)
    assert fwhm_of(x, small) > 3 * fwhm_of(x, large)


def test_pattern_normalisation_and_area():
    x = np.linspace(2.0, 12.0, 2001)
    y = powder_pattern("Cu", x, energy_keV=40.0)
    assert y.shape == x.shape and y.max() == pytest.approx(1.0) and y.min() >= 0
    # absolute scale: the integral is the sum of the line intensities (Gaussian lines, far from edges)
    absolute = powder_pattern("Cu", x, energy_keV=40.0, eta=0.0, normalise=None)
    tth, intensity = reflection_lines("Cu", energy_keV=40.0, tth_range=(2.5, 11.5))
    assert np.trapezoid(absolute, x) == pytest.approx(intensity.sum(), rel=1e-4)


def test_patterns_match_direct_evaluation():
    """Blocked float32 sum of powder_patterns vs a float64 sum of pseudo_voigt over lines."""
    lam = wavelength_from_energy(50.0)
    x = np.linspace(3.0, 16.0, 400)
    strain = np.array([-2e-3, 0.0, 1.5e-3])
    size = np.array([8.0, 30.0, np.inf])
    got = powder_patterns("TiO2", x, energy_keV=50.0, strain=strain, size_nm=size, eta=0.4, normalise=None)
    assert got.shape == (3, x.size)
    for i in range(3):
        tth, intensity = reflection_lines("TiO2", energy_keV=50.0, strain=strain[i])
        w = np.hypot(0.01, scherrer_fwhm(tth, size[i], lam))
        ref = (intensity[:, None] * pseudo_voigt(x, tth[:, None], w[:, None], 0.4)).sum(axis=0)
        np.testing.assert_allclose(got[i], ref, rtol=0, atol=1e-4 * ref.max())
        single = powder_pattern("TiO2", x, energy_keV=50.0, strain=strain[i], size_nm=size[i], eta=0.4)
        np.testing.assert_allclose(single, got[i] / got[i].max(), atol=1e-6)


def test_patterns_blocks_and_broadcasting(monkeypatch):
    x = np.linspace(2.0, 14.0, 300)
    strain = np.linspace(-3e-3, 3e-3, 37)
    full = powder_patterns("CeO2", x, energy_keV=60.0, strain=strain, size_nm=25.0)
    monkeypatch.setattr(patterns, "_BLOCK_ELEMENTS", 1)  # one pattern per block
    np.testing.assert_array_equal(powder_patterns("CeO2", x, energy_keV=60.0, strain=strain, size_nm=25.0), full)
    assert powder_patterns("CeO2", x, energy_keV=60.0).shape == (1, x.size)
    assert powder_patterns("CeO2", x, energy_keV=60.0, size_nm=np.full(5, 20.0)).shape == (5, x.size)
    with pytest.raises(ValueError, match="same length"):
        powder_patterns("CeO2", x, energy_keV=60.0, strain=np.zeros(3), size_nm=np.ones(4))


def test_patterns_map_size_runs_quickly():
    rng = np.random.default_rng(0)
    n = 2000
    x = np.linspace(1.0, 20.0, 300)
    out = powder_patterns("Ni", x, energy_keV=60.0, strain=rng.normal(0, 1e-3, n), size_nm=rng.uniform(10, 100, n))
    assert out.shape == (n, 300) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out.max(axis=1), 1.0)


def test_coverage_warning(caplog):
    x = np.linspace(5.0, 100.0, 500)  # at 30 keV, 2θ = 100° is d = 0.27 Å < d_min
    with caplog.at_level(logging.WARNING, logger="xrdwidgets.sim.patterns"):
        powder_pattern("Al", x, energy_keV=30.0)
    assert "reflection table ends" in caplog.text


# ----------------------------------------------------------------------------- xrayutilities


@pytest.mark.parametrize("name", ["CeO2", "TiO2", "Zn", "Pt"])
@pytest.mark.parametrize("energy", [35.0, 87.3])
def test_line_intensities_match_xrayutilities_powder(name, energy):
    """Positions and absolute line strengths against xrayutilities.simpack.PowderDiffraction."""
    xu = pytest.importorskip("xrayutilities")
    phase = get_phase(name)
    a, _, c = phase.lattice[:3]
    el = xu.materials.elements
    lat = xu.materials.SGLattice(
        phase.space_group_number, *((a,) if phase.space_group_number >= 195 else (a, c)),
        atoms=[getattr(el, s.element) for s in phase.sites],
        pos=[(s.wyckoff, *s.coords) if s.coords else s.wyckoff for s in phase.sites],
        b=[s.b_iso for s in phase.sites],
    )
    lam = wavelength_from_energy(energy)
    tth_max = float(d_to_tth(phase.d_min + 1e-6, lam))
    powder = xu.simpack.PowderDiffraction(xu.materials.Crystal(name, lat), en=energy * 1e3, tt_cutoff=tth_max)
    lines = sorted((2 * v["ang"], v["r"]) for v in powder.data.values() if v["active"])
    xu_tth = np.array([t for t, _ in lines])
    xu_int = np.array([r for _, r in lines])

    tth, intensity = reflection_lines(name, energy_keV=energy)
    merged = {}
    for t, i in zip(np.round(tth, 6), intensity):  # lines with equal d, e.g. (333)/(511)
        merged[t] = merged.get(t, 0.0) + i
    ours_tth = np.array(list(merged))
    ours_int = np.array(list(merged.values()))
    assert ours_tth.size == xu_tth.size
    np.testing.assert_allclose(ours_tth, xu_tth, atol=1e-5)
    np.testing.assert_allclose(ours_int / xu_int.max(), xu_int / xu_int.max(), atol=3e-3)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(energy_keV=-5.0), "energy_keV"),
        (dict(energy_keV=0.0), "energy_keV"),
        (dict(), "exactly one of energy_keV and wavelength_A"),
        (dict(energy_keV=30.0, wavelength_A=0.4), "exactly one of energy_keV and wavelength_A"),
        (dict(wavelength_A=-1.0), "wavelength_A"),
        (dict(energy_keV=30000.0), "energy_keV must be within"),
        (dict(energy_keV=30.0, eta=1.2), "eta"),
        (dict(energy_keV=30.0, size_nm=-1.0), "size_nm"),
        (dict(energy_keV=30.0, instrumental_fwhm_deg=-0.1), "instrumental_fwhm_deg"),
        (dict(energy_keV=30.0, size_nm=np.inf, instrumental_fwhm_deg=0.0), "zero width"),
        (dict(energy_keV=30.0, normalise="area"), "normalise"),
        (dict(energy_keV=30.0, strain=-1.0), "strain"),
        (dict(energy_keV=30.0, strain=np.zeros(3)), "powder_patterns"),
    ],
)
def test_powder_pattern_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        powder_pattern("Ni", np.linspace(1, 20, 50), **kwargs)


@pytest.mark.parametrize(
    "tth, match",
    [
        (np.array([1.0, 3.0, 2.0]), r"strictly increasing; found tth\[1\]=3 followed by tth\[2\]=2"),
        (np.linspace(20, 1, 50), "strictly increasing"),
        (np.ones((2, 5)), "1-D"),
        (np.array([]), "1-D"),
        (np.array([0.0, 1.0]), r"within \(0, 180\)"),
        (np.array([1.0, np.nan]), "finite"),
    ],
)
def test_bad_tth_axis(tth, match):
    with pytest.raises(ValueError, match=match):
        powder_patterns("Ni", tth, energy_keV=30.0)


def test_bad_phase_and_range():
    with pytest.raises(KeyError, match="known phases"):
        powder_pattern("kryptonite", np.linspace(1, 20, 50), energy_keV=30.0)
    with pytest.raises(TypeError, match="phase"):
        reflection_lines(42, energy_keV=30.0)
    with pytest.raises(ValueError, match="tth_range"):
        reflection_lines("Ni", energy_keV=30.0, tth_range=(20, 10))
