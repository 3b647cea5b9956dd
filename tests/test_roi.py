"""ROI images with background subtraction, ROI masks and patterns, peak suggestions."""
import numpy as np
import pytest
import xarray as xr

from xrdwidgets import data, explore
from xrdwidgets.explore import roi
from xrdwidgets.data import DataError
from xrdwidgets.sim.patterns import pseudo_voigt as sim_pv

TTH = np.linspace(2.0, 4.0, 201)  # 0.01° steps


def make_volume(ny=5, nx=6, slope=True, extra=None):
    """Peak of area A (per pixel) at 3° on a background c0 + c1·(tth − 3)."""
    rng = np.random.default_rng(0)
    area = rng.uniform(1.0, 2.0, (ny, nx))
    c0 = rng.uniform(5.0, 10.0, (ny, nx))
    c1 = rng.uniform(-2.0, 2.0, (ny, nx)) if slope else np.zeros((ny, nx))
    vals = area[..., None] * sim_pv(TTH, 3.0, 0.02, 0.0) + c0[..., None] + c1[..., None] * (TTH - 3.0)
    if extra:
        vals = np.stack([vals, 2 * vals])
        return data.volume(vals, dims=("time", "y", "x", "tth"), spectral=TTH), area, c0, c1
    return data.volume(vals, spectral=TTH), area, c0, c1


def test_plain_roi_image_equals_window_sum():
    vol, *_ = make_volume()
    a = roi.roi_image(vol, 2.9, 3.1)
    b = explore.window_sum(vol, 2.9, 3.1)
    np.testing.assert_allclose(a.values, b.values)
    assert a.dims == ("y", "x")
    assert a.attrs["units"] == "counts" and a.attrs["window_units"] == "deg"
    assert a.attrs["background"] == "none"
    assert a.attrs["long_name"].startswith("Σ")


def test_edges_background_removes_flat_background():
    vol, area, c0, _ = make_volume(slope=False)
    img = roi.roi_image(vol, 2.85, 3.15, background="edges")
    # Σ over 31 channels of the peak ≈ area / step (the Gaussian is within the window)
    np.testing.assert_allclose(img.values * 0.01, area, rtol=1e-3)
    assert "edges background" in img.attrs["long_name"]


def test_linear_background_removes_sloped_background():
    vol, area, c0, c1 = make_volume(slope=True)
    img = roi.roi_image(vol, 2.85, 3.15, background="linear", edge_channels=2)
    np.testing.assert_allclose(img.values * 0.01, area, rtol=1e-3)
    # the flat estimate is biased by nothing here (symmetric window) but fails on an asymmetric one
    asym_lin = roi.roi_image(vol, 2.8, 3.12, background="linear")
    np.testing.assert_allclose(asym_lin.values * 0.01, area, rtol=2e-3)


def test_roi_image_keeps_extra_dims():
    vol, area, *_ = make_volume(extra=True)
    img = roi.roi_image(vol, 2.85, 3.15, background="linear")
    assert img.dims == ("time", "y", "x")
    np.testing.assert_allclose(img.values[1], 2 * img.values[0])
    np.testing.assert_allclose(img.values[0] * 0.01, area, rtol=1e-3)


def test_roi_image_by_index_and_dataset_input():
    vol, *_ = make_volume()
    a = roi.roi_image(xr.Dataset({"volume": vol}), 90, 111, by="index", background="edges")
    b = roi.roi_image(vol, float(TTH[90]), float(TTH[110]), background="edges")
    np.testing.assert_allclose(a.values, b.values)
    assert a.attrs["window_channels"] == [90, 111]


@pytest.mark.parametrize("kwargs,match", [
    ({"background": "poly"}, "background must be"), ({"edge_channels": 0}, "edge_channels"),
    ({"background": "edges", "edge_channels": 10}, "at least 2"),
])
def test_roi_image_rejects_bad_arguments(kwargs, match):
    vol, *_ = make_volume()
    with pytest.raises(DataError, match=match):
        roi.roi_image(vol, 2.95, 3.05, **kwargs)


def test_roi_image_rejects_window_outside_axis_and_bad_dims():
    vol, *_ = make_volume()
    with pytest.raises(DataError, match="outside"):
        roi.roi_image(vol, 5.0, 6.0)
    with pytest.raises(DataError, match="roi_image"):
        roi.roi_image(xr.DataArray(np.zeros((3, 4)), dims=("y", "x")), 0, 1)


