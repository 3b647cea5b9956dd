"""Live mode: follow a simulated acquisition written frame by frame (SWMR HDF5) by another process."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyFAI")
pytest.importorskip("fabio")

from xrdwidgets.integrate import ScanPlan, integrate, open_frames  # noqa: E402
from xrdwidgets.live import (FrameFolder, GrowingHDF5, LiveSession, ProgressiveFBP, coverage,  # noqa: E402
                             iterate_live, live)
from xrdwidgets.live import writer as _writer  # noqa: E402
from xrdwidgets.recon.fbp import fbp_array  # noqa: E402
from xrdwidgets.sim.frames import simulate_raw_scan  # noqa: E402

WRITER = Path(_writer.__file__)
N_T, N_A = 6, 8


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A tiny raw scan (32×32-pixel frames, 6 translations × 8 angles, zigzag) and its frames as .npy."""
    d = tmp_path_factory.mktemp("raw")
    scan = simulate_raw_scan(d / "sim", n_translations=N_T, n_angles=N_A, shape=(32, 32), order="zigzag",
                             n_tth=400, n_spot_frames=0, frames_per_file=48)
    with open_frames(scan.master) as src:
        frames = src.read(0, src.n_frames)
        mask = src.pixel_mask
    np.save(d / "frames.npy", frames)
    np.save(d / "mask.npy", mask)
    return scan, d / "frames.npy", d / "mask.npy"


def _write(frames_npy, out, start, stop, *, rate, mask=None, done=False):
    cmd = [sys.executable, str(WRITER), str(frames_npy), str(out), "--start", str(start), "--stop", str(stop),
           "--rate", str(rate)]
    if mask is not None:
        cmd += ["--mask", str(mask)]
    if done:
        cmd.append("--done")
    subprocess.run(cmd, check=True, timeout=60)


