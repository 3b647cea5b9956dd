"""Tests of the sinogram corrections (xrdwidgets.corrections).

Every error is injected by the simulator (``xrdwidgets.sim.scan.acquire``: ray tracing of a
chemical phantom, a different forward model from the projector used by FBP) and every
correction is checked against the injected truth it returns.
"""
import numpy as np
import pytest
import xarray as xr

from xrdwidgets import corrections as C
from xrdwidgets import data
from xrdwidgets.data import DataError
from xrdwidgets.geometry import ScanGeometry
from xrdwidgets.recon.fbp import fbp
from xrdwidgets.sim.chemical import chemical_phantom
from xrdwidgets.sim.scan import acquire
from xrdwidgets.sim.shapes import Circle, Ellipse, Phantom

N = 32  # image size = translations (one translation step per pixel)


@pytest.fixture(scope="module")
def sample():
    """Two-phase sample (CeO2 disc with a pore, Ni particles) well inside the scanned range."""
    body = Phantom([Circle(1.0, (0.0, 0.05), 0.6), Ellipse(-1.0, (-0.2, 0.15), (0.18, 0.1), 30.0)])
    part = Phantom([Circle(0.9, (0.25, -0.2), 0.15), Circle(0.9, (-0.2, -0.3), 0.12)])
    b = np.clip(body.raster(N), 0, 1)
    p = np.clip(part.raster(N), 0, 1) * b
    return chemical_phantom({"CeO2": b - p, "Ni": p}, np.linspace(2.5, 9.5, 40), energy_keV=60.0,
                            geometry=ScanGeometry(translation_step_mm=0.01))


def scan(sample, *, full=False, **kw):
    """Simulated scan: 60 angles over 0–180° or 90 over 0–360°, Poisson noise."""
    kw.setdefault("dose", 2000.0)
    return acquire(sample, n_angles=90 if full else 60, angle_range_deg=(0.0, 360.0 if full else 180.0),
                   n_translations=N, seed=3, **kw)


def unknown_centre(ds):
    """The measured sinogram with the injected centre offset removed from its geometry."""
    return data.set_geometry(ds["sinogram"], data.get_geometry(ds["sinogram"]).replace(centre_offset=0.0))


def _sinusoid(values, angles_deg):
    th = np.deg2rad(angles_deg)
    A = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)
    coef = np.linalg.lstsq(A, values, rcond=None)[0]
    return coef, A @ coef


def identifiable(jitter, angles_deg):
    """The part of a jitter that is not a sinusoid c + a cos θ + b sin θ (what COM can see)."""
    return jitter - _sinusoid(jitter, angles_deg)[1]


def axis_after_jitter(ds):
    """Axis offset once the identifiable jitter is removed: offset + the jitter sinusoid's constant."""
    return ds.attrs["centre_offset"] + _sinusoid(ds["jitter"].values, ds["angle"].values)[0][0]


def rel_error(volume, truth):
    """Relative L2 error of a reconstruction after the best global scale (units differ)."""
    v, t = np.asarray(volume, float).ravel(), np.asarray(truth, float).ravel()
    return float(np.linalg.norm(v * (v @ t) / (v @ v) - t) / np.linalg.norm(t))


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("interpolation,tol", [("fourier", 1e-6), ("linear", 2e-2)])
def test_shift_projections_moves_a_profile_by_sub_steps(interpolation, tol):
    i = np.arange(64.0)
    shifts = np.array([0.0, 0.3, -1.7, 4.5])
    prof = np.exp(-0.5 * ((i[:, None] - 30.0) / 3.0) ** 2) * np.ones((1, 4))
    out = C.shift_projections(prof[:, :, None] * [1.0, 2.0], shifts, interpolation=interpolation)
    expect = np.exp(-0.5 * ((i[:, None] - 30.0 - shifts) / 3.0) ** 2)
    assert out.shape == (64, 4, 2)
    np.testing.assert_allclose(out[:, :, 0], expect, atol=tol)
    np.testing.assert_allclose(out[:, :, 1], 2 * expect, atol=2 * tol)


def test_centre_of_mass_sinusoid_fit_is_exact_on_synthetic_data():
    angles = np.linspace(0, 180, 40, endpoint=False)
    th = np.deg2rad(angles)
    com = 1.2 + 3.0 * np.cos(th) - 2.0 * np.sin(th)
    i = np.arange(41.0) - 20.0
    sino = np.exp(-0.5 * (i[:, None] - com[None, :]) ** 2 / 4.0)
    np.testing.assert_allclose(C.centre_of_mass(sino), com, atol=1e-6)
    (c, a, b), fit = C.fit_sinusoid(com, angles)
    assert (c, a, b) == pytest.approx((1.2, 3.0, -2.0), abs=1e-9)
    slip = com.copy()
    slip[7] += 5.0  # one large motor slip barely moves the robust fit
    assert C.fit_sinusoid(slip, angles)[0][0] == pytest.approx(1.2, abs=0.02)


