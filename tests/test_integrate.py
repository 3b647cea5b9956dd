"""Azimuthal integration and scan assembly (xrdwidgets.integrate) on simulated raw scans."""
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyFAI")
pytest.importorskip("hdf5plugin")

from scipy.signal import find_peaks  # noqa: E402

import xrdwidgets as xw  # noqa: E402
from xrdwidgets import jobs  # noqa: E402
from xrdwidgets.integrate import (IntegrationOptions, Integrator, ScanPlan, integrate, integrate_frames,  # noqa: E402
                                  iterate_integration, load_poni, open_frames, work_store)
from xrdwidgets.integrate.calibration import file_sha256  # noqa: E402
from xrdwidgets.sim.frames import simulate_raw_scan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """64×64 px, 6 translations × 4 angles, zigzag, Poisson noise, spots, gaps."""
    return simulate_raw_scan(tmp_path_factory.mktemp("noisy"), n_translations=6, n_angles=4, order="zigzag",
                             n_spot_frames=4, dose=2000.0, frames_per_file=10, seed=1)


def _coarse(values, axis_values, edges):
    """Mean of ``values`` (…, n) over windows of the last axis."""
    return np.stack([values[..., (axis_values >= a) & (axis_values < b)].mean(-1)
                     for a, b in zip(edges[:-1], edges[1:])], -1)


def test_batched_csr_equals_pyfai(noisy):
    src = open_frames(noisy.master)
    ai = load_poni(noisy.poni, shape=src.frame_shape)
    frames = src.read(0, 7)
    rng = np.random.default_rng(0)
    dark = rng.uniform(0, 3, src.frame_shape)
    flat = rng.uniform(0.9, 1.1, src.frame_shape)
    for split in ("bbox", "full"):
        opts = IntegrationOptions(bins=250, polarization_factor=0.99, split=split)
        integ = Integrator(ai, src.frame_shape, opts, mask=src.pixel_mask, dark=dark, flat=flat)
        ref = np.stack([ai.integrate1d_ng(f.astype(np.float32), 250, unit="2th_deg", method=(split, "csr", "cython"),
                                          mask=src.pixel_mask, dark=dark, flat=flat, polarization_factor=0.99,
                                          correctSolidAngle=True).intensity for f in frames])
        for engine in ("scipy", "torch", "pyfai"):
            got = integ.integrate(frames, engine=engine)
            assert got.shape == (7, 250)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    src.close()


def test_peaks_match_the_patterns_that_made_them(tmp_path):
    scan = simulate_raw_scan(tmp_path, dose=None, n_spot_frames=0, shape=(160, 160), pixel_size_mm=0.075,
                             n_translations=4, n_angles=2, instrumental_fwhm_deg=0.12, n_tth=4000)
    st = integrate(scan.master, scan.poni, bins=700, radial_range=(2.0, 9.0), chunk=8)
    tr = scan.truth["sinogram"]
    x, tt = tr["tth"].values, st["tth"].values
    n_checked = 0
    for ti, ai in ((1, 0), (2, 1)):
        f, g = tr.values[ti, ai], st.values[ti, ai]
        peaks, _ = find_peaks(f, height=0.15 * f.max(), distance=int(0.4 / (x[1] - x[0])))
        for p in peaks:
            c = x[p]
            if not 2.4 < c < 8.6:
                continue
            m1, m2 = np.abs(x - c) < 0.25, np.abs(tt - c) < 0.25
            area1, area2 = f[m1].sum() * (x[1] - x[0]), g[m2].sum() * (tt[1] - tt[0])
            pos1 = (f[m1] * x[m1]).sum() / f[m1].sum()
            pos2 = (g[m2] * tt[m2]).sum() / g[m2].sum()
            assert abs(pos2 - pos1) < 0.01, (c, pos1, pos2)
            assert abs(area2 / area1 - 1) < 0.02, (c, area1, area2)
            n_checked += 1
    assert n_checked >= 6


