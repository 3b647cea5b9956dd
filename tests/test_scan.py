"""Tests of the pencil-beam scan simulator (xrdwidgets.sim.scan)."""
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from xrdwidgets.data import DataError
from xrdwidgets.geometry import ScanGeometry
from xrdwidgets.sim import scan
from xrdwidgets.sim.scan import (acquire, acquire_analytic, acquisition_order, air_scatter, beam_decay,
                                 interpolation_weights, ray_trace)


def smooth_image(n, *, sigma=(3.5, 3.0), centre=(3.0, -4.0), cut=False):
    """Anisotropic Gaussian well inside the inscribed circle, axes (y, x) (``cut``: zero outside it)."""
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n].astype(float)
    img = np.exp(-0.5 * (((yy - c - centre[0]) / sigma[0]) ** 2 + ((xx - c - centre[1]) / sigma[1]) ** 2))
    if cut:
        img[(yy - c) ** 2 + (xx - c) ** 2 > (n // 2) ** 2] = 0.0
    return img


def gaussian_line_integrals(n, angles, *, sigma, centre, n_t=None):
    """Exact line integrals (pixel units) of ``smooth_image``: a Gaussian along any line."""
    n_t = n if n_t is None else n_t
    th = np.deg2rad(angles)[None, :]
    p = (np.arange(n_t) - (n_t - 1) / 2)[:, None]
    sy, sx = sigma
    y0, x0 = centre
    # projection of the centre onto the translation axis, and the projected variance
    p0 = x0 * np.cos(th) - y0 * np.sin(th)
    var = (sx * np.cos(th)) ** 2 + (sy * np.sin(th)) ** 2
    return 2 * np.pi * sx * sy / np.sqrt(2 * np.pi * var) * np.exp(-0.5 * (p - p0) ** 2 / var)


@pytest.fixture(scope="module")
def tth():
    return np.linspace(3.0, 9.0, 40)


# ----------------------------------------------------------------------------- the ray tracer
def test_ray_trace_matches_skimage_radon_odd_n():
    skt = pytest.importorskip("skimage.transform")
    n = 41
    img = smooth_image(n, cut=True)
    theta = np.linspace(0, 180, 24, endpoint=False)
    ref = skt.radon(img, theta, circle=True)
    out = ray_trace(img, theta)
    assert out.shape == ref.shape == (n, theta.size)
    assert np.abs(out - ref).max() < 1e-2 * ref.max()


@pytest.mark.parametrize("order", [1, 3])
def test_ray_trace_matches_exact_line_integrals(order):
    n, sigma, centre = 41, (3.5, 3.0), (3.0, -4.0)
    theta = np.linspace(0, 360, 30, endpoint=False)
    exact = gaussian_line_integrals(n, theta, sigma=sigma, centre=centre)
    out = ray_trace(smooth_image(n, sigma=sigma, centre=centre), theta, order=order)
    tol = 1e-2 if order == 1 else 1e-3  # bilinear smooths a little; cubic B-splines are closer
    assert np.abs(out - exact).max() < tol * exact.max()


def test_ray_trace_of_raster_converges_to_exact_line_integrals():
    from xrdwidgets.sim.phantoms import Ellipse, Phantom

    ph = Phantom((Ellipse(1.0, (0.2, -0.1), (0.5, 0.3), 30.0), Ellipse(0.5, (-0.4, 0.3), (0.2, 0.2), 0.0)))
    theta = np.linspace(0, 180, 20, endpoint=False)
    errors = []
    for n in (33, 65):
        exact = ph.in_pixels(n).line_integrals(np.arange(n) - (n - 1) / 2, theta)
        out = ray_trace(ph.raster(n), theta)
        errors.append(np.linalg.norm(out - exact) / np.linalg.norm(exact))
    # sharp edges on a pixel grid: a few % at n = 33 (skimage's radon has the same), ~1/n
    assert errors[0] < 0.06 and errors[1] < 0.6 * errors[0]


def test_ray_trace_vectorised_over_channels_and_subrays():
    rng = np.random.default_rng(1)
    vol = ndimage.gaussian_filter(rng.random((21, 21, 3)), (1.5, 1.5, 0))
    theta = [0.0, 33.0, 90.0, 201.0]
    full = ray_trace(vol, theta, n_translations=17, n_subrays=3)
    for c in range(3):
        np.testing.assert_allclose(full[:, :, c], ray_trace(vol[:, :, c], theta, n_translations=17, n_subrays=3),
                                   rtol=1e-12, atol=1e-12)
    # a box beam of one step is the average of the line integrals across the step
    fine = ray_trace(vol[:, :, 0], theta, n_translations=17 * 5, translation_step=0.2)
    box = fine.reshape(17, 5, len(theta)).mean(axis=1)
    np.testing.assert_allclose(ray_trace(vol[:, :, 0], theta, n_translations=17, n_subrays=5), box,
                               rtol=1e-10, atol=1e-10)


def test_ray_trace_chunking_does_not_change_result():
    img = smooth_image(25, sigma=(3, 3), centre=(1, 1))
    theta = np.linspace(0, 180, 13, endpoint=False)
    np.testing.assert_allclose(ray_trace(img, theta, max_entries=10), ray_trace(img, theta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 3])
def test_interpolation_weights_match_map_coordinates(order):
    rng = np.random.default_rng(2)
    img = rng.random((12, 15))
    y = rng.uniform(2.0, 9.0, 50)
    x = rng.uniform(2.0, 12.0, 50)
    coef = img if order == 1 else ndimage.spline_filter(img, order=3, mode="mirror")
    pix, w = interpolation_weights(y, x, img.shape, order)
    mine = (coef.ravel()[pix] * w).sum(axis=1)
    ref = ndimage.map_coordinates(coef, [y, x], order=order, mode="mirror", prefilter=False)
    np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_interpolation_weights_reject_points_outside():
    with pytest.raises(ValueError, match="pad"):
        interpolation_weights(np.array([0.5]), np.array([-0.5]), (4, 4), 1)


def test_centre_offset_and_jitter_shift_the_projections():
    img = smooth_image(31, sigma=(3, 3), centre=(0, 0))
    theta = np.linspace(0, 180, 6, endpoint=False)
    base = ray_trace(img, theta, n_translations=31)
    off = ray_trace(img, theta, n_translations=31, centre_offset=2.0)
    np.testing.assert_allclose(off[2:], base[:-2], atol=1e-9)  # +offset → towards higher indices
    shifts = np.array([0, 1, -1, 3, 0, -2])
    jit = ray_trace(img, theta, n_translations=31, shifts=shifts)
    for j, k in enumerate(shifts):
        np.testing.assert_allclose(jit[3:-3, j], np.roll(base[:, j], k)[3:-3], atol=1e-9)


def test_ray_trace_bad_input():
    with pytest.raises(DataError, match="shape"):
        ray_trace(np.zeros(5), [0.0])
    with pytest.raises(ValueError, match="angles_deg"):
        ray_trace(np.zeros((4, 4)), [])
    with pytest.raises(ValueError, match="order"):
        ray_trace(np.zeros((4, 4)), [0.0], order=2)
    with pytest.raises(ValueError, match="shifts"):
        ray_trace(np.zeros((4, 4)), [0.0, 1.0], shifts=[1.0])
    with pytest.raises(ValueError, match="sample_step"):
        ray_trace(np.zeros((4, 4)), [0.0], sample_step=0)


# ----------------------------------------------------------------------------- scan orders and models
def test_acquisition_orders():
    idx, line = acquisition_order(3, 4, "raster")
    np.testing.assert_array_equal(idx[:, 1], [3, 4, 5])
    np.testing.assert_array_equal(line, [0, 1, 2, 3])
    idx, _ = acquisition_order(3, 4, "zigzag")
    np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(idx[:, 1], [5, 4, 3])
    idx, line = acquisition_order(3, 4, "interlaced", n_subsets=2)
    np.testing.assert_array_equal(line, [0, 2, 1, 3])  # angles 0, 2 then 1, 3
    np.testing.assert_array_equal(idx[:, 2], [3, 4, 5])
    idx, line = acquisition_order(3, 4, "interlaced-zigzag", n_subsets=2)
    np.testing.assert_array_equal(idx[:, 2], [5, 4, 3])
    for order in scan.SCAN_ORDERS:
        idx, _ = acquisition_order(5, 7, order, n_subsets=3)
        np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(35))
    with pytest.raises(ValueError, match="scan_order"):
        acquisition_order(3, 4, "spiral")


def test_beam_decay_models():
    t = np.linspace(0, 1, 100, endpoint=False)
    e = beam_decay(t, "exponential", strength=0.3)
    assert e[0] == 1 and np.isclose(beam_decay(1.0, "exponential", strength=0.3), 0.7) and np.all(np.diff(e) < 0)
    s = beam_decay(t, "topup", strength=0.1, period=0.25)
    assert s.min() >= 0.9 - 1e-12 and s.max() <= 1
    assert np.sum(np.diff(s) > 0) == 3  # three refills within the scan
    np.testing.assert_allclose(beam_decay(t, lambda u: 1 - 0.5 * u), 1 - 0.5 * t)
    with pytest.raises(ValueError, match="decay"):
        beam_decay(t, "linear")
    with pytest.raises(ValueError, match="decay_strength"):
        beam_decay(t, "exponential", strength=1.5)


def test_air_scatter_is_smooth_and_strongest_at_low_angle(tth):
    a = air_scatter(tth, amplitude=2.0)
    assert a[0] == pytest.approx(2.0) and np.all(np.diff(a) < 0) and a[-1] > 0


# ----------------------------------------------------------------------------- acquire
@pytest.fixture(scope="module")
def phantom_ds(tth):
    from xrdwidgets.sim.chemical import chemical_phantom

    n = 25
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n]
    disc = ((yy - c) ** 2 + (xx - c) ** 2 <= 9.5 ** 2).astype(float)
    core = ((yy - c - 3) ** 2 + (xx - c + 2) ** 2 <= 4 ** 2).astype(float)
    return chemical_phantom({"CeO2": disc - core, "Ni": core}, tth, energy_keV=60.0,
                            geometry=ScanGeometry(translation_step_mm=0.01))