def test_follow_swmr_scan_with_writer_restart(raw, tmp_path):
    scan, frames_npy, mask_npy = raw
    out = tmp_path / "live_scan.h5"
    log = {}

    def writer():
        # first writer process: 20 frames, then it stops (closes the file); a pause; a second
        # process re-opens the file and writes the rest
        _write(frames_npy, out, 0, 20, rate=80, mask=mask_npy)
        log["paused_at"] = time.monotonic()
        time.sleep(1.0)
        log["restart_at"] = time.monotonic()
        _write(frames_npy, out, 20, N_T * N_A, rate=80, done=True)
        log["writer_done"] = time.monotonic()

    th = threading.Thread(target=writer)
    th.start()
    seen = []
    try:
        gen = iterate_live(out, scan.poni, plan=scan.plan, bins=120, period_s=0.05, update_every_s=0.1,
                           idle_timeout_s=30)
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                stack = stop.value
                break
            s = p.metrics["snapshot"]
            seen.append((time.monotonic(), s.frames, s.angles_done, None if s.volume is None else s.volume.copy(),
                         s.coverage.get("missing_wedge_deg")))
    finally:
        th.join()
    # images appeared before the writer finished, with part of the angles and a missing wedge stated
    early = [x for x in seen if x[3] is not None and x[0] < log["writer_done"] and 0 < x[2] < N_A]
    assert early, "no image before the writer finished"
    assert any(np.abs(x[3]).max() > 0 for x in early)
    assert all(x[4] > 0 for x in early)
    # frames kept arriving after the pause and the writer's restart
    assert any(t > log["restart_at"] and f > 20 for t, f, *_ in seen)
    assert max(f for _, f, *_ in seen) == N_T * N_A
    # the final stack equals the offline integration of the same file, same plan and settings
    offline = integrate(out, scan.poni, plan=scan.plan, bins=120)
    np.testing.assert_array_equal(stack.values, offline.values)
    for k in ("translation", "angle", "tth"):
        np.testing.assert_array_equal(stack[k].values, offline[k].values)
    assert stack.attrs["integrate_settings"] == offline.attrs["integrate_settings"]
    assert stack.attrs["integrate_frame_sha256"] == offline.attrs["integrate_frame_sha256"]
    # and the last image is the FBP of the whole stack
    last = seen[-1][3]
    ref = fbp_array(np.asarray(offline.values), offline["angle"].values)
    np.testing.assert_allclose(last, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_progressive_fbp_equals_fbp_of_angles_so_far():
    rng = np.random.default_rng(1)
    n_t, n_a, c = 16, 12, 3
    angles = np.arange(n_a) * 180.0 / n_a
    sino = rng.random((n_t, n_a, c)).astype(np.float32)
    pf = ProgressiveFBP(n_t, angles, c)
    done = np.zeros(n_a, bool)
    for group in ([0, 6], [3], [9, 1, 7], [4, 10]):          # interlaced arrival
        pf.add(group, sino[:, group])
        done[group] = True
        ref = fbp_array(sino[:, done], angles[done])
        got = pf.image()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    cov = pf.coverage()
    assert cov["angles"] == 8 and cov["missing_wedge_deg"] == pytest.approx(15.0)


def test_progressive_fbp_rows_equal_fbp_of_zero_filled_sinogram():
    rng = np.random.default_rng(2)
    n_t, n_a, c = 10, 9, 2
    angles = np.arange(n_a) * 20.0
    sino = rng.random((n_t, n_a, c)).astype(np.float32)
    pf = ProgressiveFBP(n_t, angles, c)
    have = np.zeros(sino.shape, np.float32)
    for rows in ([0, 1], [2, 3, 4], [5]):
        delta = np.zeros_like(sino)
        delta[rows] = sino[rows]
        have[rows] = sino[rows]
        pf.add(np.arange(n_a), delta)
        ref = fbp_array(have, angles)
        np.testing.assert_allclose(pf.image(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_coverage_states_missing_wedge():
    a = np.arange(18) * 10.0
    assert coverage(a, np.ones(18, bool))["missing_wedge_deg"] == 0
    half = np.arange(18) < 9
    assert coverage(a, half)["missing_wedge_deg"] == pytest.approx(90.0)


def test_growing_hdf5_without_count_reads_only_settled_frames(tmp_path):
    """A writer that closes the file between frames (a frame count that grows), no count dataset."""
    import h5py

    p = tmp_path / "grow.h5"
    with h5py.File(p, "w", libver="latest") as f:
        f.create_dataset("entry/data/data", shape=(0, 4, 4), maxshape=(None, 4, 4), dtype="u2")
    src = GrowingHDF5(p, count=False)
    assert src.poll() is None
    with h5py.File(p, "a") as f:
        d = f["entry/data/data"]
        d.resize(3, axis=0)
        d[:3] = np.arange(3)[:, None, None]
    assert src.poll() is None                 # just appeared: not yet settled
    got = src.poll()
    assert got.shape == (3, 4, 4) and np.array_equal(got[:, 0, 0], [0, 1, 2])
    assert src.poll() is None
    src.close()


def test_growing_hdf5_survives_file_replaced(tmp_path):
    import h5py

    p = tmp_path / "g.h5"

    def write(n, value):
        tmp = p.with_suffix(".tmp")
        with h5py.File(tmp, "w", libver="latest") as f:
            f["entry/data/data"] = np.full((n, 2, 2), value, "u2")
            f["entry/data/frames_written"] = [n]
        tmp.replace(p)

    src = GrowingHDF5(p)
    assert src.poll() is None                    # not there yet
    write(2, 1)
    assert src.poll().shape[0] == 2
    write(1, 7)                                  # a writer started the file again: shorter
    assert src.poll() is None
    write(4, 9)
    got = src.poll()
    assert got.shape[0] == 2 and np.all(got == 9) and src.consumed == 4
    src.close()


def test_frame_folder_waits_for_complete_files(raw, tmp_path):
    import fabio.edfimage

    scan, frames_npy, _ = raw
    frames = np.load(frames_npy)[:3].astype(np.int32)
    folder = tmp_path / "frames"
    folder.mkdir()
    src = FrameFolder(folder)
    fabio.edfimage.EdfImage(data=frames[0]).write(str(folder / "f_00000.edf"))
    half = folder / "f_00001.edf"
    full = (fabio.edfimage.EdfImage(data=frames[1]).write(str(tmp_path / "tmp.edf")) or
            (tmp_path / "tmp.edf").read_bytes())
    half.write_bytes(full[: len(full) // 2])         # a writer in the middle of this file
    assert src.poll() is None                        # first sighting: nothing settled yet
    half.write_bytes(full)                           # the writer finishes it before the next poll
    got = src.poll()                                 # frame 0 settled; frame 1 grew: it waits
    assert got.shape == (1, 32, 32) and np.array_equal(got[0], frames[0])
    got = src.poll()
    assert got.shape == (1, 32, 32) and np.array_equal(got[0], frames[1])
    fabio.edfimage.EdfImage(data=frames[2]).write(str(folder / "f_00002.edf"))
    (folder / "f_00002.edf.done").touch()            # a writer-done marker: no wait
    assert np.array_equal(src.poll()[0], frames[2])
    assert not src.writer_done
    (folder / "scan.done").touch()
    assert src.writer_done


@pytest.mark.parametrize("order", ["raster", "rotation-fast"])
def test_growing_pattern_stack(tmp_path, order):
    """Already integrated patterns (no raw frames): the session reconstructs them as they come
    (angle by angle, or translation row by row when rotation is the fast axis)."""
    import h5py

    plan = ScanPlan.regular(6, 4, order=order) if order == "raster" else ScanPlan.regular(4, 6, order=order)
    rng = np.random.default_rng(0)
    pats = rng.random((24, 10)).astype(np.float32)
    p = tmp_path / "patterns.h5"
    with h5py.File(p, "w", libver="latest") as f:
        f.create_dataset("entry/data/patterns", shape=(0, 10), maxshape=(None, 10), dtype="f4")
        r = f.create_dataset("entry/data/tth", data=np.linspace(2, 9, 10))
        r.attrs["units"] = "deg"
        f.create_dataset("entry/data/frames_written", data=[0])
    sess = LiveSession(p, plan=plan, update_every_s=0)
    for k in range(0, 24, 6):
        with h5py.File(p, "a") as f:   # the writer appends one angle line and closes the file
            d, c = f["entry/data/patterns"], f["entry/data/frames_written"]
            d.resize(k + 6, axis=0)
            d[k:k + 6] = pats[k:k + 6]
            c[0] = k + 6
        snap = sess.step()
        assert snap.frames == k + 6
        if order == "raster":
            assert snap.angles_done == k // 6 + 1
        else:   # rows so far, zeros elsewhere
            assert snap.rows_done == k // 6 + 1
            part = np.zeros((4, 6, 10), np.float32)
            part[: k // 6 + 1] = pats[: k + 6].reshape(-1, 6, 10)
            np.testing.assert_allclose(snap.volume, fbp_array(part, plan.angles), rtol=1e-5, atol=1e-6)
    stack = sess.stack()
    expect = pats.reshape(4, 6, 10).transpose(1, 0, 2) if order == "raster" else pats.reshape(4, 6, 10)
    np.testing.assert_array_equal(stack.values, expect)
    np.testing.assert_allclose(snap.volume, fbp_array(stack.values, plan.angles), rtol=1e-5, atol=1e-6)
    sess.close()


def test_bad_input_named(tmp_path, raw):
    scan, *_ = raw
    with pytest.raises(FileNotFoundError, match="nothere.poni"):
        LiveSession(tmp_path / "x.h5", tmp_path / "nothere.poni", plan=scan.plan)
    with pytest.raises(TypeError, match="ScanPlan"):
        LiveSession(tmp_path / "x.h5", scan.poni, plan=(6, 8))
    with pytest.raises(TimeoutError, match="x.h5"):
        live(tmp_path / "x.h5", scan.poni, plan=scan.plan, period_s=0.02, idle_timeout_s=0.1)


def test_cli_live(raw, tmp_path, capsys):
    from xrdwidgets import io
    from xrdwidgets.cli import main

    scan, frames_npy, mask_npy = raw
    src = tmp_path / "scan.h5"
    _writer.write_frames(src, np.load(frames_npy), pixel_mask=np.load(mask_npy), done=True)
    out, vol = tmp_path / "stack.h5", tmp_path / "vol.h5"
    rc = main(["live", str(src), "--poni", str(scan.poni), "--n-translations", str(N_T), "--n-angles", str(N_A),
               "--order", "zigzag", "--bins", "120", "--period", "0.02", "-q", "-o", str(out), "--volume", str(vol)])
    assert rc == 0, capsys.readouterr().err
    got = io.load(out)
    ref = integrate(src, scan.poni, n_translations=N_T, n_angles=N_A, order="zigzag", bins=120)
    np.testing.assert_array_equal(np.asarray(got.values), ref.values)
    assert io.load(vol).dims == ("y", "x", "tth")
    assert main(["live", str(src), "--poni", str(scan.poni), "--n-translations", "6", "--n-angles", "8",
                 "-q", "-o", str(out)]) == 2          # an existing output is not replaced
    assert "exists" in capsys.readouterr().err



def test_live_panel_follows_a_scan_and_opens_the_stack(raw, tmp_path):
    """The Live tab headless: Start → images while frames arrive → stack and FBP in the app."""
    from waiting import wait_until

    from xrdwidgets.widgets.plotting import decode_z
    from xrdwidgets.widgets.app import TABS, App

    scan, frames_npy, mask_npy = raw
    root = tmp_path / "data"
    root.mkdir()
    poni = root / "scan.poni"
    poni.write_bytes(Path(scan.poni).read_bytes())
    app = App(data_dir=root)
    panel = app.panel("Live")
    panel.refresh()
    assert panel.poni.options == ("scan.poni",)
    panel.source.value = "../outside.h5"
    panel.poni.value = "scan.poni"
    assert panel.start() is None and "outside" in panel.status.value          # confined to the data folder
    panel.source.value = "live.h5"
    panel.windows.value = "3-1"
    assert panel.start() is None and "window" in panel.status.value
    panel.windows.value = ""
    panel.n_translations.value, panel.n_angles.value, panel.order.value = N_T, N_A, "zigzag"
    panel.bins.value, panel.period.value, panel.update_every.value = 120, 0.05, 0.1
    th = threading.Thread(target=_write, args=(frames_npy, root / "live.h5", 0, N_T * N_A),
                          kwargs=dict(rate=40, mask=mask_npy, done=True))
    job = panel.start()
    assert job is not None
    th.start()
    try:
        # an image of a part of the angles appears while the writer is still writing
        assert wait_until(lambda: panel.session.snapshot().volume is not None
                          and "angles" in str(panel.images.layout.title.text), 60)
        vol = panel.explore()                        # the partial volume in the Explore tab
        assert vol.dims == ("y", "x", "tth") and vol.shape == (N_T, N_T, 120)
        assert any(k.startswith("live FBP") for k in app.state.results)   # (the final one if the scan ended)
        assert wait_until(lambda: job.state.finished and not panel.start_button.disabled, 60)
    finally:
        th.join()
    assert job.state == job.state.DONE, job.error
    assert "scan complete" in panel.status.value
    assert app.state.raw.sizes == {"translation": N_T, "angle": N_A, "tth": 120}
    assert "live FBP" in app.state.results
    assert app.tabs.selected_index != TABS.index("Explore")  # no tab switch the visitor did not ask for
    panel.explore_button.click()                                     # asked: the FBP opens in Explore
    assert app.tabs.selected_index == TABS.index("Explore")
    img = decode_z(panel.images.data[0].z)
    assert img.shape == (N_T, N_T) and np.isfinite(img).all() and np.ptp(img) > 0
    assert "missing wedge 0°" in panel.images.layout.title.text


def test_warm_sirt_continues_from_previous_image():
    """Warm start: 5 + 5 iterations equal 10 from zero (same angles), unlike 5 from zero."""
    from xrdwidgets.live import WarmSIRT

    rng = np.random.default_rng(3)
    angles = np.arange(8) * 22.5
    sino = rng.random((12, 8, 2)).astype(np.float32)
    done = np.ones(8, bool)
    warm = WarmSIRT(12, angles, n_iter=5)
    warm.update(sino, done)
    twice = warm.update(sino, done).copy()
    ten = WarmSIRT(12, angles, n_iter=10).update(sino, done)
    five = WarmSIRT(12, angles, n_iter=5).update(sino, done)
    np.testing.assert_allclose(twice, ten, rtol=1e-4, atol=1e-5)
    assert np.abs(twice - five).max() > 1e-3


def test_writer_done_before_the_plan_is_full(raw, tmp_path):
    from xrdwidgets.integrate import ScanPlanError

    scan, frames_npy, mask_npy = raw
    src = tmp_path / "short.h5"
    _writer.write_frames(src, np.load(frames_npy), stop=10, done=True)
    with pytest.raises(ScanPlanError, match=r"short.h5: the writer finished after 10 frames; the scan plan expects 48"):
        live(src, scan.poni, plan=scan.plan, bins=50, period_s=0.02, idle_timeout_s=30)


def test_folder_of_frames_equals_offline_and_warm_sirt(raw, tmp_path):
    """Frames appearing as EDF files: the live stack equals the offline integration of the folder;
    the warm-started SIRT of a window is there too."""
    from xrdwidgets.sim.frames import write_images

    scan, frames_npy, mask_npy = raw
    frames = np.load(frames_npy)
    folder = tmp_path / "edf"
    write_images(frames[:20], folder, "f")
    sess = LiveSession(folder, scan.poni, plan=scan.plan, bins=80, mask=np.load(mask_npy), update_every_s=0,
                       windows=[(3.0, 4.0)], sirt_iterations=3)
    sess.step()                                       # first sighting of the files
    snap = sess.step()
    assert snap.frames == 20 and snap.sirt is not None and snap.sirt.shape == (N_T, N_T, 1)
    paths = write_images(frames, folder, "f")[20:]    # the rest appear (the first 20 rewritten identically)
    assert len(paths) == 28
    for _ in range(3):
        snap = sess.step()
    assert snap.frames == N_T * N_A and snap.finished
    offline = integrate(folder, scan.poni, plan=scan.plan, bins=80, mask=np.load(mask_npy))
    np.testing.assert_array_equal(sess.stack().values, offline.values)
    sess.close()
