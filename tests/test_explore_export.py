"""Labels and exports (:mod:`xrdwidgets.explore.labels`, :mod:`xrdwidgets.explore.export`)."""
import numpy as np
import pytest

from xrdwidgets import data, explore, io
from xrdwidgets.data import DataError

from explore_data import make_volume  # noqa: E402


def test_axis_label_from_attrs():
    vol = make_volume()
    assert explore.axis_label(vol["tth"]) == "2θ (deg)"
    assert explore.axis_label(vol) == "diffracted intensity (counts)"
    assert explore.axis_label(make_volume(spectral_dim="channel")["channel"]) == "channel"


def test_save_image_png_h5_no_overwrite(tmp_path):
    img = explore.window_sum(make_volume(), 4.0, 5.0)
    png = explore.save_image(img, tmp_path / "a.png", cmap="magma", log=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(png).size == (7, 5)                 # one PNG pixel per image pixel
    with pytest.raises(FileExistsError, match="overwrite=True"):
        explore.save_image(img, tmp_path / "a.png")
    before = png.read_bytes()
    explore.save_image(img, tmp_path / "a.png", cmap="gray", overwrite=True)
    assert png.read_bytes() != before
    h5 = explore.save_image(img, tmp_path / "a.h5")
    back = io.load(h5)
    np.testing.assert_array_equal(back.values, img.values)
    assert back.attrs["window_channels"] == [2, 5] and back["x"].attrs["units"] == img["x"].attrs["units"]
    with pytest.raises(DataError, match="format 'tif' not supported"):
        explore.save_image(img, tmp_path / "a.tif")
    with pytest.raises(DataError, match="cmap"):
        explore.save_image(img, tmp_path / "b.png", cmap="jet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "a.png"]   # no temp files left


def test_save_patterns_xy_h5_png(tmp_path):
    vol = make_volume()
    other = data.volume(vol.values * 2, spectral=np.linspace(3.0, 8.0, 11) + 0.1, name="o")
    pats = {"fbp": explore.pattern_at(vol, 1, 2), "twice": explore.pattern_at(vol * 2, 1, 2),
            "shifted": explore.pattern_at(other, 1, 2)}
    xy = explore.save_patterns(pats, tmp_path / "p.xy")
    text = xy.read_text()
    assert "2θ (deg)" in text and "fbp" in text and "shifted" not in text.splitlines()[1]
    cols = np.loadtxt(xy)
    assert cols.shape == (11, 3)
    np.testing.assert_allclose(cols[:, 0], vol.tth.values)
    np.testing.assert_allclose(cols[:, 1], vol.values[1, 2], rtol=1e-6)
    np.testing.assert_allclose(cols[:, 2], 2 * vol.values[1, 2], rtol=1e-6)
    with pytest.raises(FileExistsError):
        explore.save_patterns(pats, tmp_path / "p.xy")
    h5 = explore.save_patterns(pats, tmp_path / "p.h5")
    ds = io.load(h5)
    assert set(ds.data_vars) == {"fbp", "twice", "shifted"} and "tth_shifted" in ds.dims
    png = explore.save_patterns(pats["fbp"], tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="1-D"):
        explore.save_patterns({"bad": vol}, tmp_path / "q.xy")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        explore.save_patterns(pats, tmp_path / "missing" / "p.xy")


def test_export_name_is_safe():
    assert explore.export_name("FBP run/1", "tth", "5.1-5.3deg") == "FBP_run_1_tth_5.1-5.3deg"