def test_acquire_clean_dataset(phantom_ds):
    ds = acquire(phantom_ds, n_angles=12)
    assert isinstance(ds, xr.Dataset)
    assert ds["sinogram"].dims == ("translation", "angle", "tth")
    assert ds.sizes == {"translation": 25, "angle": 12, "tth": 40}
    vol = phantom_ds["volume"].values
    np.testing.assert_allclose(ds["sinogram"].values, ray_trace(vol, ds["angle"].values), rtol=1e-12)
    np.testing.assert_allclose(ds["ideal"].values, ds["sinogram"].values)
    g = ScanGeometry.from_attrs(ds["sinogram"].attrs)
    assert g.energy_keV == 60.0 and g.translation_step_mm == 0.01 and g.angle_range_deg == (0.0, 180.0)
    assert ds["translation"].attrs["units"] == "mm"
    assert "provenance_parameters" in ds.attrs
    np.testing.assert_array_equal(ds["acquisition_index"].values, acquisition_order(25, 12)[0])


def test_acquire_measurement_model_truths(phantom_ds):
    ds = acquire(phantom_ds, n_angles=10, angle_range_deg=(0, 360), n_translations=29, scan_order="zigzag",
                 decay="exponential", decay_strength=0.25, air=0.1, jitter=0.7, centre_offset=1.5, seed=3)
    assert ds.attrs["geometry_centre_offset"] == 1.5
    assert ds.attrs["geometry_angle_range_deg"] == [0.0, 360.0]
    np.testing.assert_allclose(ds["angle"].values, np.arange(10) * 36.0)
    jit = ds["jitter"].values
    assert jit.shape == (10,) and np.std(jit) > 0.1
    # the clean measurement is decay × (ray-traced sample at the shifted positions + air)
    vol = phantom_ds["volume"].values
    sample = ray_trace(vol, ds["angle"].values, n_translations=29, centre_offset=1.5, shifts=jit)
    expect = ds["decay_point"].values[:, :, None] * (sample + ds["air"].values)
    np.testing.assert_allclose(ds["sinogram"].values, expect, rtol=1e-10)
    np.testing.assert_allclose(ds["ideal"].values, ray_trace(vol, ds["angle"].values, n_translations=29), rtol=1e-10)
    # per-projection decay: constant along each line, decreasing with the line's acquisition time
    dp = ds["decay_point"].values
    np.testing.assert_allclose(dp, dp[:1].repeat(29, axis=0))
    assert np.all(np.diff(ds["decay"].values[np.argsort(ds["line_index"].values)]) < 0)
    # air is 10 % of the brightest ideal point, strongest at low 2θ
    assert ds["air"].max() == pytest.approx(0.1 * float(ds["ideal"].max()))


