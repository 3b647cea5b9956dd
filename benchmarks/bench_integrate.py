"""Raw frames → patterns: reading alone, pyFAI frame by frame, and xrdwidgets' batched engine.

Data
    ``--frames`` frames of ``--size × --size`` pixels (default 2000 of 1000 × 1000), uint32,
    bitshuffle-LZ4 compressed (one HDF5 chunk per frame, as an Eiger writes them), in an
    Eiger-like master file + data files of 500 frames: powder rings of the demo's phases drawn
    through a pyFAI geometry (:mod:`xrdwidgets.sim.frames`) with Poisson noise at a peak of 2000
    counts (16 noise draws, cycled, so that writing stays fast; compression ratio as real data).
    Written once into ``--folder`` (kept, reused when present).

Rows (all on the same frames, in one run, same threads)
    ``read + decompress``: :class:`~xrdwidgets.integrate.readers.FrameSource` reading chunks of
    ``--chunk`` frames (h5py + hdf5plugin), nothing else — the ceiling of any integrator.
    ``pyFAI <method>, per frame``: read, then ``ai.integrate1d_ng`` frame by frame with each of
    pyFAI's CPU engines (CSR, LUT, histogram; bbox splitting; mask, solid angle, polarisation);
    the best is kept as *pyFAI best*.
    ``xrdwidgets <engine>``: :func:`xrdwidgets.integrate.iterate_integration` (prefetching
    reader thread + pyFAI's CSR matrix applied to ``--chunk`` frames per sparse product) with
    the same corrections, engine ``scipy`` and ``torch`` (CPU; plus CUDA when present).
    Results of ours are checked against pyFAI's on the first frames (max relative difference).

Goals (issue 14): ours ≥ pyFAI best and ≥ 0.8 × read + decompress.

Run: ``python benchmarks/bench_integrate.py --small`` (200 frames of 512 × 512) or without
``--small`` for the full size (2000 frames of 1000 × 1000: 8 GB uncompressed; writes ≈ 1–2 GB).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from xrdwidgets.integrate import IntegrationOptions, Integrator, iterate_integration, load_poni, open_frames
from xrdwidgets.integrate.calibration import make_integrator, write_poni
from xrdwidgets.sim.frames import detector_tth, gap_mask, render_pattern, write_eiger


def make_data(folder: Path, n_frames: int, size: int) -> tuple[Path, Path]:
    """Write the benchmark frames (once) and return (master, poni)."""
    from xrdwidgets.sim.chemical import reference_patterns

    master, poni = folder / "bench_master.h5", folder / "bench.poni"
    if master.is_file() and poni.is_file():
        src = open_frames(master)
        if src.n_frames == n_frames and src.frame_shape == (size, size):
            return master, poni
    folder.mkdir(parents=True, exist_ok=True)
    pixel = 0.075 * 1000 / size
    ai = make_integrator(distance_mm=(size / 2) * pixel / np.tan(np.radians(10.0)), pixel_size_mm=pixel,
                         shape=(size, size), wavelength_A=12.398419843320026 / 60.0)
    write_poni(ai, poni)
    tth_sub, solid = detector_tth(ai, (size, size), oversample=1)
    tth = np.linspace(1.0, float(tth_sub.max()) + 0.1, 4000)
    pats = reference_patterns(["CeO2", "Ni", "TiO2"], tth, energy_keV=60.0)
    pat = np.asarray(pats, float).sum(axis=0)
    clean = render_pattern(tth_sub, solid, tth, pat)
    clean *= 2000.0 / clean.max()
    rng = np.random.default_rng(0)
    draws = [rng.poisson(clean).astype(np.uint32) for _ in range(16)]
    mask = gap_mask((size, size), n_modules=(4, 4), gap=4)
    for d in draws:
        d[mask] = np.uint32(2**32 - 1)
    write_eiger(folder, "bench", (draws[i % 16] for i in range(n_frames)), n_frames=n_frames,
                shape=(size, size), frames_per_file=500, pixel_mask=mask)
    return master, poni


def rate(fn, n):
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="200 frames of 512 × 512")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--bins", type=int, default=1000)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--folder", default=None, help="where the frames are written (default: "
                   "<temp dir>/xrdwidgets_bench_integrate, kept for reruns)")
    p.add_argument("--pyfai-frames", type=int, default=None,
                   help="frames timed per pyFAI engine (default: all; rates are per frame)")
    a = p.parse_args()
    n = a.frames or (200 if a.small else 2000)
    size = a.size or (512 if a.small else 1000)
    folder = Path(a.folder or Path(tempfile.gettempdir()) / "xrdwidgets_bench_integrate") / f"{n}x{size}"
    t0 = time.perf_counter()
    master, poni = make_data(folder, n, size)
    print(f"data: {n} frames of {size}×{size} px, bitshuffle-LZ4 uint32 in {folder} "
          f"({sum(f.stat().st_size for f in folder.glob('bench_data_*.h5')) / 2**20:.0f} MiB on disk; "
          f"ready in {time.perf_counter() - t0:.0f} s)")
    import torch

    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"cpus {os.cpu_count()}")
    src = open_frames(master)
    ai = load_poni(poni, shape=src.frame_shape)
    mask = src.pixel_mask
    opts = dict(bins=a.bins, polarization_factor=0.99)
    rows = []

    def read_only():
        for _ in src.iter_chunks(a.chunk, prefetch=0):
            pass

    r_read = rate(read_only, n)
    rows.append(("read + decompress", r_read))
    n_py = min(n, a.pyfai_frames or n)
    best = ("", 0.0)
    for algo in ("csr", "lut", "histogram"):
        meth = ("bbox", algo, "cython")
        ai.integrate1d_ng(src.read(0, 1)[0], a.bins, unit="2th_deg", method=meth, mask=mask,
                          polarization_factor=0.99)

        def per_frame():
            for _, fr in src.iter_chunks(a.chunk, stop=n_py, prefetch=0):
                for f in fr:
                    ai.integrate1d_ng(f, a.bins, unit="2th_deg", method=meth, mask=mask, polarization_factor=0.99)

        r = rate(per_frame, n_py)
        rows.append((f"pyFAI {algo}, per frame", r))
        if r > best[1]:
            best = (f"pyFAI {algo}", r)
    engines = ["scipy", "torch"] + (["torch-cuda"] if torch.cuda.is_available() else [])
    ours_best = ("", 0.0)
    check = {}
    for eng in engines:
        kw = dict(engine="torch", device="cuda") if eng == "torch-cuda" else dict(engine=eng)
        integ = Integrator(ai, src.frame_shape, IntegrationOptions(**opts, **kw), mask=mask)
        ref = np.stack([ai.integrate1d_ng(f, a.bins, unit="2th_deg", method=("bbox", "csr", "cython"),
                                          mask=mask, polarization_factor=0.99).intensity for f in src.read(0, 4)])
        got = integ.integrate(src.read(0, 4))
        check[eng] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))

        def ours():
            for _ in iterate_integration(src, ai, mask=mask, chunk=a.chunk, checksums=False,
                                         n_translations=n, n_angles=1, use_motors=False,
                                         options=IntegrationOptions(**opts, **kw)):
                pass

        r = rate(ours, n)
        rows.append((f"xrdwidgets {eng} (batched CSR, {a.chunk}/batch)", r))
        if r > ours_best[1]:
            ours_best = (f"xrdwidgets {eng}", r)
    print(f"\n{'path':44s} {'frames/s':>9s}  {'× read':>7s}")
    for name, r in rows:
        print(f"{name:44s} {r:9.1f}  {r / r_read:7.2f}")
    print(f"\nours best ({ours_best[0]}) / pyFAI best ({best[0]}): {ours_best[1] / best[1]:.2f}  (goal ≥ 1)")
    print(f"ours best / read + decompress: {ours_best[1] / r_read:.2f}  (goal ≥ 0.8)")
    print("max |ours − pyFAI| / max pyFAI on 4 frames: " + ", ".join(f"{k} {v:.1e}" for k, v in check.items()))


if __name__ == "__main__":
    main()
