"""Headless tests of the linked image–spectrum widgets (Explorer, SinogramView)."""
import numpy as np
import pytest
import xarray as xr

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import ipywidgets as w
from plotly.callbacks import BoxSelector, Points

import xrdwidgets
from xrdwidgets import data, explore, io
from xrdwidgets.data import DataError
from xrdwidgets.recon.fbp import fbp
from xrdwidgets.widgets import AppState
from xrdwidgets.widgets.plotting import MessageMeter, decode_z
from xrdwidgets.widgets.explorer import Explorer
from xrdwidgets.widgets.sinogram_view import SinogramView

from waiting import wait_until  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    return xrdwidgets.demo(size="tiny")


@pytest.fixture(scope="module")
def vol(demo):
    return fbp(demo["sinogram"])


@pytest.fixture
def ex(vol, demo, tmp_path):
    e = Explorer(vol, compare={"truth": demo["volume"]}, export_dir=tmp_path, name="FBP")
    yield e
    e.close()


def _points(xs, ys, inds=None):
    return Points(point_inds=inds if inds is not None else [0] * len(xs), xs=list(xs),
                  ys=list(ys), trace_name=None, trace_index=0)


def _shown(e):
    return decode_z(e.image_fig.data[0].z)


# ---------------------------------------------------------------------------- pixel → pattern
def test_select_pixel_shows_its_pattern_with_units(ex, vol):
    ex.select_pixel(7, 15)
    assert ex.pixel == (7, 15)
    main = ex.pattern_fig.data[0]
    np.testing.assert_array_equal(main.y, vol.values[7, 15])
    np.testing.assert_allclose(main.x, vol.tth.values)
    assert main.y.dtype == np.float32
    assert ex.pattern_fig.layout.xaxis.title.text == "2θ (deg)"
    assert ex.pattern_fig.layout.yaxis.title.text == explore.axis_label(vol)
    assert ex.image_fig.layout.xaxis.title.text == "x (mm)"
    assert ex.image_fig.layout.yaxis.title.text == "y (mm)"
    marker = ex.image_fig.layout.shapes[0]
    assert marker.xanchor == pytest.approx(float(vol.x[15])) and marker.yanchor == pytest.approx(float(vol.y[7]))
    assert "pixel (7, 15)" in ex.pattern_fig.layout.title.text
    xr.testing.assert_equal(ex.pattern, explore.pattern_at(vol, 7, 15))
    with pytest.raises(DataError, match=r"row=24 is out of range for dim 'y'"):
        ex.select_pixel(24, 0)


def test_pixel_update_is_small(ex):
    meter = MessageMeter(ex.image_fig, ex.pattern_fig)
    with meter.measure() as m:
        ex.select_pixel(3, 4)
    assert 0 < m.bytes <= 32 * 1024
    assert m.buffer_bytes == 2 * 60 * 4          # two float32 patterns (main + overlay), binary
    assert ex.timings["pattern"] < 0.5


def test_marker_and_window_move_by_replacing_the_shapes_array(ex):
    # plotly.js recomputes every trace for a relayout of 'shapes[0].xanchor' (edit type calc):
    # ~80 ms for a 512² heatmap per hover. Replacing the array only redraws the shapes.
    sent = []
    for fig in (ex.image_fig, ex.pattern_fig):
        fig.observe(lambda c: c["new"] and sent.append(c["new"]), "_py2js_update")
        fig.observe(lambda c: c["new"] and sent.append(c["new"]), "_py2js_relayout")
    ex.select_pixel(2, 3)
    ex.select_window(4, 9, by="index")
    keys = [k for m in sent for k in (m.get("layout_data") or m.get("relayout_data") or {})]
    assert "shapes" in keys and not [k for k in keys if k.startswith("shapes[")], keys
    assert ex.image_fig.layout.shapes[0].visible and ex.pattern_fig.layout.shapes[0].visible
    assert ex.image_fig.layout.shapes[0].xsizemode == "pixel"          # the rest of the shape kept


