"""The raw-frame simulator (xrdwidgets.sim.frames): rings, solid angle, Eiger layout, parallax."""
import math

import h5py
import numpy as np
import pytest

pytest.importorskip("pyFAI")
pytest.importorskip("hdf5plugin")

from xrdwidgets.integrate import make_integrator  # noqa: E402
from xrdwidgets.sim.frames import GAP_VALUE, detector_tth, gap_mask, render_pattern, simulate_raw_scan  # noqa: E402


@pytest.fixture(scope="module")
def ai():
    return make_integrator(distance_mm=40.0, pixel_size_mm=0.1, shape=(80, 100), wavelength_A=0.2,
                           poni_px=(37.0, 52.5))


def test_rings_at_radius_from_first_principles(ai):
    # a single sharp line at 2θ0; along the row through the PONI its maximum lies at r = d tan 2θ0
    tth = np.linspace(0.5, 12, 5000)
    tth0 = 6.0
    pat = np.exp(-0.5 * ((tth - tth0) / 0.02) ** 2)
    tsub, solid = detector_tth(ai, (80, 100), oversample=4)
    frame = render_pattern(tsub, solid, tth, pat)
    row = 37  # pixel row 37 has its centre at 37.5 px: offset 0.5 px from the PONI row
    cols = np.arange(100) + 0.5
    r = np.hypot((cols - 52.5) * 0.1, 0.5 * 0.1)
    expect = np.degrees(np.arctan(r / 40.0))
    right = cols > 52.5
    c = np.argmax(np.where(right, frame[row], -1))
    pix_deg = math.degrees(0.1 / 40.0)
    assert abs(expect[c] - tth0) < pix_deg
    assert frame[row, c] > 0.3 and frame[row, 30] < 1e-6


def test_solid_angle_is_cos3_of_incidence(ai):
    tth = np.linspace(0.0, 20.0, 400)
    tsub, solid = detector_tth(ai, (80, 100), oversample=1)
    flat = render_pattern(tsub, solid, tth, np.ones_like(tth))
    rows, cols = np.mgrid[:80, :100] + 0.5
    r = np.hypot((rows - 37.0) * 0.1, (cols - 52.5) * 0.1)
    cos3 = (40.0 / np.hypot(r, 40.0)) ** 3
    np.testing.assert_allclose(flat, cos3, rtol=1e-6)
    np.testing.assert_allclose(tsub[..., 0], np.degrees(np.arctan(r / 40.0)), atol=1e-9)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return simulate_raw_scan(tmp_path_factory.mktemp("raw"), n_translations=6, n_angles=4, order="zigzag",
                             frames_per_file=10)


