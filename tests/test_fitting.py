"""Batch peak fitting: recovery of known parameters, bounds, torch vs scipy, progress, bad input.

Test volumes are made with the simulator's profile (xrdwidgets.sim.patterns.pseudo_voigt), not
with the fitting model.
"""
import logging

import numpy as np
import pytest
import torch
import xarray as xr

from xrdwidgets import data
from xrdwidgets.analysis.fitting import jacobian as fitting
from xrdwidgets.analysis.fitting import fit_patterns, fit_volume, fit_volume_scipy, iterate_fit
from xrdwidgets.analysis.peaks import PeakModel, background_abscissa
from xrdwidgets.data import DataError
from xrdwidgets.base.progress import Progress
from xrdwidgets.sim.patterns import pseudo_voigt as sim_pv

TTH = np.linspace(5.0, 6.0, 81)


def simulate(ny=6, nx=7, seed=0, noise=None, tth=TTH, extra=None):
    rng = np.random.default_rng(seed)
    shape = (ny, nx) if extra is None else (extra, ny, nx)
    truth = {
        "area_0": rng.uniform(20.0, 60.0, shape),
        "position_0": rng.uniform(5.35, 5.65, shape),
        "fwhm_0": rng.uniform(0.05, 0.12, shape),
        "eta_0": rng.uniform(0.1, 0.9, shape),
        "bg_0": rng.uniform(50.0, 150.0, shape),
        "bg_1": rng.uniform(-10.0, 10.0, shape),
    }
    t = background_abscissa(tth)
    vals = (truth["area_0"][..., None] * sim_pv(tth, truth["position_0"][..., None], truth["fwhm_0"][..., None],
                                                 truth["eta_0"][..., None])
            + truth["bg_0"][..., None] + truth["bg_1"][..., None] * t)
    if noise == "poisson":
        vals = rng.poisson(vals).astype(float)
    dims = ("y", "x", "tth") if extra is None else ("time", "y", "x", "tth")
    vol = data.volume(vals, dims=dims, spectral=tth)
    return vol, truth


@pytest.fixture(scope="module")
def clean():
    return simulate()


@pytest.fixture(scope="module")
def clean_fit(clean):
    return fit_volume(clean[0], PeakModel(), device="cpu")


def test_recovers_noiseless_parameters(clean, clean_fit):
    vol, truth = clean
    ds = clean_fit
    assert bool(ds["converged"].all())
    for name, value in truth.items():
        np.testing.assert_allclose(ds[name].values, value, rtol=1e-6, atol=1e-8, err_msg=name)
    assert float(ds["rwp"].max()) < 1e-8
    assert ds["rwp"].dims == ("y", "x")


def test_result_layout_and_units(clean, clean_fit):
    ds = clean_fit
    for v in PeakModel().param_names:
        assert v in ds and f"{v}_stderr" in ds
    for v in ("rwp", "chi2", "converged", "n_iter"):
        assert v in ds
    assert ds["position_0"].attrs["units"] == "deg"
    assert ds["fwhm_0"].attrs["units"] == "deg"
    assert ds["eta_0"].attrs["units"] == "1"
    assert ds["area_0"].attrs["units"] == "counts·deg"
    assert ds["bg_0"].attrs["units"] == "counts"
    np.testing.assert_array_equal(ds["x"].values, clean[0]["x"].values)
    assert ds.attrs["model"] == repr(PeakModel())
    assert ds.attrs["fit_range"] == [5.0, 6.0]
    assert "provenance_software" in ds.attrs


def test_recovers_noisy_parameters_within_errors():
    vol, truth = simulate(8, 8, seed=3, noise="poisson")
    ds = fit_volume(vol, PeakModel(), device="cpu", sigma="poisson")
    assert bool(ds["converged"].all())
    # errors normalised by the reported standard errors behave like unit normals
    for name in ("area_0", "position_0", "fwhm_0", "bg_0"):
        z = (ds[name].values - truth[name]) / ds[f"{name}_stderr"].values
        assert np.median(np.abs(z)) < 1.5, name
        assert np.max(np.abs(z)) < 6, name
    np.testing.assert_allclose(ds["position_0"].values, truth["position_0"], atol=6e-3)  # < half a channel
    # Poisson weights: reduced χ² ≈ 1
    assert 0.7 < float(ds["chi2"].median()) < 1.4


