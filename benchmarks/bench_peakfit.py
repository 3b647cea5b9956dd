"""Batch peak fitting: the torch batched LM solver against scipy's least_squares pixel by pixel.

A 256 × 256 map of single pseudo-Voigt peaks on a linear background (random parameters per
pixel) is simulated with the *simulator's* profile (:func:`xrdwidgets.sim.patterns.pseudo_voigt`,
independent code from the fitting model), with Poisson noise. Both solvers fit the same model
(:class:`~xrdwidgets.analysis.peaks.PeakModel`, one pseudo-Voigt + linear background) with the
same bounds and initial guesses and the same analytic Jacobian.

scipy fits a random subset of pixels (``--scipy-pixels``, default 2000) and its time is
extrapolated linearly to all pixels (the per-pixel loop is embarrassingly serial, so the time
per pixel does not depend on how many are fitted). Agreement is measured on the same subset, on
noise-free data (where both solvers must find the exact parameters) and on the noisy data.

Relative difference of a parameter: |torch − scipy| / max(|scipy|, 1 % of the median |scipy|
of that parameter) — the floor keeps η ≈ 0 and background slopes ≈ 0 from dividing by zero.

Both wall-clock and CPU (process) times are printed: on a machine shared with other jobs the
CPU-time ratio is the steadier one. Measured on the 2-core development VM (torch 2.13 CPU,
float64, working set 1024 pixels, one thread, machine otherwise quiet): torch 1.9 s for 65 536
pixels (34 000 pixels/s) against 107 s extrapolated for scipy (610 pixels/s) — 55× — with
parameters agreeing to ≤ 1e-10 (max relative difference) on noise-free data. Two torch threads
on the same idle machine: 1.5 s (~73×); but with the cores oversubscribed by other processes,
OpenMP threads slow torch down by 10–20×, so run with ``OMP_NUM_THREADS=1`` there.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_peakfit.py [--size 256] [--device cpu] [--scipy-pixels 2000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def simulate(n, n_channels, seed=0, noise=True):
    """(volume DataArray, truth dict of (n, n) maps in fitting-model units)."""
    from xrdwidgets import data
    from xrdwidgets.sim.patterns import pseudo_voigt

    rng = np.random.default_rng(seed)
    tth = np.linspace(5.0, 6.0, n_channels)
    truth = {
        "area_0": rng.uniform(20.0, 60.0, (n, n)),          # counts·deg
        "position_0": rng.uniform(5.35, 5.65, (n, n)),       # deg
        "fwhm_0": rng.uniform(0.04, 0.12, (n, n)),           # deg
        "eta_0": rng.uniform(0.1, 0.9, (n, n)),
    }
    b0 = rng.uniform(50.0, 150.0, (n, n))                   # counts at the centre of the range
    b1 = rng.uniform(-40.0, 40.0, (n, n))                   # counts/deg
    peak = truth["area_0"][..., None] * pseudo_voigt(
        tth, truth["position_0"][..., None], truth["fwhm_0"][..., None], truth["eta_0"][..., None])
    centre, half = (tth[0] + tth[-1]) / 2, (tth[-1] - tth[0]) / 2
    clean = peak + b0[..., None] + b1[..., None] * (tth - centre)
    truth["bg_0"], truth["bg_1"] = b0, b1 * half         # coefficients of t = (tth − centre)/half
    values = rng.poisson(clean).astype(np.float64) if noise else clean
    return data.volume(values, spectral=tth, name="volume"), truth


def rel_diff(a, b):
    floor = 0.01 * np.median(np.abs(b))
    return np.abs(a - b) / np.maximum(np.abs(b), max(floor, 1e-300))


def compare(ds_t, ds_s, names, pix):
    out = {}
    for n in names:
        a = ds_t[n].values.reshape(-1)[pix]
        b = ds_s[n].values.reshape(-1)[pix]
        r = rel_diff(a, b)
        out[n] = (float(np.max(r)), float(np.median(r)))
    return out


def main(argv=None):
    import torch

    from xrdwidgets.analysis.fitting import fit_volume, fit_volume_scipy
    from xrdwidgets.analysis.peaks import PeakModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256, help="map size n (n × n pixels)")
    ap.add_argument("--channels", type=int, default=100, help="channels in the fit range")
    ap.add_argument("--scipy-pixels", type=int, default=2000, help="random pixels fitted by scipy")
    ap.add_argument("--device", default=None, help="torch device (default cuda when available)")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--batch-pixels", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    model = PeakModel(1, "pseudo_voigt", "linear")
    n = args.size
    n_pix = n * n
    noisy, truth = simulate(n, args.channels, args.seed, noise=True)
    clean, _ = simulate(n, args.channels, args.seed, noise=False)
    rng = np.random.default_rng(args.seed + 1)
    pix = np.sort(rng.choice(n_pix, size=min(args.scipy_pixels, n_pix), replace=False))
    mask = np.zeros(n_pix, bool)
    mask[pix] = True
    mask = mask.reshape(n, n)
    dtype = getattr(torch, args.dtype)
    kw = dict(device=args.device, dtype=dtype, batch_pixels=args.batch_pixels)
    print(f"{n}×{n} pixels × {args.channels} channels, {model}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, dtype {args.dtype}")

    warm = np.zeros((n, n), bool)
    warm[:2] = True
    fit_volume(noisy, model, mask=warm, **kw)                 # warm-up (allocations, kernels)
    t0, c0 = time.perf_counter(), time.process_time()
    ds_t = fit_volume(noisy, model, **kw)
    if ds_t.attrs["device"].startswith("cuda"):
        torch.cuda.synchronize()
    t_torch, c_torch = time.perf_counter() - t0, time.process_time() - c0
    print(f"torch batch LM ({ds_t.attrs['device']}, working set {ds_t.attrs['batch_pixels']} pixels): "
          f"{t_torch:.2f} s wall ({c_torch:.2f} s CPU) "
          f"for {n_pix} pixels = {n_pix / t_torch:,.0f} pixels/s; converged {int(ds_t.converged.sum())}/{n_pix}, "
          f"mean/max iterations {float(ds_t.n_iter.mean()):.1f}/{int(ds_t.n_iter.max())}")

    t0, c0 = time.perf_counter(), time.process_time()
    ds_s = fit_volume_scipy(noisy, model, mask=mask)
    t_sub, c_sub = time.perf_counter() - t0, time.process_time() - c0
    t_scipy, c_scipy = t_sub / pix.size * n_pix, c_sub / pix.size * n_pix
    print(f"scipy least_squares (trf, analytic Jacobian, one pixel at a time): {t_sub:.2f} s wall "
          f"({c_sub:.2f} s CPU) for {pix.size} random pixels = {pix.size / t_sub:,.0f} pixels/s; "
          f"EXTRAPOLATED to all {n_pix} pixels: {t_scipy:.1f} s wall ({c_scipy:.1f} s CPU); "
          f"converged {int(ds_s.converged.sum())}/{pix.size}, mean function evaluations "
          f"{float(ds_s.n_iter.values.reshape(-1)[pix].mean()):.1f}")
    print(f"speed-up torch / scipy: {t_scipy / t_torch:.1f}× wall-clock, {c_scipy / c_torch:.1f}× CPU time "
          "(target ≥ 50×)")

    names = model.param_names
    d_noisy = compare(ds_t, ds_s, names, pix)
    ds_tc = fit_volume(clean, model, mask=mask, **kw)
    ds_sc = fit_volume_scipy(clean, model, mask=mask)
    d_clean = compare(ds_tc, ds_sc, names, pix)
    print("relative difference torch vs scipy on the same pixels   max / median")
    for nm in names:
        print(f"  {nm:11s} noise-free {d_clean[nm][0]:.1e} / {d_clean[nm][1]:.1e}    "
              f"noisy {d_noisy[nm][0]:.1e} / {d_noisy[nm][1]:.1e}")
    worst = max(v[0] for v in d_clean.values())
    print(f"noise-free agreement: max relative difference {worst:.1e} (target ≤ 1e-3): "
          f"{'OK' if worst <= 1e-3 else 'FAIL'}")
    print("error of the torch fit against the truth (noisy data), median |fit − truth| / |truth|:")
    for nm in ("area_0", "position_0", "fwhm_0", "eta_0", "bg_0"):
        r = np.abs(ds_t[nm].values - truth[nm]) / np.abs(truth[nm])
        print(f"  {nm:11s} {np.median(r):.1e}")
    return {"t_torch": t_torch, "t_scipy": t_scipy, "speedup": t_scipy / t_torch,
            "speedup_cpu": c_scipy / c_torch,
            "agree_clean": d_clean, "agree_noisy": d_noisy}


if __name__ == "__main__":
    main()