def test_eiger_layout(scan):
    with h5py.File(scan.master, "r") as m:
        links = sorted(k for k in m["entry/data"])
        assert links == ["data_000001", "data_000002", "data_000003"]
        link = m["entry/data"].get("data_000001", getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert m["entry/sample/rotation"].shape == (24,)
        assert m["entry/sample/rotation"].attrs["units"] == "deg"
        pm = m["entry/instrument/detector/detectorSpecific/pixel_mask"][()]
    np.testing.assert_array_equal(pm != 0, gap_mask((64, 64)))
    with h5py.File(scan.data_files[0], "r") as f:
        d = f["entry/data/data"]
        assert d.dtype == np.uint32 and d.chunks == (1, 64, 64)
        assert 32008 in d._filters or "32008" in d._filters  # bitshuffle
        fr = d[0]
    assert np.all(fr[pm != 0] == GAP_VALUE)
    assert np.all(fr[pm == 0] < GAP_VALUE)


def test_motors_follow_the_zigzag_plan(scan):
    with h5py.File(scan.master, "r") as m:
        t = m["entry/sample/translation"][()]
        a = m["entry/sample/rotation"][()]
    cells = scan.plan.frame_cells()
    np.testing.assert_allclose(t, scan.truth["translation"].values[cells[:, 0]])
    np.testing.assert_allclose(a, scan.truth["angle"].values[cells[:, 1]])
    # zigzag: the second line runs backwards
    assert t[5] > t[0] and t[6] > t[11]


def test_poisson_counts_follow_the_truth(tmp_path):
    s = simulate_raw_scan(tmp_path, n_translations=4, n_angles=2, n_spot_frames=0, dose=1000.0, seed=3)
    clean = simulate_raw_scan(tmp_path / "c", n_translations=4, n_angles=2, n_spot_frames=0, dose=None, seed=3)
    with h5py.File(s.data_files[0], "r") as f, h5py.File(clean.data_files[0], "r") as g:
        noisy, ref = f["entry/data/data"][()].astype(float), g["entry/data/data"][()]
    ok = ~gap_mask((64, 64))
    # noise-free frames (dose=None) peak at 1000 like the noisy ones at dose=1000: equal means, Poisson variance
    assert abs(noisy[:, ok].sum() / ref[:, ok].sum() - 1) < 0.01
    z = (noisy[:, ok] - ref[:, ok]) / np.sqrt(np.maximum(ref[:, ok], 1))
    assert 0.8 < z[ref[:, ok] > 20].std() < 1.2


def test_thick_sample_parallax_from_first_principles(tmp_path):
    """Each point draws its rings from its own distance: a ceria grain 2 mm towards the detector
    from the rotation axis shows its (111) ring at atan((d − s) tan 2θ / d) at 0° (beam along +y)
    and unshifted at 90° (beam along +x, the grain beside the axis)."""
    from xrdwidgets.integrate import integrate

    n, k = 7, 2
    grain = np.zeros((n, n))
    grain[3 + k, 3] = 1.0                                 # row cy + k: s = +k pixels at 0°
    kw = dict(n_translations=n, n_angles=2, dose=None, n_spot_frames=0, gaps=False, sample_size_mm=7.0,
              phase_maps={"CeO2": grain}, order="raster", shape=(128, 128), pixel_size_mm=0.09)
    thin = simulate_raw_scan(tmp_path / "thin", **kw)
    thick = simulate_raw_scan(tmp_path / "thick", thick=True, **kw)
    opts = dict(bins=400, radial_range=(3.0, 5.0))
    a, b = integrate(thin.master, thin.poni, **opts), integrate(thick.master, thick.poni, **opts)
    tth = a["tth"].values

    def centre(p):
        i = np.argmax(np.where(np.abs(tth - 3.7) < 0.4, p, 0))
        w = np.abs(tth - tth[i]) < 0.12
        return (p[w] * tth[w]).sum() / p[w].sum()

    d = thin.geometry.distance_mm
    s_mm = k * 7.0 / n
    t0 = np.radians(3.787)   # CeO2 (111) at 60 keV, measured on the thin sample below
    expect = np.degrees(np.arctan((d - s_mm) * np.tan(t0) / d)) - 3.787
    # 0°: the grain is on the central ray (translation 3); 90°: on translation 3 - k
    c_thin0, c_thick0 = centre(a.values[3, 0]), centre(b.values[3, 0])
    c_thin90, c_thick90 = centre(a.values[3 - k, 1]), centre(b.values[3 - k, 1])
    assert abs(c_thin0 - 3.787) < 0.01 and abs(c_thin90 - 3.787) < 0.01
    assert expect < -0.15
    assert abs((c_thick0 - c_thin0) - expect) < 0.02, (c_thick0 - c_thin0, expect)
    assert abs(c_thick90 - c_thin90) < 0.01


def test_a_full_turn_scan_and_its_integration(tmp_path):
    """angle_range_deg=(0, 360): motors, truth and the integrated stack all cover the full turn."""
    from xrdwidgets.integrate import integrate

    scan = simulate_raw_scan(tmp_path / "full", n_translations=4, n_angles=6, shape=(32, 32), dose=None,
                             n_spot_frames=0, gaps=False, angle_range_deg=(0.0, 360.0), order="raster")
    np.testing.assert_allclose(scan.truth["angle"].values, np.arange(6) * 60.0)
    with h5py.File(scan.master) as f:
        rot = np.asarray(f["entry/sample/rotation"])
    assert rot.max() == pytest.approx(300.0)
    st = integrate(scan.master, scan.poni, bins=50, checksums=False)
    np.testing.assert_allclose(st["angle"].values, np.arange(6) * 60.0)
    assert tuple(scan.truth.attrs["geometry_angle_range_deg"]) == (0.0, 360.0)
