"""Headless tests of the analysis tabs: ROI image, ROI pattern, peak fitting (set values, click)."""
import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import xrdwidgets  # noqa: E402
from xrdwidgets import jobs  # noqa: E402
from xrdwidgets.widgets import plotting  # noqa: E402
from xrdwidgets.widgets.analysis_panel import (  # noqa: E402
    PeakFitPanel, RoiImagePanel, RoiPatternPanel, parse_positions)
from xrdwidgets.widgets.state import AppState  # noqa: E402

from waiting import wait_until  # noqa: E402


@pytest.fixture(scope="module")
def volume():
    # the demo's truth volume in counts: ceria / Ni / rutile peaks on a 24×24 map
    ds = xrdwidgets.demo(size="tiny")
    return ds, ds["volume"] * float(ds.attrs.get("scale", 1.0))


@pytest.fixture
def state(volume):
    ds, vol = volume
    st = AppState()
    st.set_data(ds["sinogram"], truth=ds, name="tiny")
    st.add_result("truth", vol)
    return st


def _strongest_window(vol, half=3):
    total = vol.sum(("y", "x")).values
    k = int(np.argmax(total))
    return max(0, k - half), min(vol.sizes["tth"], k + half + 1), k


def test_roi_image_follows_the_window_and_background(state, volume):
    _, vol = volume
    panel = RoiImagePanel(state)
    lo, hi, _ = _strongest_window(vol)
    panel.window.value = (lo, hi)
    expected = vol.isel(tth=slice(lo, hi)).sum("tth").values
    np.testing.assert_allclose(panel.image.values, expected, rtol=1e-5)
    z = plotting.decode_z(panel.fig.data[0].z)
    np.testing.assert_allclose(z, expected, rtol=1e-5)
    assert state.roi["channels"] == (lo, hi) and state.roi["background"] == "none"
    panel.background.value = "linear"
    assert panel.image.attrs["background"] == "linear"
    assert float(panel.image.sum()) < float(expected.sum())   # a background was taken off
    # a window too narrow for the background: a visible message, the last image kept
    panel.edge_channels.value = 10
    assert "needs a window of at least" in panel.message.value and "xrdw-error" in panel.message.value


def test_roi_pattern_masks_and_suggests_the_peak(state, volume):
    _, vol = volume
    img_panel = RoiImagePanel(state)
    lo, hi, k = _strongest_window(vol)
    img_panel.window.value = (lo, hi)
    panel = RoiPatternPanel(state)
    panel.fraction.value = 0.3
    n = panel.pattern.attrs["n_pixels"]
    assert 0 < n < vol.sizes["y"] * vol.sizes["x"]
    peaks = list(panel.peaks.values)
    assert any(abs(p - float(vol.tth[k])) <= 2 * float(vol.tth[1] - vol.tth[0]) for p in peaks), (peaks, k)
    assert state.roi["peaks"] == pytest.approx(peaks)
    assert np.asarray(panel.fig.data[2].x).size == len(peaks)
    panel.fraction.value = 0.99
    panel.above.value = False
    assert panel.pattern.attrs["n_pixels"] > n   # "below 99 %": nearly every pixel


def test_parse_positions_reads_numbers_only():
    assert parse_positions(" 3.1, 3.6;4 ") == [3.1, 3.6, 4.0]
    assert parse_positions("") == []
    with pytest.raises(ValueError, match="numbers separated by commas, found .__import__"):
        parse_positions("__import__('os')")
    with pytest.raises(ValueError, match="finite"):
        parse_positions("nan")


