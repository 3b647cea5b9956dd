"""DLSR: peak-parameter maps fitted straight to sinograms.

Data: the ray-traced scan (:func:`xrdwidgets.sim.scan.acquire`, not the projector DLSR uses) of
``peak_phantom`` (see ``test_peakfitcnn.py``), undersampled (12 angles for 24 translations)
with Poisson noise. At this size DLSR is not more accurate than a pixel-wise fit of the FBP
(the benchmark ``benchmarks/bench_selfsupervised_fit.py`` compares them at a meaningful size), so
these tests check that the sinogram loss falls and that the maps are sane.
"""
import numpy as np
import pytest
import xarray as xr

from test_peakfitcnn import BOUNDS, MODEL, peak_phantom
from xrdwidgets.analysis.dlsr import dlsr, iterate_dlsr
from xrdwidgets.analysis.peaks import PeakModel
from xrdwidgets.ops.projector import circle_mask
from xrdwidgets.base.progress import run_to_end
from xrdwidgets.sim.scan import acquire

N = 24
TTH_RANGE = (5.0, 6.0)


@pytest.fixture(scope="module")
def scan():
    # channels beyond the fit range on both sides: only those inside go through the projector
    vol, truth, body = peak_phantom(N, n_channels=57, tth=(4.8, 6.2))
    ds = acquire(vol, n_angles=12, dose=20000, seed=0)
    stack = ds["sinogram"] / float(ds.attrs["scale"])
    stack.attrs.update(ds["sinogram"].attrs)
    stack.attrs["units"] = "1"
    return stack, truth


def _train_losses(events):
    return np.array([e.loss for e in events if e.metrics["phase"] == "train"])


def test_dlsr_maps_lowers_sinogram_loss(scan):
    stack, truth = scan
    events = []
    ds = run_to_end(iterate_dlsr(stack, MODEL, tth_range=TTH_RANGE, bounds=BOUNDS, epochs=60, device="cpu",
                                 preview_every=30), events.append)
    losses = _train_losses(events)
    assert len(losses) == 60 and losses[-1] < 0.7 * losses[0]
    assert events[29].preview.shape == (N, N)
    assert list(ds.data_vars) == MODEL.param_names
    inside = circle_mask(N)
    for name in MODEL.param_names:
        v = ds[name].values
        assert np.all(np.isfinite(v[inside])) and np.all(np.isnan(v[~inside])), name
    assert np.nanmin(ds["position_0"].values) >= 5.3 and np.nanmax(ds["position_0"].values) <= 5.8
    sel = truth["area_0"] > 0.6
    pos_err = np.abs(ds["position_0"].values - truth["position_0"])[sel].mean()
    assert pos_err < 0.01, pos_err                                  # bounds 0.5° wide; ~0.003 found
    area_err = np.abs(np.nan_to_num(ds["area_0"].values) - truth["area_0"]).mean()
    assert area_err < 0.25 * truth["area_0"].mean(), area_err
    assert ds.attrs["fit_range"][0] >= 5.0 and ds.attrs["fit_range"][1] <= 6.0
    assert 0 < ds.attrs["sinogram_rmse"] < 0.2 and ds.attrs["n_angles"] == 12
    np.testing.assert_allclose(ds["x"].values, stack["translation"].values)


def test_only_channels_in_range_are_used(scan):
    stack, _ = scan
    kw = dict(tth_range=TTH_RANGE, bounds=BOUNDS, epochs=5, init="guess", device="cpu")
    a = dlsr(stack, MODEL, **kw)
    outside = (stack.tth < 5.0) | (stack.tth > 6.0)
    b = dlsr(stack.where(~outside, stack * 10 + 3), MODEL, **kw)
    for name in MODEL.param_names:
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_dlsr_with_peakfitcnn(scan):
    stack, truth = scan
    events = []
    ds = run_to_end(iterate_dlsr(stack, MODEL, tth_range=TTH_RANGE, bounds=BOUNDS, parametrisation="cnn",
                                 epochs=40, pretrain_epochs=20, init="guess", device="cpu"), events.append)
    phases = [e.metrics["phase"] for e in events]
    assert phases == ["pretrain"] * 20 + ["train"] * 40
    losses = _train_losses(events)
    assert losses[-5:].mean() < losses[:5].mean()
    inside = circle_mask(N)
    assert np.all(np.isfinite(ds["area_0"].values[inside]))
    assert ds.attrs["provenance_producer"] == "xrdwidgets.analysis.dlsr"


