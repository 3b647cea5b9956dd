import subprocess
import sys

import numpy as np
import pytest

import xrdwidgets
from xrdwidgets import cli, data, io


def test_demo_dataset_is_deterministic_and_valid():
    a = xrdwidgets.demo(size="tiny", seed=3)
    b = xrdwidgets.demo(size="tiny", seed=3)
    c = xrdwidgets.demo(size="tiny", seed=4)
    assert a["sinogram"].dims == ("translation", "angle", "tth")
    assert a["sinogram"].shape == (24, 30, 60)
    np.testing.assert_array_equal(a["sinogram"].values, b["sinogram"].values)
    assert not np.array_equal(a["sinogram"].values, c["sinogram"].values)  # noise follows the seed
    data.validate_sinogram_stack(a["sinogram"])
    data.validate_volume(a["volume"])
    assert list(a["phase"].values) == ["CeO2", "Ni", "TiO2"]
    pm = a["phase_maps"].values
    assert pm.min() >= 0 and pm.sum(0).max() <= 1 + 1e-9
    assert a["sinogram"].xrd.geometry.energy_keV == 60.0


def test_demo_default_size_matches_issue():
    ds = xrdwidgets.demo(dose=None)
    assert ds["sinogram"].shape == (100, 120, 300)
    # noise-free: the sinogram is the clean one
    np.testing.assert_allclose(ds["sinogram"].values, ds["clean"].values)


def test_cli_demo_writes_files_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["demo", "--size", "tiny", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "demo.h5") in printed and str(out / "demo.png") in printed
    ds = io.load(out / "demo.h5")
    assert {"sinogram", "fbp", "volume", "phase_maps"} <= set(ds.data_vars)
    assert ds["fbp"].dims == ("y", "x", "tth")
    assert np.isfinite(ds["fbp"].values).all()
    # FBP of the demo resembles the truth (scaled to counts): correlation of the summed images
    scale = ds.attrs["scale"]
    rec = ds["fbp"].sum("tth").values / scale
    tru = ds["volume"].sum("tth").values
    assert np.corrcoef(rec.ravel(), tru.ravel())[0, 1] > 0.9
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "demo.h5").stat().st_mtime_ns
    assert cli.main(["demo", "--size", "tiny", "--out", str(out), "-q"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "demo.h5").stat().st_mtime_ns == before


def test_cli_info_and_reconstruct(tmp_path, capsys):
    ds = xrdwidgets.demo(size="tiny")
    f = tmp_path / "scan.h5"
    io.save(ds[["sinogram"]], f)
    assert cli.main(["info", str(f)]) == 0
    text = capsys.readouterr().out
    assert "translation" in text and "ScanGeometry" in text
    assert cli.main(["reconstruct", str(f), "-q"]) == 0
    rec = io.load(tmp_path / "scan_fbp.h5")
    assert rec.dims == ("y", "x", "tth")


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing.h5")]) == 1
    err = capsys.readouterr().err
    assert "missing.h5" in err and "Traceback" not in err
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert cli.main(["info", str(bad)]) == 1
    assert "bad.h5" in capsys.readouterr().err


def test_cli_help_runs():
    r = subprocess.run([sys.executable, "-m", "xrdwidgets.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout and "reconstruct" in r.stdout


@pytest.mark.parametrize("method,extra", [("sirt", ["--n-iter", "5", "--nonneg"]),
                                          ("tv", ["--n-iter", "5", "--lam-rel", "0.1"])])
def test_cli_reconstruct_iterative(tmp_path, method, extra):
    ds = xrdwidgets.demo(size="tiny")
    f = tmp_path / "scan.h5"
    io.save(ds[["sinogram"]], f)
    assert cli.main(["reconstruct", str(f), "--method", method, "-q", *extra]) == 0
    out = tmp_path / f"scan_{method}.h5"
    rec = io.load(out)
    assert rec.dims == ("y", "x", "tth")
    if "--nonneg" in extra:
        assert float(rec.min()) >= 0
    prov = io.read_provenance(out)
    assert prov["parameters"]["n_iter"] == 5
