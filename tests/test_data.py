import numpy as np
import pytest
import xarray as xr

import xrdwidgets  # noqa: F401  (registers .xrd)
from xrdwidgets import ScanGeometry, data
from xrdwidgets.data import DataError


def _stack(shape=(6, 5, 8), **kw):
    rng = np.random.default_rng(0)
    kw.setdefault("spectral", np.linspace(2, 10, shape[-1]))
    return data.sinogram_stack(rng.random(shape, dtype=np.float32), **kw)


def test_sinogram_stack_defaults_and_units():
    g = ScanGeometry(energy_keV=60.0, translation_step_mm=0.05)
    da = _stack(geometry=g)
    assert da.dims == ("translation", "angle", "tth")
    assert da.angle.attrs["units"] == "deg" and da.tth.attrs["units"] == "deg"
    assert da.translation.attrs["units"] == "mm"
    np.testing.assert_allclose(da.translation.values, (np.arange(6) - 2.5) * 0.05)
    np.testing.assert_allclose(da.angle.values, np.arange(5) * 36.0)
    assert da.xrd.geometry == g
    assert da.xrd.kind == "sinogram" and da.xrd.spectral_dim == "tth"
    assert da.dtype == np.float32  # no silent dtype change


def test_any_dim_order_returns_canonical():
    rng = np.random.default_rng(1)
    arr = rng.random((8, 5, 6))  # (tth, angle, translation)
    da = data.sinogram_stack(arr, dims=("tth", "angle", "translation"), spectral=np.arange(8) + 1.0)
    assert da.dims == ("translation", "angle", "tth")
    np.testing.assert_array_equal(da.values, arr.transpose(2, 1, 0))
    vol = data.volume(rng.random((3, 4, 5, 2)), dims=("tth", "y", "z", "x"), spectral=[1.0, 2.0, 3.0])
    assert vol.dims == ("z", "y", "x", "tth")
    transposed = da.transpose("angle", "tth", "translation")
    assert data.validate(transposed).dims == ("translation", "angle", "tth")


def test_torch_input_and_extra_dims():
    torch = pytest.importorskip("torch")
    t = torch.rand(2, 4, 3, 5)
    da = data.sinogram_stack(t, dims=("time", "translation", "angle", "q"), spectral_dim="q",
                             spectral=np.linspace(1, 3, 5), time=[0.0, 10.0])
    assert da.dims == ("time", "translation", "angle", "q")
    assert da.q.attrs["units"] == "1/Å" and da.time.attrs["units"] == "s"


def test_channel_dim_needs_no_coordinate():
    da = data.sinogram_stack(np.ones((4, 3, 1)), spectral_dim="channel")
    assert da.channel.values.tolist() == [0]


@pytest.mark.parametrize("arr,kw,match", [
    (np.ones((4, 3)), {}, r"at least 3 axes .*found shape \(4, 3\)"),
    (np.ones((4, 3, 2)), {"dims": ("translation", "angle")}, "name 2 axes"),
    (np.ones((4, 3, 2)), {"angle": [0, 10]}, "coordinate 'angle' has length 2, but the data axis 'angle' has length 3"),
    (np.ones((4, 3, 2)), {"angle": [0, 20, 10]}, "strictly monotonic"),
    (np.ones((4, 3, 2)), {"spectral_dim": "wavelength"}, "spectral_dim must be one of"),
    (np.ones((4, 3, 2)), {"spectral": None}, "no coordinate given for the spectral dim 'tth'"),
    (np.ones((4, 3, 2), dtype=complex), {}, "real numeric dtype"),
    (np.ones((4, 3, 2)), {"dims": ("translation", "angle", "energy2")}, "unknown dims"),
])
def test_bad_input_is_named(arr, kw, match):
    kw = {"spectral": [1.0, 2.0], **kw}
    with pytest.raises(DataError, match=match):
        data.sinogram_stack(arr, **kw)


def test_nonfinite_values_are_counted():
    arr = np.ones((4, 3, 2))
    arr[0, 0, 0] = np.nan
    arr[1, 1, 1] = np.inf
    arr[2, 1, 1] = -np.inf
    with pytest.raises(DataError, match="found 1 NaN and 2 inf of 24"):
        data.sinogram_stack(arr, spectral=[1.0, 2.0])
    da = data.sinogram_stack(arr, spectral=[1.0, 2.0], validate_values=False)
    assert data.nonfinite_counts(da) == (1, 2)


