"""Noise2Inverse next to FBP and TV on a simulated XRD-CT scan at three doses (and real data).

Data
    The demo sample of :func:`xrdwidgets.sim.demo` (CeO2 support with a pore, Ni particles with a
    strain gradient, TiO2 binder with a crystallite-size gradient; 60 keV) scanned by the
    simulator's own ray tracer (:func:`xrdwidgets.sim.scan.acquire`: fine sampling along every
    pencil beam and bilinear interpolation — not the pixel-driven projector the reconstructions
    use, so no inverse crime). Default size: 64 translations, 96 angles over 0–180°, 300 channels
    over 2θ 2.5–9.5° of which the window 3.4–6.4° is kept (128 channels; peaks of all three
    phases). Poisson noise at three doses: ``--dose`` (reference, 200 expected counts at the
    brightest sinogram point), 70 % and 20 % of it. ``--small``: 40 translations, 48 angles, 2θ
    3.4–4.9° (64 channels), a shorter training — a quick check, not a result.

Reference: the noise-free volume the scan was made of (area-averaged phase maps × patterns);
reconstructions are divided by the scan's ``scale`` (counts per unit intensity).

Methods
    * FBP (ramp filter).
    * TV (``xrdwidgets.recon.tv``, non-negative, 200 iterations) with ``lam_rel`` in
      ``--tv-lams`` (0.1, 0.2, 0.4); the best per dose (by PSNR against the truth — an oracle
      choice that favours TV) is reported, the others are printed.
    * Noise2Inverse (``xrdwidgets.recon.noise2inverse``) with its defaults: K = 4 interleaved
      angle sections, "X:1", FBP sections, MSE, Adam 1e-3, 16 patches of 32² per step, output
      averaged over the 8 flips/transposes; all channels of the window in one network
      (``batch`` = number of channels), ``--steps`` training steps (1500). ``--nets`` chooses the
      networks (default ``unet``; ``msd`` — MS-D, depth 100, width 1 — costs 5–7× more per step
      on a CPU: about 7 minutes per dose at the default size).

Metrics
    PSNR over the whole volume (data range of the truth volume); SSIM (scikit-image, 7×7
    window) of the three phase images — each phase's most distinctive 5-channel peak window
    summed (:func:`xrdwidgets.explore.figures.phase_channels`), data range of the true image — averaged.
    Time: wall-clock seconds on this machine (training and inference of Noise2Inverse from its
    events' ``seconds_*`` metrics).

Real data (``--real``): ``../shared/data/sd2i_experimental_sinograms.h5`` has no clean
reference; the notebook ``notebooks/08_noise2inverse.ipynb`` shows FBP and Noise2Inverse side by side.

Run: ``python benchmarks/bench_noise2inverse.py [--small] [--nets unet,msd] [--steps 1500]``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.metrics import structural_similarity

import xrdwidgets as xw
from xrdwidgets.explore.figures import phase_channels
from xrdwidgets.base.progress import run_to_end
from xrdwidgets.recon.fbp import fbp
from xrdwidgets.recon.noise2inverse import iterate_noise2inverse
from xrdwidgets.recon.tv import tv


def scan(dose, args, seed):
    """The demo scanned at ``dose``, cropped to the 2θ window: (sinogram / scale, truth volume, patterns)."""
    ds = xw.demo(n_translations=args.n, n_angles=args.angles, n_channels=args.channels, dose=dose, seed=seed)
    win = slice(*args.window)
    ds = ds.sel(tth=win)
    return ds["sinogram"] / float(ds.attrs["scale"]), ds["volume"], ds["patterns"]


def scores(vol, truth, windows):
    v, t = np.asarray(vol, np.float64), np.asarray(truth, np.float64)
    rng = float(t.max() - t.min())
    psnr = 10 * np.log10(rng**2 / float(np.mean((v - t) ** 2)))
    ss = []
    for sl in windows.values():
        a, b = v[..., sl].sum(-1), t[..., sl].sum(-1)
        ss.append(structural_similarity(a, b, data_range=float(b.max() - b.min()), win_size=7))
    return psnr, float(np.mean(ss))


def run_n2i(sino, net, args):
    steps_per_epoch = 50
    epochs = max(1, args.steps // steps_per_epoch)
    timing = {}

    def cb(ev):
        for k in ("seconds_sections", "seconds_training", "seconds_inference"):
            if k in ev.metrics:
                timing[k] = timing.get(k, 0.0) + ev.metrics[k]

    t = time.perf_counter()
    vol = run_to_end(iterate_noise2inverse(
        sino, net=net, k=getattr(args, "k", 4), epochs=epochs, steps_per_epoch=steps_per_epoch, batch=sino.sizes["tth"],
        preview_every=0, checkpoint_every=0, seed=0, device="cpu"), cb)
    timing["total"] = time.perf_counter() - t
    return vol, timing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="quick check at a small size")
    ap.add_argument("--dose", type=float, default=200.0, help="reference counts at the brightest point")
    ap.add_argument("--nets", default="unet", help="comma-separated: unet, msd")
    ap.add_argument("--steps", type=int, default=None, help="Noise2Inverse training steps (default 1500; small 300)")
    ap.add_argument("--tv-lams", default="0.1,0.2,0.4")
    args = ap.parse_args(argv)
    if args.small:
        args.n, args.angles, args.channels, args.window = 40, 48, 300, (3.4, 4.9)
        args.steps = args.steps or 300
    else:
        args.n, args.angles, args.channels, args.window = 64, 96, 300, (3.4, 6.4)
        args.steps = args.steps or 1500
    nets = [s.strip() for s in args.nets.split(",") if s.strip()]
    lams = [float(v) for v in args.tv_lams.split(",")]
    doses = [args.dose, 0.7 * args.dose, 0.2 * args.dose]
    print(f"demo scan {args.n} translations × {args.angles} angles, 2θ {args.window[0]}–{args.window[1]}°; "
          f"doses {', '.join(f'{d:g}' for d in doses)} counts; N2I {args.steps} steps, nets {nets}", flush=True)
    rows = []
    for i, dose in enumerate(doses):
        t = time.perf_counter()
        sino, truth, patterns = scan(dose, args, seed=i)
        windows = phase_channels(patterns)
        print(f"\n dose {dose:g}: {sino.sizes['tth']} channels, simulated in {time.perf_counter() - t:.1f} s",
              flush=True)
        t = time.perf_counter()
        res = {"FBP": (fbp(sino).values, time.perf_counter() - t, "")}
        best = None
        for lam in lams:
            t = time.perf_counter()
            v = tv(sino, n_iter=200, lam_rel=lam, nonneg=True).values
            dt = time.perf_counter() - t
            p, s = scores(v, truth.values, windows)
            print(f"   TV lam_rel={lam:g}: PSNR {p:.2f} dB, SSIM {s:.3f} ({dt:.1f} s)", flush=True)
            if best is None or p > best[0]:
                best = (p, v, dt, f"lam_rel={lam:g}")
        res["TV (best)"] = (best[1], best[2], best[3])
        for net in nets:
            vol, timing = run_n2i(sino, net, args)
            res[f"N2I {net}"] = (vol.values, timing["total"],
                                 f"train {timing['seconds_training']:.0f} s, infer {timing['seconds_inference']:.2f} s")
        for name, (v, dt, note) in res.items():
            p, s = scores(v, truth.values, windows)
            rows.append((dose, name, p, s, dt, note))
            print(f"   {name:10s} PSNR {p:6.2f} dB  SSIM {s:.3f}  {dt:7.1f} s  {note}", flush=True)
    print("\n| dose (counts) | method | PSNR (dB) | SSIM | time (s) | notes |")
    print("|---|---|---|---|---|---|")
    for dose, name, p, s, dt, note in rows:
        print(f"| {dose:g} | {name} | {p:.2f} | {s:.3f} | {dt:.1f} | {note} |")


if __name__ == "__main__":
    main()
