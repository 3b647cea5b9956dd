"""Channel windows and their sums (:mod:`xrdwidgets.explore.windows`)."""
import numpy as np
import pytest

from xrdwidgets import explore
from xrdwidgets.data import DataError

from explore_data import make_volume  # noqa: E402


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
    vol = make_volume()
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