def test_torch_matches_scipy_noiseless(clean, clean_fit):
    vol, _ = clean
    mask = np.zeros(vol.shape[:2], bool)
    mask[::2, ::3] = True
    ref = fit_volume_scipy(vol, PeakModel(), mask=mask)
    assert bool(ref["converged"].values[mask].all())
    assert np.isnan(ref["area_0"].values[~mask]).all()
    for name in PeakModel().param_names:
        a = clean_fit[name].values[mask]
        b = ref[name].values[mask]
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-2 * np.median(np.abs(b)))
        assert rel.max() <= 1e-3, name


def test_torch_matches_scipy_with_bounds_and_fixed_parameter():
    vol, truth = simulate(3, 3, seed=5)
    bounds = {"eta": (0.0, 0.0), "fwhm_0": (0.02, 0.07)}
    a = fit_volume(vol, PeakModel(), bounds=bounds, device="cpu")
    b = fit_volume_scipy(vol, PeakModel(), bounds=bounds)
    assert np.all(a["eta_0"].values == 0) and np.all(b["eta_0"].values == 0)
    for ds in (a, b):
        assert np.all(ds["fwhm_0"].values >= 0.02) and np.all(ds["fwhm_0"].values <= 0.07 + 1e-12)
    np.testing.assert_allclose(a["position_0"].values, b["position_0"].values, atol=1e-5)
    np.testing.assert_allclose(a["fwhm_0"].values, b["fwhm_0"].values, rtol=1e-3)


def test_bounds_respected_and_active():
    vol, truth = simulate(4, 4, seed=1)
    ds = fit_volume(vol, PeakModel(), bounds={"fwhm_0": (0.02, 0.04), "area_0": (None, 30.0)}, device="cpu")
    assert np.all(ds["fwhm_0"].values <= 0.04 + 1e-12) and np.all(ds["fwhm_0"].values >= 0.02)
    assert np.all(ds["area_0"].values <= 30.0 + 1e-12) and np.all(ds["area_0"].values >= 0)
    assert np.allclose(ds["fwhm_0"].values, 0.04)  # all truths are wider: held at the bound
    # positional (lower, upper) form
    lo, hi = PeakModel().default_bounds(TTH)
    lo[1], hi[1] = 5.3, 5.5
    ds2 = fit_volume(vol, PeakModel(), bounds=(lo, hi), device="cpu")
    assert np.all((ds2["position_0"].values >= 5.3) & (ds2["position_0"].values <= 5.5))


