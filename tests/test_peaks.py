"""Peak profiles, backgrounds and PeakModel: analytic values, simulator agreement, numpy/torch."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import brentq

from xrdwidgets.analysis import peaks
from xrdwidgets.analysis.peaks import PeakModel, background, gaussian, lorentzian, pseudo_voigt
from xrdwidgets.sim.patterns import pseudo_voigt as sim_pseudo_voigt

PROFILES = {
    "gaussian": lambda x, a, c, w: gaussian(x, a, c, w),
    "lorentzian": lambda x, a, c, w: lorentzian(x, a, c, w),
    "pv0.3": lambda x, a, c, w: pseudo_voigt(x, a, c, w, 0.3),
    "pv0.8": lambda x, a, c, w: pseudo_voigt(x, a, c, w, 0.8),
}


@pytest.mark.parametrize("name", list(PROFILES))
def test_area_is_integral(name):
    f = PROFILES[name]
    area, centre, fwhm = 2.5, 1.0, 0.2
    total, _ = quad(lambda x: f(x, area, centre, fwhm), -np.inf, np.inf, limit=200)
    assert total == pytest.approx(area, rel=1e-7)


@pytest.mark.parametrize("name", list(PROFILES))
def test_fwhm_is_full_width_at_half_maximum(name):
    f = PROFILES[name]
    area, centre, fwhm = 1.7, 3.0, 0.37
    half = f(centre, area, centre, fwhm) / 2
    left = brentq(lambda x: f(x, area, centre, fwhm) - half, centre - 5 * fwhm, centre)
    right = brentq(lambda x: f(x, area, centre, fwhm) - half, centre, centre + 5 * fwhm)
    assert right - left == pytest.approx(fwhm, rel=1e-9)
    assert np.argmax(f(np.linspace(2, 4, 2001), area, centre, fwhm)) == 1000  # maximum at the centre


def test_heights_analytic():
    w = 0.4
    assert gaussian(0.0, 1.0, 0.0, w) == pytest.approx(2 * math.sqrt(math.log(2) / math.pi) / w)
    assert lorentzian(0.0, 1.0, 0.0, w) == pytest.approx(2 / (math.pi * w))
    # Lorentzian at u = 1/2 FWHM is half the height; Gaussian exp(-ln 2) too
    assert lorentzian(w / 2, 1.0, 0.0, w) == pytest.approx(lorentzian(0.0, 1.0, 0.0, w) / 2)


def test_eta_endpoints_and_linearity():
    x = np.linspace(-1, 1, 301)
    np.testing.assert_allclose(pseudo_voigt(x, 2.0, 0.1, 0.3, 0.0), gaussian(x, 2.0, 0.1, 0.3), rtol=1e-14)
    np.testing.assert_allclose(pseudo_voigt(x, 2.0, 0.1, 0.3, 1.0), lorentzian(x, 2.0, 0.1, 0.3), rtol=1e-14)
    mix = 0.25 * lorentzian(x, 2.0, 0.1, 0.3) + 0.75 * gaussian(x, 2.0, 0.1, 0.3)
    np.testing.assert_allclose(pseudo_voigt(x, 2.0, 0.1, 0.3, 0.25), mix, rtol=1e-13)


@pytest.mark.parametrize("eta", [0.0, 0.4, 1.0])
def test_agrees_with_simulator_profile(eta):
    x = np.linspace(4.0, 6.0, 401)
    ours = pseudo_voigt(x, 3.0, 5.1, 0.07, eta)
    theirs = 3.0 * sim_pseudo_voigt(x, 5.1, 0.07, eta)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_numpy_and_torch_broadcast_alike():
    x = np.linspace(0, 1, 50)
    a = np.array([[1.0], [2.0], [3.0]])
    c = np.array([[0.3], [0.5], [0.7]])
    w = np.full((3, 1), 0.1)
    e = np.array([[0.0], [0.5], [1.0]])
    out_np = pseudo_voigt(x, a, c, w, e)
    assert out_np.shape == (3, 50)
    t = [torch.as_tensor(v) for v in (x, a, c, w, e)]
    out_t = pseudo_voigt(*t)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (3, 50)
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-14)
    # a leading batch of any shape
    out = gaussian(torch.as_tensor(x), torch.ones(2, 4, 1), torch.full((2, 4, 1), 0.5), torch.full((2, 4, 1), 0.1))
    assert out.shape == (2, 4, 50)


def test_torch_autograd_through_profile():
    x = torch.linspace(0, 1, 64, dtype=torch.float64)
    p = torch.tensor([1.0, 0.45, 0.1, 0.3], dtype=torch.float64, requires_grad=True)
    y = pseudo_voigt(x, p[0], p[1], p[2], p[3]).sum()
    y.backward()
    assert torch.all(torch.isfinite(p.grad))
    # d/d area of Σ profile = Σ profile / area
    assert p.grad[0].item() == pytest.approx(y.item() / 1.0)


def test_background_scaled_abscissa():
    x = np.linspace(10.0, 12.0, 5)
    t = peaks.background_abscissa(x)
    np.testing.assert_allclose(t, [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(background(x, np.array([2.0])), 2.0)
    np.testing.assert_allclose(background(x, np.array([1.0, 3.0])), 1 + 3 * t)
    np.testing.assert_allclose(background(x, np.array([[1.0, 0.0, 2.0]])), [1 + 2 * t ** 2])
    bt = background(torch.as_tensor(x), torch.tensor([[1.0, 3.0]], dtype=torch.float64))
    np.testing.assert_allclose(bt.numpy(), [1 + 3 * t])


def test_peak_model_layout():
    m = PeakModel()
    assert m.param_names == ["area_0", "position_0", "fwhm_0", "eta_0", "bg_0", "bg_1"]
    assert m.n_params == 6
    m2 = PeakModel(n_peaks=2, profile="gaussian", background="quadratic")
    assert m2.param_names == ["area_0", "position_0", "fwhm_0", "area_1", "position_1", "fwhm_1",
                              "bg_0", "bg_1", "bg_2"]
    assert PeakModel(1, "lorentzian", "none").n_params == 3
    assert PeakModel(1, "gaussian", "constant").param_names[-1] == "bg_0"
    assert m == PeakModel(1, "pseudo_voigt", "linear")
    assert eval(repr(m), {"PeakModel": PeakModel}) == m
    assert m.index("eta_0") == 3
    units = m.param_units("deg", "counts")
    assert units["position_0"] == "deg" and units["area_0"] == "counts·deg" and units["eta_0"] == "1"
    assert units["bg_1"] == "counts"


def test_peak_model_evaluate_numpy_torch():
    m = PeakModel(n_peaks=2)
    x = np.linspace(0, 10, 200)
    p = np.array([[3.0, 4.0, 0.3, 0.2, 1.0, 6.0, 0.5, 0.9, 0.5, 0.1]])
    y = m.evaluate(x, p)
    expect = (pseudo_voigt(x, 3.0, 4.0, 0.3, 0.2) + pseudo_voigt(x, 1.0, 6.0, 0.5, 0.9)
              + 0.5 + 0.1 * peaks.background_abscissa(x))
    np.testing.assert_allclose(y[0], expect, rtol=1e-13)
    yt = m.evaluate(torch.as_tensor(x), torch.as_tensor(p))
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-13)
    assert m.evaluate(x, p[0]).shape == (200,)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_peaks": 0}, "n_peaks"), ({"n_peaks": 1.5}, "n_peaks"), ({"profile": "voigt"}, "profile"),
    ({"background": "cubic"}, "background"),
])
def test_peak_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PeakModel(**kwargs)


def test_evaluate_rejects_wrong_param_count():
    with pytest.raises(ValueError, match="n_params=6"):
        PeakModel().evaluate(np.linspace(0, 1, 10), np.zeros((3, 5)))


def test_default_bounds():
    m = PeakModel()
    x = np.linspace(2.0, 3.0, 101)
    lo, hi = m.default_bounds(x)
    assert lo.shape == hi.shape == (6,)
    assert (lo[1], hi[1]) == (2.0, 3.0)
    assert lo[2] == pytest.approx(0.005) and hi[2] == pytest.approx(1.0)
    assert (lo[3], hi[3]) == (0.0, 1.0)
    assert lo[0] == 0 and np.isinf(hi[0]) and np.isinf(lo[4]) and np.isinf(hi[5])
    data = np.ones((4, 101))
    _, hi2 = m.default_bounds(x, data)
    assert hi2[0] == pytest.approx(10 * 101 * 0.01)
    with pytest.raises(ValueError, match="101 channels"):
        m.default_bounds(x, np.ones((4, 100)))


def test_initial_guess_from_data():
    m = PeakModel()
    x = np.linspace(5.0, 6.0, 101)
    truth = np.array([[40.0, 5.43, 0.08, 0.4, 100.0, 12.0], [10.0, 5.61, 0.05, 0.9, 20.0, -3.0]])
    data = m.evaluate(x, truth)
    g = m.initial_guess(x, data)
    assert g.shape == (2, 6)
    np.testing.assert_allclose(g[:, 1], truth[:, 1], atol=0.006)       # within a channel
    np.testing.assert_allclose(g[:, 2], truth[:, 2], rtol=0.25)        # half-max width
    np.testing.assert_allclose(g[:, 0], truth[:, 0], rtol=0.35)        # area from the sum
    np.testing.assert_allclose(g[:, 3], 0.5)
    gt = m.initial_guess(torch.as_tensor(x), torch.as_tensor(data))
    assert isinstance(gt, torch.Tensor)
    np.testing.assert_allclose(gt.numpy(), g)
    # inside the default bounds
    lo, hi = m.default_bounds(x)
    assert np.all(g >= lo) and np.all(g <= hi)


def test_initial_guess_two_peaks_and_positions_hint():
    m = PeakModel(n_peaks=2, profile="gaussian", background="constant")
    x = np.linspace(0.0, 10.0, 501)
    truth = np.array([5.0, 3.0, 0.3, 2.0, 7.0, 0.4, 0.5])
    data = m.evaluate(x, truth)
    g = m.initial_guess(x, data)
    assert sorted(g[[1, 4]]) == pytest.approx([3.0, 7.0], abs=0.03)
    g2 = m.initial_guess(x, data, positions=[7.0, 3.0])
    assert g2[1] == pytest.approx(7.0, abs=0.03) and g2[4] == pytest.approx(3.0, abs=0.03)
    with pytest.raises(ValueError, match="positions"):
        m.initial_guess(x, data, positions=[3.0])
    with pytest.raises(ValueError, match="n_channels"):
        m.initial_guess(x[:-1], data)
