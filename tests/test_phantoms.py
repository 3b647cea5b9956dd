"""Analytic phantoms: exact chords, exact rasters, and their mutual consistency."""
import math

import numpy as np
import pytest

from xrdwidgets.sim import phantoms as P
from xrdwidgets.sim.phantoms import (
    Circle,
    Ellipse,
    Phantom,
    PixelPhantom,
    Polygon,
    Rectangle,
    pixel_centres,
    skimage_radon_geometry,
)

L_SHAPE = ((-0.6, -0.6), (0.5, -0.6), (0.5, -0.1), (-0.1, -0.1), (-0.1, 0.6), (-0.6, 0.6))


def numeric_chords(shape, t, theta_deg, step=4e-5):
    """Chord lengths by dense point sampling along each beam (independent of the closed forms)."""
    th = np.deg2rad(theta_deg)
    s = np.arange(-1.5, 1.5, step) + step / 2
    # beam (θ, t): x cos θ - y sin θ = t, direction (sin θ, cos θ)
    x = t[:, None] * np.cos(th)[:, None] + s[None, :] * np.sin(th)[:, None]
    y = -t[:, None] * np.sin(th)[:, None] + s[None, :] * np.cos(th)[:, None]
    return shape.contains(x, y).sum(axis=1) * step


# --------------------------------------------------------------------------- geometry
def test_pixel_centres_symmetric_about_index_half_n_minus_one():
    for n in (1, 4, 5, 256):
        c = pixel_centres(n)
        assert c.shape == (n,)
        np.testing.assert_allclose(c, -c[::-1], atol=1e-15)
        np.testing.assert_allclose(np.interp((n - 1) / 2, np.arange(n), c), 0.0, atol=1e-15)
        np.testing.assert_allclose(np.diff(c), 2.0 / n)


def test_angle_and_translation_directions():
    # θ = 0: t = x ; θ = 90°: t = -y (t grows towards row 0)
    disk = Circle(1.0, (0.0, 0.5), 0.1)  # below the centre as displayed (y grows with row)
    t = np.linspace(-1, 1, 2001)
    p = disk.line_integrals(t, [0.0, 90.0])
    assert t[np.argmax(p[:, 0])] == pytest.approx(0.0, abs=1e-3)
    assert t[np.argmax(p[:, 1])] == pytest.approx(-0.5, abs=1e-3)
    # a shape's angle turns the same way as the beam angle: at θ = φ the half-width is a
    e = Ellipse(1.0, (0, 0), (0.4, 0.1), 35.0)
    widths = e.chord_lengths(t, [35.0, 125.0]) > 0
    assert t[widths[:, 0]].max() == pytest.approx(0.4, abs=2e-3)
    assert t[widths[:, 1]].max() == pytest.approx(0.1, abs=2e-3)
    # counter-clockwise as displayed: first axis of φ = 90° points to row 0 (−y)
    up = Ellipse(1.0, (0, 0), (0.5, 0.05), 90.0)
    assert up.contains(0.0, -0.45) and not up.contains(0.45, 0.0)


def test_rotation_centre_and_translation_offset():
    t = np.linspace(-1, 1, 101)
    theta = np.linspace(0, 360, 37)
    disk = Circle(1.0, (0.3, -0.2), 0.25)
    # a disk on the rotation axis gives the same projection at every angle
    p = disk.line_integrals(t, theta, rotation_centre=(0.3, -0.2))
    np.testing.assert_allclose(p, p[:, :1] * np.ones((1, theta.size)), atol=1e-12)
    np.testing.assert_allclose(p[:, 0], 2 * np.sqrt(np.maximum(0.25 ** 2 - t ** 2, 0)), atol=1e-12)
    # translation_offset shifts the sinogram along t
    e = Ellipse(1.0, (0.1, 0.2), (0.3, 0.2), 20)
    np.testing.assert_allclose(e.line_integrals(t + 0.07, theta, translation_offset=0.07),
                               e.line_integrals(t, theta), atol=1e-12)


