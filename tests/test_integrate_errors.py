"""Bad raw input gets a clear error naming file, dataset, expected and found, before long work."""
import shutil

import h5py
import numpy as np
import pytest

pytest.importorskip("pyFAI")
hdf5plugin = pytest.importorskip("hdf5plugin")

from xrdwidgets.integrate import (CalibrationError, FrameReadError, ScanPlan, ScanPlanError, integrate,  # noqa: E402
                                  make_integrator, open_frames, write_poni)
from xrdwidgets.sim.frames import simulate_raw_scan, write_images  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return simulate_raw_scan(tmp_path_factory.mktemp("base"), n_translations=4, n_angles=3, n_spot_frames=0,
                             frames_per_file=4, dose=500.0)


@pytest.fixture
def scan(base, tmp_path):
    """A private copy of the base scan (tests may damage it)."""
    folder = tmp_path / "scan"
    shutil.copytree(base.master.parent, folder)
    return base, folder / base.master.name, folder / base.poni.name, folder


def test_poni_does_not_fit_frame_shape(scan, tmp_path):
    base, master, _, _ = scan
    poni = write_poni(make_integrator(distance_mm=30, pixel_size_mm=0.172, shape=(32, 48), wavelength_A=0.2),
                      tmp_path / "small.poni")
    with pytest.raises(CalibrationError, match=r"small\.poni.*\(32, 48\).*\(64, 64\)"):
        integrate(master, poni, bins=50)


def test_poni_missing_or_not_a_poni(scan, tmp_path):
    _, master, _, _ = scan
    with pytest.raises(FileNotFoundError, match="nope.poni"):
        integrate(master, tmp_path / "nope.poni")
    bad = tmp_path / "bad.poni"
    bad.write_text("Wavelength: not-a-number\nDistance: x\n")
    with pytest.raises(CalibrationError, match="bad.poni"):
        integrate(master, bad)


@pytest.mark.parametrize("what", ["mask", "dark", "flat"])
def test_missing_correction_files(scan, tmp_path, what):
    _, master, poni, _ = scan
    with pytest.raises(FileNotFoundError, match=f"{what} file .*missing_{what}.edf: not found"):
        integrate(master, poni, bins=50, **{what: tmp_path / f"missing_{what}.edf"})


def test_correction_of_wrong_shape(scan, tmp_path):
    _, master, poni, _ = scan
    np.save(tmp_path / "dark.npy", np.zeros((60, 64)))
    with pytest.raises(CalibrationError, match=r"dark file .*dark\.npy: expected shape \(64, 64\).*found \(60, 64\)"):
        integrate(master, poni, dark=tmp_path / "dark.npy")


def _write_stack(path, frames, **kw):
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frames, chunks=(1,) + frames.shape[1:], **kw)
    return path


def test_frames_of_different_shapes_or_dtypes(tmp_path):
    a = _write_stack(tmp_path / "a.h5", np.zeros((3, 64, 64), np.uint32))
    b = _write_stack(tmp_path / "b.h5", np.zeros((3, 64, 60), np.uint32))
    c = _write_stack(tmp_path / "c.h5", np.zeros((3, 64, 64), np.float32))
    with pytest.raises(FrameReadError, match=r"b\.h5::entry/data/data: frames of shape \(64, 60\).*expected \(64, 64\)"):
        open_frames([a, b])
    with pytest.raises(FrameReadError, match=r"c\.h5::entry/data/data.*float32.*expected \(64, 64\) uint32"):
        open_frames([a, c])


def test_single_images_of_different_shapes(tmp_path):
    paths = write_images([np.zeros((16, 16), np.int32)] * 2 + [np.zeros((16, 12), np.int32)], tmp_path, "im", "edf")
    src = open_frames(tmp_path)
    assert src.n_frames == 3 and src.frame_shape == (16, 16)
    with pytest.raises(FrameReadError, match=r"frame 2 \(.*im_00002\.edf\): expected shape \(16, 16\).*found \(16, 12\)"):
        src.read(0, 3)
    assert paths[2].is_file()


def test_frame_count_does_not_fit_the_plan(scan):
    base, master, poni, _ = scan
    with pytest.raises(ScanPlanError, match=r"12 frames do not fit the scan plan of 5 translations × 3 angles"):
        integrate(master, poni, plan=ScanPlan.regular(5, 3))
    with h5py.File(master, "r+") as f:   # a private copy: drop the motors
        del f["entry/sample"]
    with pytest.raises(ScanPlanError, match="no motor positions"):
        integrate(master, poni)


def test_missing_data_file(scan):
    _, master, poni, folder = scan
    (folder / "scan_data_000002.h5").unlink()
    with pytest.raises(FrameReadError, match=r"data_000002 links to 'scan_data_000002\.h5'.*not found"):
        integrate(master, poni)


def test_truncated_data_file(scan):
    _, master, poni, folder = scan
    p = folder / "scan_data_000002.h5"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FrameReadError, match=r"scan_data_000002\.h5"):
        integrate(master, poni)


def test_unreadable_frame_named_by_index_and_file(scan):
    _, master, poni, folder = scan
    p = folder / "scan_data_000002.h5"
    with h5py.File(p, "r") as f:
        info = f["entry/data/data"].id.get_chunk_info(2)   # local frame 2 = frame 6
    raw = bytearray(p.read_bytes())
    raw[info.byte_offset:info.byte_offset + info.size] = b"\xff" * info.size
    p.write_bytes(bytes(raw))
    src = open_frames(master)   # opens: the damage is inside a chunk
    src.read(0, 4)
    with pytest.raises(FrameReadError, match=r"frame 6 \(.*scan_data_000002\.h5::/?entry/data/data\[2\]\)"):
        src.read(4, 8)
    src.close()


def test_missing_compression_filter(scan, monkeypatch):
    _, master, poni, _ = scan
    real = h5py.h5z.filter_avail
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: False if code == 32008 else real(code))
    with pytest.raises(FrameReadError, match=r"scan_data_000001\.h5::/?entry/data/data: compressed with HDF5 filter 32008"):
        open_frames(master)


def test_motor_count_mismatch(scan):
    _, master, poni, _ = scan
    with h5py.File(master, "r+") as f:
        del f["entry/sample/rotation"]
        f["entry/sample/rotation"] = np.zeros(5)
    with pytest.raises(FrameReadError, match=r"entry/sample/rotation: 5 motor positions for 12 frames"):
        open_frames(master)


def test_bad_options():
    from xrdwidgets.integrate import IntegrationOptions

    with pytest.raises(ValueError, match="unit: expected one of"):
        IntegrationOptions(unit="d")
    with pytest.raises(ValueError, match="trim: expected a percentage"):
        IntegrationOptions(trim=60)