def test_trimmed_mean_removes_spots_plain_mean_does_not(noisy):
    """Each method against itself on the same frame with the spot pixels masked out."""
    src = open_frames(noisy.master)
    rows, cols = np.mgrid[:64, :64]
    clip_errors = []
    for k, spots in noisy.spots.items():
        frame = src.read(k, k + 1)
        near = np.zeros((64, 64), bool)
        for r, c in spots:
            near |= np.hypot(rows + 0.5 - r, cols + 0.5 - c) < 2.5
        kw = dict(bins=60, radial_range=(2.0, 9.5))   # ~60 pixels per bin: a spot is < 10 % of a bin

        def run(extra_mask, **opts):
            return integrate_frames(frame, noisy.poni, mask=src.pixel_mask | extra_mask, **kw, **opts).values[0]

        # each method against itself on the same frame with the spot pixels masked out
        none = np.zeros_like(near)
        plain, plain_ref = run(none), run(near)
        trimmed, trimmed_ref = run(none, method="trimmed", trim=10), run(near, method="trimmed", trim=10)
        err_plain = np.abs(plain - plain_ref).max() / plain_ref.max()
        err_trim = np.abs(trimmed - trimmed_ref).max() / trimmed_ref.max()
        assert err_plain > 0.3, err_plain
        assert err_trim < 0.08 and err_trim < 0.1 * err_plain, (err_trim, err_plain)
        clipped, clipped_ref = run(none, method="sigma_clip"), run(near, method="sigma_clip")
        clip_errors.append(np.abs(clipped - clipped_ref).max() / clipped_ref.max())
    # sigma clipping (3 σ, pyFAI's azimuthal error model) is less robust: several spots in one
    # bin inflate its σ (measured here: 0.002-0.006 on three frames, 0.36 on the fourth)
    assert sum(e < 0.05 for e in clip_errors) >= len(clip_errors) - 1, clip_errors
    src.close()


def _assembled_error(scan, st):
    """Largest error of the integrated intensity over 2θ 3–9° per scan point, relative to the
    brightest point (the pixels' 0.3° width blurs the peaks; their areas stay)."""
    tr = scan.truth["sinogram"]
    a = st.sel(tth=slice(3.0, 9.0)).mean("tth").values
    b = tr.sel(tth=slice(3.0, 9.0)).mean("tth").values
    assert b.std() > 0.2 * b.mean()   # the points differ: a wrong frame order would show
    return np.abs(a - b).max() / b.max()


@pytest.mark.parametrize("order,continuous,motors", [
    ("zigzag", False, True), ("interlaced", False, True), ("rotation-fast", True, True),
    ("interlaced-zigzag", False, False)])
def test_assembled_sinograms_match_the_simulators_stack(tmp_path, order, continuous, motors):
    scan = simulate_raw_scan(tmp_path, n_translations=5, n_angles=4, order=order, continuous=continuous,
                             dose=None, n_spot_frames=0, motors=motors, n_subsets=2)
    kw = {} if motors else dict(n_translations=5, n_angles=4, order=order, plan=ScanPlan.regular(
        5, 4, translation_step_mm=scan.geometry.translation_step_mm, order=order, n_subsets=2))
    if not motors:
        kw.pop("n_translations"), kw.pop("n_angles"), kw.pop("order")
    st = integrate(scan.master, scan.poni, bins=300, radial_range=(2.0, 10.0), chunk=6, **kw)
    assert st.dims == ("translation", "angle", "tth")
    np.testing.assert_allclose(st["translation"].values, scan.truth["translation"].values, atol=1e-9)
    np.testing.assert_allclose(st["angle"].values, scan.truth["angle"].values, atol=0.2 * 45)
    assert _assembled_error(scan, st) < 0.02
    g = xw.ScanGeometry.from_attrs(st.attrs)
    assert abs(g.energy_keV - 60.0) < 1e-9 and abs(g.translation_step_mm - scan.geometry.translation_step_mm) < 1e-12
    assert st["tth"].attrs["units"] == "deg"


def test_noisy_scan_trimmed_stack_and_provenance(noisy, tmp_path):
    before = [file_sha256(p) for p in [noisy.master, *noisy.data_files]]
    out = tmp_path / "stack.h5"
    events = []
    st = integrate(noisy.master, noisy.poni, out=out, bins=200, radial_range=(2.0, 10.0), method="trimmed",
                   chunk=5, callback=events.append)
    assert out.is_file() and not work_store(out).exists()
    assert [e.iteration for e in events] == [1, 2, 3, 4, 5] and events[-1].metrics["frames"] == 24
    assert events[-1].metrics["frames_per_s"] > 0
    assert _assembled_error(noisy, st) < 0.1
    assert "Wavelength" in st.attrs["integrate_poni"]
    assert '"method": "trimmed"' in st.attrs["integrate_settings"]
    assert file_sha256(noisy.data_files[1]) in st.attrs["integrate_frame_sha256"]
    after = [file_sha256(p) for p in [noisy.master, *noisy.data_files]]
    assert before == after   # raw files untouched
    with pytest.raises(FileExistsError):
        integrate(noisy.master, noisy.poni, out=out, bins=200)