def test_peak_fit_runs_as_a_job_fills_the_map_and_shows_a_pixel(state, volume):
    _, vol = volume
    RoiImagePanel(state).window.value = _strongest_window(vol, half=6)[:2]
    RoiPatternPanel(state)
    panel = PeakFitPanel(state, queue=jobs.JobQueue("fit-t1"))
    lo, hi = panel.fit_range.value
    assert lo < hi and panel.positions.value  # from the ROI tabs
    panel.n_peaks.value = len(parse_positions(panel.positions.value))
    job = panel.start()
    assert job is not None, panel.error.value
    job.wait(timeout=120)
    assert job.state is jobs.State.DONE, job.message
    assert wait_until(lambda: panel.result is not None)
    res = panel.result
    assert res["area_0"].dims == ("y", "x")
    assert "rwp" in res and "converged" in res
    assert "area_0" in dict(panel.map_param.options).values() and panel.progress.value == 1.0
    # the menu and the map title show words, not the Python names
    shown = dict(panel.map_param.options)
    assert "integrated intensity of peak 0" in shown and "weighted-profile R factor Rwp (fraction)" in shown
    assert not {"area_0", "rwp", "bg_1", "chi2", "n_iter"} & set(shown)
    assert "FWHM (2θ) of peak 0" in shown and not any("tth" in t for t in shown)
    panel.map_param.value = "bg_1"
    assert "background coefficient" in panel.fig.layout.annotations[0].text
    z = plotting.decode_z(panel.fig.data[0].z)
    np.testing.assert_allclose(z, res[panel.map_param.value].values.astype(np.float32), equal_nan=True)
    # a pixel inside the sample: the fit follows the data closely
    r, c = np.unravel_index(int(np.nanargmax(res["area_0"].values)), res["area_0"].shape)
    panel.show_pixel(int(r), int(c))
    data = np.asarray(panel.fig.data[1].y)
    fit = np.asarray(panel.fig.data[2].y)
    resid = np.asarray(panel.fig.data[3].y)
    assert data.size == fit.size > 3
    np.testing.assert_allclose(resid, data - fit)
    assert np.linalg.norm(resid) < 0.2 * np.linalg.norm(data)


def test_peak_fit_form_errors_are_shown_not_raised(state):
    panel = PeakFitPanel(state, queue=jobs.JobQueue("fit-t2"))
    panel.n_peaks.value = 2
    panel.positions.value = "3.0"
    assert panel.start() is None
    assert "give 2 peak position(s)" in panel.error.value
    panel.positions.value = "x"
    assert panel.start() is None and "numbers separated by commas" in panel.error.value


def test_panels_without_results_say_so():
    st = AppState()
    assert "no reconstruction yet" in RoiImagePanel(st).message.value
    assert "no reconstruction yet" in RoiPatternPanel(st).message.value
    p = PeakFitPanel(st, queue=jobs.JobQueue("fit-t3"))
    assert p.start() is None and "no reconstruction to fit" in p.error.value


def test_hovering_the_fit_map_shows_that_pixel(state, volume):
    from types import SimpleNamespace

    _, vol = volume
    RoiImagePanel(state).window.value = _strongest_window(vol, half=6)[:2]
    RoiPatternPanel(state)
    panel = PeakFitPanel(state, queue=jobs.JobQueue("fit-t4"))
    panel.n_peaks.value = len(parse_positions(panel.positions.value))
    panel.start().wait(timeout=120)
    assert wait_until(lambda: panel.result is not None)
    # the map's x/y are the volume's coordinates: a hover at (x, y) picks that pixel
    heat = panel.fig.data[0]
    np.testing.assert_allclose(np.asarray(heat.x, float), vol.x.values)
    np.testing.assert_allclose(np.asarray(heat.y, float), vol.y.values)
    r, c = 5, 17
    panel._on_map_point(heat, SimpleNamespace(xs=[float(vol.x[c])], ys=[float(vol.y[r])]))
    lo, hi = panel.fit_range.value
    expected = vol.isel(y=r, x=c).sel(tth=slice(lo, hi)).values
    np.testing.assert_allclose(np.asarray(panel.fig.data[1].y), expected)
    assert f"y {r}, x {c}" in panel.fig.layout.annotations[1].text
