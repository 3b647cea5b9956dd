"""Centre-of-rotation gallery (issue 20): the science in corrections.centre_gallery, the choice
stored in the geometry by the Corrections panel."""
from __future__ import annotations

import time

import numpy as np
import pytest

from xrdwidgets import corrections as corr
from xrdwidgets import data


def _point_stack(axis_offset: float, n_t: int = 48, n_a: int = 90):
    """Analytic sinogram of two small Gaussian blobs (not the reconstruction's projector): a blob
    at (x0, y0) projects to t = x0 cos θ + y0 sin θ, shifted by the axis offset."""
    t = np.arange(n_t) - (n_t - 1) / 2
    ang = np.linspace(0, 180, n_a, endpoint=False)
    th = np.deg2rad(ang)
    sino = np.zeros((n_t, n_a))
    for x0, y0 in ((8.0, 3.0), (-5.0, -9.0)):
        centre = x0 * np.cos(th) + y0 * np.sin(th) + axis_offset
        sino += np.exp(-0.5 * ((t[:, None] - centre[None, :]) / 0.9) ** 2)
    stack = np.repeat(sino[:, :, None], 3, axis=2)
    return data.sinogram_stack(stack, angle=ang, spectral=np.linspace(2, 3, 3))


def test_candidates_are_a_centred_row():
    np.testing.assert_allclose(corr.centre_candidates(1.5, n=5, step=0.25), [1.0, 1.25, 1.5, 1.75, 2.0])
    with pytest.raises(ValueError, match="step"):
        corr.centre_candidates(0, step=0)


def test_gallery_is_sharpest_at_the_true_axis():
    stack = _point_stack(axis_offset=2.0)
    g = corr.centre_gallery(stack, corr.centre_candidates(0.0, n=9, step=1.0), channels=(0, 2))
    assert g.dims == ("centre", "y", "x") and g.sizes["centre"] == 9
    assert g.attrs["channels"] == [0, 2]
    peak = g.max(("y", "x")).values             # a point blurs into an arc off the axis
    assert float(g["centre"].values[int(np.argmax(peak))]) == pytest.approx(2.0)


def test_gallery_refuses_bad_input_before_work():
    stack = _point_stack(0.0)
    with pytest.raises(ValueError, match="channels"):
        corr.centre_gallery(stack, [0.0], channels=(2, 2))
    with pytest.raises(ValueError, match="within"):
        corr.centre_gallery(stack, [30.0])


def test_panel_gallery_choice_goes_to_the_geometry():
    from xrdwidgets.widgets.app import App

    app = App.demo(size="tiny", reconstruct=False)
    panel = app.corrections
    job = panel.make_gallery()
    assert job.wait(120)
    end = time.time() + 30
    while not panel.gallery_row.children and time.time() < end:
        time.sleep(0.05)
    assert len(panel.gallery_row.children) == 7
    button = panel.gallery_row.children[5].children[1]
    chosen = float(panel.gallery["centre"].values[5])
    assert button.description == f"{chosen:+.2f}"
    button.click()
    assert data.get_geometry(app.state.stack).centre_offset == pytest.approx(chosen)
    assert f"{chosen:+.3f}" in panel.geometry_html.value
    assert button.button_style == "success"


def test_processed_data_are_not_corrected_again_by_default():
    from xrdwidgets.widgets.app import App

    app = App.demo(size="tiny", reconstruct=False)
    raw = app.state.raw.copy()
    raw.attrs["corrections"] = "decay,air"
    app.state.set_data(raw, name="processed")
    p = app.corrections
    assert (p.air.value, p.decay.value, p.jitter.value, p.centre.value) == (False, False, True, True)


def test_gallery_generator_estimates_the_centre_and_keeps_candidates_inside_the_scan():
    from xrdwidgets.base.progress import run_to_end

    stack = _point_stack(2.0)
    events = []
    around, g = run_to_end(corr.iterate_centre_gallery(stack, around=22.0), events.append)
    assert around == 22.0
    assert [e.metrics["step"] for e in events] == ["estimating the centre", "reconstructing the candidates",
                                                   "done"]
    np.testing.assert_allclose(g["centre"].values, [19.0, 20.0, 21.0, 22.0, 23.0])  # |c| < 48 / 2
    around, g = run_to_end(corr.iterate_centre_gallery(stack, n=3, channels=(0, 2)))
    assert around == pytest.approx(2.0, abs=0.25) and g.sizes["centre"] == 3
    assert list(g.attrs["channels"]) == [0, 2]
