"""Timings for a GPU machine (issue 19, item 4), one table; run by ``benchmarks/gpu_suite.sh``.

Rows (``--device cuda``; ``--smoke`` shrinks every size so that a CPU runs it in about a minute):

* FBP stack rate, images/s: 121 translations × 121 angles × 2000 channels and 512 × 512 × 200
  (``fbp_array`` with a built projector, ramp filter, random sinograms: the rate does not depend
  on the content).
* SD2Iu s/epoch at 256² (64 angles) and 779² (``--angles-779``, 200 by default), the paper's
  settings (64 filters, k = 8): float32, then ``amp=True``, then (256² only, for time)
  ``amp=True, compile=True`` (``bench_sd2i.time_per_epoch``: median of the epochs after the first). Data: exact line
  integrals of the modified Shepp–Logan.
* ParallaxNet s/epoch on one 121 × 121 × 250-channel batch (``iterate_parallaxnet_array``, the
  default network, lanczos3 operator, L = 1000 mm, 0.2 mm step); the paper's figure for
  comparison: 5000 epochs ≈ 5 h per batch on an RTX 8000, i.e. ≈ 3.6 s/epoch.
* Noise2Inverse training steps/s (U-Net default, 16 patches of 32²) on a 128² × 64-channel scan.
* Batch peak fit, pixels/s (``fit_volume``, one pseudo-Voigt + linear background, float64 and
  float32) on ``bench_peakfit.simulate``'s 256² × 100-channel map.

Each row also gives the setting it ran with; a failing row prints its error and the others go on.
The SD2I paper's own per-epoch figures are not in this repository: no ratio to them is printed.

Run: ``python benchmarks/bench_gpu.py --device cuda`` (≈ 3–5 min on a recent GPU, most of it
``torch.compile``), ``python benchmarks/bench_gpu.py --device cpu --smoke``.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def fbp_rate(n, n_angles, channels, device):
    """Images per second of ``fbp_array`` on a ``(n, n_angles, channels)`` stack (projector built)."""
    from xrdwidgets.ops import ParallelProjector
    from xrdwidgets.recon.fbp import fbp_array

    th = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    op = ParallelProjector(n, th, mask=True, device=device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    sino = torch.rand(n, n_angles, channels, generator=gen).to(device)
    fbp_array(sino[..., :2], th, projector=op)                   # builds the operator, warms kernels
    _, t = _timed(lambda: fbp_array(sino, th, projector=op), device)
    return channels / t, t


def _shepp_sino(n, n_angles, device):
    from xrdwidgets.ops import ParallelProjector
    from xrdwidgets.sim.phantoms import shepp_logan

    th = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    sino = shepp_logan().in_pixels(n).line_integrals(np.arange(n) - (n - 1) / 2.0, th)
    op = ParallelProjector(n, th, mask=True, device=device)
    return torch.as_tensor(sino, dtype=torch.float32, device=device), op


def sd2iu_epoch(n, n_angles, device, epochs, **kw):
    """Median seconds per SD2Iu epoch (``bench_sd2i.time_per_epoch``)."""
    from bench_sd2i import time_per_epoch

    sino, op = _shepp_sino(n, n_angles, device)
    return time_per_epoch(sino, op, device, epochs=epochs, **kw)


def parallaxnet_epoch(n, channels, device, epochs):
    """Median seconds per ParallaxNet epoch on one ``(n, n, channels)`` batch."""
    from xrdwidgets.ops.parallax import ParallaxProjector
    from xrdwidgets.base.progress import run_to_end
    from xrdwidgets.recon.parallaxnet import iterate_parallaxnet_array

    th = np.linspace(0.0, 180.0, n, endpoint=False)
    tth = np.linspace(3.30, 4.25, channels)
    op = ParallaxProjector(n, th, tth, 1000.0, 0.2, mask=True, device=device)
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) / (n / 2)
    disc = (xx**2 + yy**2 < 0.8).astype(np.float32)
    # a peak on a flat background: every channel carries signal (an all-zero channel makes
    # ParallaxNet's loss NaN at the first epoch; reported in issue 19's note)
    peak = (np.exp(-0.5 * ((tth - 3.8) / 0.02) ** 2) + 0.05).astype(np.float32)
    vol = torch.as_tensor(disc[..., None] * peak[None, None, :], device=device)
    sino = op(vol)
    stamps = []
    run_to_end(iterate_parallaxnet_array(sino, op, epochs=epochs, preview_every=0),
               lambda ev: stamps.append(time.perf_counter()))
    return float(np.median(np.diff(stamps)))


def n2i_steps(n, channels, device, steps):
    """Noise2Inverse training steps per second (one channel group, one epoch of ``steps``)."""
    from xrdwidgets.base.progress import run_to_end
    from xrdwidgets.recon.noise2inverse import iterate_noise2inverse
    from xrdwidgets.sim.scan import acquire_analytic
    from xrdwidgets.sim.shapes import Circle, Phantom

    tth = np.linspace(2.0, 6.0, channels)
    pats = np.stack([np.exp(-((tth - 3) / 0.8) ** 2), np.exp(-((tth - 5) / 0.8) ** 2)]) + 0.1
    phantoms = {"a": Phantom([Circle(1.0, (0.0, 0.0), 0.8)]), "b": Phantom([Circle(1.0, (0.25, 0.1), 0.3)])}
    ds = acquire_analytic(phantoms, tth, n=n, patterns=pats, dose=100.0, seed=0, n_angles=n)
    stack = ds["sinogram"] / float(ds.attrs.get("scale", 1.0))
    stamps = []

    def on_event(ev):
        stamps.append(time.perf_counter())

    kw = dict(epochs=2, steps_per_epoch=steps, batch=channels, preview_every=0, checkpoint_every=0, device=device)
    run_to_end(iterate_noise2inverse(stack, **kw), on_event)     # one event per epoch: time epoch 2
    return steps / (stamps[1] - stamps[0])


def peakfit_rate(n, channels, device, dtype):
    from bench_peakfit import simulate

    from xrdwidgets.analysis.fitting import fit_volume
    from xrdwidgets.analysis.peaks import PeakModel

    model = PeakModel(1, "pseudo_voigt", "linear")
    vol, _ = simulate(n, channels, 0, noise=True)
    warm = np.zeros((n, n), bool)
    warm[:2] = True
    fit_volume(vol, model, mask=warm, device=device, dtype=dtype)
    ds, t = _timed(lambda: fit_volume(vol, model, device=device, dtype=dtype), device)
    return n * n / t, int(ds.converged.sum())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check that every row runs)")
    p.add_argument("--angles-779", type=int, default=200, help="angles of the 779² SD2Iu case")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    a = p.parse_args(argv)
    dev = a.device
    s = a.smoke
    info = torch.cuda.get_device_name(0) if dev.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {dev} ({info}){' — SMOKE SIZES' if s else ''}", flush=True)
    rows = []

    def row(name, setting, fn, fmt):
        t0 = time.perf_counter()
        try:
            value = fmt(fn())
        except Exception as exc:  # a failing row is reported, the others still run
            traceback.print_exc()
            value = f"FAILED: {type(exc).__name__}: {exc}"[:80]
        rows.append((name, setting, value))
        print(f"  … {name:<34} {setting:<34} {value}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    for n, na, ch in ((121, 121, 2000), (512, 512, 200)) if not s else ((33, 33, 20), (64, 64, 8)):
        row("FBP stack", f"{n} x {na} x {ch}", lambda: fbp_rate(n, na, ch, dev),
            lambda r: f"{r[0]:,.0f} images/s ({r[1]:.2f} s)")
    ep = 4 if s else 12
    sizes = ((32, 16), (48, 24)) if s else ((256, 64), (779, a.angles_779))
    variants = [("fp32", {}), ("amp", {"amp": True})]
    if not a.no_compile:
        variants.append(("amp+compile", {"amp": True, "compile": True}))
    net = {"net_options": {"filters": 8}} if s else {}
    for i, (n, na) in enumerate(sizes):
        for tag, kw in variants if i == 0 else variants[:2]:     # compile: at the first size only (time)
            row(f"SD2Iu s/epoch {tag}", f"{n}² x {na} angles", lambda: sd2iu_epoch(n, na, dev, ep, **kw, **net),
                lambda t: f"{t:.4f} s/epoch (6000 epochs = {6000 * t / 60:.1f} min)")
    pn, pc = (16, 24) if s else (121, 250)
    row("ParallaxNet s/epoch", f"{pn} x {pn} x {pc} ch batch", lambda: parallaxnet_epoch(pn, pc, dev, 3 if s else 6),
        lambda t: f"{t:.3f} s/epoch (5000 epochs = {5000 * t / 3600:.2f} h; paper ≈ 5 h on RTX 8000)")
    nn_, nc, st = (32, 8, 5) if s else (128, 64, 50)
    row("Noise2Inverse steps/s", f"{nn_}² x {nc} ch, U-Net", lambda: n2i_steps(nn_, nc, dev, st),
        lambda r: f"{r:.1f} steps/s")
    fn, fc = (32, 40) if s else (256, 100)
    for dt in (torch.float64, torch.float32):
        row("peak fit pixels/s", f"{fn}² x {fc} ch, {str(dt)[6:]}", lambda: peakfit_rate(fn, fc, dev, dt),
            lambda r: f"{r[0]:,.0f} pixels/s ({r[1]}/{fn * fn} converged)")

    print()
    head = f"| {'case':<34} | {'setting':<34} | result |"
    print(head)
    print(f"|{'-' * 36}|{'-' * 36}|--------|")
    for name, setting, value in rows:
        print(f"| {name:<34} | {setting:<34} | {value} |")
    return 1 if any(str(v).startswith("FAILED") for _, _, v in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