def test_interlaced_decay_follows_acquisition_time(phantom_ds):
    ds = acquire(phantom_ds, n_angles=8, scan_order="interlaced", n_subsets=2, decay="exponential",
                 decay_per_point=True)
    d = ds["decay"].values
    assert d[2] > d[1]  # angle 2 is measured before angle 1
    dp = ds["decay_point"].values
    assert np.all(np.diff(dp[:, 0]) < 0)  # per point: decays along the line too


def test_acquire_poisson_noise_is_seeded(phantom_ds):
    a = acquire(phantom_ds, n_angles=6, dose=500.0, seed=7)
    b = acquire(phantom_ds, n_angles=6, dose=500.0, seed=7)
    c = acquire(phantom_ds, n_angles=6, dose=500.0, seed=8)
    np.testing.assert_array_equal(a["sinogram"].values, b["sinogram"].values)
    assert not np.array_equal(a["sinogram"].values, c["sinogram"].values)
    assert a["clean"].max() == pytest.approx(500.0)
    assert a["sinogram"].attrs["units"] == "counts"
    s, m = a["sinogram"].values, a["clean"].values
    assert np.all(s == np.round(s)) and s.min() >= 0
    # Poisson: variance ≈ mean
    z = (s - m)[m > 50] / np.sqrt(m[m > 50])
    assert abs(z.mean()) < 0.1 and 0.85 < z.std() < 1.15
    np.testing.assert_allclose(a["ideal"].values, acquire(phantom_ds, n_angles=6)["sinogram"].values * a.attrs["scale"])


