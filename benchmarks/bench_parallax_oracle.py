"""ParallaxNet on the first-principles parallax oracle: raw frames of a thick sample, integrated.

Data (no shared formula with :mod:`xrdwidgets.ops.parallax`)
    :func:`xrdwidgets.sim.frames.simulate_raw_scan` with ``thick=True`` renders every point along
    the pencil beam onto a flat detector from its own distance (pyFAI geometry per depth, solid
    angle per depth), frame by frame; the frames are integrated with the PONI of the rotation axis
    (:func:`xrdwidgets.integrate.integrate`), exactly what a beamline does. The sample is the five
    Ni discs of ``bench_parallax.py`` (one phase, so the true peak positions and widths are the
    same in every disc; parallax moves and widens them by position). The truth is the chemical
    phantom's pattern on the integrated 2θ axis.

Methods
    FBP of the 0–180° scan (what channel-by-channel reconstruction gives), FBP of a 0–360° scan
    (twice the angles: every point is seen from both sides — the classical cure, which the
    ParallaxNet paper shows is not one), ParallaxNet on the 0–180° scan (its own settings, or
    ``--paper``-like ones scaled by ``--epochs``), and FBP of the same scan of a *thin* sample
    (no parallax: the resolution floor).

Metrics, per disc and Ni reflection (``bench_parallax.region_metrics``)
    ``|Δ2θ| px``: mean over the disc's inner pixels of |centroid(recon) − centroid(truth)|, in
    channels; ``Δ2θ mean``: the same on the disc's mean pattern (signed); ``FWHM``: FWHM of the disc's
    mean pattern over the true one (1 = right width). Times of each step.

Run: ``python benchmarks/bench_parallax_oracle.py`` (21 × 21 translations/angles, 192² px
detector, 2θ 5.2–7.3° in 200 bins, 300 epochs after 50 of pre-training) or larger with ``--n``,
``--detector`` and ``--epochs``. The detector pixel (0.172 mm at the distance where 9.5° reaches
its edge) spans several bins, so measured peaks are wider than the 1-D truth for every method:
compare with the thin-sample row, the floor of this geometry.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_parallax import REGIONS, region_metrics  # noqa: E402


def disc_masks(n: int):
    """The five discs of ``bench_parallax`` on an ``n``-pixel grid (boolean masks)."""
    c = (n - 1) / 2
    R = 0.9 * n / 2
    yy, xx = np.mgrid[:n, :n]
    return [((yy - c - cy * R) ** 2 + (xx - c - cx * R) ** 2) <= (r * R) ** 2 for _, cy, cx, r, _, _ in REGIONS]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=21, help="translations = angles (0–180°) = image size")
    ap.add_argument("--detector", type=int, default=192, help="detector pixels per side")
    ap.add_argument("--bins", type=int, default=200, help="2θ bins of the integration")
    ap.add_argument("--range", type=float, nargs=2, default=(5.2, 7.3), metavar=("LO", "HI"),
                    help="2θ range integrated, deg (default: Ni (111) and (200) at 60 keV)")
    ap.add_argument("--oversample", type=int, default=1, help="detector sub-pixels per side in the simulation")
    ap.add_argument("--sample-mm", type=float, default=None,
                    help="sample width (default: the simulator's thick default, 8 %% of the distance)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--pretrain", type=int, default=50)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--settings", choices=("bench", "nopretrain", "pretrained", "fast", "paper"), nargs="+",
                    default=["bench"],
                    help="ParallaxNet runs: 'bench' (--epochs/--pretrain/--lr); 'nopretrain' (2000 epochs, no "
                         "pre-training: the defaults before 2026-12-04); 'pretrained' (2000 epochs after 500 "
                         "of pre-training); 'fast' (the preset: 2000 epochs after 400); 'paper' (the defaults, "
                         "the paper's settings: 5000 epochs after 1000, lr 5e-4); batches of 250 overlapping by "
                         "40 except in 'bench'")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from xrdwidgets.integrate import integrate
    from xrdwidgets.recon import fbp, parallaxnet
    from xrdwidgets.recon.registry import get_method
    from xrdwidgets.sim.chemical import chemical_phantom
    from xrdwidgets.sim.frames import simulate_raw_scan
    from xrdwidgets.sim.patterns import reflection_lines

    masks = disc_masks(a.n)
    ni = np.any(masks, axis=0).astype(float)
    energy = 60.0
    kw = dict(n_translations=a.n, shape=(a.detector, a.detector), dose=None, n_spot_frames=0, gaps=False,
              phase_maps={"Ni": ni}, order="raster", frames_per_file=500, seed=0, sample_size_mm=a.sample_mm,
              energy_keV=energy, oversample=a.oversample)
    opts = dict(bins=a.bins, checksums=False, radial_range=tuple(a.range))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        thick180 = simulate_raw_scan(tmp / "t180", n_angles=a.n, thick=True, **kw)
        thick360 = simulate_raw_scan(tmp / "t360", n_angles=2 * a.n, thick=True, angle_range_deg=(0.0, 360.0), **kw)
        thin = simulate_raw_scan(tmp / "thin", n_angles=a.n, thick=False,
                                 **{**kw, "sample_size_mm": a.sample_mm or thick180.geometry.translation_step_mm * a.n})
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        s180 = integrate(thick180.master, thick180.poni, **opts)
        s360 = integrate(thick360.master, thick360.poni, **opts)
        sthin = integrate(thin.master, thin.poni, **opts)
        t_int = time.perf_counter() - t0
    tth = s180["tth"].values
    ch = tth[1] - tth[0]
    lines = list(reflection_lines("Ni", energy_keV=energy, tth_range=(tth[0] + 0.2, tth[-1] - 0.2)).tth)
    geom = thick180.geometry
    truth = chemical_phantom({"Ni": ni}, tth, energy_keV=energy, instrumental_fwhm_deg=0.08)["volume"].values
    half_mm = 0.9 * a.n / 2 * geom.translation_step_mm
    shift = max(np.rad2deg(half_mm / geom.distance_mm * np.sin(np.deg2rad(2 * t)) / 2) for t in lines)
    print(f"thick Ni sample {a.n} px across, step {geom.translation_step_mm:.3f} mm, detector "
          f"{a.detector}² px at {geom.distance_mm:.1f} mm, {energy:g} keV; Ni lines {np.round(lines, 3).tolist()} deg; "
          f"{a.bins} bins of {ch * 1e3:.1f} mdeg; largest parallax shift ≈ {shift / ch:.1f} channels; "
          f"{torch.get_num_threads()} torch threads")

    runs = {}
    t0 = time.perf_counter()
    runs["FBP 0–180°"] = (fbp(s180).values, time.perf_counter() - t0)
    t0 = time.perf_counter()
    runs["FBP 0–360°"] = (fbp(s360).values, time.perf_counter() - t0)
    for which in a.settings:
        if which == "bench":
            name, kw = f"ParallaxNet ({a.epochs} ep.)", dict(epochs=a.epochs, pretrain=a.pretrain, lr=a.lr,
                                                               batch=a.bins, overlap=0)
        elif which == "nopretrain":
            name, kw = "ParallaxNet 2000, no pre.", dict(epochs=2000, pretrain=False)
        elif which == "pretrained":
            name, kw = "ParallaxNet 2000 + 500 pre.", dict(epochs=2000, pretrain=500)
        elif which == "fast":
            name, kw = "ParallaxNet 'fast' preset", get_method("parallaxnet").presets["fast"]
        else:
            name, kw = "ParallaxNet defaults (paper)", {}   # 5000 epochs after 1000 of pre-training, 250/40
        t0 = time.perf_counter()
        vol = parallaxnet(s180, seed=0, preview_every=0, **kw)
        runs[name] = (vol.values, time.perf_counter() - t0)
    t0 = time.perf_counter()
    runs["FBP thin (floor)"] = (fbp(sthin).values, time.perf_counter() - t0)

    window = shift + 4 * 0.03
    print(f"\nsimulation {t_sim:.0f} s (three scans), integration {t_int:.1f} s")
    print(f"\n{'method':<24}{'|Δ2θ| px (ch)':>14}{'|Δ2θ| mean (ch)':>17}{'FWHM ratio':>18}{'time':>9}")
    for name, (v, dt) in runs.items():
        rows = region_metrics(v, truth, tth, masks, lines, window)
        px = np.mean([r[2] for r in rows])
        mean = np.mean([abs(r[3]) for r in rows])
        ratios = [r[4] for r in rows]
        print(f"{name:<24}{px:>14.2f}{mean:>17.2f}{np.median(ratios):>9.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
              f"{dt:>8.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
