"""Simulator speed against peers measured in the same run (the timings the unit tests used to assert).

Usage: python benchmarks/bench_sim.py [--repeat 3] [--quick]

Cases (best of ``--repeat``):
  1. exact line integrals of 10 analytic ellipses, 512 translations × 800 angles
     (``Phantom.line_integrals``) vs scikit-image ``radon`` of the 512² raster at the same angles
     (a pixel-driven sinogram of the same size: the peer).
  2. ``chemical_phantom`` 100² × 300 channels, 3 phases, with a strain map, vs the floor of the
     same output: NumPy ``einsum`` of the 3 maps with 3 precomputed patterns (no peak shifts).
The former unit-test targets were 1 s for each; they are printed beside the figures.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def line_integrals_case(n, n_angles, repeat):
    from skimage.transform import radon

    from xrdwidgets.sim.shapes import Ellipse, Phantom

    ph = Phantom([Ellipse(1.0, (0.05 * k - 0.25, 0.02 * k), (0.3, 0.1 + 0.02 * k), 15.0 * k) for k in range(10)])
    t = np.linspace(-1, 1, n)
    theta = np.linspace(0, 180, n_angles, endpoint=False)
    ours = best_of(lambda: ph.line_integrals(t, theta), repeat)
    raster = ph.raster(n)
    peer = best_of(lambda: radon(raster, theta, circle=True), repeat)
    return ours, peer


def chemical_case(n, n_ch, repeat):
    from xrdwidgets.sim.chemical import chemical_phantom

    yy, xx = np.mgrid[:n, :n]
    maps = {"Ni": (xx < 40).astype(float), "CeO2": (yy < 50).astype(float), "TiO2": ((xx + yy) % 7 == 0) * 1.0}
    tth = np.linspace(2.0, 12.0, n_ch)
    chemical_phantom(maps, tth[::10], energy_keV=30.0)   # the phase table is read once per process
    ours = best_of(lambda: chemical_phantom(maps, tth, energy_keV=30.0,
                                            strain_maps={"Ni": 1e-4 * (xx // 10)}), repeat)
    stack = np.stack(list(maps.values())).astype(np.float32)
    patterns = np.random.default_rng(0).random((3, n_ch)).astype(np.float32)
    peer = best_of(lambda: np.einsum("pyx,pc->yxc", stack, patterns), repeat)
    return ours, peer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = p.parse_args(argv)
    li = (128, 200) if args.quick else (512, 800)
    ch = (32, 60) if args.quick else (100, 300)
    rows = []
    ours, peer = line_integrals_case(*li, args.repeat)
    rows.append((f"line_integrals {li[0]}×{li[1]}, 10 ellipses", ours, "skimage radon of the raster", peer))
    ours, peer = chemical_case(*ch, args.repeat)
    rows.append((f"chemical_phantom {ch[0]}²×{ch[1]}, 3 phases", ours, "einsum maps×patterns", peer))
    head = f"{'case':<40} {'ours s':>8}  {'peer':<28} {'peer s':>8} {'ours/peer':>9}"
    print(head)
    print("-" * len(head))
    for name, o, pn, pt in rows:
        print(f"{name:<40} {o:8.3f}  {pn:<28} {pt:8.3f} {o / pt:9.2f}")
    if not args.quick:
        print("former unit-test targets: line_integrals < 1 s, chemical_phantom < 1 s "
              f"({'met' if rows[0][1] < 1 and rows[1][1] < 1 else 'NOT met'} here)")


if __name__ == "__main__":
    main()
