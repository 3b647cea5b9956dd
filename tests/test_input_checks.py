"""Bad input caught before work (issue 13, item 5): output folders, huge datasets, implausible
angles and 2θ, constant data, zarr overwrite of a foreign folder."""
import os
import warnings

import h5py
import numpy as np
import pytest

from xrdwidgets import cli, data, io, jobs
from xrdwidgets.base import checks
from xrdwidgets.data import DataError, DataWarning
from xrdwidgets.recon import iterate
from xrdwidgets.sim.demo import demo

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture(scope="module")
def tiny():
    return demo(size="tiny").sinogram.isel(tth=slice(20, 24))


# ---------------------------------------------------------------------------- output folders
def test_cli_missing_output_folder_fails_before_reading_or_reconstructing(tiny, tmp_path, monkeypatch, capsys):
    src = io.save(tiny, tmp_path / "scan.h5")
    calls = []
    monkeypatch.setattr(io, "load", lambda *a, **k: calls.append("load"))
    from xrdwidgets.recon import iterative

    monkeypatch.setattr(iterative, "iterate", lambda *a, **k: calls.append("iterate"))
    target = tmp_path / "missing" / "out.h5"
    rc = cli.main(["reconstruct", str(src), "--method", "fbp", "--out", str(target), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and calls == []
    assert f"output folder of out.h5 {target.parent} does not exist" in err and ".tmp" not in err


def test_io_save_names_the_target_not_a_temp_file(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"out\.h5: cannot write, the folder .*missing does not exist"):
        io.save(tiny, tmp_path / "missing" / "out.h5")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(OSError, match=r"out\.h5"):
        io.save(tiny, tmp_path / "f" / "out.h5")


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
def test_read_only_folder_is_reported_before_work(tiny, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=rf"{ro}.*not writable"):
            checks.check_writable(ro)
        with pytest.raises(PermissionError, match=r"out\.h5: cannot write: .*not writable"):
            io.save(tiny, ro / "out.h5")
        with pytest.raises(PermissionError, match="job workdir .* not writable"):
            jobs.Job(lambda: iter(()), workdir=ro)
    finally:
        ro.chmod(0o755)


def test_unwritable_folder_names_the_target(tiny, tmp_path, monkeypatch, capsys):
    """As root a read-only folder stays writable: the probe's failure is simulated at its source."""
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".xrdwidgets-write-probe-x"))

    src = io.save(tiny, tmp_path / "scan.h5")
    monkeypatch.setattr(checks.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=rf"out\.h5: cannot write: output folder {tmp_path} is not "
                                              r"writable \(Permission denied\)"):
        io.save(tiny, tmp_path / "out.h5")
    rc = cli.main(["reconstruct", str(src), "--out", str(tmp_path / "rec.h5"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and f"output folder of rec.h5 {tmp_path} is not writable" in err and "probe" not in err
    with pytest.raises(PermissionError, match=f"job workdir {tmp_path}"):
        jobs.Job(lambda: iter(()), workdir=tmp_path)


def test_probe_file_is_removed(tmp_path):
    assert checks.check_writable(tmp_path) == tmp_path
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        checks.check_writable(tmp_path / "x")


def test_save_zarr_never_deletes_a_foreign_folder(tiny, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a zarr store.*never other files"):
        io.save_zarr(tiny, folder, overwrite=True)
    with pytest.raises(FileExistsError, match="not a zarr store"):
        io.create_zarr_stack(folder, coords={"translation": 2, "angle": 3, "tth": np.arange(1.0, 5.0)},
                             overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"
    with pytest.raises(IsADirectoryError, match="replaces only a file"):
        io.save(tiny, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"
    # a zarr store is replaced as before
    store = io.save_zarr(tiny, tmp_path / "s.zarr")
    io.save_zarr(tiny * 2, store, overwrite=True)
    np.testing.assert_allclose(io.open_zarr(store).values, 2 * tiny.values)


# ---------------------------------------------------------------------------- huge datasets
HUGE = (200_000, 200_000, 100)  # float32: 14.6 TiB declared, nothing written


def _huge_ndtomo(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("data", shape=HUGE, dtype="f4", chunks=(1000, 1000, 10))
        f["omega"] = np.linspace(0, 180, HUGE[1], endpoint=False)
        f["tth"] = np.linspace(1, 10, HUGE[2])
    return path


def test_huge_declared_dataset_info_works_load_and_reconstruct_refuse(tmp_path, capsys):
    path = _huge_ndtomo(tmp_path / "huge.h5")
    assert path.stat().st_size < 10_000_000
    text = io.describe(path)
    assert "(200000, 200000, 100)" in text and "14.6 TiB" in text and "not summarised" in text
    assert cli.main(["info", str(path)]) == 0 and "14.6 TiB" in capsys.readouterr().out
    with pytest.raises(checks.DataTooLargeError, match=r"/data \(200000, 200000, 100\) float32 needs 14\.6 TiB "
                                                       r"in memory, but only .* is available.*open_zarr"):
        io.load(path)
    out = tmp_path / "rec.h5"
    rc = cli.main(["reconstruct", str(path), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "needs 14.6 TiB in memory" in err and "Traceback" not in err
    assert not out.exists()


def test_huge_own_layout_file(tiny, tmp_path):
    path = tmp_path / "own.h5"
    small = data.sinogram_stack(np.ones((2, 3, 4), np.float32), spectral=[1.0, 2.0, 3.0, 4.0])
    io.save(small, path)
    with h5py.File(path, "a") as f:  # the same file, with a huge declared shape and no data
        for group, key, n in (("coords", "translation", HUGE[0]), ("coords", "angle", HUGE[1]),
                              ("coords", "tth", HUGE[2])):
            old = f[group][key]
            attrs = dict(old.attrs)
            del f[group][key]
            new = f[group].create_dataset(key, data=np.linspace(0.5 if key == "tth" else 0, 179, n))
            new.attrs.update(attrs)
        (key, old), = f["variables"].items()
        attrs = dict(old.attrs)
        del f["variables"][key]
        f["variables"].create_dataset(key, shape=HUGE, dtype="f4", chunks=(2000, 2000, 100)).attrs.update(attrs)
    text = io.describe(path)
    assert "translation=200000, angle=200000, tth=100" in text and "not summarised" in text
    with pytest.raises(checks.DataTooLargeError, match="needs 14.6 TiB in memory"):
        io.load(path)


def test_npy_read_whole_is_checked(tmp_path, monkeypatch):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((4, 5, 3), np.float32))
    monkeypatch.setattr(checks, "available_memory", lambda: 100)  # 240 bytes > 80 % of 100
    with pytest.raises(checks.DataTooLargeError, match=r"a\.npy: reading the array \(4, 5, 3\) float32 needs 240 B"):
        io.load_npy(path, ("translation", "angle", "tth"), mmap_mode=None, tth=[1.0, 2.0, 3.0])
    da = io.load_npy(path, ("translation", "angle", "tth"), tth=[1.0, 2.0, 3.0])  # memory-mapped: fine
    assert da.shape == (4, 5, 3)


# ---------------------------------------------------------------------------- angles and 2θ
def _arr(n_a=20, rng=np.random.default_rng(0)):
    return rng.random((6, n_a, 3), dtype=np.float32) + 0.1


def test_radian_angles_are_refused_or_converted(tiny):
    rad = np.linspace(0, np.pi, 20, endpoint=False)
    with pytest.raises(DataError, match=r"sinogram: coordinate 'angle' spans 0 to 2\.985 \(declared degrees\), "
                                        r"which looks like radians; expected rotation angles in degrees"):
        data.sinogram_stack(_arr(), angle=rad, spectral=[1.0, 2.0, 3.0])
    da = data.sinogram_stack(_arr(), angle=rad, spectral=[1.0, 2.0, 3.0], angle_units="rad")
    np.testing.assert_allclose(da.angle.values, np.rad2deg(rad))
    assert da.angle.attrs["units"] == "deg"
    # a stack whose coordinate says radians is converted by the validation
    in_rad = tiny.assign_coords(angle=("angle", np.deg2rad(tiny.angle.values), {"units": "rad"}))
    np.testing.assert_allclose(data.validate_sinogram_stack(in_rad).angle.values, tiny.angle.values)
    # a reconstruction refuses radians declared as degrees before any work
    wrong = tiny.assign_coords(angle=np.deg2rad(tiny.angle.values))
    with pytest.raises(DataError, match="looks like radians"):
        iterate(wrong, "fbp", device="cpu")
    # explicitly accepted: taken as it is
    ok = data.accept_range(wrong, "angle")
    assert data.validate_sinogram_stack(ok).angle.attrs["range_checked"] == 1


def test_angles_over_several_turns_and_bad_two_theta():
    with pytest.raises(DataError, match=r"coordinate 'angle' spans 0 to 1800° \(5\.0 turns\); expected at most 720°"):
        data.sinogram_stack(_arr(), angle=np.linspace(0, 1800, 20), spectral=[1.0, 2.0, 3.0])
    data.sinogram_stack(_arr(), angle=np.linspace(0, 360, 20), spectral=[1.0, 2.0, 3.0])  # one turn: fine
    with pytest.raises(DataError, match=r"coordinate 'tth' spans -1 to 3°; expected 2θ within 0 to 180°"):
        data.sinogram_stack(_arr(), spectral=[-1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=r"volume: coordinate 'tth' spans 1 to 200°"):
        data.volume(np.ones((4, 4, 3)), spectral=[1.0, 2.0, 200.0])
    # q may take any positive range
    data.sinogram_stack(_arr(), spectral=[1.0, 200.0, 300.0], spectral_dim="q")


def test_a_radian_omega_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "rad.h5"
    with h5py.File(path, "w") as f:
        f["data"] = _arr(30)
        f["omega"] = np.linspace(0, np.pi, 30, endpoint=False)
        f["tth"] = np.array([1.0, 2.0, 3.0])
    with pytest.raises(io.XRDFileError, match=rf"{path}: sinogram: coordinate 'angle' .* looks like radians"):
        io.load(path)


def test_constant_data_are_warned_about():
    with pytest.warns(DataWarning, match=r"sinogram: all 360 values are 0 \(constant data\)"):
        data.sinogram_stack(np.zeros((6, 20, 3)), spectral=[1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.sinogram_stack(_arr(), spectral=[1.0, 2.0, 3.0])  # varied data: no warning


def test_reconstruct_a_huge_lazy_stack_refuses_before_work():
    import dask.array as dsa

    lazy = dsa.zeros(HUGE, dtype=np.float32, chunks=(HUGE[0], HUGE[1], 1))
    st = data.sinogram_stack(lazy, angle=np.linspace(0, 180, HUGE[1], endpoint=False),
                             spectral=np.linspace(1, 10, HUGE[2]))
    with pytest.raises(checks.DataTooLargeError, match=r"iterate_fbp: the volume \(1 × 200000 × 200000 × 100 "
                                                       r"float32\) with one batch of \d+ sinograms needs 29\.1 TiB"):
        iterate(st, "fbp", device="cpu")
