"""Tests of the thick-sample parallax simulator (xrdwidgets.sim.thick_sample)."""
import numpy as np
import pytest

from xrdwidgets.geometry import ScanGeometry
from xrdwidgets.sim.chemical import chemical_phantom
from xrdwidgets.sim.thick_sample import _lines_at, apparent_tth, parallax_scan, phase_lines
from xrdwidgets.sim.patterns import reflection_lines
from xrdwidgets.sim.scan import acquire

E = 60.0
N = 21
C = (N - 1) // 2
PX = 0.5  # mm per pixel


def centroid(tth, prof, centre, half_width):
    m = np.abs(tth - centre) < half_width
    return float((prof[m] * tth[m]).sum() / prof[m].sum())


def test_apparent_tth_formula():
    t = np.array([5.0, 10.0])
    np.testing.assert_allclose(apparent_tth(t, 0.0, 100.0), t)
    np.testing.assert_allclose(apparent_tth(t, 3.0, np.inf), t)
    want = np.rad2deg(np.arctan(97.0 / 100.0 * np.tan(np.deg2rad(t))))
    np.testing.assert_allclose(apparent_tth(t, 3.0, 100.0), want)
    assert np.all(apparent_tth(t, 3.0, 100.0) < t) and np.all(apparent_tth(t, -3.0, 100.0) > t)


@pytest.mark.parametrize("strain", [0.0, 3e-3])
def test_line_lists_match_reflection_lines(strain):
    lines = phase_lines("CeO2", energy_keV=E)
    lam = 12.398419843320026 / E
    pos, inten = _lines_at(lines, np.array([strain]), lam)
    ref = reflection_lines("CeO2", energy_keV=E, strain=strain)
    np.testing.assert_allclose(pos[0], ref.tth, rtol=1e-12)
    np.testing.assert_allclose(inten[0], ref.intensity, rtol=1e-12)


@pytest.fixture(scope="module")
def grain_scan():
    """A one-pixel Ni grain 6 px from the axis along +y, seen at 0° and 180°, L = 200 mm."""
    grain = np.zeros((N, N))
    grain[C + 6, C] = 1.0
    tth = np.linspace(5.0, 7.2, 441)
    ds = chemical_phantom({"Ni": grain}, tth, energy_keV=E, size_nm=1000.0,
                          geometry=ScanGeometry(translation_step_mm=PX))
    return parallax_scan(ds, distance_mm=200.0, angles=[0.0, 180.0], angle_range_deg=(0, 360))


def test_single_grain_peak_at_predicted_apparent_angle(grain_scan):
    tth = grain_scan["tth"].values
    lines = reflection_lines("Ni", energy_keV=E, tth_range=(5.0, 7.2)).tth
    assert lines.size == 2
    shifts = {}
    for j, sign in ((0, 1.0), (1, -1.0)):  # at 0° the beam runs along +y: the grain is nearer the detector
        depth = sign * 6 * PX
        prof = grain_scan["sinogram"].values[C, j]
        ref = grain_scan["reference"].values[C, j]
        for t in lines:
            want = apparent_tth(t, depth, 200.0)
            got = centroid(tth, prof, want, 0.1)
            assert got == pytest.approx(float(want), abs=2e-3)
            assert centroid(tth, ref, t, 0.1) == pytest.approx(t, abs=2e-3)  # no parallax
            shifts[j, t] = got - t
    lo, hi = lines
    for j in (0, 1):
        # sign: nearer the detector → lower 2θ; first order: Δ2θ ≈ -(s/L)·sin 2θ cos 2θ (radians)
        assert np.sign(shifts[j, lo]) == (-1 if j == 0 else 1)
        first_order = np.rad2deg(6 * PX / 200.0 * np.sin(np.deg2rad(lo)) * np.cos(np.deg2rad(lo)))
        assert abs(shifts[j, lo]) == pytest.approx(first_order, rel=0.05)
        # tan 2θ dependence across the two reflections
        ratio = shifts[j, hi] / shifts[j, lo]
        assert ratio == pytest.approx(np.tan(np.deg2rad(hi)) / np.tan(np.deg2rad(lo)), rel=0.02)
    # 180° mirrors the shift
    assert shifts[1, lo] == pytest.approx(-shifts[0, lo], rel=0.02)


@pytest.fixture(scope="module")
def two_phase():
    yy, xx = np.mgrid[:N, :N]
    disc = ((yy - C) ** 2 + (xx - C) ** 2 <= 8 ** 2).astype(float)
    core = ((yy - C - 3) ** 2 + (xx - C + 1) ** 2 <= 2.5 ** 2).astype(float)
    tth = np.linspace(3.0, 9.0, 120)
    return chemical_phantom({"CeO2": 0.5 * disc, "Ni": core}, tth, energy_keV=E,
                            geometry=ScanGeometry(translation_step_mm=PX))


