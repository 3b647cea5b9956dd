"""Tests of the differentiable parallax operator (xrdwidgets.ops.parallax).

The oracle is the independent ray-tracing simulator xrdwidgets.sim.thick_sample (same physics,
different code: peak lists placed analytically at their apparent angle, bilinear phase maps).
"""
import numpy as np
import pytest
import torch

from xrdwidgets.geometry import ScanGeometry
from xrdwidgets.ops import ParallaxProjector, ParallelProjector
from xrdwidgets.ops.parallax import INTERPS, apparent_tth, true_tth
from xrdwidgets.sim import thick_sample as simpar
from xrdwidgets.sim.chemical import chemical_phantom
from xrdwidgets.sim.patterns import reflection_lines

E = 60.0
PX = 0.25


def centroids(tth, sino, centre, half_width):
    w = np.abs(tth - centre) < half_width
    area = sino[..., w].sum(-1)
    return (sino[..., w] * tth[w]).sum(-1) / np.maximum(area, 1e-30), area


# ---------------------------------------------------------------------------- formulas
def test_formulas_sign_first_order_and_inverse():
    t = np.array([3.0, 8.0, 15.0, 30.0])
    L = 1000.0
    for s in (-12.0, -1.0, 1.0, 12.0):
        a = apparent_tth(t, s, L, "atan")
        b = apparent_tth(t, s, L, "arcsin")
        np.testing.assert_allclose(a, simpar.apparent_tth(t, s, L), rtol=0, atol=1e-12)  # the simulator's
        first = -np.rad2deg(s / L * np.sin(np.deg2rad(t)) * np.cos(np.deg2rad(t)))
        np.testing.assert_allclose(a - t, first, rtol=0.02)   # Δ2θ ≈ −(s/L) sin2θ cos2θ; u = −s
        np.testing.assert_allclose(b - t, first, rtol=0.02)
        assert np.all(np.sign(a - t) == -np.sign(s))           # nearer the detector: lower 2θ
        # the two formulas differ at second order only: ≤ 0.3 % of the shift here
        assert np.all(np.abs(a - b) <= 3.5e-3 * np.abs(a - t))
        for f in ("atan", "arcsin"):
            back, jac = true_tth(apparent_tth(t, s, L, f), s, L, f, jacobian=True)
            np.testing.assert_allclose(back, t, rtol=0, atol=1e-9)
            h = 1e-4
            num = (true_tth(apparent_tth(t, s, L, f) + h, s, L, f) - true_tth(apparent_tth(t, s, L, f) - h, s, L, f)) / (2 * h)
            np.testing.assert_allclose(jac, num, rtol=1e-6)
    np.testing.assert_allclose(apparent_tth(t, 5.0, np.inf), t)
    with pytest.raises(ValueError, match="formula"):
        apparent_tth(t, 1.0, L, "tan")


# ---------------------------------------------------------------------------- limits and adjoint
def blobs(n, m, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.zeros((n, n, m), np.float32)
    for _ in range(5):
        cy, cx = rng.uniform(-n / 4, n / 4, 2)
        img += (np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (n / 10) ** 2))[..., None]
                * rng.uniform(0.5, 1.0, m)[None, None, :]).astype(np.float32)
    return img


@pytest.mark.parametrize("n_t,offset", [(None, 0.0), (27, 0.7)])
def test_infinite_distance_is_the_plain_projector(n_t, offset):
    n, m = 25, 6
    ang = np.linspace(0, 180, 19, endpoint=False)
    tth = np.linspace(5, 6, m)
    x = blobs(n, m)
    op = ParallaxProjector(n, ang, tth, np.inf, 0.2, n_translations=n_t, centre_offset=offset, device="cpu")
    plain = ParallelProjector(n, ang, n_translations=n_t, centre_offset=offset, device="cpu")
    a, b = op(x), plain(x)
    assert a.shape == b.shape == (n_t or n, ang.size, m)
    # ray-driven (bilinear) vs pixel-driven: equal up to interpolation
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.015  # measured 0.008
    rnd = np.random.default_rng(1).random((n, n, m)).astype(np.float32)
    assert np.linalg.norm(op(rnd) - plain(rnd)) / np.linalg.norm(plain(rnd)) < 0.03


