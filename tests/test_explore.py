"""Pure view functions of :mod:`xrdwidgets.explore` (no widgets)."""
import numpy as np
import pytest
import xarray as xr

from xrdwidgets import data, explore, io
from xrdwidgets.data import DataError


def _volume(ny=5, nx=7, nc=11, *, dtype=np.float32, spectral_dim="tth"):
    rng = np.random.default_rng(0)
    arr = rng.random((ny, nx, nc)).astype(dtype)
    spectral = np.linspace(3.0, 8.0, nc) if spectral_dim != "channel" else None
    return data.volume(arr, spectral=spectral, spectral_dim=spectral_dim, name="vol")


def _stack(nt=6, na=4, nc=9):
    arr = np.arange(nt * na * nc, dtype=np.float32).reshape(nt, na, nc)
    return data.sinogram_stack(arr, spectral=np.linspace(2.0, 4.0, nc))


# ---------------------------------------------------------------------------- dims and indices
def test_image_dims_of_both_kinds_and_any_order():
    vol = _volume()
    assert explore.image_dims(vol) == ("y", "x", "tth")
    assert explore.image_dims(vol.transpose("tth", "x", "y")) == ("y", "x", "tth")
    assert explore.image_dims(_stack()) == ("translation", "angle", "tth")


def test_unknown_and_extra_dims_are_named():
    bad = xr.DataArray(np.zeros((2, 3, 4)), dims=("a", "b", "c"))
    with pytest.raises(DataError, match="image_dims"):
        explore.image_dims(bad)
    odd = _volume().expand_dims(foo=2)
    with pytest.raises(DataError, match=r"unknown dims \('foo',\)"):
        explore.pattern_at(odd, 0, 0)
    with_z = _volume().expand_dims(z=[0.0, 1.0])
    with pytest.raises(DataError, match=r"extra dims \('z',\).*isel\(z=0\)"):
        explore.window_sum(with_z, 3.0, 4.0)


def test_pattern_at_and_range_errors_name_the_argument():
    vol = _volume()
    p = explore.pattern_at(vol, 2, 5)
    assert p.dims == ("tth",)
    np.testing.assert_array_equal(p.values, vol.values[2, 5])
    assert float(p.y) == float(vol.y[2]) and float(p.x) == float(vol.x[5])
    with pytest.raises(DataError, match=r"row=5 is out of range for dim 'y' of size 5"):
        explore.pattern_at(vol, 5, 0)
    with pytest.raises(DataError, match=r"col=-1 is out of range for dim 'x'"):
        explore.pattern_at(vol, 0, -1)
    with pytest.raises(DataError, match="row must be an integer index"):
        explore.pattern_at(vol, 1.5, 0)
    # sinogram: row = translation, col = angle
    st = _stack()
    np.testing.assert_array_equal(explore.pattern_at(st, 3, 2).values, st.values[3, 2])


def test_window_indices_by_value_and_index():
    c = np.linspace(3.0, 8.0, 11)                      # step 0.5
    assert explore.window_indices(c, 4.0, 5.0) == (2, 5)
    assert explore.window_indices(c, 5.0, 4.0) == (2, 5)  # any order
    assert explore.window_indices(c, 4.1, 4.2) == (2, 3)  # between channels → nearest
    assert explore.window_indices(c, 2, 5, by="index") == (2, 5)
    dec = c[::-1]                                      # decreasing (e.g. d-spacing)
    assert explore.window_indices(dec, 4.0, 5.0) == (6, 9)
    with pytest.raises(DataError, match="outside"):
        explore.window_indices(c, 9.0, 10.0)
    with pytest.raises(DataError, match=r"0 <= lo < hi <= 11"):
        explore.window_indices(c, 3, 3, by="index")
    with pytest.raises(DataError, match=r"0 <= lo < hi <= 11"):
        explore.window_indices(c, 0, 12, by="index")
    with pytest.raises(DataError, match="hi must be an integer"):
        explore.window_indices(c, 0, 2.5, by="index")
    with pytest.raises(DataError, match="by must be"):
        explore.window_indices(c, 0, 2, by="channels")
    with pytest.raises(DataError, match="finite"):
        explore.window_indices(c, np.nan, 4.0)


def test_nearest_and_channel_index():
    vol = _volume()
    assert explore.channel_index(vol, 5.4) == 5
    assert explore.nearest_index([0.0, 1.0, 2.0], 10.0) == 2
    with pytest.raises(DataError, match="finite"):
        explore.nearest_index([0.0, 1.0], np.inf)


# ---------------------------------------------------------------------------- images
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_sum_channels_matches_numpy(dtype):
    a = (np.random.default_rng(1).random((6, 5, 20)) * 100).astype(dtype)
    for i0, i1 in [(0, 1), (3, 9), (0, 20), (19, 20)]:
        np.testing.assert_allclose(explore.sum_channels(a, i0, i1), a[:, :, i0:i1].sum(-1), rtol=1e-6)
    # non-contiguous input takes the numpy path
    t = np.asfortranarray(a)
    np.testing.assert_allclose(explore.sum_channels(t, 2, 7), a[:, :, 2:7].sum(-1), rtol=1e-6)
    with pytest.raises(DataError, match="i0=5, i1=5"):
        explore.sum_channels(a, 5, 5)
    with pytest.raises(DataError, match=r"\(row, col, channel\)"):
        explore.sum_channels(a[0], 0, 1)