def test_analytic_jacobian_matches_autograd():
    for model in (PeakModel(), PeakModel(2, "gaussian", "quadratic"), PeakModel(1, "lorentzian", "none")):
        x = torch.linspace(0.0, 1.0, 40, dtype=torch.float64)
        base = np.concatenate([np.tile([1.0, 0.4, 0.1, 0.3][:model.n_peak_params], model.n_peaks),
                               0.2 * np.ones(model.n_background)])
        p = torch.as_tensor(base * np.random.default_rng(0).uniform(0.8, 1.2, (5, model.n_params)))
        f, jac = fitting.model_jacobian(model, x, p)
        f2, jac2 = fitting.autograd_jacobian(model, x, p)
        torch.testing.assert_close(f, f2)
        torch.testing.assert_close(jac, jac2)
        fn, jn = fitting.model_jacobian(model, x.numpy(), p.numpy())  # numpy path too
        np.testing.assert_allclose(jn, jac.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("model", [PeakModel(), PeakModel(2, "gaussian", "quadratic"),
                                   PeakModel(1, "lorentzian", "none"), PeakModel(1, "pseudo_voigt", "constant")])
def test_fused_normal_equations(model, weighted):
    rng = np.random.default_rng(1)
    x = torch.linspace(3, 4, 50, dtype=torch.float64)
    base = np.concatenate([np.tile([1.0, 3.5, 0.1, 0.4][:model.n_peak_params], model.n_peaks),
                           0.3 * np.ones(model.n_background)])
    p = torch.as_tensor(base * rng.uniform(0.9, 1.1, (7, model.n_params)))
    y = torch.as_tensor(rng.uniform(0, 1, (7, 50)))
    sw = torch.as_tensor(rng.uniform(0.5, 1.5, (7, 50))) if weighted else None
    t = background_abscissa(x)
    powers = torch.stack([t ** k for k in range(model.n_background)]) if model.n_background else None
    cost, jtj, g = fitting.normal_equations(model, x, powers, p.clone(), y, sw)
    f, jac = fitting.model_jacobian(model, x, p)
    r = f - y
    if weighted:
        r, jac = r * sw, jac * sw[..., None]
    torch.testing.assert_close(jtj, jac.mT @ jac)
    torch.testing.assert_close(g, (jac.mT @ r[..., None])[..., 0])
    torch.testing.assert_close(cost, 0.5 * (r * r).sum(-1))


def test_autograd_jacobian_fit_agrees(clean, clean_fit):
    vol, _ = clean
    ds = fit_volume(vol.isel(y=slice(0, 2)), PeakModel(), jacobian="autograd", device="cpu")
    np.testing.assert_allclose(ds["position_0"].values, clean_fit["position_0"].values[:2], rtol=1e-9)


def test_iterate_fit_progress_and_preview(clean):
    vol, _ = clean
    gen = iterate_fit(vol, PeakModel(), device="cpu", batch_pixels=10, preview="position_0")
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            ds = stop.value
            break
    assert events and all(isinstance(e, Progress) for e in events)
    its = [e.iteration for e in events]
    assert its == sorted(its) and its[-1] == events[-1].total == vol.sizes["y"] * vol.sizes["x"]
    assert events[0].preview.shape == (vol.sizes["y"], vol.sizes["x"])
    assert np.isnan(events[0].preview).any()          # not yet fitted pixels
    np.testing.assert_allclose(events[-1].preview, ds["position_0"].values)
    assert {"pixels_done", "pixels_total", "active", "sweep"} <= set(events[0].metrics)
    assert all(np.isfinite(e.loss) and e.loss >= 0 for e in events)


def test_extra_dims_mask_and_channel_range():
    vol, truth = simulate(3, 4, seed=2, extra=2)
    mask = np.ones((3, 4), bool)
    mask[0, 0] = False
    ds = fit_volume(vol, PeakModel(), tth_range=(5.1, 5.9), mask=mask, device="cpu")
    assert ds["area_0"].dims == ("time", "y", "x")
    assert np.isnan(ds["area_0"].values[:, 0, 0]).all() and not ds["converged"].values[:, 0, 0].any()
    ok = mask[None].repeat(2, 0)
    np.testing.assert_allclose(ds["position_0"].values[ok], truth["position_0"][ok], atol=1e-6)
    assert ds.attrs["fit_range"][0] >= 5.1 and ds.attrs["fit_range"][1] <= 5.9
    assert ds.attrs["n_fitted"] == 22


def test_nonfinite_pixels_skipped(caplog):
    vol, _ = simulate(2, 3)
    vals = vol.values.copy()
    vals[1, 2, 10] = np.nan
    bad = data.volume(vals, spectral=TTH, validate_values=False)
    with caplog.at_level(logging.WARNING):
        ds = fit_volume(bad, PeakModel(), device="cpu")
    assert "NaN" in caplog.text
    assert np.isnan(ds["area_0"].values[1, 2]) and ds["converged"].values.sum() == 5


def test_two_gaussians_with_position_hints():
    x = np.linspace(0.0, 10.0, 201)
    m = PeakModel(2, "gaussian", "constant")
    truth = np.array([[5.0, 3.0, 0.6, 2.0, 6.5, 0.8, 1.0], [3.0, 3.2, 0.5, 4.0, 7.0, 0.9, 0.5]])
    y = 5.0 * sim_pv(x, 3.0, 0.6, 0.0), 3.0 * sim_pv(x, 3.2, 0.5, 0.0)
    clean = np.stack([y[0] + 2.0 * sim_pv(x, 6.5, 0.8, 0.0) + 1.0, y[1] + 4.0 * sim_pv(x, 7.0, 0.9, 0.0) + 0.5])
    res = fit_patterns(x, clean, m, positions=[3.0, 7.0], device="cpu")
    assert res["converged"].all()
    np.testing.assert_allclose(res["params"], truth, rtol=1e-6, atol=1e-8)


def test_float32_runs(clean):
    vol, truth = clean
    ds = fit_volume(vol, PeakModel(), device="cpu", dtype=torch.float32)
    np.testing.assert_allclose(ds["position_0"].values, truth["position_0"], atol=1e-4)
    assert ds.attrs["dtype"] == "float32"


def test_fit_patterns_sigma_and_p0():
    x = np.linspace(5, 6, 60)
    y = 30 * sim_pv(x, 5.5, 0.1, 0.5)[None] + 10.0
    p0 = np.array([[25.0, 5.45, 0.12, 0.5, 10.0, 0.0]])
    res = fit_patterns(x, y, PeakModel(), p0=p0, sigma=2.0, device="cpu")
    assert res["params"][0, 1] == pytest.approx(5.5, abs=1e-8)
    assert res["param_names"][0] == "area_0"
    with pytest.raises(DataError, match="p0"):
        fit_patterns(x, y, PeakModel(), p0=np.zeros((2, 6)))
    with pytest.raises(DataError, match="sigma"):
        fit_patterns(x, y, PeakModel(), sigma=-1.0)


# --------------------------------------------------------------------------- bad input
def test_rejects_wrong_dims():
    img = xr.DataArray(np.zeros((4, 5)), dims=("y", "x"))
    with pytest.raises(DataError, match="iterate_fit"):
        fit_volume(img)
    weird = xr.DataArray(np.zeros((4, 5, 6)), dims=("a", "b", "c"))
    with pytest.raises(DataError, match="dims"):
        fit_volume(weird)
    with pytest.raises(DataError, match="PeakModel"):
        fit_volume(simulate(2, 2)[0], model="pseudo_voigt")


@pytest.mark.parametrize("rng_,match", [((4.0, 5.5), "outside"), ((5.2, 6.5), "outside"), ((5.6, 5.2), "min < max"),
                                        ((5.50, 5.52), "channels"), ("abc", "pair")])
def test_rejects_bad_range(rng_, match):
    vol, _ = simulate(2, 2)
    with pytest.raises(DataError, match=match):
        fit_volume(vol, tth_range=rng_)


@pytest.mark.parametrize("bounds,match", [
    ({"fwhm_0": (0.2, 0.1)}, "lower <= upper"), ({"width": (0, 1)}, "unknown parameter"),
    ({"eta": (-0.5, 1.0)}, "within \\[0, 1\\]"), ({"fwhm_0": (0.0, 1.0)}, "> 0"),
    (([0, 0], [1, 1]), "n_params = 6"), ({"area_0": 3}, "pair"), (42, "bounds must be"),
    ({"position_0": (float("nan"), 6.0)}, "NaN"),
])
def test_rejects_bad_bounds(bounds, match):
    vol, _ = simulate(2, 2)
    with pytest.raises(DataError, match=match):
        fit_volume(vol, bounds=bounds)


@pytest.mark.parametrize("kwargs,match", [
    ({"max_iter": 0}, "max_iter"), ({"batch_pixels": 0}, "batch_pixels"), ({"device": "gpu7"}, "device"),
    ({"mask": np.ones((3, 3), bool)}, "mask"), ({"sigma": -1.0}, "sigma"), ({"sigma": "gauss"}, "sigma"),
    ({"jacobian": "numeric"}, "jacobian"), ({"dtype": "float16"}, "dtype"), ({"preview": "nope"}, "nope"),
    ({"mask": np.zeros((2, 2), bool)}, "no pixel"),
])
def test_rejects_bad_arguments(kwargs, match):
    vol, _ = simulate(2, 2)
    with pytest.raises(ValueError, match=match):
        fit_volume(vol, **kwargs)


def test_scipy_rejects_bad_arguments():
    vol, _ = simulate(2, 2)
    with pytest.raises(DataError, match="jac"):
        fit_volume_scipy(vol, jac="exact")
    with pytest.raises(DataError, match="method"):
        fit_volume_scipy(vol, method="lm")


def test_float32_volume_both_solvers():
    vol, truth = simulate(2, 3, seed=4)
    vol32 = vol.astype(np.float32)
    a = fit_volume(vol32, PeakModel(), device="cpu")
    b = fit_volume_scipy(vol32, PeakModel())
    for name in ("area_0", "position_0", "fwhm_0"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-3)
        np.testing.assert_allclose(a[name].values, truth[name], rtol=1e-3)
