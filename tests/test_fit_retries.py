"""Peak fitting: neighbour-seeded retries and the significant-peak mask (issue 20)."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xrdwidgets.analysis.fitting import iterate_fit
from xrdwidgets.analysis.peaks import PeakModel
from xrdwidgets.base.progress import run_to_end


def _volume(seed=0, n=16):
    """Gaussian peaks (numpy, not the fit's model code) on a linear background; the left third
    of the map has no peak at all."""
    rng = np.random.default_rng(seed)
    tth = np.linspace(3.0, 4.0, 60)
    yy, xx = np.mgrid[:n, :n]
    area = np.where(xx >= n // 3, 5.0 + 2 * np.sin(yy / 3.0), 0.0)
    pos = 3.5 + 0.05 * np.cos(xx / 4.0)
    sig = 0.04
    peak = area[..., None] / (sig * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((tth - pos[..., None]) / sig) ** 2)
    vol = peak + 2.0 + 0.5 * (tth - 3.5) + rng.normal(0, 0.5, peak.shape)
    mm = np.arange(n) * 0.01
    return xr.DataArray(vol, dims=("y", "x", "tth"),
                        coords={"tth": ("tth", tth, {"units": "deg"}), "y": ("y", mm, {"units": "mm"}),
                                "x": ("x", mm, {"units": "mm"})},
                        attrs={"units": "counts"}), xx >= n // 3


def test_retries_do_not_lose_converged_pixels_and_help_some():
    vol, _ = _volume()
    kw = dict(model=PeakModel(), max_iter=6)
    none = run_to_end(iterate_fit(vol, retries=0, **kw))
    once = run_to_end(iterate_fit(vol, retries=1, **kw))
    assert none.attrs["n_converged"] < none.attrs["n_fitted"]          # the setting leaves failures
    assert once.attrs["n_converged"] > none.attrs["n_converged"]
    assert once.attrs["n_retried"] > 0
    assert np.all(once["converged"].values[none["converged"].values])   # converged ones untouched
    assert once.attrs["n_not_converged"] == once.attrs["n_fitted"] - once.attrs["n_converged"]


def test_peak_found_marks_pixels_with_a_significant_peak():
    vol, has_peak = _volume(1)
    res = run_to_end(iterate_fit(vol, PeakModel(), retries=1))
    found = res["peak_found"].values
    assert found[has_peak].mean() > 0.95
    assert found[~has_peak].mean() < 0.1
    assert res.attrs["n_peak_found"] == int(found.sum())


def test_bad_retry_arguments_are_refused():
    vol, _ = _volume()
    with pytest.raises(ValueError, match="retries"):
        run_to_end(iterate_fit(vol, retries=-1))


def test_arguments_are_checked_at_the_call_before_any_event():
    # the Peak fit panel relies on this to refuse a bad form before it starts a job
    vol, _ = _volume()
    for bad in (dict(retries=-1), dict(significance=-1.0), dict(max_iter=0), dict(jacobian="nope"),
                dict(preview="no_such_parameter")):
        with pytest.raises(ValueError):
            iterate_fit(vol, **bad)      # no next(): the call itself refuses
    gen = iterate_fit(vol, retries=0)    # good arguments: a generator, nothing computed yet
    assert hasattr(gen, "__next__")
    gen.close()


def test_panel_reports_the_non_converged_count():
    from xrdwidgets.widgets.analysis_panel import fit_summary

    vol, _ = _volume()
    res = run_to_end(iterate_fit(vol, PeakModel(), max_iter=6))
    text = fit_summary(res)
    assert f"{res.attrs['n_fitted'] - res.attrs['n_converged']} of {res.attrs['n_fitted']} pixels" in text
    assert "significant peak" in text


def test_panel_blanks_pixels_without_a_peak_on_request():
    import time

    from xrdwidgets.widgets.plotting import decode_z
    from xrdwidgets.widgets.analysis_panel import PeakFitPanel
    from xrdwidgets.widgets.state import AppState

    vol, has_peak = _volume(2)
    st = AppState()
    st.add_result("v", vol)
    panel = PeakFitPanel(st, queue=False)
    panel.positions.value = "3.5"
    job = panel.start()
    assert job.wait(120)
    end = time.time() + 30
    while panel.result is None and time.time() < end:
        time.sleep(0.05)
    assert "did not converge" in panel.status.value
    panel.map_param.value = "position_0"
    panel.blank_no_peak.value = True
    z = decode_z(panel.fig.data[0].z)
    assert np.isnan(z[~has_peak]).mean() > 0.9 and np.isfinite(z[has_peak]).mean() > 0.9