def test_no_parallax_reproduces_ray_traced_scan(two_phase):
    par = parallax_scan(two_phase, distance_mm=1e12, n_angles=7)
    ray = acquire(two_phase, n_angles=7)["sinogram"].values
    assert par["sinogram"].dims == ("translation", "angle", "tth")
    np.testing.assert_allclose(par["sinogram"].values, ray, rtol=0, atol=1e-4 * ray.max())
    np.testing.assert_allclose(par["reference"].values, ray, rtol=0, atol=1e-4 * ray.max())
    inf = parallax_scan(two_phase, distance_mm=np.inf, n_angles=7, reference=False)
    np.testing.assert_allclose(inf["sinogram"].values, ray, rtol=0, atol=1e-4 * ray.max())
    g = ScanGeometry.from_attrs(par.attrs)
    assert g.distance_mm == 1e12 and g.translation_step_mm == PX and g.energy_keV == E


def test_thick_disc_broadens_peaks_symmetrically():
    yy, xx = np.mgrid[:N, :N]
    disc = ((yy - C) ** 2 + (xx - C) ** 2 <= 9 ** 2).astype(float)
    tth = np.linspace(5.3, 6.3, 301)
    ds = chemical_phantom({"Ni": disc}, tth, energy_keV=E, size_nm=1000.0)
    par = parallax_scan(ds, distance_mm=100.0, pixel_size_mm=PX, angles=[30.0])
    prof, ref = par["sinogram"].values[C, 0], par["reference"].values[C, 0]
    t0 = reflection_lines("Ni", energy_keV=E, tth_range=(5.3, 6.3)).tth[0]
    np.testing.assert_allclose(prof.sum(), ref.sum(), rtol=1e-3)  # intensity conserved
    assert prof.max() < 0.5 * ref.max()  # broader, lower
    mean = centroid(tth, prof, t0, 0.4)
    assert abs(mean - t0) < 0.01 * abs(apparent_tth(t0, 9 * PX, 100.0) - t0)  # symmetric about 2θ
    width = np.sqrt(((tth - mean) ** 2 * prof).sum() / prof.sum())
    # a uniform chord from s = -4.5 to +4.5 mm: the apparent 2θ spread of a box, std = full / √12
    full = apparent_tth(t0, -9 * PX, 100.0) - apparent_tth(t0, 9 * PX, 100.0)
    assert width == pytest.approx(full / np.sqrt(12), rel=0.15)


def test_strain_maps_use_local_lines(two_phase):
    """Point-by-point path: two separated Ni grains with different strains, no parallax = ray tracing."""
    yy, xx = np.mgrid[:N, :N]
    g1 = ((yy - C - 4) ** 2 + (xx - C + 3) ** 2 <= 2 ** 2).astype(float)
    g2 = ((yy - C + 4) ** 2 + (xx - C - 3) ** 2 <= 2 ** 2).astype(float)
    strain = 2e-3 * g1 - 1e-3 * g2
    tth = two_phase["tth"].values
    ds = chemical_phantom({"Ni": g1 + g2}, tth, energy_keV=E, strain_maps={"Ni": strain}, size_maps={"Ni": 30.0},
                          geometry=ScanGeometry(translation_step_mm=PX))
    par = parallax_scan(ds, distance_mm=np.inf, n_angles=5)
    ray = acquire(ds, n_angles=5)["sinogram"].values
    np.testing.assert_allclose(par["sinogram"].values, ray, rtol=0, atol=1e-4 * ray.max())
    # with parallax, each grain's peak moves by its own depth: at 0° grain 1 (+y) is nearer the detector
    fine = np.linspace(5.5, 6.0, 251)
    ds = chemical_phantom({"Ni": g1 + g2}, fine, energy_keV=E, strain_maps={"Ni": strain}, size_maps={"Ni": 30.0},
                          geometry=ScanGeometry(translation_step_mm=PX))
    near = parallax_scan(ds, distance_mm=150.0, angles=[0.0])
    t1 = reflection_lines("Ni", energy_keV=E, strain=2e-3, tth_range=(3, 9)).tth[0]
    prof = near["sinogram"].values[C - 3, 0]  # the ray through grain 1 only
    tth = fine
    assert centroid(tth, prof, apparent_tth(t1, 4 * PX, 150.0), 0.05) == pytest.approx(
        float(apparent_tth(t1, 4 * PX, 150.0)), abs=2e-3)


def test_phase_map_input_and_errors(two_phase):
    maps = {str(p): two_phase["phase_maps"].sel(phase=p).values for p in two_phase["phase"].values}
    a = parallax_scan(maps, two_phase["tth"].values, energy_keV=E, distance_mm=300.0, pixel_size_mm=PX, n_angles=3)
    b = parallax_scan(two_phase, distance_mm=300.0, n_angles=3)
    np.testing.assert_allclose(a["sinogram"].values, b["sinogram"].values)
    with pytest.raises(ValueError, match="pixel_size_mm"):
        parallax_scan(maps, two_phase["tth"].values, energy_keV=E, distance_mm=300.0, n_angles=3)
    with pytest.raises(ValueError, match="tth"):
        parallax_scan(maps, distance_mm=300.0, pixel_size_mm=PX, n_angles=3)
    with pytest.raises(ValueError, match="distance_mm"):
        parallax_scan(two_phase, distance_mm=2.0, n_angles=3)
    with pytest.raises(ValueError, match="distance_mm"):
        parallax_scan(two_phase, distance_mm=-5.0, n_angles=3)
