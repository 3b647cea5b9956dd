"""Downloads to the browser (issue 20): PNG figures with axes, HDF5 results, .xy patterns,
bounded sizes."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import xarray as xr

from xrdwidgets import io as xio
from xrdwidgets import explore
from xrdwidgets.data import DataError
from xrdwidgets.widgets.plotting import DownloadLink


def _image(n=32):
    y = np.linspace(-1, 1, n)
    img = xr.DataArray(np.outer(np.hanning(n), np.hanning(n)).astype(np.float32), dims=("y", "x"),
                       coords={"y": ("y", y, {"units": "mm"}), "x": ("x", y, {"units": "mm"})},
                       name="fbp", attrs={"long_name": "intensity", "units": "counts"})
    return img


def _decode_png(data: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png")


def test_png_download_is_a_figure_with_axes_not_the_bare_array():
    img = _image(32)
    data = explore.image_bytes(img, "png", title="FBP at 2θ 5 deg")
    arr = _decode_png(data)
    assert arr.shape[0] > 4 * 32 and arr.shape[1] > 4 * 32       # a figure, not 32×32 pixels
    rgb = arr[..., :3]
    white = np.all(rgb > 0.99, axis=-1)
    assert white[:, :20].mean() > 0.5                              # margin (axis labels) at the left
    # dark text pixels in the left margin: tick labels and the axis title were drawn
    assert np.any(np.all(rgb[:, : arr.shape[1] // 8] < 0.3, axis=-1))


def test_png_figure_draws_the_labels_with_units():
    # re-render with matplotlib and check the texts it placed (what the PNG shows)
    from matplotlib.figure import Figure

    import xrdwidgets.explore.figures as figs

    made = []
    real = Figure.savefig

    def spy(self, *a, **k):
        made.append(self)
        return real(self, *a, **k)

    Figure.savefig = spy
    try:
        figs.image_figure_png(_image(), title="t")
    finally:
        Figure.savefig = real
    ax = made[0].axes[0]
    assert ax.get_xlabel() == "x (mm)" and ax.get_ylabel() == "y (mm)"
    assert made[0].axes[1].get_ylabel() == "intensity (counts)"   # colour bar


def test_h5_and_xy_downloads_round_trip(tmp_path):
    img = _image(16)
    (tmp_path / "a.h5").write_bytes(explore.image_bytes(img, "h5"))
    back = xio.load(tmp_path / "a.h5")
    back = back if isinstance(back, xr.DataArray) else back[list(back.data_vars)[0]]
    np.testing.assert_allclose(back.values, img.values)
    tth = xr.DataArray(np.linspace(2, 8, 50), dims="tth", attrs={"long_name": "2θ", "units": "deg"})
    pat = xr.DataArray(np.arange(50.0), dims="tth", coords={"tth": tth}, name="fbp", attrs={"units": "counts"})
    text = explore.patterns_bytes({"fbp": pat}, "xy").decode()
    assert "2θ (deg)" in text
    np.testing.assert_allclose(np.loadtxt(io.StringIO(text))[:, 1], pat.values)


def test_result_download_is_bounded():
    vol = xr.DataArray(np.zeros((4, 4, 4), np.float32), dims=("y", "x", "tth"), name="v")
    assert explore.result_bytes(vol)[:8] == b"\x89HDF\r\n\x1a\n"
    with pytest.raises(DataError, match="download limit"):
        explore.check_download_size(100 * 2**20, "result v", limit_mb=64)


def test_download_link_carries_the_bytes_and_escapes_the_name():
    link = DownloadLink(max_mb=1)
    link.offer('a"b<c>.xy', b"1 2\n", "text/plain")
    m = re.search(r'href="data:text/plain;base64,([^"]+)"', link.widget.value)
    assert base64.b64decode(m.group(1)) == b"1 2\n"
    assert '"b<c>' not in link.widget.value
    with pytest.raises(DataError, match="download limit"):
        link.offer("big.bin", b"0" * (2 * 2**20))


def test_explorer_offers_image_pattern_and_result_downloads():
    from xrdwidgets.widgets.app import App

    ex = App.demo(size="tiny").explorer
    for what, suffix in (("image", ".png"), ("pattern", ".xy"), ("result", ".h5")):
        ex._download_clicked(what)
        assert ex.download.name.endswith(suffix), ex.w_status.value
        assert ex.download.size > 0 and "download=" in ex.download.widget.value


def test_roi_and_peakfit_panels_offer_their_maps():
    from xrdwidgets.widgets.app import App

    app = App.demo(size="tiny")
    roi = app.panel("ROI image")
    assert roi.downloads.click("map PNG") and roi.downloads.link.name.endswith(".png")
    assert _decode_png(base64.b64decode(
        re.search(r"base64,([^\"]+)", roi.downloads.link.widget.value).group(1))).shape[0] > 100
    assert roi.downloads.click("map HDF5") and roi.downloads.link.name.endswith(".h5")
    assert roi.fig.layout.xaxis.title.text == "x (mm)"
    pat = app.panel("ROI pattern")
    assert pat.downloads.click("pattern .xy")
    assert "2θ (deg)" in pat.download_bytes("xy")[1].decode()
    fit = app.panel("Peak fitting")
    assert not fit.downloads.click("map PNG")                  # nothing yet: said, not raised
    assert "no fit yet" in fit.downloads.message.value