# ----------------------------------------------------------------------------- air
def test_air_edges_detected_and_pattern_recovered(sample):
    ds = scan(sample, air=0.1, centre_offset=2.5)
    out, rep = C.remove_air(ds)
    left, right = rep.edges
    assert rep.detected and left >= 2 and right >= 1 and rep.mode == "scaled"
    # the edges hold sample only at the noise level: < 0.2 % of their air counts
    sample_only = ds["clean"].values.sum(-1) - ds["decay"].values[None, :] * float(ds["air"].sum())
    edges = np.r_[np.arange(left), np.arange(N - right, N)]
    assert sample_only[edges].sum() < 2e-3 * float(ds["air"].sum()) * edges.size * 60
    truth = ds["air"].values
    assert np.abs(rep.pattern.values - truth).max() < 0.03 * truth.max()
    assert rep.pattern.dims == ("tth",) and rep.scale.dims == ("angle",)
    # the remaining background is noise around 0, at the edges and in the whole sinogram
    resid = out.values - (ds["clean"].values - ds["air"].values[None, None, :])
    assert abs(resid.mean()) < 0.01 * truth.mean()
    assert "air" in out.attrs["corrections"] and out.attrs["provenance_producer"].endswith(".air")


def test_air_scaled_mode_follows_decay(sample):
    ds = scan(sample, air=0.1, decay="exponential", decay_strength=0.3)
    _, rep = C.remove_air(ds, mode="scaled")
    rel = ds["decay"].values / np.median(ds["decay"].values)
    np.testing.assert_allclose(rep.scale.values, rel, rtol=0.03)
    truth = ds["air"].values * np.median(ds["decay"].values)
    assert np.abs(rep.pattern.values - truth).max() < 0.03 * truth.max()


def test_air_edge_override_median_and_clip(sample):
    ds = scan(sample, air=0.05)
    out, rep = C.remove_air(ds, edge=(3, 2), statistic="median", mode="per_angle", clip=True)
    assert rep.edges == (3, 2) and not rep.detected and rep.statistic == "median"
    assert rep.n_clipped > 0 and float(out.min()) == 0.0
    assert np.abs(rep.pattern.values - ds["air"].values).max() < 0.05 * ds["air"].values.max()


# ----------------------------------------------------------------------------- decay
@pytest.mark.parametrize("kind", ["exponential", "topup"])
def test_decay_factors_recovered_from_totals(sample, kind):
    ds = scan(sample, decay=kind, decay_strength=0.25, air=0.05)
    out, rep = C.normalise_decay(ds)
    truth = ds["decay"].values / np.median(ds["decay"].values)
    np.testing.assert_allclose(rep.factors.values, truth, rtol=0.02)
    assert rep.source == "totals" and rep.factors.dims == ("angle",)
    totals = out.values.sum(axis=(0, 2))
    assert totals.std() / totals.mean() < 0.01


def test_decay_from_monitor_per_angle_and_per_point(sample):
    ds = scan(sample, decay="exponential", decay_per_point=True, dose=None)
    clean = ds["sinogram"].values
    out, rep = C.normalise_decay(ds, monitor=ds["decay_point"], reference="first")
    assert rep.source == "monitor" and rep.factors.dims == ("translation", "angle")
    expect = (clean + 0) / (ds["decay_point"].values / ds["decay_point"].values[0, 0])[:, :, None]
    np.testing.assert_allclose(out.values, expect, rtol=1e-9)
    out1, rep1 = C.normalise_decay(ds, monitor=ds["decay"].values)
    np.testing.assert_allclose(rep1.factors.values, ds["decay"].values / np.median(ds["decay"].values))