@pytest.mark.parametrize("interp", INTERPS)
@pytest.mark.parametrize("kw", [{}, {"block": 3, "block_bytes": 200_000, "mask": True}])
def test_adjoint_and_autograd(kw, interp, monkeypatch):
    n, m = 15, 20
    ang = np.linspace(0, 180, 11, endpoint=False)
    tth = np.linspace(5.6, 6.1, m)
    op = ParallaxProjector(n, ang, tth, 80.0, 0.5, device="cpu", interp=interp, **kw)
    assert len(op._chunks) > 1 if kw else True
    g = torch.Generator().manual_seed(0)
    x = torch.rand(op.domain_shape, generator=g, dtype=torch.float64)
    y = torch.rand(op.range_shape, generator=g, dtype=torch.float64)
    ax_y = float((op(x) * y).sum())
    x_aty = float((x * op.T(y)).sum())
    assert ax_y == pytest.approx(x_aty, rel=1e-5)
    xr_ = x.clone().requires_grad_(True)
    (op(xr_) * y).sum().backward()
    np.testing.assert_allclose(xr_.grad.numpy(), op.T(y).numpy(), rtol=1e-6, atol=1e-6)
    # the gather path (used on GPUs) gives the same numbers
    monkeypatch.setattr(ParallaxProjector, "_force_gather", True)
    op2 = ParallaxProjector(n, ang, tth, 80.0, 0.5, device="cpu", interp=interp, **kw)
    assert not op2._use_sparse_shift
    assert float((op2(x) * y).sum()) == pytest.approx(float((x * op2.T(y)).sum()), rel=1e-5)
    np.testing.assert_allclose(op2(x).numpy(), op(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(op2.T(y).numpy(), op.T(y).numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- 2θ interpolation
def gauss(t, centre, fwhm):
    return np.exp(-4 * np.log(2) * ((t - centre) / fwhm) ** 2)


def test_cubic_equals_linear_without_shift_and_both_keep_intensity():
    n, m = 21, 120
    ang = np.linspace(0, 180, 12, endpoint=False)
    tth = np.linspace(5.5, 6.1, m)
    ch = tth[1] - tth[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.exp(-((yy - 3) ** 2 + (xx + 2) ** 2) / (2 * 4 ** 2)) * (yy ** 2 + xx ** 2 <= 9 ** 2)
    vol = (img[..., None] * gauss(tth, 5.8 + 0.3 * ch, 1.5 * ch)).astype(np.float32)   # FWHM 1.5 channels
    out = {(L, i): ParallaxProjector(n, ang, tth, L, 0.5, device="cpu", interp=i)(vol)
           for L in (np.inf, 100.0) for i in INTERPS}
    assert np.array_equal(out[np.inf, "linear"], out[np.inf, "cubic"])   # no shift: no interpolation
    area0 = out[np.inf, "linear"].sum(-1)
    rays = area0 > 0.2 * area0.max()
    for i in INTERPS:
        got = out[100.0, i]
        shift = np.abs(np.argmax(got, -1) - np.argmax(out[np.inf, i], -1))[rays]
        assert shift.max() > 10      # measured: up to 17 channels
        ratio = got.sum(-1)[rays] / area0[rays]
        # measured median −1: 5e-4 linear, −2e-4 cubic; max |ratio − 1|: 2.9e-3 / 2.3e-3
        np.testing.assert_allclose(np.median(ratio), 1.0, atol=2e-3)
        assert np.abs(ratio - 1).max() < 5e-3, i


def _fit_fwhm(y):
    """FWHM (channels) of a Gaussian least-squares fit to ±5 channels around the maximum of ``y``."""
    from scipy.optimize import curve_fit

    i = int(np.argmax(y))
    j = np.arange(i - 5, i + 6, dtype=float)
    p, _ = curve_fit(lambda x, a, c, w: a * gauss(x, c, w), j, y[i - 5:i + 6], p0=(y[i], i, 1.5))
    return abs(p[2])


def _moment_fwhm(y):
    """FWHM-equivalent (channels) of the second moment of ``y`` (rows)."""
    j = np.arange(y.shape[-1])
    a = y.sum(-1, keepdims=True)
    c = (y * j).sum(-1, keepdims=True) / a
    return np.sqrt(8 * np.log(2) * ((y * (j - c) ** 2).sum(-1) / a[..., 0]))


def test_cubic_keeps_the_width_of_narrow_peaks():
    """A peak 1.5 channels FWHM, shifted by every fraction of a channel, against the analytic one."""
    tth = np.linspace(5.5, 6.5, 201)
    ch = tth[1] - tth[0]
    centre, fwhm = 6.0 + 0.3 * ch, 1.5 * ch
    err = {}
    for interp in INTERPS:
        op = ParallaxProjector(9, [0.0], tth, 150.0, 0.5, device="cpu", interp=interp)
        V = torch.as_tensor(gauss(tth, centre, fwhm)[None], dtype=torch.float32)
        # the shift stage alone: row k = the pattern as seen from depth bin k
        got = np.concatenate([op._shifted(V, c).numpy() for c in range(len(op._chunks))]).astype(float)
        # reference: the analytic peak at the true angles of the measured channels, with the Jacobian
        true, jac = true_tth(tth[None, :], op.depth_mm[:, None], op.distance_mm, op.formula, jacobian=True)
        want = gauss(true, centre, fwhm) * jac
        frac = np.abs((want * np.arange(tth.size)).sum(-1) / want.sum(-1) - (centre - tth[0]) / ch) % 1
        assert got.shape == want.shape and np.ptp(frac) > 0.9          # all fractional shifts seen
        fit = np.array([_fit_fwhm(g) / _fit_fwhm(w) - 1 for g, w in zip(got, want)])
        err[interp] = (np.abs(_moment_fwhm(got) / _moment_fwhm(want) - 1).max(), np.abs(fit).mean(),
                       np.abs(fit).max())
    # measured (second-moment width error max; fitted-FWHM error mean, max):
    #   linear 0.277; 0.203, 0.347 — a 2-tap blur of variance t(1 − t) channel²
    #   cubic  0.019; 0.115, 0.228
    #   lanczos3 see below
    # Keys cubic reproduces quadratics: its kernel has zero variance, so the second moment is kept
    # up to the aliasing of so narrow a peak and float32 (bound 0.03). Its response still drops at
    # mid frequencies, so the fitted FWHM of a critically sampled peak keeps part of the error
    # (no interpolating kernel restores it; bounds 0.13 mean, 0.25 max); at 2 channels FWHM the
    # fitted error is 0.046 mean (linear 0.113).
    assert err["cubic"][0] < 0.03 < 0.2 < err["linear"][0]
    assert err["cubic"][1] < 0.13 and err["cubic"][1] < 0.7 * err["linear"][1]
    assert err["cubic"][2] < 0.25 and err["cubic"][2] < err["linear"][2]
    # lanczos3 0.014; 0.080, 0.138 — 6 taps, a flatter response: the fitted width is closer still
    # (at 2 channels FWHM 0.014 mean, cubic 0.046); its second moment is kept as well as cubic's
    assert err["lanczos3"][0] < 0.03
    assert err["lanczos3"][1] < 0.8 * err["cubic"][1] and err["lanczos3"][2] < 0.8 * err["cubic"][2]


def test_blocks_and_chunks_do_not_change_the_result():
    n, m = 17, 12
    ang = np.linspace(0, 180, 9, endpoint=False)
    tth = np.linspace(5.7, 6.0, m)
    x = blobs(n, m, 3)
    a = ParallaxProjector(n, ang, tth, 100.0, 0.5, device="cpu")(x)
    b = ParallaxProjector(n, ang, tth, 100.0, 0.5, device="cpu", block=2, block_bytes=100_000,
                          memory_budget=0)(x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(a).max())


# ---------------------------------------------------------------------------- against the simulator
def test_single_grain_seen_at_the_apparent_angle():
    N, C = 21, 10
    grain = np.zeros((N, N))
    grain[C + 6, C] = 1.0
    tth = np.linspace(5.0, 7.2, 441)
    ds = chemical_phantom({"Ni": grain}, tth, energy_keV=E, size_nm=1000.0,
                          geometry=ScanGeometry(translation_step_mm=0.5))
    op = ParallaxProjector(N, [0.0, 180.0], tth, 200.0, 0.5, device="cpu")
    got = op(ds["volume"].values)
    line = reflection_lines("Ni", energy_keV=E, tth_range=(5.0, 7.2)).tth[0]
    for j, depth in ((0, 6 * 0.5), (1, -6 * 0.5)):   # at 0° the beam runs along +y: nearer the detector
        want = float(apparent_tth(line, depth, 200.0))
        c, _ = centroids(tth, got[C, j], want, 0.1)
        assert c == pytest.approx(want, abs=2e-3)


@pytest.fixture(scope="module")
def sim_case():
    """Ni disc + off-centre CeO2 core, 41 px of 0.25 mm, L = 300 mm: CeO2 peaks shift by up to 8 channels."""
    N = 41
    c = (N - 1) / 2
    R = N / 2 - 1
    yy, xx = np.mgrid[:N, :N]
    disc = (((yy - c) ** 2 + (xx - c) ** 2) <= R ** 2).astype(float)
    core = (((yy - c - R / 3) ** 2 + (xx - c + R / 4) ** 2) <= (R / 3) ** 2).astype(float)
    tth = np.linspace(5.3, 6.5, 240)
    ds = chemical_phantom({"Ni": 0.6 * disc, "CeO2": core}, tth, energy_keV=E, size_nm=100.0,
                          geometry=ScanGeometry(translation_step_mm=PX))
    par = simpar.parallax_scan(ds, distance_mm=300.0, n_angles=N)
    return ds, par


_SIM_FORWARD: dict = {}


def sim_forward(sim_case, interp):
    """The operator (``from_stack``, ``interp``) applied to the simulator's volume (cached)."""
    if interp not in _SIM_FORWARD:
        ds, par = sim_case
        op = ParallaxProjector.from_stack(par["sinogram"], device="cpu", interp=interp)
        assert op.distance_mm == 300.0 and op.pixel_mm == PX and op.interp == interp
        _SIM_FORWARD[interp] = op(ds["volume"].values)
    return _SIM_FORWARD[interp]


@pytest.mark.parametrize("interp", INTERPS)
def test_operator_reproduces_the_simulator(sim_case, interp):
    ds, par = sim_case
    tth = ds["tth"].values
    vol = ds["volume"].values
    got = sim_forward(sim_case, interp)
    sim, ref = par["sinogram"].values, par["reference"].values
    got_inf = ParallaxProjector.from_stack(par["sinogram"], distance_mm=np.inf, device="cpu", interp=interp)(vol)
    err = np.linalg.norm(got - sim) / np.linalg.norm(sim)
    err_inf = np.linalg.norm(got_inf - ref) / np.linalg.norm(ref)
    effect = np.linalg.norm(sim - ref) / np.linalg.norm(sim)
    # measured: 0.0073 with parallax (linear 2θ interpolation; cubic: 0.0029), 0.0005 without;
    # the parallax itself: 2.0
    assert effect > 1.0
    assert err_inf < 2e-3
    assert err < 0.015
    if interp != "linear":
        lin = sim_forward(sim_case, "linear")
        assert err <= np.linalg.norm(lin - sim) / np.linalg.norm(sim)
    ch = tth[1] - tth[0]
    for line, name in ((5.822, "Ni"), (6.191, "CeO2")):
        c_got, area_got = centroids(tth, got, line, 0.1)
        c_sim, area_sim = centroids(tth, sim, line, 0.1)
        c_ref, _ = centroids(tth, ref, line, 0.1)
        m = area_sim > 0.2 * area_sim.max()
        shift = np.abs(c_sim - c_ref)[m].max() / ch
        diff = np.abs(c_got - c_sim)[m] / ch
        # measured: max 0.026 / 0.021 channel (both interps); parallax shifts up to 0.4 (Ni, centred) /
        # 8.5 (CeO2) channels
        assert diff.max() < 0.1, name
        np.testing.assert_allclose(np.median(area_got[m] / area_sim[m]), 1.0, atol=2e-3)
        if name == "CeO2":
            assert shift > 5


@pytest.mark.parametrize("interp", INTERPS)
def test_select_channels_matches_the_interior(sim_case, interp):
    ds, par = sim_case
    op = ParallaxProjector.from_stack(par["sinogram"], device="cpu", mask=True, interp=interp)
    vol = ds["volume"].values
    full = op(vol)
    sub = op.select_channels(slice(60, 200))
    assert sub._cache is op._cache and sub.n_channels == 140 and sub.interp == interp
    part = sub(vol[..., 60:200])
    # shifts here reach ±20 channels (the disc's edge at 4.9 mm): away from the sub-range's edges
    # the two agree
    np.testing.assert_allclose(part[..., 25:-25], full[..., 85:175], rtol=1e-5, atol=1e-5 * np.abs(full).max())
    assert np.abs(part[..., :3] - full[..., 60:63]).max() > 1e-3 * np.abs(full).max()  # the edges do not


# ---------------------------------------------------------------------------- construction and errors
def test_from_stack_geometry_and_errors(sim_case):
    _, par = sim_case
    sino = par["sinogram"]
    op = ParallaxProjector.from_stack(sino, device="cpu", formula="arcsin", interp="linear")
    assert op.range_shape == sino.shape and op.formula == "arcsin" and op.interp == "linear"
    assert "ParallaxProjector(n=41" in repr(op) and "interp='linear'" in repr(op)
    assert ParallaxProjector.from_stack(sino, device="cpu").interp == "lanczos3"   # the default
    bare = sino.copy()
    bare.attrs = {k: v for k, v in sino.attrs.items() if k != "geometry_distance_mm"}
    with pytest.raises(ValueError, match="distance_mm"):
        ParallaxProjector.from_stack(bare, device="cpu")
    assert ParallaxProjector.from_stack(bare, distance_mm=500.0, device="cpu").distance_mm == 500.0
    q = sino.rename(tth="q")
    with pytest.raises(ValueError, match="tth"):
        ParallaxProjector.from_stack(q, device="cpu")
    ang, tth = [0.0, 90.0], np.linspace(5, 6, 8)
    bad = [
        ({"n": 0}, "n must"), ({"tth_deg": tth[::-1]}, "increasing"), ({"distance_mm": 1.0}, "beyond"),
        ({"distance_mm": -3.0}, "distance_mm"), ({"pixel_mm": 0.0}, "pixel_mm"), ({"formula": "x"}, "formula"),
        ({"angles_deg": []}, "angles_deg"), ({"block": 0}, "block"), ({"max_shift_step": 0}, "max_shift_step"),
        ({"mask": np.ones((3, 3), bool)}, "mask"), ({"interp": "quadratic"}, "interp"),
        ({"interp": None}, "interp"),
    ]
    base = {"n": 11, "angles_deg": ang, "tth_deg": tth, "distance_mm": 300.0, "pixel_mm": 0.5}
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            ParallaxProjector(**{**base, **change}, device="cpu")
    with pytest.raises(ValueError, match=r"interp must be one of \('linear', 'cubic', 'lanczos3'\), found 'spline'"):
        ParallaxProjector(**base, interp="spline", device="cpu")
    op = ParallaxProjector(**base, device="cpu")
    with pytest.raises(ValueError, match="expected shape"):
        op(np.zeros((11, 11, 7)))
    with pytest.raises(ValueError, match="expected shape"):
        op.T(np.zeros((11, 3, 8)))
    assert op.T.domain_shape == op.range_shape and op.T.T is op


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("interp", INTERPS)
def test_cuda_matches_cpu(interp):
    n, m = 21, 16
    ang = np.linspace(0, 180, 15, endpoint=False)
    tth = np.linspace(5.6, 6.1, m)
    x = torch.as_tensor(blobs(n, m))
    cpu = ParallaxProjector(n, ang, tth, 100.0, 0.5, device="cpu", interp=interp)
    gpu = ParallaxProjector(n, ang, tth, 100.0, 0.5, device="cuda", interp=interp)
    np.testing.assert_allclose(gpu(x.cuda()).cpu().numpy(), cpu(x).numpy(), rtol=1e-4, atol=1e-5)
    y = cpu(x)
    np.testing.assert_allclose(gpu.T(y.cuda()).cpu().numpy(), cpu.T(y).numpy(), rtol=1e-4, atol=1e-5)
