"""Live mode: lag from a frame written to the image updated, and the CPU share live mode takes.

A simulated detector (:mod:`xrdwidgets.live.writer`, another process) writes a raw scan of
256×256-pixel frames into an SWMR HDF5 file at 100 frames/s (raster order: one angle line of
``--translations`` frames after another); this process follows it with
:class:`xrdwidgets.live.LiveSession` (poll, integrate the new frames, add the newly complete
angles to the FBP of every channel). Measured, against the writer's own clock (``time.time()``,
the same system clock in both processes):

* pattern lag: frame complete in the file → its pattern in the sinogram;
* image lag: the frame that completes an angle line → the FBP image including that angle;
* CPU share: CPU seconds of this process (all threads) / wall seconds from the detector's
  first write to the last image (set-up of the integrator included), and
  the machine's load (``os.getloadavg``, ``psutil.cpu_percent``) in the same interval;
* peers in the same run: offline :func:`xrdwidgets.integrate.integrate` + FBP of the same file
  after the scan (the work live mode spreads over the acquisition), printed as a ratio.

Goal (issue 18): image lag p95 ≤ 2 s at 100 frames/s.

Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_live.py            # 20 × 25 points, 500 frames
    python benchmarks/bench_live.py --translations 32 --angles 40 --update-every 0.5
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _pct(a, q):
    return float(np.percentile(np.asarray(a, float), q)) if len(a) else float("nan")


def follow(out, poni, plan, times_path, *, bins, period, update_every):
    """Follow the file until the plan is complete; returns the measurements."""
    import psutil

    from xrdwidgets.live import LiveSession

    sess = LiveSession(out, poni, plan=plan, bins=bins, update_every_s=update_every, keep_frame=True)
    n = plan.n_frames
    got_at = np.full(n, np.nan)
    img_at = np.full(plan.shape[1], np.nan)
    while not Path(out).exists():          # clocks start when the detector starts writing
        time.sleep(0.01)
    psutil.cpu_percent(None)
    load0 = os.getloadavg()
    cpu0, wall0 = time.process_time(), time.time()
    while not sess.finished:
        t0 = time.monotonic()
        k0 = sess.received
        if sess.poll():
            got_at[k0:sess.received] = time.time()
        if sess.update(force=sess.complete):
            new = np.isnan(img_at) & sess.recon.done
            img_at[new] = time.time()
        if time.time() - wall0 > 600:
            raise TimeoutError("the writer did not finish in 600 s")
        time.sleep(max(0.0, period - (time.monotonic() - t0)))
    wall, cpu = time.time() - wall0, time.process_time() - cpu0
    machine = psutil.cpu_percent(None)
    load1 = os.getloadavg()
    for _ in range(100):
        if Path(times_path).exists():
            break
        time.sleep(0.05)
    written = np.load(times_path)
    idx = plan.acquisition_index()                       # (translation, angle) → frame
    last_frame = idx.max(axis=0)                         # the frame completing each angle
    sess.close()
    return {"pattern_lag": got_at - written, "image_lag": img_at - written[last_frame], "cpu_s": cpu,
            "wall_s": wall, "machine_pct": machine, "load": (load0, load1), "session": sess}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--translations", type=int, default=20)
    ap.add_argument("--angles", type=int, default=25)
    ap.add_argument("--pixels", type=int, default=256)
    ap.add_argument("--rate", type=float, default=100.0, help="frames/s of the simulated detector")
    ap.add_argument("--bins", type=int, default=500)
    ap.add_argument("--period", type=float, default=0.1, help="polling period (s)")
    ap.add_argument("--update-every", type=float, nargs="+", default=[0.25, 1.0],
                    help="image update periods to measure (s)")
    a = ap.parse_args(argv)

    import logging

    logging.getLogger("silx.opencl").setLevel(logging.ERROR)
    from xrdwidgets.integrate import integrate, open_frames
    from xrdwidgets.live import writer
    from xrdwidgets.recon.fbp import fbp_array
    from xrdwidgets.sim.frames import simulate_raw_scan

    tmp = Path(tempfile.mkdtemp(prefix="bench_live_"))
    t = time.perf_counter()
    scan = simulate_raw_scan(tmp / "sim", n_translations=a.translations, n_angles=a.angles,
                             shape=(a.pixels, a.pixels), order="raster", n_spot_frames=0,
                             frames_per_file=10**6, compression=None, pixel_size_mm=0.172 * 64 / a.pixels)
    with open_frames(scan.master) as src:
        np.save(tmp / "frames.npy", src.read(0, src.n_frames))
        np.save(tmp / "mask.npy", src.pixel_mask)
    n = scan.plan.n_frames
    print(f"simulated {n} frames of {a.pixels}×{a.pixels} px ({a.translations} translations × {a.angles} angles, "
          f"raster) in {time.perf_counter() - t:.1f} s; detector at {a.rate:g} frames/s = "
          f"{n / a.rate:.1f} s of acquisition; {a.bins} bins; poll every {a.period} s")
    print(f"machine: {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.2f}\n")
    rows = []
    for upd in a.update_every:
        out = tmp / f"live_{upd}.h5"
        times = tmp / f"times_{upd}.npy"
        proc = subprocess.Popen([sys.executable, str(Path(writer.__file__)), str(tmp / "frames.npy"), str(out),
                                 "--rate", str(a.rate), "--mask", str(tmp / "mask.npy"), "--done",
                                 "--times", str(times)])
        try:
            m = follow(out, scan.poni, scan.plan, times, bins=a.bins, period=a.period, update_every=upd)
        finally:
            proc.wait(timeout=120)
        rows.append((upd, m))
    # peers in the same run: the offline path on the last file
    t, c = time.perf_counter(), time.process_time()
    off = integrate(out, scan.poni, plan=scan.plan, bins=a.bins, checksums=False)
    t_int, c_int = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    fbp_array(np.asarray(off.values), off["angle"].values)
    t_fbp, c_fbp = time.perf_counter() - t, time.process_time() - c
    same = np.array_equal(off.values, rows[-1][1]["session"].stack(checksums=False).values)

    print("| images every | pattern lag p50 / p95 / max (s) | image lag p50 / p95 / max (s) | "
          "live CPU (s) / wall (s) = share of one core | machine CPU busy | load avg (1 min) before → after |")
    print("|---|---|---|---|---|---|")
    for upd, m in rows:
        pl, il = m["pattern_lag"], m["image_lag"]
        print(f"| {upd:g} s | {_pct(pl, 50):.3f} / {_pct(pl, 95):.3f} / {np.nanmax(pl):.3f} | "
              f"{_pct(il, 50):.3f} / {_pct(il, 95):.3f} / {np.nanmax(il):.3f} | "
              f"{m['cpu_s']:.2f} / {m['wall_s']:.2f} = {100 * m['cpu_s'] / m['wall_s']:.0f} % | "
              f"{m['machine_pct']:.0f} % of {os.cpu_count()} CPUs | {m['load'][0][0]:.2f} → {m['load'][1][0]:.2f} |")
    print()
    cpu = rows[-1][1]["cpu_s"]
    print(f"offline peer on the same file (no checksums): integrate {t_int:.2f} s wall / {c_int:.2f} s CPU "
          f"({n / t_int:.0f} frames/s) + FBP {t_fbp:.2f} s wall / {c_fbp:.2f} s CPU; live CPU (last row) / "
          f"offline CPU = {cpu / (c_int + c_fbp):.2f}; final live stack == offline stack: {same}")
    p95 = max(_pct(m["image_lag"], 95) for _, m in rows)
    print(f"goal image lag p95 <= 2 s: {'met' if p95 <= 2 else 'NOT met'} (worst p95 {p95:.3f} s)")


if __name__ == "__main__":
    main()