# --------------------------------------------------------------------------- chords
def test_circle_chord_formula():
    c = Circle(2.5, (0.1, -0.2), 0.5)
    t = np.linspace(-1, 1, 41)
    theta = np.array([0.0, 17.0, 90.0, 200.0, 333.0])
    th = np.deg2rad(theta)
    d = t[:, None] - (0.1 * np.cos(th) + 0.2 * np.sin(th))[None, :]
    expected = 2.5 * 2 * np.sqrt(np.maximum(0.25 - d ** 2, 0))
    np.testing.assert_allclose(c.line_integrals(t, theta), expected, atol=1e-13)
    assert (c.line_integrals(t, theta) == 0).any()  # beams that miss


def test_rotated_ellipse_chords_match_numerical_integration():
    rng = np.random.default_rng(1)
    e = Ellipse(1.0, (0.15, -0.1), (0.55, 0.2), 37.0)
    t = rng.uniform(-0.6, 0.6, 40)
    theta = rng.uniform(0, 360, 40)
    exact = np.array([e.chord_lengths([ti], [thi])[0, 0] for ti, thi in zip(t, theta)])
    np.testing.assert_allclose(exact, numeric_chords(e, t, theta), atol=2e-4)
    assert (exact > 0).sum() > 20


def test_square_chords_match_geometry():
    sq = Polygon(1.0, ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)))
    t = np.linspace(-0.9, 0.9, 37) + 0.0123  # no beam exactly along an edge
    p = sq.chord_lengths(t, [0.0, 45.0, 90.0, 135.0, 270.0])
    inside = np.abs(t) < 0.5
    np.testing.assert_allclose(p[:, 0], np.where(inside, 1.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(p[:, 2], np.where(inside, 1.0, 0.0), atol=1e-12)
    diag = np.maximum(math.sqrt(2) - 2 * np.abs(t), 0.0)  # 45°: a triangle of height √2
    np.testing.assert_allclose(p[:, 1], diag, atol=1e-12)
    np.testing.assert_allclose(p[:, 3], diag, atol=1e-12)
    # reversed vertex order, and the same square as a Rectangle, give the same chords
    rev = Polygon(1.0, sq.vertices[::-1])
    rect = Rectangle(1.0, (0, 0), (1.0, 1.0), 90.0)
    np.testing.assert_allclose(rev.chord_lengths(t, [10.0, 70.0]), sq.chord_lengths(t, [10.0, 70.0]), atol=1e-12)
    np.testing.assert_allclose(rect.chord_lengths(t, [10.0, 70.0]), sq.chord_lengths(t, [10.0, 70.0]), atol=1e-12)


def test_rectangle_and_nonconvex_polygon_chords_match_numerical_integration():
    rng = np.random.default_rng(2)
    t = rng.uniform(-0.7, 0.7, 30)
    theta = rng.uniform(0, 360, 30)
    for shape in (Rectangle(1.0, (0.1, 0.05), (0.7, 0.3), 25.0), Polygon(1.0, L_SHAPE)):
        exact = np.array([shape.chord_lengths([a], [b])[0, 0] for a, b in zip(t, theta)])
        np.testing.assert_allclose(exact, numeric_chords(shape, t, theta), atol=2e-4)


# --------------------------------------------------------------------------- rasters
@pytest.mark.parametrize("shape", [
    Ellipse(0.7, (0.2, -0.3), (0.4, 0.15), 30.0),
    Ellipse(1.0, (0.013, 0.0), (0.005, 0.002), 10.0),  # smaller than a pixel
    Circle(2.0, (-0.1, 0.2), 0.33),
    Rectangle(1.5, (0.1, 0.1), (0.5, 0.3), 20.0),
    Polygon(-0.4, L_SHAPE),
])
def test_raster_mass_is_value_times_area(shape):
    n = 64
    h = 2.0 / n
    assert shape.raster(n).sum() * h * h == pytest.approx(shape.mass, rel=1e-10, abs=1e-15)
    frac = shape.area_fraction(n)
    assert frac.min() >= 0.0 and frac.max() <= 1.0
    # the exact fractions agree with brute-force point sampling
    s = 64
    sampled = shape.area_fraction(n, supersample=s)
    assert np.abs(frac - sampled).max() < 0.05
    xmin, xmax, ymin, ymax = shape.bounds
    perimeter = 2 * ((xmax - xmin) + (ymax - ymin))  # bounding-box perimeter: a rough scale of the boundary length
    assert np.abs(frac - sampled).sum() * h * h < perimeter * h / s


def test_ellipse_area_formula_at_several_sizes():
    e = Ellipse(3.0, (0.05, 0.1), (0.61, 0.27), -50.0)
    for n in (7, 64, 255):
        assert e.raster(n).sum() * (2.0 / n) ** 2 == pytest.approx(3.0 * math.pi * 0.61 * 0.27, rel=1e-10)


def test_phantom_adds_values():
    a = Circle(1.0, (0, 0), 0.5)
    b = Rectangle(-0.3, (0.2, 0), (0.4, 0.2))
    ph = a + b
    assert isinstance(ph, Phantom) and len(ph) == 2
    np.testing.assert_allclose(ph.raster(32), a.raster(32) + b.raster(32))
    t, th = np.linspace(-1, 1, 9), [0.0, 30.0]
    np.testing.assert_allclose(ph.line_integrals(t, th), a.line_integrals(t, th) + b.line_integrals(t, th))
    assert ph.area_fractions(32).shape == (2, 32, 32)
    assert eval(repr(a)) == a  # repr can be pasted back


# --------------------------------------------------------------------------- consistency
def test_integral_over_t_equals_mass_for_every_angle():
    ph = P.random_blobs_phantom(128, 6, seed=3) + P.shepp_logan()
    t = np.linspace(-1.2, 1.2, 4801)
    theta = np.linspace(0, 360, 73)
    p = ph.line_integrals(t, theta)
    assert p.shape == (t.size, theta.size)
    np.testing.assert_allclose(p.sum(axis=0) * (t[1] - t[0]), ph.mass, rtol=2e-4)


@pytest.mark.parametrize("n", [256, 255])
def test_line_integrals_match_skimage_radon(n):
    from skimage.transform import radon

    ph = P.shepp_logan()
    h = 2.0 / n
    theta = np.linspace(0.0, 360.0, 30, endpoint=False)
    t, centre = skimage_radon_geometry(n, circle=True)
    sk = radon(ph.raster(n), theta, circle=True) * h
    ours = ph.line_integrals(t, theta, rotation_centre=centre)
    assert ours.shape == sk.shape == (n, theta.size)
    rel = np.linalg.norm(ours - sk) / np.linalg.norm(ours)
    assert rel < 0.02  # skimage interpolates bilinearly; the error falls as 1/n
    if n % 2 == 0:  # skimage's centre n//2 is half a pixel off (n-1)/2: it matters
        plain = ph.line_integrals(t, theta)
        assert np.linalg.norm(plain - sk) / np.linalg.norm(plain) > 2 * rel
    else:
        assert centre == (0.0, 0.0)


def test_pixel_units_view():
    from skimage.transform import radon

    n = 127
    ph = P.shepp_logan()
    px = ph.in_pixels(n)
    assert isinstance(px, PixelPhantom) and px.shape == (n, n)
    theta = np.array([0.0, 40.0, 90.0, 250.0])
    t_px = np.arange(n) - (n - 1) / 2  # pixels from index (n-1)/2
    p = px.line_integrals(t_px, theta)
    np.testing.assert_allclose(p, ph.line_integrals(t_px * 2 / n, theta) * n / 2)
    sk = radon(px.raster(), theta, circle=True)  # sums over pixels, centre n//2 = (n-1)/2
    assert np.linalg.norm(p - sk) / np.linalg.norm(p) < 0.04  # discretisation error ~ 4/n
    shifted = px.line_integrals(t_px + 1.5, theta, translation_offset=1.5)
    np.testing.assert_allclose(shifted, p, atol=1e-12)
    np.testing.assert_allclose(Circle(1.0, (0, 0), 0.5).in_pixels(8).line_integrals([0.0], [0.0]), [[4.0]])


def test_skimage_radon_geometry_circle_false():
    from skimage.transform import radon

    n = 64
    ph = Phantom([Ellipse(1.0, (0.3, -0.5), (0.45, 0.3), 10.0)])  # reaches outside the circle
    theta = np.array([0.0, 33.0, 90.0, 151.0])
    t, c = skimage_radon_geometry(n, circle=False)
    sk = radon(ph.raster(n), theta, circle=False) * (2.0 / n)
    ours = ph.line_integrals(t, theta, rotation_centre=c)
    assert sk.shape == ours.shape
    assert np.linalg.norm(ours - sk) / np.linalg.norm(ours) < 0.03


# --------------------------------------------------------------------------- named phantoms
def test_shepp_logan_matches_skimage():
    from skimage.data import shepp_logan_phantom
    from skimage.transform import downscale_local_mean

    ref = shepp_logan_phantom()  # 400², point-sampled on linspace(-1, 1, 400), 8-bit levels
    ph = P.shepp_logan()
    g = np.linspace(-1, 1, 400)
    xx, yy = np.meshgrid(g, g)
    sampled = sum(s.value * s.contains(xx, yy) for s in ph)
    assert np.abs(sampled - ref).max() < 0.01  # same ellipses, orientation and values
    small = downscale_local_mean(ref, (4, 4))
    ours = P.shepp_logan_image(100)

    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    assert corr(ours, small) > 0.99
    assert corr(ours[:, ::-1], small) < 0.98  # a mirrored phantom would be caught
    orig = P.shepp_logan_image(64, modified=False)
    assert orig.max() == pytest.approx(2.0) and P.shepp_logan_image(64).max() == pytest.approx(1.0)


def test_voronoi_grains_deterministic():
    n, k = 96, 25
    a, seeds = P.voronoi_grains(n, k, seed=7, radius=0.8, return_seeds=True)
    b = P.voronoi_grains(n, k, seed=7, radius=0.8)
    c = P.voronoi_grains(n, k, seed=8, radius=0.8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (n, n) and a.dtype == np.int32
    assert a.min() == 0 and a.max() <= k and np.unique(a).size > k // 2
    xc = pixel_centres(n)
    xx, yy = np.meshgrid(xc, xc)
    np.testing.assert_array_equal(a == 0, xx ** 2 + yy ** 2 > 0.8 ** 2)
    assert seeds.shape == (k, 2) and np.all(np.hypot(*seeds.T) <= 0.8)
    # the pixel under a seed belongs to that seed's grain
    for label, (x, y) in enumerate(seeds[:5], start=1):
        i, j = int((y + 1) / (2 / n)), int((x + 1) / (2 / n))
        d = np.hypot(seeds[:, 0] - xc[j], seeds[:, 1] - xc[i])
        assert a[i, j] == np.argmin(d) + 1


def test_random_blobs_phantom():
    a = P.random_blobs_phantom(128, 12, seed=5, radius=0.85)
    b = P.random_blobs_phantom(128, 12, seed=5, radius=0.85)
    assert a == b and len(a) == 12
    assert {type(s) for s in a} == {Ellipse, Polygon}
    img = a.raster(128)
    xc = pixel_centres(128)
    xx, yy = np.meshgrid(xc, xc)
    assert np.all(img[np.hypot(xx, yy) > 0.85 + 2 / 128] == 0)
    assert img.sum() * (2 / 128) ** 2 == pytest.approx(a.mass, rel=1e-9)


# --------------------------------------------------------------------------- 3-D
def test_sphere_and_cylinder_volumes():
    n = 48
    h = 2.0 / n
    ball = P.sphere(n, centre=(0.1, -0.05, 0.2), radius=0.5, value=2.0)
    assert ball.shape == (n, n, n)
    assert ball.sum() * h ** 3 == pytest.approx(2.0 * 4 / 3 * math.pi * 0.125, rel=2e-3)
    cyl = P.cylinder(n, 40, centre=(0.2, 0.0), radius=0.3, z_range=(-0.5, 0.25))
    assert cyl.shape == (40, n, n)
    assert cyl.sum() * h ** 3 == pytest.approx(math.pi * 0.09 * 0.75, rel=2e-3)
    full = P.cylinder(n, 10, radius=0.3)
    np.testing.assert_allclose(full, full[:1] * np.ones((10, 1, 1)))


def test_ellipsoid_slice_matches_2d_ellipse_and_shepp_logan_3d():
    n = 64
    e3 = P.ellipsoid(n, 3, centre=(0.1, -0.2, 0.0), axes=(0.5, 0.2, 50.0), angle_deg=30.0, supersample=8)
    e2 = Ellipse(1.0, (0.1, -0.2), (0.5, 0.2), 30.0).raster(n)
    assert np.abs(e3[1] - e2).max() < 0.1 and np.abs(e3[1] - e2).mean() < 2e-3
    vol = P.shepp_logan_3d(48, 9)
    assert vol.shape == (9, 48, 48)
    mid = vol[4]
    sl = P.shepp_logan_image(48)
    assert np.corrcoef(mid.ravel(), sl.ravel())[0, 1] > 0.9


# --------------------------------------------------------------------------- errors & speed
@pytest.mark.parametrize("make, name", [
    (lambda: Ellipse(1.0, (0, 0), (0.0, 0.3)), "axes"),
    (lambda: Ellipse(1.0, (0, 0), (0.2, -0.3)), "axes"),
    (lambda: Ellipse(float("nan"), (0, 0), (0.2, 0.3)), "value"),
    (lambda: Circle(1.0, (0, np.inf), 0.2), "centre"),
    (lambda: Circle(1.0, (0, 0), 0.0), "radius"),
    (lambda: Rectangle(1.0, (0, 0), (1.0, 0.0)), "size"),
    (lambda: Polygon(1.0, ((0, 0), (1, 1))), "vertices"),
    (lambda: Polygon(1.0, ((0, 0), (1, 1), (1, 0), (0, 1))), "vertices"),  # bow tie, area 0
    (lambda: Polygon(1.0, ((0, 0), (1, 0), (1, 1), (0.5, -0.5), (0, 1))), "vertices"),  # self-crossing
    (lambda: Circle().raster(0), "n"),
    (lambda: Circle().raster(2.5), "n"),
    (lambda: Circle().raster(8, supersample=0), "supersample"),
    (lambda: Circle().line_integrals([0.0, np.nan], [0.0]), "translations"),
    (lambda: Circle().line_integrals([0.0], [[0.0, 1.0]]), "angles_deg"),
    (lambda: Circle().line_integrals([0.0], [0.0], translation_offset=np.inf), "translation_offset"),
    (lambda: Phantom([Circle(), "disk"]), "shapes"),
    (lambda: P.voronoi_grains(0, 5), "n"),
    (lambda: P.voronoi_grains(16, 5, radius=-1), "radius"),
    (lambda: P.sphere(16, radius=0), "radius"),
    (lambda: P.cylinder(16, z_range=(1, 0)), "z_range"),
])
def test_bad_input_names_argument(make, name):
    with pytest.raises(ValueError, match=name) as info:
        make()
    assert "found" in str(info.value) and "must" in str(info.value)


def test_line_integrals_large_grid_shape():
    # the speed of this size is measured by benchmarks/bench_sim.py (no wall-clock checks in tests)
    ph = Phantom([Ellipse(1.0, (0.05 * k - 0.25, 0.02 * k), (0.3, 0.1 + 0.02 * k), 15.0 * k) for k in range(10)])
    t = np.linspace(-1, 1, 512)
    theta = np.linspace(0, 180, 800, endpoint=False)
    p = ph.line_integrals(t, theta)
    assert p.shape == (512, 800)
    # every projection carries the phantom's mass (sum of value x ellipse area), at every angle
    mass = sum(np.pi * 0.3 * (0.1 + 0.02 * k) for k in range(10))
    np.testing.assert_allclose(p.sum(axis=0) * (t[1] - t[0]), mass, rtol=2e-3)
