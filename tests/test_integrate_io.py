"""Raw-frame inputs and the command line of xrdwidgets.integrate: single images (fabio), virtual
datasets, blosc, ``xrdwidgets demo --raw`` + ``xrdwidgets integrate``."""
import numpy as np
import pytest

pytest.importorskip("pyFAI")
pytest.importorskip("hdf5plugin")

from xrdwidgets.integrate import ScanPlan, integrate, open_frames  # noqa: E402
from xrdwidgets.sim.frames import simulate_raw_scan  # noqa: E402


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """64×64 px, 6 translations × 4 angles, zigzag, Poisson noise, spots, gaps."""
    return simulate_raw_scan(tmp_path_factory.mktemp("noisy"), n_translations=6, n_angles=4, order="zigzag",
                             n_spot_frames=4, dose=2000.0, frames_per_file=10, seed=1)


@pytest.mark.parametrize("fmt", ["cbf", "edf", "tif"])
def test_single_image_formats_read_like_hdf5(noisy, tmp_path, fmt):
    from xrdwidgets.sim.frames import write_images

    src = open_frames(noisy.master)
    frames = src.read(0, 24).astype(np.int32)
    frames[:, src.pixel_mask] = -1
    write_images(frames, tmp_path, "f", fmt)
    imgs = open_frames(str(tmp_path / f"f_*.{fmt}"))
    assert imgs.n_frames == 24 and imgs.frame_shape == (64, 64)
    np.testing.assert_array_equal(imgs.read(3, 5), frames[3:5])
    plan = ScanPlan.regular(6, 4, translation_step_mm=noisy.geometry.translation_step_mm, order="zigzag")
    a = integrate(imgs, noisy.poni, plan=plan, mask=src.pixel_mask, bins=80)
    b = integrate(noisy.master, noisy.poni, bins=80)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-3)
    src.close()


def test_cli_demo_raw_then_integrate(tmp_path, capsys):
    from xrdwidgets import io
    from xrdwidgets.cli import main

    assert main(["demo", "--raw", "--size", "tiny", "--out", str(tmp_path)]) == 0
    raw = tmp_path / "raw"
    assert main(["demo", "--raw", "--size", "tiny", "--out", str(tmp_path)]) == 2   # no silent overwrite
    out = tmp_path / "stack.h5"
    assert main(["integrate", str(raw / "scan_master.h5"), "--poni", str(raw / "scan.poni"), "--trim", "10",
                 "--bins", "120", "--unit", "q", "-q", "-o", str(out)]) == 0
    st = io.load(out)
    assert st.dims == ("translation", "angle", "q") and st.shape == (8, 6, 120)
    assert '"method": "trimmed"' in st.attrs["integrate_settings"]
    assert main(["integrate", str(raw / "scan_master.h5"), "--poni", str(raw / "scan.poni"),
                 "--mask", str(tmp_path / "nomask.edf"), "-o", str(tmp_path / "b.h5")]) == 1
    assert "mask file" in capsys.readouterr().err


def test_virtual_dataset_and_blosc(tmp_path):
    import h5py

    scan = simulate_raw_scan(tmp_path, n_translations=4, n_angles=3, n_spot_frames=0, frames_per_file=5,
                             compression="blosc-lz4")
    direct = open_frames(scan.master)
    frames = direct.read(0, 12)
    # a virtual dataset over the data files, as some beamlines write
    layout = h5py.VirtualLayout(shape=(12, 64, 64), dtype=np.uint32)
    start = 0
    for f in scan.data_files:
        with h5py.File(f, "r") as h:
            n = h["entry/data/data"].shape[0]
        layout[start:start + n] = h5py.VirtualSource(f.name, "entry/data/data", shape=(n, 64, 64))
        start += n
    vds = tmp_path / "vds.h5"
    with h5py.File(vds, "w") as h:
        h.create_virtual_dataset("entry/instrument/detector/data", layout, fillvalue=0)
    src = open_frames(vds)
    assert src.n_frames == 12
    np.testing.assert_array_equal(src.read(0, 12), frames)
    src.close()
    scan.data_files[1].rename(tmp_path / "moved.h5")
    with pytest.raises(Exception, match=r"virtual dataset source 'scan_data_000002\.h5'.*not found"):
        open_frames(vds)
    direct.close()


def test_scan_being_written_is_refused_and_sent_to_live(noisy, tmp_path, capsys):
    """Offline integration reads a finished scan only: a folder holding part of the plan is refused
    before any work, pointing to xrdwidgets.live (which follows it: tests/test_live.py)."""
    from xrdwidgets.cli import main
    from xrdwidgets.integrate import ScanPlanError
    from xrdwidgets.sim.frames import write_images

    src = open_frames(noisy.master)
    write_images(src.read(0, 7), tmp_path / "part", "f", "edf")
    src.close()
    plan = ScanPlan.regular(6, 4, order="zigzag")
    with pytest.raises(ScanPlanError, match=r"part.*7 frames do not fit .*24 frames expected\); a scan still "
                                            r"being written is followed with xrdwidgets.live \(`xrdwidgets live`\)"):
        integrate(str(tmp_path / "part"), noisy.poni, plan=plan, bins=80)
    with pytest.raises(SystemExit) as exc:     # the follow mode of `integrate` is gone
        main(["integrate", str(tmp_path / "part"), "--poni", str(noisy.poni), "--n-translations", "6",
              "--n-angles", "4", "--wait", "5", "-o", str(tmp_path / "x.h5")])
    assert exc.value.code == 2 and "unrecognized arguments: --wait" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