def test_late_frontend_gets_current_figure(ex, vol):
    # plotly syncs _widget_data only at construction; the view keeps it current (Voila)
    ex.select_pixel(5, 6)
    np.testing.assert_array_equal(ex.pattern_fig._widget_data[0]["y"], vol.values[5, 6])
    ex.select_channel(9)
    np.testing.assert_array_equal(decode_z(ex.image_fig._widget_data[0]["z"]), vol.values[:, :, 9])


# ---------------------------------------------------------------------------- channel / window → image
def test_select_channel_and_window(ex, vol):
    ex.select_channel(12)
    assert ex.window == (12, 13) and ex.channel == 12
    np.testing.assert_array_equal(_shown(ex), vol.values[:, :, 12])
    lo, hi = float(vol.tth[20]), float(vol.tth[25])
    ex.select_window(hi, lo)                           # coordinate values, any order
    assert ex.window == (20, 26) and ex.channel is None
    np.testing.assert_allclose(_shown(ex), vol.values[:, :, 20:26].sum(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ex.image.values, vol.values[:, :, 20:26].sum(-1), rtol=1e-5, atol=1e-5)
    assert ex.w_window.value == (20, 25)
    rect = ex.pattern_fig.layout.shapes[0]
    assert rect.x0 < lo < hi < rect.x1
    ex.select_window(30, 33, by="index")
    assert ex.window == (30, 33)
    with pytest.raises(DataError, match="outside"):
        ex.select_window(20.0, 30.0)
    with pytest.raises(DataError, match="channel=60 is out of range"):
        ex.select_channel(60)


def test_range_slider_drives_window(ex, vol):
    ex.w_window.value = (10, 14)
    assert ex.window == (10, 15)
    np.testing.assert_allclose(_shown(ex), vol.values[:, :, 10:15].sum(-1), rtol=1e-5, atol=1e-5)


def test_window_on_large_image_is_decimated():
    rng = np.random.default_rng(0)
    big = data.volume(rng.random((600, 600, 4), dtype=np.float32), spectral=np.linspace(1, 2, 4))
    e = Explorer(big)
    meter = MessageMeter(e.image_fig, e.pattern_fig)
    with meter.measure() as m:
        e.select_window(0, 4, by="index")
    z = _shown(e)
    assert z.shape == (300, 300)                       # ≤ 512 per axis, block means
    expected = explore.decimate(big.values.sum(-1), 512)
    np.testing.assert_allclose(z, expected, rtol=1e-5)
    assert len(e.image_fig.data[0].x) == 300
    assert m.buffer_bytes == 300 * 300 * 4           # float32 rows, binary
    assert m.bytes < 300 * 300 * 4 + 300 * 120 + 10_000   # + JSON per row and the rest
    assert e.image.shape == (600, 600)                 # full resolution kept for export
    e.close()


# ---------------------------------------------------------------------------- callbacks
def test_image_click_and_hover_select_pixel(ex, vol):
    heat = ex.image_fig.data[0]
    heat._dispatch_on_click(_points([float(vol.x[3])], [float(vol.y[11])]), None)
    assert ex.pixel == (11, 3)
    heat._dispatch_on_hover(_points([float(vol.x[20])], [float(vol.y[2])]), None)
    assert ex.pixel == (2, 20)
    ex.w_hover.value = False
    heat._dispatch_on_hover(_points([float(vol.x[0])], [float(vol.y[0])]), None)
    assert ex.pixel == (2, 20)                         # hover link off
    heat._dispatch_on_click(_points([], []), None)     # plotly calls every trace, often empty
    assert ex.pixel == (2, 20)


def test_marker_follows_click_at_once_and_hover_on_leaving(ex, vol):
    heat = ex.image_fig.data[0]
    marker = lambda: (ex.image_fig.layout.shapes[0].xanchor, ex.image_fig.layout.shapes[0].yanchor)  # noqa: E731
    heat._dispatch_on_click(_points([float(vol.x[3])], [float(vol.y[11])]), None)
    assert marker() == pytest.approx((float(vol.x[3]), float(vol.y[11])))
    meter = MessageMeter(ex.image_fig)
    with meter.measure() as m:                         # a hover sends nothing to the image
        heat._dispatch_on_hover(_points([float(vol.x[20])], [float(vol.y[2])]), None)
    assert ex.pixel == (2, 20) and m.messages == 0
    assert marker() == pytest.approx((float(vol.x[3]), float(vol.y[11])))
    heat._dispatch_on_unhover(_points([float(vol.x[20])], [float(vol.y[2])]), None)
    assert marker() == pytest.approx((float(vol.x[20]), float(vol.y[2])))
    with meter.measure() as m:                         # nothing stale: leaving again sends nothing
        heat._dispatch_on_unhover(_points([], []), None)
    assert m.messages == 0


def test_pattern_click_hover_and_box_select(ex, vol):
    main = ex.pattern_fig.data[0]
    main._dispatch_on_click(_points([float(vol.tth[33])], [0.0], [33]), None)
    assert ex.window == (33, 34)
    ex.w_hover_map.value = True
    main._dispatch_on_hover(_points([float(vol.tth[40]) + 0.01], [0.0]), None)
    assert ex.window == (40, 41)
    box = BoxSelector(xrange=[float(vol.tth[5]), float(vol.tth[9])], yrange=[0, 1])
    main._dispatch_on_selection(_points([], []), box)
    assert ex.window == (5, 10)
    main._dispatch_on_hover(_points([float(vol.tth[40])], [0.0]), None)
    assert ex.window == (5, 10)                        # hover never replaces a window
    # a bad selection does not raise into the kernel: it is reported in the status line
    main._dispatch_on_selection(_points([], []), BoxSelector(xrange=[50.0, 60.0], yrange=[0, 1]))
    assert ex.window == (5, 10) and "outside" in ex.w_status.value



def test_box_select_reaching_every_trace_is_handled_once(ex, vol):
    # plotly dispatches a selection to every trace (main + overlay): one window, one message
    sent = []
    ex.pattern_fig.observe(lambda c: c["new"] and sent.append(c["new"]), "_py2js_relayout")
    box = BoxSelector(xrange=[float(vol.tth[12]), float(vol.tth[20])], yrange=[0, 1])
    for tr in ex.pattern_fig.data:
        tr._dispatch_on_selection(_points([], []), box)
    assert len(ex.pattern_fig.data) == 2 and ex.window == (12, 21)
    assert sum("selections" in m["relayout_data"] for m in sent) == 1


# ---------------------------------------------------------------------------- overlays
def test_compare_overlay_at_same_pixel(ex, vol, demo):
    ex.select_pixel(12, 12)
    assert [t.name for t in ex.pattern_fig.data] == ["FBP", "truth"]
    np.testing.assert_array_equal(ex.pattern_fig.data[1].y, demo["volume"].values[12, 12])
    assert set(ex.patterns) == {"FBP", "truth"}
    ex.overlays = ()
    assert ex.pattern_fig.data[1].visible is False and set(ex.patterns) == {"FBP"}
    ex.overlays = ("truth",)
    assert ex.pattern_fig.data[1].visible is True
    with pytest.raises(DataError, match="unknown names"):
        ex.overlays = ("nope",)
    wrong = data.volume(np.zeros((5, 5, 60), np.float32), spectral=vol.tth.values)
    with pytest.raises(DataError, match=r"compare\['small'\]: image size"):
        ex.set_compare({"small": wrong})
    ex.set_compare({"SIRT": vol * 0.5, "truth": demo["volume"]})
    assert [t.name for t in ex.pattern_fig.data] == ["FBP", "SIRT", "truth"]
    np.testing.assert_allclose(ex.pattern_fig.data[1].y, 0.5 * vol.values[12, 12], rtol=1e-6)


# ---------------------------------------------------------------------------- display options
def test_log_scale_percentiles_and_colormap(ex, vol):
    ex.select_channel(20)
    ex.w_percentiles.value = (5.0, 95.0)
    lo, hi = explore.percentile_limits(vol.values[:, :, 20], (5, 95))
    assert ex.image_fig.data[0].zmin == pytest.approx(lo) and ex.image_fig.data[0].zmax == pytest.approx(hi)
    ex.w_log.value = True
    np.testing.assert_allclose(_shown(ex), explore.log_image(vol.values[:, :, 20]), rtol=1e-5)
    assert ex.image_fig.data[0].colorbar.title.text.startswith("log10")
    ex.w_cmap.value = "magma"
    assert ex.image_fig.data[0].colorscale[0][1] == "#000004"     # plotly's magma starts black
    ex.w_log_pattern.value = True
    assert ex.pattern_fig.layout.yaxis.type == "log"


def test_figures_have_fixed_size_for_tabs_and_boxes(ex):
    for fig in (ex.image_fig, ex.pattern_fig):
        assert fig.layout.autosize is False and fig.layout.width and fig.layout.height
    for container in (w.Tab(children=[ex.widget]), w.Accordion(children=[ex.widget]), w.HBox([ex.widget])):
        assert container.children[0] is ex.widget
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()


# ---------------------------------------------------------------------------- export
def test_export_writes_and_never_overwrites(ex, vol, tmp_path):
    ex.select_pixel(10, 11)
    ex.select_window(20, 25, by="index")
    png = ex.export_image("png")
    assert png.parent == tmp_path and png.name.startswith("FBP_tth_") and png.suffix == ".png"
    h5 = ex.export_image("h5")
    np.testing.assert_allclose(io.load(h5).values, vol.values[:, :, 20:25].sum(-1), rtol=1e-5, atol=1e-5)
    xy = ex.export_pattern("xy")
    assert xy.name == "FBP_y10_x11.xy"
    cols = np.loadtxt(xy)
    np.testing.assert_allclose(cols[:, 1], vol.values[10, 11], rtol=1e-6, atol=1e-7)
    assert cols.shape[1] == 3                           # 2θ, FBP, truth
    with pytest.raises(FileExistsError):
        ex.export_pattern("xy")
    before = xy.read_text()
    ex.select_pixel(10, 11)
    ex.w_pattern_fmt.value = "xy"
    ex.w_save_pattern.click()                          # the button reports, never replaces
    assert "not replaced" in ex.w_status.value and xy.read_text() == before
    ex.w_overwrite.value = True
    ex.w_save_pattern.click()
    assert "saved" in ex.w_status.value
    ex.export_pattern("png", folder=tmp_path / "sub")
    assert (tmp_path / "sub" / "FBP_y10_x11.png").exists()
    with pytest.raises(DataError, match="fmt must be one of"):
        ex.export_image("xy")


# ---------------------------------------------------------------------------- state, data changes
def test_follows_app_state(demo, vol):
    st = AppState()
    st.set_data(demo["sinogram"], truth=demo)
    e = Explorer(state=st)
    assert e.volume is None and "no data" in e.w_status.value
    st.add_result("fbp", vol)
    assert e.name == "fbp" and e.compare.keys() == {"truth"}
    st.add_result("half", vol * 0.5)
    assert e.name == "half" and set(e.compare) == {"fbp", "truth"}
    e.select_pixel(4, 5)
    np.testing.assert_allclose(e.pattern_fig.data[0].y, 0.5 * vol.values[4, 5], rtol=1e-6)
    st.current = "fbp"
    assert e.name == "fbp" and e.pixel == (4, 5)        # selection kept
    np.testing.assert_array_equal(e.pattern_fig.data[0].y, vol.values[4, 5])
    e.close()
    st.add_result("other", vol)
    assert e.name == "fbp"                              # closed: no longer follows


def test_set_volume_keeps_selection_and_rejects_bad_data(ex, vol):
    ex.select_pixel(2, 3)
    ex.select_window(10, 14, by="index")
    ex.set_volume(vol * 2, name="twice")
    assert ex.pixel == (2, 3) and ex.window == (10, 14) and ex.name == "twice"
    np.testing.assert_allclose(ex.pattern_fig.data[0].y, 2 * vol.values[2, 3], rtol=1e-6)
    with pytest.raises(DataError, match="expected a volume"):
        ex.set_volume(xrdwidgets.demo(size="tiny")["sinogram"])
    with pytest.raises(DataError, match=r"extra dims \('z',\)"):
        ex.set_volume(vol.expand_dims(z=[0.0, 1.0]))
    assert ex.name == "twice"


def test_no_data_yet_raises_clearly():
    e = Explorer()
    with pytest.raises(RuntimeError, match="no data loaded"):
        e.select_pixel(0, 0)


# ---------------------------------------------------------------------------- sinogram view
def test_sinogram_view_basics(demo):
    sv = SinogramView(demo)                              # a Dataset gives its sinogram
    sino = demo["sinogram"]
    assert sv.dims == ("translation", "angle", "tth")
    sv.select_pixel(5, 17)                              # (translation, angle) indices
    np.testing.assert_array_equal(sv.pattern_fig.data[0].y, sino.values[5, 17])
    sv.select_channel(8)
    np.testing.assert_array_equal(_shown(sv), sino.values[:, :, 8])
    assert sv.image_fig.layout.xaxis.title.text == "rotation angle (deg)"
    assert sv.image_fig.layout.yaxis.title.text == "translation (mm)"
    assert sv.image_fig.layout.yaxis.scaleanchor is None        # no equal aspect for sinograms
    sv.image_fig.data[0]._dispatch_on_click(_points([float(sino.angle[2])], [float(sino.translation[9])]), None)
    assert sv.pixel == (9, 2)
    with pytest.raises(DataError, match="expected a sinogram"):
        sv.set_volume(demo["volume"])


def test_sinogram_view_follows_state(demo):
    st = AppState()
    st.set_data(demo["sinogram"], truth=demo)
    sv = SinogramView(state=st)
    assert sv.name == "stack" and set(sv.compare) == {"clean"}
    st.stack = st.raw * 2
    assert set(sv.compare) == {"raw", "clean"}
    np.testing.assert_allclose(sv.pattern_fig.data[0].y, 2 * demo["sinogram"].values[sv.pixel], rtol=1e-6)


def test_large_volumes_get_a_window_index_and_the_same_images(monkeypatch):
    from xrdwidgets.widgets import explorer as _ex

    monkeypatch.setattr(_ex.Explorer, "WINDOW_INDEX_MIN", 1)
    rng = np.random.default_rng(5)
    vol = xrdwidgets.data.volume(rng.random((12, 10, 300)).astype(np.float32),
                                 spectral=np.linspace(2, 8, 300))
    ex = _ex.Explorer(vol)
    assert wait_until(lambda: ex._window_index is not None)
    ex.select_window(40, 250, by="index")
    np.testing.assert_allclose(ex.image.values, vol.values[:, :, 40:250].sum(-1), rtol=1e-5)


def test_tth_reads_2theta_even_without_schema_attrs(vol):
    """A file from another tool names the axis "tth" (or gives no long_name): every label says 2θ."""
    bare = vol.copy()
    bare["tth"] = xr.DataArray(vol.tth.values, dims="tth", attrs={"units": "deg", "long_name": "tth"})
    assert explore.axis_label(bare.tth) == "2θ (deg)" and explore.axis_name(bare.tth) == "2θ"
    bare["tth"] = xr.DataArray(vol.tth.values, dims="tth", attrs={"units": "deg"})
    assert explore.axis_label(bare.tth) == "2θ (deg)"
    assert explore.axis_label(xr.DataArray([1.0], dims="foo", name="foo", attrs={"units": "mm"})) == "foo (mm)"
    assert explore.channel_text(bare.tth, 3, 4) == f"2θ = {bare.tth.values[3]:.4g} deg (channel 3)"
    assert explore.channel_text(bare.tth, 3, 6).startswith("Σ 2θ ")
    with pytest.raises(ValueError, match="outside"):
        explore.channel_text(bare.tth, 5, 5)
    e = Explorer(bare, name="bare")
    try:
        assert e.pattern_fig.layout.xaxis.title.text == "2θ (deg)"
        assert "2θ" in e.w_window_label.value and "tth" not in e.w_window_label.value
    finally:
        e.close()
