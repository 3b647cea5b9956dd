"""Tests of xrdwidgets.io: own HDF5 layout, nDTomo/SD2I/npy importers, zarr, describe."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import dask.array as dsa
import h5py
import numpy as np
import pytest
import xarray as xr

import xrdwidgets  # noqa: F401  (registers .xrd)
from xrdwidgets import data, io
from xrdwidgets.data import DataError
from xrdwidgets.geometry import ScanGeometry
from xrdwidgets.io import XRDFileError, XRDFileNotFoundError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SD2I_FILE = SHARED_DATA / "sd2i_experimental_sinograms.h5"
needs_sd2i = pytest.mark.skipif(not SD2I_FILE.exists(), reason=f"{SD2I_FILE} not present")


# ---------------------------------------------------------------------------- fixtures
RICH_ATTRS = {
    "note": "hello ∑",
    "empty": "",
    "count": 3,
    "scale": 2.5,
    "flag": True,
    "names": ["a", "bb"],
    "steps": [1, 2, 3],
    "range": [0.0, 180.0],
    "pair": (1.5, 2.5),
    "mixed": [1, "a", None],
    "nested": {"a": 1, "b": [1, 2]},
    "nothing": None,
    "empty_list": [],
    "arr": np.array([[1, 2], [3, 4]], dtype=np.int16),
    "f32": np.float32(1.25),
}


def _sinogram(n_t=6, n_a=5, n_c=7, dtype="float32"):
    rng = np.random.default_rng(0)
    geom = ScanGeometry(energy_keV=60.0, translation_step_mm=0.05, distance_mm=900.0)
    da = data.sinogram_stack(rng.random((n_t, n_a, n_c)).astype(dtype), spectral=np.linspace(1, 8, n_c),
                             geometry=geom, attrs=dict(RICH_ATTRS))
    da = da.assign_coords(angle_index=("angle", np.arange(n_a, dtype=np.int32)), z=0.5)
    da["angle_index"].attrs["comment"] = "non-dim coord"
    return da


def _dataset():
    sino = _sinogram()
    ny, nx = 4, 3
    phases = np.array(["NiO", "CeO2"])
    maps = xr.DataArray(np.arange(2 * ny * nx, dtype=np.float64).reshape(2, ny, nx),
                        dims=("phase", "y", "x"),
                        coords={"phase": phases, "y": np.arange(ny) - 1.5, "x": np.arange(nx) - 1.0},
                        attrs={"units": "fraction"})
    mask = xr.DataArray(np.arange(ny * nx).reshape(ny, nx) % 2 == 0, dims=("y", "x"))
    ds = xr.Dataset({"sinogram": sino, "ground_truth": maps, "mask": mask,
                     "label": xr.DataArray(np.array(["a", "bcd"], dtype=object), dims="phase")},
                    attrs={"title": "phantom", "seed": 7, "shape": [4, 3]})
    ds = ds.assign_coords(time=np.array(["2024-01-01T00:00", "2024-01-01T00:01"], dtype="datetime64[ns]"))
    ds["y"].attrs["units"] = "mm"
    return ds


# ============================================================================ own HDF5 layout
def test_dataarray_roundtrip_is_identical(tmp_path):
    da = _sinogram()
    path = io.save(da, tmp_path / "s.h5", producer="test", parameters={"a": 1})
    out = io.load(path)
    assert isinstance(out, xr.DataArray)
    xr.testing.assert_identical(out, da)
    assert out.dtype == np.float32 and out["angle_index"].dtype == np.int32
    for key, value in da.attrs.items():  # exact Python types, not just equal values
        assert type(out.attrs[key]) is type(value), key
    assert out.attrs["pair"] == (1.5, 2.5) and out.attrs["nested"] == {"a": 1, "b": [1, 2]}
    assert out.xrd.geometry == da.xrd.geometry
    assert not any(k.startswith("provenance") for k in out.attrs)
    xr.testing.assert_identical(io.load(da.xrd.save(tmp_path / "acc.h5")), da)  # accessor


def test_dataset_roundtrip_is_identical(tmp_path):
    ds = _dataset()
    out = io.load(io.save(ds, tmp_path / "d.h5"))
    assert isinstance(out, xr.Dataset)
    xr.testing.assert_identical(out, ds)
    assert list(out.data_vars) == list(ds.data_vars)
    assert out["phase"].dtype == ds["phase"].dtype  # <U4
    assert out["label"].dtype == object and out["mask"].dtype == bool
    assert out["time"].dtype == np.dtype("datetime64[ns]")
    assert out.attrs == ds.attrs and type(out.attrs["shape"]) is list


def test_unnamed_lazy_and_odd_names_roundtrip(tmp_path):
    da = xr.DataArray(dsa.from_array(np.arange(24.0).reshape(2, 3, 4), chunks=(1, 3, 2)),
                      dims=("a", "b", "tth"), coords={"tth": np.arange(4.0), "a/b": ("a", [1, 2])})
    da.name = None  # xarray takes the dask array's name otherwise
    out = io.load(io.save(da, tmp_path / "u.h5"))
    assert out.name is None
    xr.testing.assert_identical(out, da.compute())


def test_provenance_and_format_mark(tmp_path):
    path = io.save(_sinogram(), tmp_path / "p.h5", producer="recon.fbp", parameters={"filter": "ramp"})
    prov = io.read_provenance(path)
    assert prov["producer"] == "recon.fbp"
    assert prov["parameters"] == {"filter": "ramp"}
    assert prov["software"] == f"xrdwidgets {xrdwidgets.__version__}"
    assert prov["versions"]["h5py"] == h5py.__version__ and prov["created"]
    with h5py.File(path, "r") as f:
        assert f.attrs["xrdwidgets_format"] == io.FORMAT_NAME
        assert f.attrs["xrdwidgets_format_version"] == io.FORMAT_VERSION
        assert set(f) == {"variables", "coords", "provenance"}
        assert f["coords/tth"].attrs["units"] == "deg"  # readable by any HDF5 tool


def test_chunking_and_compression(tmp_path):
    da = _sinogram(n_c=20)
    path = io.save(da, tmp_path / "c.h5", chunks={"tth": 4}, compression="gzip")
    with h5py.File(path, "r") as f:
        dset = f["variables/sinogram"]
        assert dset.chunks == (6, 5, 4) and dset.compression == "gzip"
    xr.testing.assert_identical(io.load(path), da)
    # auto: whole sinograms per chunk, a block of channels of ~4 MiB
    auto_chunks = io._common._auto_chunks
    assert auto_chunks((256, 180, 1000), ("translation", "angle", "tth"), 4) == (256, 180, 22)
    assert auto_chunks((4000, 4000, 10), ("y", "x", "tth"), 4)[2] == 1
    small = io.save(da, tmp_path / "small.h5")
    with h5py.File(small, "r") as f:
        assert f["variables/sinogram"].chunks is None  # small arrays stay contiguous


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "x.h5"
    io.save(_sinogram(), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="x.h5"):
        io.save(_sinogram(n_c=3), path)
    assert path.read_bytes() == before
    io.save(_sinogram(n_c=3), path, overwrite=True)
    assert io.load(path).sizes["tth"] == 3
    with pytest.raises(FileExistsError):
        io.save_zarr(_sinogram(), path)


def test_failed_write_leaves_original_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.h5"
    io.save(_sinogram(), path)
    before = path.read_bytes()
    real = io.hdf5._write_variable
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after some data is on disk
            raise RuntimeError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(io.hdf5, "_write_variable", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        io.save(_dataset(), path, overwrite=True)
    calls.clear()
    with pytest.raises(RuntimeError, match="simulated"):
        io.save(_dataset(), tmp_path / "new.h5")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.h5"]


def test_unstorable_attr_is_a_clear_error(tmp_path):
    da = _sinogram()
    da.attrs["bad"] = object()
    with pytest.raises(DataError, match="'bad'.*object"):
        io.save(da, tmp_path / "b.h5")
    assert os.listdir(tmp_path) == []
    with pytest.raises(DataError, match="reserved"):
        io.save(_dataset().assign_attrs(xrdwidgets_format="x"), tmp_path / "r.h5")


# ---------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(XRDFileNotFoundError, match="nope.h5.*no such file") as err:
        io.load(tmp_path / "nope.h5")
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, OSError)
    with pytest.raises(XRDFileNotFoundError, match="folder"):
        io.save(_sinogram(), tmp_path / "no" / "dir.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello, this is text\n")
    with pytest.raises(XRDFileError, match=r"notes.h5: not an HDF5 file.*text starting 'hello") as err:
        io.load(path)
    assert isinstance(err.value, ValueError)
    npy = tmp_path / "a.h5"
    np.save(npy.with_suffix(".npy"), np.zeros(3))
    with pytest.raises(XRDFileError, match="load_npy"):
        io.load(npy.with_suffix(".npy"))


def test_truncated_hdf5(tmp_path):
    path = io.save(_sinogram(), tmp_path / "t.h5")
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(XRDFileError, match="t.h5: HDF5 file cannot be opened, it is truncated or corrupt"):
        io.load(path)


def test_unknown_layout_and_newer_version(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/counts", data=np.zeros((2, 3, 4)))
    with pytest.raises(XRDFileError, match=r"unknown HDF5 layout; found /entry/ \(group\), "
                                           r"/entry/counts \(2, 3, 4\) float64"):
        io.load(path)
    new = io.save(_sinogram(), tmp_path / "new.h5")
    with h5py.File(new, "r+") as f:
        f.attrs["xrdwidgets_format_version"] = 99
    with pytest.raises(XRDFileError, match="version 99"):
        io.load(new)


# ============================================================================ nDTomo
def _ndtomo_file(path, shape=(5, 4, 6), **extra):
    vol = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=vol)
        for key, value in extra.items():
            f.create_dataset(key, data=value)
    return vol


def test_ndtomo_volume(tmp_path, caplog):
    path = tmp_path / "vol.h5"
    tth = np.linspace(2, 7, 6)
    vol = _ndtomo_file(path, twotheta=tth, q=np.linspace(1, 3, 6), energy=60.0)
    with caplog.at_level(logging.INFO, logger="xrdwidgets.io"):
        da = io.load(path)
    assert da.dims == ("y", "x", "tth") and da.sizes == {"y": 4, "x": 5, "tth": 6}
    np.testing.assert_array_equal(da.transpose("x", "y", "tth").values, vol)
    np.testing.assert_array_equal(da["tth"].values, tth)
    assert da["x"].attrs["units"] == "px" and da.xrd.geometry.energy_keV == 60.0
    note = da.attrs["import_note"]
    assert "axis order assumed ('x', 'y', 'tth')" in note and "/twotheta" in note and "['/q']" in note
    assert "read as a volume" in note
    assert note in caplog.text
    data.validate_volume(da)


def test_ndtomo_sinogram_and_axis_names(tmp_path):
    path = tmp_path / "sino.h5"
    omega = np.linspace(0, 170, 4)
    sino = _ndtomo_file(path, Energy=np.linspace(30, 80, 6), omega=omega)
    da = io.load_ndtomo(path)
    assert da.dims == ("translation", "angle", "energy")
    np.testing.assert_array_equal(da.values, sino)
    np.testing.assert_array_equal(da["angle"].values, omega)
    assert "/omega" in da.attrs["import_note"]
    # kind given, no /omega: angles evenly over 0-180
    path2 = tmp_path / "sino2.h5"
    _ndtomo_file(path2, d=np.linspace(3, 1, 6))
    da2 = io.load_ndtomo(path2, kind="sinogram")
    np.testing.assert_allclose(da2["angle"].values, [0, 45, 90, 135])
    assert da2.dims[-1] == "d" and "evenly spaced over 0–180°" in da2.attrs["import_note"]
    # no spectral axis: channel index; dims override with channels first
    path3 = tmp_path / "plain.h5"
    vol = _ndtomo_file(path3, shape=(6, 5, 4))
    da3 = io.load_ndtomo(path3, dims=("spectral", "x", "y"))
    assert da3.dims == ("y", "x", "channel") and da3.sizes["channel"] == 6
    np.testing.assert_array_equal(da3.transpose("channel", "x", "y").values, vol)
    assert "no spectral axis" in da3.attrs["import_note"]


def test_ndtomo_bad_files(tmp_path):
    p = tmp_path / "mismatch.h5"
    _ndtomo_file(p, tth=np.linspace(1, 2, 9))
    with pytest.raises(XRDFileError, match=r"mismatch.h5: axis /tth has shape \(9,\), expected \(6,\)"):
        io.load(p)
    p = tmp_path / "nonmono.h5"
    _ndtomo_file(p, tth=np.array([1, 2, 3, 2.5, 4, 5.0]))
    with pytest.raises(XRDFileError, match=r"nonmono.h5: axis /tth must be strictly monotonic; "
                                           r"found 3.0 then 2.5 at index 2"):
        io.load(p)
    p = tmp_path / "flat.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("data", data=np.zeros((4, 5)))
        f.create_dataset("tth", data=np.arange(5.0))
    with pytest.raises(XRDFileError, match=r"flat.h5: dataset /data has 2 axes \(shape \(4, 5\)\), expected 3"):
        io.load(p)
    p = tmp_path / "nodata.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("tth", data=np.arange(5.0))
        f.create_group("meta")
    with pytest.raises(XRDFileError, match=r"nodata.h5: dataset /data is missing; found /meta/ \(group\)"):
        io.load_ndtomo(p)


# ============================================================================ SD2I
def _sd2i_file(path):
    rng = np.random.default_rng(1)
    a = rng.random((12, 7)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("A", data=a)
        f.create_dataset("A_angsamp", data=a[::3])
        f.create_dataset("B", data=rng.random((5, 7)))
    return a


def test_sd2i_synthetic(tmp_path):
    path = tmp_path / "sd2i.h5"
    a = _sd2i_file(path)
    assert io.list_sd2i(path) == {"A": (12, 7), "A_angsamp": (4, 7), "B": (5, 7)}
    da = io.load_sd2i(path, "A")
    assert da.dims == ("translation", "angle", "channel") and da.shape == (7, 12, 1)
    assert da.dtype == np.float32 and da.name == "A"
    np.testing.assert_array_equal(da.values[:, :, 0], a.T)
    np.testing.assert_allclose(da["angle"].values, np.arange(12) * 15.0)
    sub = io.load_sd2i(path, "A_angsamp")
    np.testing.assert_allclose(sub["angle"].values, [0, 45, 90, 135])
    assert "every 3rd angle of 'A'" in sub.attrs["import_note"]
    given = io.load_sd2i(path, "B", angles=np.arange(5) * 36.0)
    assert "given by the caller" in given.attrs["import_note"]
    data.validate_sinogram_stack(da)
    with pytest.raises(XRDFileError, match=r"sd2i.h5: no dataset 'C'; the file holds sinograms \['A', 'A_angsamp', 'B'\]"):
        io.load_sd2i(path, "C")
    with pytest.raises(XRDFileError, match="3 sinograms.*load_sd2i"):
        io.load(path)
    xr.testing.assert_identical(io.load(path, name="B"), io.load_sd2i(path, "B"))
    with pytest.raises(XRDFileError, match=r"axis /B \(angles=\) has shape \(3,\), expected \(5,\)"):
        io.load_sd2i(path, "B", angles=[0, 1, 2])


@needs_sd2i
def test_sd2i_real_file():
    names = io.list_sd2i(SD2I_FILE)
    assert names["MnNaWSiO2"] == (120, 179) and names["POX_angsamp"] == (54, 223)
    for base, step in (("MnNaWSiO2", 2), ("POX", 3), ("photocatalyst", 5)):
        full = io.load_sd2i(SD2I_FILE, base)
        sub = io.load_sd2i(SD2I_FILE, base + "_angsamp")
        assert full.shape == (names[base][1], names[base][0], 1)
        np.testing.assert_allclose(full["angle"].values, np.linspace(0, 180, names[base][0], endpoint=False))
        np.testing.assert_array_equal(sub["angle"].values, full["angle"].values[::step])
        np.testing.assert_array_equal(sub.values, full.values[:, ::step])
        assert sub["angle"].values[-1] < 180


# ============================================================================ npy
def test_load_npy(tmp_path):
    arr = np.random.default_rng(2).random((5, 6, 4))  # (angle, translation, tth)
    path = tmp_path / "a.npy"
    np.save(path, arr)
    da = io.load_npy(path, dims=("angle", "translation", "tth"), tth=np.linspace(1, 4, 4))
    assert da.dims == ("translation", "angle", "tth")
    np.testing.assert_array_equal(da.transpose("angle", "translation", "tth").values, arr)
    base = da.data
    while getattr(base, "base", None) is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)  # memory-mapped, not read
    assert "assumed defaults for ['angle', 'translation']" in da.attrs["import_note"]
    vol = io.load_npy(path, dims=("x", "y", "channel"), mmap_mode=None)
    assert vol.dims == ("y", "x", "channel")
    with pytest.raises(XRDFileError, match=r"a.npy: .*spectral dim 'tth'"):
        io.load_npy(path, dims=("angle", "translation", "tth"))
    with pytest.raises(XRDFileError, match=r"shape \(5, 6, 4\) \(3 axes\) but dims=\('angle', 'translation'\)"):
        io.load_npy(path, dims=("angle", "translation"))
    text = tmp_path / "t.npy"
    text.write_text("not numpy")
    with pytest.raises(XRDFileError, match="t.npy: not a readable .npy file"):
        io.load_npy(text, dims=("y", "x", "tth"))


# ============================================================================ zarr
def test_zarr_roundtrip_is_lazy(tmp_path):
    da = _sinogram(n_c=10)
    da.attrs = {k: v for k, v in da.attrs.items()
                if k.startswith("geometry_") or k in ("units", "note", "count", "names", "flag")}
    path = io.save_zarr(da, tmp_path / "s.zarr", chunks=4, producer="test")
    out = io.open_zarr(path)
    assert isinstance(out, xr.DataArray) and out.name == "sinogram"
    assert isinstance(out.data, dsa.Array)
    assert out.encoding["chunks"] == (6, 5, 4)  # stored by blocks of 4 channels
    assert io.open_zarr(path, chunks={}).chunks == ((6,), (5,), (4, 4, 2))
    xr.testing.assert_identical(out.compute(), da)
    assert out.xrd.geometry == da.xrd.geometry
    assert io.read_provenance(path)["producer"] == "test"
    assert isinstance(io.load(path).data, dsa.Array)
    ds = _dataset().drop_vars(["time", "label"]).assign_coords(phase=[1, 2])  # numeric only
    ds_out = io.open_zarr(io.save_zarr(ds, tmp_path / "d.zarr"))
    xr.testing.assert_identical(ds_out.compute(), ds)
    with pytest.raises(FileExistsError, match="d.zarr"):
        io.save_zarr(ds, tmp_path / "d.zarr")
    io.save_zarr(da.isel(tth=slice(0, 2)), tmp_path / "d.zarr", overwrite=True)
    assert io.open_zarr(tmp_path / "d.zarr").sizes["tth"] == 2
    assert sorted(os.listdir(tmp_path)) == ["d.zarr", "s.zarr"]


def test_zarr_stack_written_block_by_block(tmp_path, caplog):
    tth = np.linspace(1, 10, 10)
    expected = np.random.default_rng(3).random((6, 5, 10)).astype(np.float32)
    geom = ScanGeometry(energy_keV=70.0)
    w = io.create_zarr_stack(tmp_path / "big.zarr", coords={"angle": 5, "translation": 6, "tth": tth},
                             block=4, geometry=geom)
    assert w.dims == ("translation", "angle", "tth") and w.shape == (6, 5, 10) and w.block == 4
    w.write_block(expected[..., 0:4], 0)
    assert w.missing() == [(4, 10)]
    block = xr.DataArray(expected[..., 4:8], dims=w.dims,
                         coords={"translation": w.coords["translation"], "angle": w.coords["angle"],
                                 "tth": tth[4:8]}).transpose("tth", "angle", "translation")
    assert w.write_block(block) == (4, 8)  # start found from the coords
    with caplog.at_level(logging.WARNING, logger="xrdwidgets.io"):
        partial = io.open_zarr(w.path)
    assert "incomplete" in caplog.text
    assert np.isnan(partial.isel(tth=9).values).all()
    with pytest.raises(DataError, match=r"block shape \(6, 4, 2\)"):
        w.write_block(expected[:, :4, 8:], 8)
    w.write_block(expected[..., 8:], 8)
    out = w.close()
    assert isinstance(out.data, dsa.Array)
    np.testing.assert_array_equal(out.values, expected)
    assert out.xrd.geometry == geom
    data.validate_sinogram_stack(out)
    with pytest.raises(FileExistsError):
        io.create_zarr_stack(tmp_path / "big.zarr", coords={"angle": 5, "translation": 6, "tth": tth})


# ============================================================================ describe
def test_describe_object_and_files(tmp_path):
    da = _sinogram()
    vals = da.values.copy()
    vals[0, 0, 0] = np.nan
    da = da.copy(data=vals)
    text = da.xrd.info()
    assert "translation=6, angle=5, tth=7" in text
    assert "tth" in text and "1 … 8" in text and "[deg]" in text
    assert "geometry: ScanGeometry(energy_keV=60.0" in text
    assert "NaN 1, inf 0" in text and "min " in text and "dtype float32" in text
    path = io.save(da, tmp_path / "d.h5", producer="unit-test", parameters={"k": 2})
    ftext = io.describe(path)
    assert "xrdwidgets.hdf5 version 1" in ftext and "produced by unit-test" in ftext
    assert "(lazy, dask)" in ftext and "NaN 1, inf 0" in ftext
    ztext = io.describe(io.save_zarr(da.drop_attrs() if hasattr(da, "drop_attrs") else da,
                                     tmp_path / "d.zarr"))
    assert "zarr store" in ztext and "(lazy, dask)" in ztext and "NaN 1" in ztext
    ds_text = io.describe(_dataset())
    assert "ground_truth" in ds_text and "phase" in ds_text
    sd = tmp_path / "sd.h5"
    _sd2i_file(sd)
    assert "SD2I layout" in io.describe(sd) and "A_angsamp: (4, 7)" in io.describe(sd)
    np.save(tmp_path / "n.npy", np.arange(6.0))
    assert "max 5" in io.describe(tmp_path / "n.npy")


def test_value_stats_chunkwise(monkeypatch):
    monkeypatch.setattr(io._common, "_STATS_BLOCK_BYTES", 64)
    arr = np.arange(100.0).reshape(20, 5)
    arr[3, 1] = np.inf
    s = io._common._value_stats(arr)
    s_lazy = io._common._value_stats(dsa.from_array(arr, chunks=(4, 5)))
    for stats in (s, s_lazy):
        assert stats["min"] == 0 and stats["max"] == 99 and stats["inf"] == 1 and stats["nan"] == 0
        assert stats["mean"] == pytest.approx((np.arange(100.0).sum() - 16) / 99)  # 16 is the inf