def test_missing_dims_reported():
    da = xr.DataArray(np.ones((3, 4, 2)), dims=("translation", "foo", "tth"),
                      coords={"tth": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"missing \['angle'\]"):
        data.validate_sinogram_stack(da)
    with pytest.raises(DataError, match="neither a sinogram stack"):
        data.validate(da)
    da2 = xr.DataArray(np.ones((3, 4, 2)), dims=("translation", "angle", "tth"),
                       coords={"tth": [1.0, 2.0], "angle": [0.0, 1, 2, 3]})
    with pytest.raises(DataError, match="dim 'translation' has no coordinate"):
        data.validate(da2)


def test_empty_stack_rejected():
    with pytest.raises(DataError, match="empty"):
        data.sinogram_stack(np.ones((0, 3, 2)), spectral=[1.0, 2.0], translation=np.array([]))


def test_dataset_input_uses_named_variable():
    da = _stack()
    ds = xr.Dataset({"sinogram": da, "other": ("phase", [1, 2])})
    assert data.as_dataarray(ds).name == "sinogram"
    assert data.validate(ds).dims == da.dims
    ds2 = xr.Dataset({"a": da, "b": da})
    with pytest.raises(DataError, match="expected one named"):
        data.as_dataarray(ds2)


def test_convert_spectral_uses_geometry():
    g = ScanGeometry(energy_keV=12.398419843320026)  # λ = 1 Å
    da = _stack(geometry=g, spectral=np.array([10.0, 20.0, 30.0, 60.0, 90.0, 100.0, 120.0, 150.0]))
    q = da.xrd.to("q")
    assert q.dims[-1] == "q" and q.q.attrs["units"] == "1/Å"
    np.testing.assert_allclose(q.q.values[3], 4 * np.pi * np.sin(np.deg2rad(30)), rtol=1e-12)
    d = da.xrd.to("d")
    assert d.d.values[3] == pytest.approx(1.0)  # λ / (2 sin 30°)
    assert np.all(np.diff(d.d.values) < 0)
    data.validate(d)  # decreasing is still monotonic
    back = d.xrd.to("tth")
    np.testing.assert_allclose(back.tth.values, da.tth.values, rtol=1e-10)
    np.testing.assert_array_equal(back.values, da.values)
    with pytest.raises(DataError, match="needs the X-ray energy"):
        _stack().xrd.to("q")


def test_energy_dispersive_conversion():
    da = _stack(spectral=np.linspace(40, 100, 8), spectral_dim="energy",
                geometry=ScanGeometry(ed_tth_deg=5.0))
    d = da.xrd.to("d")
    assert d.d.values[0] == pytest.approx(12.398419843320026 / (2 * 40 * np.sin(np.deg2rad(2.5))))


def test_volume_defaults():
    vol = data.volume(np.zeros((4, 5, 3)), spectral=[1.0, 2, 3],
                      geometry=ScanGeometry(translation_step_mm=0.1))
    assert vol.dims == ("y", "x", "tth")
    np.testing.assert_allclose(vol.x.values, (np.arange(5) - 2) * 0.1)
    assert vol.xrd.kind == "volume"


def test_set_geometry_replaces_keys_and_provenance():
    da = _stack(geometry=ScanGeometry(energy_keV=50.0, distance_mm=10.0))
    da2 = data.set_geometry(da, ScanGeometry(energy_keV=40.0))
    assert "geometry_distance_mm" not in da2.attrs
    assert "geometry_distance_mm" in da.attrs  # original untouched
    p = data.provenance("test", {"a": 1})
    assert p["provenance_software"].startswith("xrdwidgets ")
    assert '"a": 1' in p["provenance_parameters"]


def test_core_imports_without_widget_libraries():
    import subprocess
    import sys
    code = ("import sys; import xrdwidgets, xrdwidgets.data, xrdwidgets.io, xrdwidgets.sim; "
            "bad=[m for m in ('ipywidgets','plotly','voila') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