def test_image_at_and_roi_image():
    vol = _volume()
    img = explore.image_at(vol, 4)
    assert img.dims == ("y", "x")
    np.testing.assert_array_equal(img.values, vol.values[:, :, 4])
    assert img.attrs["window_channels"] == [4, 5] and img.attrs["units"] == "counts"
    roi = explore.window_sum(vol, 4.0, 5.0)                # channels 2, 3, 4
    np.testing.assert_allclose(roi.values, vol.values[:, :, 2:5].sum(-1), rtol=1e-6)
    assert roi.attrs["window_lo"] == 4.0 and roi.attrs["window_hi"] == 5.0
    assert roi.attrs["long_name"].startswith("Σ")
    same = explore.window_sum(vol.transpose("tth", "x", "y"), 2, 5, by="index")
    np.testing.assert_allclose(same.values, roi.values, rtol=1e-6)
    with pytest.raises(DataError, match=r"channel=11 is out of range for dim 'tth'"):
        explore.image_at(vol, 11)
    # lazy (dask) data load only the window
    lazy = vol.chunk({"tth": 3})
    np.testing.assert_allclose(explore.window_sum(lazy, 4.0, 5.0).values, roi.values, rtol=1e-6)
    np.testing.assert_array_equal(explore.image_at(lazy, 4).values, img.values)


def test_sinogram_image():
    st = _stack()
    sino = explore.image_at(st, 2)
    assert sino.dims == ("translation", "angle")
    np.testing.assert_array_equal(sino.values, st.values[:, :, 2])


def test_decimate_bounds_and_block_means():
    img = np.arange(600 * 600, dtype=np.float32).reshape(600, 600)
    small = explore.decimate(img, 512)
    assert small.shape == (300, 300) and max(small.shape) <= 512
    np.testing.assert_allclose(small[0, 0], img[:2, :2].mean())
    # partial last block is averaged over its own pixels
    odd = np.arange(5 * 7, dtype=float).reshape(5, 7)
    d = explore.decimate(odd, 3)
    assert d.shape == (3, 3)
    np.testing.assert_allclose(d[-1, -1], odd[4:, 6:].mean())
    np.testing.assert_allclose(d[0, 0], odd[:2, :3].mean())
    assert explore.decimate(odd, 7) is odd
    # DataArray: coords are block means, attrs record the factors
    da = xr.DataArray(img, dims=("y", "x"), coords={"y": np.arange(600.0), "x": np.arange(600.0)},
                      attrs={"units": "counts"})
    dd = explore.decimate(da, 512)
    assert dd.shape == (300, 300) and dd.attrs["decimation"] == [2, 2]
    assert float(dd.y[0]) == 0.5 and dd.attrs["units"] == "counts"
    # non-square (sinogram-like) keeps the short axis
    assert explore.decimate(np.zeros((100, 1800)), 512).shape == (100, 450)
    with pytest.raises(DataError, match="2-D"):
        explore.decimate(np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="max_size"):
        explore.decimate(img, 0)


def test_percentile_limits_and_log():
    img = np.arange(101, dtype=float)
    assert explore.percentile_limits(img, (1, 99)) == (1.0, 99.0)
    with_nan = np.append(img, [np.nan, np.inf])
    assert explore.percentile_limits(with_nan, (0, 100)) == (0.0, 100.0)
    lo, hi = explore.percentile_limits(np.full(9, 3.0))
    assert lo < 3.0 < hi
    assert explore.percentile_limits(np.full(4, np.nan)) == (0.0, 1.0)
    with pytest.raises(DataError, match="percentiles"):
        explore.percentile_limits(img, (50, 10))
    a = np.array([[0.0, 1.0], [10.0, 100.0]])
    np.testing.assert_allclose(explore.log_image(a), [[0.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(explore.log_image(a, floor=0.01)[0, 0], -2.0)
    da = xr.DataArray(a, dims=("y", "x"), attrs={"long_name": "I"})
    assert explore.log_image(da).attrs["long_name"] == "log10 I"
    with pytest.raises(DataError, match="floor"):
        explore.log_image(a, floor=0)


def test_axis_label_from_attrs():
    vol = _volume()
    assert explore.axis_label(vol["tth"]) == "2θ (deg)"
    assert explore.axis_label(vol) == "diffracted intensity (counts)"
    assert explore.axis_label(_volume(spectral_dim="channel")["channel"]) == "channel"


# ---------------------------------------------------------------------------- export
def test_save_image_png_h5_no_overwrite(tmp_path):
    img = explore.window_sum(_volume(), 4.0, 5.0)
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
    vol = _volume()
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


def test_window_index_sums_like_the_direct_sum():
    from xrdwidgets.explore import WindowIndex, sum_channels

    rng = np.random.default_rng(3)
    a = rng.random((7, 5, 300)).astype(np.float32)
    idx = WindowIndex(a, block=16)
    for i0, i1 in [(0, 300), (0, 1), (5, 6), (3, 17), (16, 32), (15, 33), (100, 299), (31, 290)]:
        np.testing.assert_allclose(idx.window(i0, i1), a[:, :, i0:i1].sum(-1, dtype=np.float64), rtol=2e-6)
        assert idx.window(i0, i1).dtype == np.float32
        np.testing.assert_allclose(idx.window(i0, i1), sum_channels(a, i0, i1), rtol=2e-5)
    with pytest.raises(Exception, match="block must be an integer >= 1"):
        WindowIndex(a, block=0)
