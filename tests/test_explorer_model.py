"""The Explorer's state and computations without widgets (xrdwidgets.explore.model)."""
import numpy as np
import pytest
import xarray as xr

from xrdwidgets import data, explore
from xrdwidgets.data import DataError
from xrdwidgets.explore.model import ExplorerModel, results_sources


@pytest.fixture
def vol():
    rng = np.random.default_rng(3)
    v = rng.random((8, 9, 40)).astype(np.float32)
    v[2, 5] += 10.0                         # the brightest pixel
    v[:, :, 17] += 5.0                      # the brightest channel
    return data.volume(v, spectral=np.linspace(2.0, 6.0, 40))


def test_model_selects_and_computes_without_widgets(vol, tmp_path):
    m = ExplorerModel("volume", data_dir=None)
    with pytest.raises(RuntimeError, match="no data loaded"):
        m.compute_image()
    old = m.set_data(vol, name="v")
    assert old is None and m.name == "v"
    m.pixel, m.window = m.default_selection(old)
    assert m.pixel == (2, 5) and m.window == (17, 18) and m.channel == 17
    m.window = m.window_of(3.0, 3.5)
    img = m.compute_image()
    i0, i1 = m.window
    np.testing.assert_allclose(img.values, vol.values[:, :, i0:i1].sum(-1), rtol=1e-5)
    xr.testing.assert_equal(img, explore.window_sum(vol, i0, i1, by="index"))
    shown, limits = m.display_image(img, log=True)
    assert limits[0] < limits[1] and shown.attrs["long_name"].startswith("log10")
    xr.testing.assert_equal(m.pattern(), explore.pattern_at(vol, 2, 5))
    assert m.window_text().startswith("2θ ") and "pixel (2, 5)" in m.pixel_text()
    assert m.pixel_at(float(vol.x[4]), float(vol.y[1])) == (1, 4)
    assert m.channel_at(float(vol.tth[9])) == 9
    out = m.export_pattern("xy", tmp_path)
    assert out.name == f"{m.stem('pattern')}.xy" and out.exists()


def test_model_overlays_and_results_sources(vol):
    m = ExplorerModel("volume")
    m.set_data(vol, compare={"twice": vol * 2})
    m.overlays = ("twice",)
    pats = m.patterns()
    np.testing.assert_allclose(pats["twice"].values, 2 * pats[m.name].values, rtol=1e-6)
    with pytest.raises(DataError, match="image size"):
        m.set_compare({"small": vol.isel(y=slice(0, 3))})
    name, main, compare = results_sources({"a": vol, "b": vol * 3}, "a")
    assert name == "a" and main is vol and set(compare) == {"b"}
    assert results_sources({}, None) == ("", None, {})


def test_model_refuses_the_other_kind(vol):
    with pytest.raises(DataError, match="expected a sinogram"):
        ExplorerModel("sinogram").set_data(vol)