def test_q_unit(noisy):
    st_q = integrate(noisy.master, noisy.poni, bins=300, unit="q", radial_range=(1.0, 5.0))
    st_t = integrate(noisy.master, noisy.poni, bins=300, radial_range=(2.0, 10.0))
    lam = 12.398419843320026 / 60.0
    # the strongest peak of the summed pattern at the same place in q and in 2θ
    q_peak = st_q["q"].values[np.argmax(st_q.sum(("translation", "angle")).values)]
    t_peak = st_t["tth"].values[np.argmax(st_t.sum(("translation", "angle")).values)]
    assert abs(4 * np.pi * np.sin(np.radians(t_peak / 2)) / lam - q_peak) < 0.03
    assert st_q["q"].attrs["units"] == "1/Å"


def test_runs_as_a_job(noisy, tmp_path):
    job = jobs.run(functools.partial(iterate_integration, noisy.master, noisy.poni, bins=100, chunk=8),
                   name="integrate")
    job.wait(timeout=60)
    assert job.state == jobs.State.DONE
    assert job.result.shape == (6, 4, 100)
    assert job.progress.metrics["n_frames"] == 24


def test_top_level_function(noisy):
    st = xw.integrate(noisy.master, noisy.poni, bins=64)
    assert st.shape == (6, 4, 64)


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from xrdwidgets.integrate import iterate_integration
    for ev in iterate_integration(sys.argv[1], sys.argv[2], out=sys.argv[3], bins=150, chunk=2,
                                  radial_range=(2.0, 10.0), prefetch=0):
        print(ev.iteration, flush=True)
        time.sleep(0.3)
""")


def test_resume_after_kill_gives_the_same_stack(noisy, tmp_path):
    out = tmp_path / "killed.zarr"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(noisy.master), str(noisy.poni), str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done_dir = work_store(out) / "done"
    t0 = time.time()
    while time.time() - t0 < 60:
        if done_dir.is_dir() and len(list(done_dir.iterdir())) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    n_done = len(list(done_dir.iterdir()))
    assert 3 <= n_done < 12 and not out.exists()
    events = []
    resumed = integrate(noisy.master, noisy.poni, out=out, bins=150, chunk=2, radial_range=(2.0, 10.0),
                        callback=events.append)
    assert len(events) == 12 - n_done        # only the missing chunks were integrated
    fresh = integrate(noisy.master, noisy.poni, bins=150, chunk=2, radial_range=(2.0, 10.0))
    np.testing.assert_array_equal(np.asarray(resumed.values), fresh.values)
    assert not work_store(out).exists()


def test_existing_corrections_and_reconstruction_run_on_the_stack(tmp_path):
    from xrdwidgets import corrections
    from xrdwidgets.recon.fbp import fbp

    scan = simulate_raw_scan(tmp_path, n_translations=10, n_angles=6, air_margin=2, n_spot_frames=0)
    st = integrate(scan.master, scan.poni, bins=90, radial_range=(2.5, 9.5))
    fixed, reports = corrections.correct(st)
    assert fixed.dims == st.dims and fixed.shape == st.shape and np.all(np.isfinite(fixed.values))
    vol = fbp(fixed)
    assert vol.dims == ("y", "x", "tth") and vol.sizes["tth"] == 90


def test_two_integrators_sharing_one_pyfai_geometry(noisy):
    src = open_frames(noisy.master)
    ai = load_poni(noisy.poni, shape=src.frame_shape)
    frames = src.read(0, 3)
    extra = src.pixel_mask.copy()
    extra[:, :20] = True
    a = Integrator(ai, src.frame_shape, IntegrationOptions(bins=100), mask=src.pixel_mask)
    b = Integrator(ai, src.frame_shape, IntegrationOptions(bins=100), mask=extra)   # replaces pyFAI's engine
    ref_a = Integrator(load_poni(noisy.poni), src.frame_shape, IntegrationOptions(bins=100), mask=src.pixel_mask)
    np.testing.assert_allclose(a.integrate(frames, engine="scipy"), ref_a.integrate(frames, engine="pyfai"), rtol=1e-5)
    assert not np.allclose(a.integrate(frames), b.integrate(frames))
    src.close()