# ----------------------------------------------------------------------------- jitter
@pytest.mark.parametrize("interpolation", ["fourier", "linear"])
def test_jitter_recovered_and_removed(sample, interpolation):
    ds = scan(sample, jitter=0.5, centre_offset=-1.3)
    out, rep = C.correct_jitter(ds, interpolation=interpolation)
    angles = ds["angle"].values
    truth = identifiable(ds["jitter"].values, angles)
    found = -rep.shifts_steps.values
    assert np.sqrt(np.mean((found - truth) ** 2)) < 0.2 * np.sqrt(np.mean(truth ** 2))  # ≈ 0.1 step
    assert np.sqrt(np.mean((found - truth) ** 2)) < 0.1
    assert rep.axis_offset_steps == pytest.approx(axis_after_jitter(ds), abs=0.1)
    com = C.centre_of_mass(out.values.sum(-1))
    assert np.std(identifiable(com, angles)) < 0.1


# ----------------------------------------------------------------------------- centre
@pytest.mark.parametrize("full", [False, True], ids=["0-180", "0-360"])
@pytest.mark.parametrize("offset", [2.5, -1.3])
def test_centre_found_within_a_quarter_step(sample, full, offset):
    ds = scan(sample, centre_offset=offset, full=full)
    rep = C.find_centre(unknown_centre(ds), device="cpu")
    assert rep.offset_steps == pytest.approx(offset, abs=0.25)
    assert rep.method == ("opposing" if full else "metric") and rep.n_pairs == (45 if full else 2)
    for est in rep.estimates.values():
        assert est == pytest.approx(offset, abs=0.25)
    if not full:
        assert rep.candidates_steps.shape == rep.scores.shape and rep.metric == "tv"


@pytest.mark.parametrize("method,metric", [("com", "tv"), ("opposing", "tv"), ("metric", "l1"),
                                           ("metric", "entropy")])
def test_centre_methods(sample, method, metric):
    ds = scan(sample, centre_offset=0.7, full=True)
    rep = C.find_centre(ds, method=method, metric=metric, device="cpu")
    assert rep.offset_steps == pytest.approx(0.7, abs=0.25) and rep.method == method
    assert rep.previous_offset_steps == pytest.approx(0.7)  # stored by the simulator, only reported


def test_correct_centre_geometry_and_shift_improve_fbp(sample):
    ds = scan(sample, centre_offset=2.5)
    truth = sample["volume"].values
    raw = unknown_centre(ds)
    err_raw = rel_error(fbp(raw, device="cpu"), truth)
    geo, rep = C.correct_centre(raw, device="cpu")
    assert data.get_geometry(geo).centre_offset == pytest.approx(rep.offset_steps)
    np.testing.assert_array_equal(geo.values, raw.values)
    shifted, rep2 = C.correct_centre(raw, apply="shift", device="cpu")
    assert data.get_geometry(shifted).centre_offset == 0.0 and rep2.apply == "shift"
    err_geo = rel_error(fbp(geo, device="cpu"), truth)
    err_shift = rel_error(fbp(shifted, device="cpu"), truth)
    assert err_geo < 0.5 * err_raw and err_shift < 0.5 * err_raw
    assert err_shift == pytest.approx(err_geo, abs=0.03)
    given, rep3 = C.correct_centre(raw, offset=2.5)
    assert rep3.method == "given" and data.get_geometry(given).centre_offset == 2.5


# ----------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("full", [False, True], ids=["0-180", "0-360"])
def test_correct_pipeline_recovers_every_error(sample, full):
    ds = scan(sample, full=full, decay="exponential", air=0.1, jitter=0.4, centre_offset=2.5)
    raw = unknown_centre(ds)
    out, reports = C.correct(raw, centre={"device": "cpu"})
    assert [r.name for r in reports] == ["decay", "air", "jitter", "centre"]
    decay, air, jitter, centre = reports
    rel = ds["decay"].values / np.median(ds["decay"].values)
    np.testing.assert_allclose(decay.factors.values, rel, rtol=0.02)
    truth_air = ds["air"].values * np.median(ds["decay"].values)
    assert air.mode == "global" and np.abs(air.pattern.values - truth_air).max() < 0.03 * truth_air.max()
    jit = identifiable(ds["jitter"].values, ds["angle"].values)
    assert np.sqrt(np.mean((-jitter.shifts_steps.values - jit) ** 2)) < 0.2
    assert centre.offset_steps == pytest.approx(axis_after_jitter(ds), abs=0.25)
    assert out.attrs["corrections"] == "decay,air,jitter,centre"
    assert out.dims == ("translation", "angle", "tth") and all(s.summary() for s in reports)
    truth = sample["volume"].values
    err_raw = rel_error(fbp(raw, device="cpu"), truth)
    err_out = rel_error(fbp(out, device="cpu"), truth)
    assert err_out < 0.3 and err_out < 0.4 * err_raw