def test_acquire_array_volume_and_errors(phantom_ds):
    vol = phantom_ds["volume"].values
    ds = acquire(vol, angles=[0.0, 45.0, 90.0])
    assert ds["sinogram"].dims == ("translation", "angle", "channel")
    with pytest.raises(ValueError, match="n_angles"):
        acquire(vol)
    with pytest.raises(ValueError, match="increasing"):
        acquire(vol, angles=[90.0, 0.0])
    with pytest.raises(DataError, match="shape"):
        acquire(vol[:, :, 0], n_angles=3)
    with pytest.raises(ValueError, match="jitter"):
        acquire(vol, n_angles=3, jitter=[0.1, 0.2])
    with pytest.raises(ValueError, match="decay"):
        acquire(vol, n_angles=3, decay=[1.0, 0.5])
    with pytest.raises(ValueError, match="air"):
        acquire(vol, n_angles=3, air=np.ones(7))
    with pytest.raises(ValueError, match="dose"):
        acquire(vol, n_angles=3, dose=-1)
    with pytest.raises(DataError, match="extra dims"):
        acquire(phantom_ds["volume"].expand_dims(z=[0.0, 1.0]), n_angles=3)


# ----------------------------------------------------------------------------- analytic path
def test_acquire_analytic_matches_ray_traced_raster(tth):
    from xrdwidgets.sim.chemical import chemical_phantom
    from xrdwidgets.sim.phantoms import Circle, Ellipse, Phantom

    n = 31
    phantoms = {"CeO2": Phantom((Circle(1.0, (0.0, 0.0), 0.8), Ellipse(-1.0, (0.1, 0.2), (0.35, 0.25), 20.0))),
                "Ni": Ellipse(1.0, (0.1, 0.2), (0.35, 0.25), 20.0)}
    ana = acquire_analytic(phantoms, tth, n=n, energy_keV=60.0, n_angles=15)
    assert ana["sinogram"].dims == ("translation", "angle", "tth")
    assert list(ana["patterns"]["phase"].values) == ["CeO2", "Ni"]
    maps = {k: (v.raster(n) if hasattr(v, "raster") else None) for k, v in phantoms.items()}
    ray = acquire(chemical_phantom(maps, tth, energy_keV=60.0), n_angles=15)
    a, r = ana["sinogram"].values, ray["sinogram"].values
    assert np.linalg.norm(a - r) < 0.03 * np.linalg.norm(a)
    np.testing.assert_allclose(ana["patterns"].values, ray_patterns := chemical_phantom(
        maps, tth, energy_keV=60.0)["patterns"].values)
    assert ray_patterns.max() == pytest.approx(1.0)


def test_acquire_analytic_offset_and_jitter(tth):
    from xrdwidgets.sim.phantoms import Circle

    pats = {"Ni": np.linspace(1, 2, tth.size)}
    ph = {"Ni": Circle(1.0, (0.3, -0.2), 0.3).in_pixels(21)}
    jit = np.array([0.0, 1.0, -2.0, 0.5])
    ds = acquire_analytic(ph, tth, patterns=pats, n_angles=4, jitter=jit, centre_offset=1.0, decay=[1, 0.9, 0.8, 0.7])
    base = acquire_analytic(ph, tth, patterns=pats, n_angles=4)["sinogram"].values
    s = ds["sinogram"].values / np.array([1, 0.9, 0.8, 0.7])[None, :, None]
    for j, k in enumerate(1.0 + jit):
        if float(k).is_integer():
            np.testing.assert_allclose(s[:, j], np.roll(base[:, j], int(k), axis=0), atol=1e-9)
    np.testing.assert_allclose(ds["ideal"].values, base)
    with pytest.raises(ValueError, match="n="):
        from xrdwidgets.sim.phantoms import Circle as C

        acquire_analytic({"Ni": C(1.0, (0, 0), 0.5)}, tth, patterns=pats, n_angles=3)
    with pytest.raises(ValueError, match="patterns"):
        acquire_analytic(ph, tth, patterns={"Cu": pats["Ni"]}, n_angles=3)