def test_init_from_maps(scan):
    stack, truth = scan
    init = xr.Dataset({k: (("y", "x"), v) for k, v in truth.items()})
    ds = dlsr(stack, MODEL, tth_range=TTH_RANGE, bounds=BOUNDS, epochs=1, lr=1e-6, init=init, device="cpu")
    inside = circle_mask(N) & (truth["area_0"] > 0.1)
    np.testing.assert_allclose(ds["position_0"].values[inside], truth["position_0"][inside], atol=1e-3)
    np.testing.assert_allclose(ds["area_0"].values[inside], truth["area_0"][inside], rtol=1e-3, atol=1e-3)


def test_checkpoint_resume_gives_same_result(scan):
    stack, _ = scan
    kw = dict(tth_range=TTH_RANGE, bounds=BOUNDS, epochs=10, init="guess", device="cpu", seed=1)
    full = dlsr(stack, MODEL, **kw)
    ck = None
    gen = iterate_dlsr(stack, MODEL, checkpoint_every=4, **kw)
    for ev in gen:
        ck = ev.metrics.get("checkpoint", ck)
        if ev.iteration == 6:
            break
    gen.close()
    assert ck is not None and ck["epoch"] == 4
    resumed = dlsr(stack, MODEL, checkpoint=ck, **kw)
    for name in MODEL.param_names:
        np.testing.assert_allclose(resumed[name].values, full[name].values, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="bounds"):
        dlsr(stack, MODEL, checkpoint=ck, **{**kw, "bounds": {**BOUNDS, "fwhm": (0.02, 0.3)}})
    with pytest.raises(ValueError, match="parametrisation"):
        dlsr(stack, MODEL, checkpoint=ck, **{**kw, "parametrisation": "cnn"})
    with pytest.raises(ValueError, match="data_hash"):
        dlsr(stack * 1.5, MODEL, checkpoint=ck, **kw)


def test_bad_inputs_rejected(scan):
    stack, truth = scan
    vol, _, _ = peak_phantom(8, n_channels=20)
    with pytest.raises(ValueError, match="sinogram"):
        iterate_dlsr(vol, MODEL)
    with pytest.raises(ValueError, match="PeakModel"):
        iterate_dlsr(stack, None)
    with pytest.raises(ValueError, match="parametrisation"):
        iterate_dlsr(stack, MODEL, parametrisation="unet")
    with pytest.raises(ValueError, match="init"):
        iterate_dlsr(stack, MODEL, init="zeros")
    with pytest.raises(ValueError, match="lacks the maps"):
        iterate_dlsr(stack, MODEL, init=xr.Dataset({"area_0": (("y", "x"), truth["area_0"])}))
    with pytest.raises(ValueError, match="size 24"):
        iterate_dlsr(stack, MODEL, init=xr.Dataset({k: (("y", "x"), v[:8, :8]) for k, v in truth.items()}))
    with pytest.raises(ValueError, match="tv"):
        iterate_dlsr(stack, MODEL, tv=-1)
    with pytest.raises(ValueError, match="outside the spectral axis"):
        iterate_dlsr(stack, MODEL, tth_range=(7, 8))
    with pytest.raises(ValueError, match="at least"):
        iterate_dlsr(stack, PeakModel(3, "pseudo_voigt", "quadratic"), tth_range=(5.5, 5.7))
    with pytest.raises(ValueError, match="extra dims"):
        iterate_dlsr(stack.expand_dims(time=[0.0, 1.0]), MODEL)