def test_pipeline_steps_can_be_skipped_and_configured(sample):
    ds = scan(sample, air=0.05)
    da = ds["sinogram"].transpose("tth", "angle", "translation")  # any dim order in
    out, reports = C.correct(da, decay=False, jitter=False, air={"edge": 2},
                             centre={"offset": 0.0, "apply": "shift"})
    assert [r.name for r in reports] == ["air", "centre"] and reports[0].edges == (2, 2)
    assert out.dims == ("translation", "angle", "tth")
    with pytest.raises(TypeError, match="air: expected True, False or a dict"):
        C.correct(da, air="yes")


# ----------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small(sample):
    return scan(sample, air=0.05)["sinogram"]


def test_bad_dims_and_values_are_named(small):
    with pytest.raises(DataError, match=r"stack: expected a sinogram.*missing \['angle'\]"):
        C.remove_air(small.isel(angle=0))
    bad = small.copy(data=small.values.copy())
    bad.values[3, 4, 5] = np.nan
    with pytest.raises(DataError, match="stack: expected finite values, found 1 NaN"):
        C.normalise_decay(bad)
    with pytest.raises(DataError, match="found extra dims \\['z'\\]"):
        C.correct_jitter(xr.concat([small, small], dim="z").assign_coords(z=[0.0, 1.0]))
    with pytest.raises(DataError, match="expected an xarray DataArray/Dataset"):
        C.find_centre(small.values)


def test_bad_edges_monitor_and_options(small):
    with pytest.raises(DataError, match=r"edge: expected each edge width < half the translations \(32 / 2 = 16\), "
                                        r"found \(16, 16\)"):
        C.remove_air(small, edge=16)
    with pytest.raises(DataError, match="edge: expected non-negative"):
        C.remove_air(small, edge=(0, 0))
    with pytest.raises(DataError, match=r"monitor: expected shape \(60,\) \(per angle\) or \(32, 60\)"):
        C.normalise_decay(small, monitor=np.ones(59))
    with pytest.raises(DataError, match="monitor: expected finite positive values"):
        C.normalise_decay(small, monitor=np.zeros(60))
    with pytest.raises(ValueError, match="apply: expected one of \\('geometry', 'shift'\\), found 'both'"):
        C.correct_centre(small, apply="both")
    with pytest.raises(ValueError, match="mode: expected one of"):
        C.remove_air(small, mode="smart")


def test_too_few_angles_for_a_180_degree_pair(small):
    limited = small.isel(angle=slice(0, 30))  # 0–87°: no projection pair 180° apart
    with pytest.raises(DataError, match="hold no pair of projections 180° apart"):
        C.find_centre(limited, method="opposing")
    with pytest.raises(DataError, match="needs at least 2 angles, found 1"):
        C.find_centre(small.isel(angle=[0]), method="opposing")
    with pytest.raises(DataError, match="needs at least 4 angles, found 3"):
        C.correct_jitter(small.isel(angle=[0, 20, 40]))


# ----------------------------------------------------------------------------- generators (jobs)
def test_iterate_correct_yields_each_step_and_returns_what_correct_returns(sample):
    from xrdwidgets.base.progress import run_to_end

    raw = scan(sample, air=0.05)["sinogram"]
    opts = dict(jitter=False, air={"edge": 2}, centre={"offset": 1.0})
    events = []
    out, reports = run_to_end(C.iterate_correct(raw, **opts), events.append)
    assert [e.metrics["step"] for e in events] == ["decay", "air", "centre", "done"]
    assert [e.iteration for e in events] == [0, 1, 2, 3] and {e.total for e in events} == {3}
    plain, plain_reports = C.correct(raw, **opts)
    np.testing.assert_array_equal(out.values, plain.values)
    assert [r.summary() for r in reports] == [r.summary() for r in plain_reports]
    with pytest.raises(TypeError, match="jitter: expected True, False or a dict"):
        next(C.iterate_correct(raw, jitter="yes"))


def test_applied_corrections_and_summary_sinogram(sample):
    raw = scan(sample, air=0.05)["sinogram"]
    assert C.applied_corrections(raw) == []
    out, _ = C.correct(raw, jitter=False, centre=False)
    assert C.applied_corrections(out) == ["decay", "air"]
    img = C.summary_sinogram(out, max_size=16)
    assert img.dims == ("angle", "translation") and img.dtype == np.float32
    assert img.sizes["translation"] <= 16 and img.sizes["angle"] <= 16
    full = C.summary_sinogram(out)
    np.testing.assert_allclose(full.values, out.sum("tth").transpose("angle", "translation").values,
                               rtol=1e-5)