def test_roi_mask_default_and_explicit_threshold():
    img = xr.DataArray(np.arange(100.0).reshape(10, 10), dims=("y", "x"))
    m = roi.roi_mask(img)
    assert m.dtype == bool and m.dims == ("y", "x")
    assert 45 <= m.attrs["n_pixels"] <= 55
    m2 = roi.roi_mask(img, 89.5)
    assert int(m2.sum()) == 10
    m3 = roi.roi_mask(img.values, 9.5, above=False)
    assert int(m3.sum()) == 10
    with pytest.raises(DataError, match="2-D"):
        roi.roi_mask(np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="fraction"):
        roi.roi_mask(img, fraction=2.0)


def test_roi_pattern_mean_of_mask():
    vol, *_ = make_volume()
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    p = roi.roi_pattern(vol, mask)
    np.testing.assert_allclose(p.values, vol.values[mask].mean(axis=0))
    assert p.dims == ("tth",) and p.attrs["n_pixels"] == 6
    np.testing.assert_array_equal(p["tth"].values, TTH)
    # a DataArray mask in another dim order
    pm = roi.roi_pattern(vol, xr.DataArray(mask.T, dims=("x", "y")))
    np.testing.assert_allclose(pm.values, p.values)


def test_roi_pattern_from_threshold_and_extra_dims():
    vol, *_ = make_volume(extra=True)
    img = roi.roi_image(vol.isel(time=0), 2.85, 3.15, background="edges")
    p = roi.roi_pattern(vol, image=img, threshold=float(img.median()))
    assert p.dims == ("time", "tth")
    np.testing.assert_allclose(p.values[1], 2 * p.values[0])
    p_auto = roi.roi_pattern(vol.isel(time=0))
    assert p_auto.attrs["n_pixels"] > 0


def test_roi_pattern_rejects_bad_masks():
    vol, *_ = make_volume()
    with pytest.raises(DataError, match="shape"):
        roi.roi_pattern(vol, np.ones((3, 3), bool))
    with pytest.raises(DataError, match="no pixels"):
        roi.roi_pattern(vol, np.zeros((5, 6), bool))
    with pytest.raises(DataError, match="boolean"):
        roi.roi_pattern(vol, np.full((5, 6), 0.5))


def test_suggest_peaks_finds_lines():
    x = np.linspace(2.0, 8.0, 601)
    rng = np.random.default_rng(1)
    lines = [3.0, 4.1, 4.3, 6.5]
    y = sum(a * sim_pv(x, c, 0.05, 0.5) for a, c in zip([5.0, 2.0, 3.0, 1.0], lines)) + 1.0
    y = y + rng.normal(0, 0.05, x.size)
    pat = xr.DataArray(y, dims=("tth",), coords={"tth": ("tth", x, {"units": "deg"})})
    found = roi.suggest_peaks(pat)
    assert found.attrs["units"] == "deg" and found.dims == ("peak",)
    np.testing.assert_allclose(found.values, lines, atol=0.011)
    assert np.all(np.diff(found.values) > 0)
    top2 = roi.suggest_peaks(pat, max_peaks=2)
    np.testing.assert_allclose(top2.values, [3.0, 4.3], atol=0.011)
    merged = roi.suggest_peaks(pat, min_distance=0.5)
    assert merged.size == 3
    plain = roi.suggest_peaks(y)
    assert plain.attrs["units"] == "channel" and plain.size == 4


def test_suggest_peaks_on_demo_pattern():
    import xrdwidgets
    from xrdwidgets.sim.patterns import reflection_lines

    ds = xrdwidgets.demo(size="tiny", dose=None)
    p = roi.roi_pattern(ds["volume"], ds["phase_maps"].sel(phase="CeO2") > 0.9)
    found = roi.suggest_peaks(p, max_peaks=3)
    tth, inten = reflection_lines("CeO2", energy_keV=60.0, tth_range=(2.5, 9.5))
    strongest = np.sort(tth[np.argsort(inten)[::-1][:3]])
    step = float(np.diff(ds["tth"].values)[0])
    np.testing.assert_allclose(np.sort(found.values), strongest, atol=1.01 * step)


def test_suggest_peaks_rejects_bad_input():
    with pytest.raises(DataError, match="1-D"):
        roi.suggest_peaks(np.zeros((3, 3)))
    with pytest.raises(DataError, match="NaN"):
        roi.suggest_peaks(np.array([0.0, np.nan, 1.0, 0.0]))
