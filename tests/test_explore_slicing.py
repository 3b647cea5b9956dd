"""Slices of volumes and sinogram stacks (:mod:`xrdwidgets.explore.slicing`)."""
import numpy as np
import pytest
import xarray as xr

from xrdwidgets import explore
from xrdwidgets.data import DataError

from explore_data import make_volume, make_stack  # noqa: E402


def test_image_dims_of_both_kinds_and_any_order():
    vol = make_volume()
    assert explore.image_dims(vol) == ("y", "x", "tth")
    assert explore.image_dims(vol.transpose("tth", "x", "y")) == ("y", "x", "tth")
    assert explore.image_dims(make_stack()) == ("translation", "angle", "tth")


def test_unknown_and_extra_dims_are_named():
    bad = xr.DataArray(np.zeros((2, 3, 4)), dims=("a", "b", "c"))
    with pytest.raises(DataError, match="image_dims"):
        explore.image_dims(bad)
    odd = make_volume().expand_dims(foo=2)
    with pytest.raises(DataError, match=r"unknown dims \('foo',\)"):
        explore.pattern_at(odd, 0, 0)
    with_z = make_volume().expand_dims(z=[0.0, 1.0])
    with pytest.raises(DataError, match=r"extra dims \('z',\).*isel\(z=0\)"):
        explore.window_sum(with_z, 3.0, 4.0)


def test_pattern_at_and_range_errors_name_the_argument():
    vol = make_volume()
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
    st = make_stack()
    np.testing.assert_array_equal(explore.pattern_at(st, 3, 2).values, st.values[3, 2])


def test_nearest_and_channel_index():
    vol = make_volume()
    assert explore.channel_index(vol, 5.4) == 5
    assert explore.nearest_index([0.0, 1.0, 2.0], 10.0) == 2
    with pytest.raises(DataError, match="finite"):
        explore.nearest_index([0.0, 1.0], np.inf)


def test_sinogram_image():
    st = make_stack()
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
