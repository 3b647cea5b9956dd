"""Scale-out on dask.distributed: speed-up of 1 → 2 worker processes and overhead per batch.

Measured in one run, on the same stack and plan:

* ``single``: the single-process stack runner (:func:`xrdwidgets.recon.reconstruct`) with one
  torch thread — what one worker process does, without dask;
* ``1 worker`` / ``N workers``: :func:`xrdwidgets.distributed.reconstruct_distributed` on a
  ``LocalCluster`` of 1 and N worker processes (one thread each), results written to a zarr store;
* the same for raw-frame integration (frame chunks as tasks), against the local loop.

Ratios printed: speed-up = time(1 worker) / time(N workers) (goal ≥ 1.7 for N = 2 on 2 cores);
overhead per batch = (time(1 worker) − time(single)) / time(single) (goal ≤ 5 %). Cluster start-up
is timed separately (paid once per session, not per run). Each figure is the median (and best) of
``--repeats`` runs; the load average is printed because other processes on the machine change the
figures. With ``--gpu`` the workers are one per GPU (``local_cluster``), the baseline runs on one GPU.

Usage::

    python benchmarks/bench_distributed.py                  # SIRT 128×128, 180 angles, 32 channels, batch 4
    python benchmarks/bench_distributed.py --method tv --n-iter 100 --workers 2 --repeats 3
    python benchmarks/bench_distributed.py --skip-integrate
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_stack(n: int, n_angles: int, channels: int):
    """Sinograms from scikit-image ``radon`` of a two-phase disc phantom (not our projector)."""
    from skimage.transform import radon

    import xrdwidgets as xw

    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2 + 0.5, xx - n / 2 + 0.5)
    a = (r < n * 0.4).astype(float)
    b = (np.hypot(yy - n * 0.4, xx - n * 0.55) < n * 0.12).astype(float)
    ang = np.linspace(0, 180, n_angles, endpoint=False)
    sa, sb = radon(a, ang, circle=True), radon(b, ang, circle=True)
    w = np.linspace(0, 1, channels)
    sinos = np.stack([(1 - t) * sa + 3 * t * sb for t in w], -1).astype(np.float32)
    return xw.data.sinogram_stack(sinos, angle=ang, spectral=np.linspace(2.0, 6.0, channels))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(ts: list[float]) -> str:
    return f"{statistics.median(ts):7.2f} s (best {min(ts):6.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="sirt")
    ap.add_argument("--n-iter", type=int, default=150)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--angles", type=int, default=180)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu", action="store_true", help="one worker per GPU; baseline on one GPU")
    ap.add_argument("--skip-integrate", action="store_true")
    ap.add_argument("--frames-grid", type=int, nargs=2, default=(40, 60), metavar=("NT", "NA"),
                    help="integration part: translations × angles of the simulated raw scan")
    args = ap.parse_args(argv)

    import torch
    from distributed import Client

    from xrdwidgets import distributed as xd
    from xrdwidgets.recon import reconstruct

    torch.set_num_threads(1)
    stack = make_stack(args.size, args.angles, args.channels)
    params = {"batch": args.batch}
    if args.method in ("sirt", "cgls", "tv"):
        params["n_iter"] = args.n_iter
    elif args.method in ("sd2i", "parallaxnet", "noise2inverse"):
        params["epochs"] = args.n_iter
    n_batches = -(-args.channels // args.batch)
    device = "cuda" if args.gpu else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    print(f"# {args.method} {params}, stack {args.size}×{args.size}, {args.angles} angles, {args.channels} channels "
          f"→ {n_batches} batches; {os.cpu_count()} CPU cores; load average at start "
          f"{os.getloadavg()[0]:.2f}")
    clusters = {}
    try:
        for n_workers in sorted({1, args.workers}):
            t0 = time.perf_counter()
            cluster = xd.local_cluster(n_workers, threads_per_worker=1, gpus=None if args.gpu else 0,
                                       silence_logs=logging.ERROR)
            client = Client(cluster)
            client.wait_for_workers(n_workers)
            clusters[n_workers] = (cluster, client, time.perf_counter() - t0)
        ref = reconstruct(stack, args.method, device=device, **params)
        k = [0]

        def on(n_workers, **extra):
            k[0] += 1
            return xd.reconstruct_distributed(stack, args.method, client=clusters[n_workers][1],
                                              store=tmp / f"w{n_workers}-{k[0]}.zarr", **{**params, **extra})

        # the fixed cost of a run (store, fingerprint, scatter, projector on the worker, assembly):
        # the same plan with one iteration/epoch per batch
        one = {"n_iter": 1} if "n_iter" in params else {"epochs": 1} if "epochs" in params else {}

        errs = {}
        for n_workers in clusters:  # warm-up: the workers import torch and the package once
            vol = on(n_workers)
            errs[n_workers] = float(np.abs(vol.values - ref.values).max() / np.abs(ref.values).max())
        # interleaved (single, 1 worker, N workers) per repeat, so that a change of load hits all alike
        single, results, fixed1, fixed_single = [], {n: [] for n in clusters}, [], []
        for _ in range(args.repeats):
            single += timed(lambda: reconstruct(stack, args.method, device=device, **params), 1)
            for n_workers in clusters:
                results[n_workers] += timed(lambda: on(n_workers), 1)
            if one:
                fixed_single += timed(lambda: reconstruct(stack, args.method, device=device, **{**params, **one}), 1)
                fixed1 += timed(lambda: on(1, **one), 1)
        print(f"\n{'run':<22}{'time':>28}   {'start-up':>9}   max rel. diff to single")
        print(f"{'single process':<22}{fmt(single):>28}")
        for n_workers, ts in results.items():
            print(f"{f'{n_workers} worker(s)':<22}{fmt(ts):>28}   {clusters[n_workers][2]:8.1f}s   {errs[n_workers]:.1e}")
        t1, tn = results[1], results[args.workers]
        med = statistics.median
        print(f"\nspeed-up 1 → {args.workers} workers: median {med(t1) / med(tn):.2f}×, best {min(t1) / min(tn):.2f}× "
              f"(goal ≥ 1.7×)")
        over_med = (med(t1) - med(single)) / med(single)
        over_best = (min(t1) - min(single)) / min(single)
        per_batch = (med(t1) - med(single)) / n_batches
        print(f"overhead of 1 worker against the single-process runner: median {100 * over_med:+.1f} %, "
              f"best {100 * over_best:+.1f} % ({per_batch * 1000:+.0f} ms per batch of "
              f"{med(single) / n_batches:.2f} s; goal ≤ 5 %)")
        if one:
            fixed = med(fixed1) - med(fixed_single)
            batch_over = (med(t1) - med(single) - fixed) / n_batches
            print(f"of which fixed per run (measured with {one}): {fixed:.2f} s; left per batch "
                  f"{batch_over * 1000:+.0f} ms = {100 * batch_over / (med(single) / n_batches):+.1f} % of a batch")
        if not args.skip_integrate:
            bench_integrate(tmp, args, {n: c[1] for n, c in clusters.items()})
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    finally:
        for cluster, client, _ in clusters.values():
            client.close()
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def bench_integrate(tmp: Path, args, clients: dict) -> None:
    """Raw frames → sinograms: the local loop against 1 and N workers (frame chunks as tasks)."""
    from xrdwidgets.integrate import integrate
    from xrdwidgets.sim.frames import simulate_raw_scan

    nt, na = args.frames_grid
    scan = simulate_raw_scan(tmp / "raw", n_translations=nt, n_angles=na, shape=(256, 256), order="zigzag",
                             n_spot_frames=0, dose=2000.0, frames_per_file=200, seed=0, n_tth=700)
    n_frames = nt * na
    kw = dict(bins=500, chunk=32, radial_range=(2.0, 10.0), checksums=False)
    k = [0]

    def local():
        k[0] += 1
        return integrate(scan.master, scan.poni, out=tmp / f"local-{k[0]}.h5", **kw)

    setups = {n: [] for n in clients}

    def on(n_workers):
        k[0] += 1
        evs = []
        st = integrate(scan.master, scan.poni, out=tmp / f"c{n_workers}-{k[0]}.h5", client=clients[n_workers],
                       callback=evs.append, **kw)
        setups[n_workers].append(evs[-1].metrics["worker_setup_s"])
        return st

    ref = local()
    errs = {n: float(np.abs(np.asarray(on(n).values) - np.asarray(ref.values)).max()) for n in clients}
    lt, times = [], {n: [] for n in clients}
    for _ in range(args.repeats):
        lt += timed(local, 1)
        for n in clients:
            times[n] += timed(lambda: on(n), 1)
    med = statistics.median
    print(f"\nintegration of {n_frames} frames (256×256 px), {kw}")
    print(f"{'local loop':<22}{fmt(lt):>28}   {n_frames / med(lt):7.0f} frames/s")
    for n, ts in times.items():
        print(f"{f'{n} worker(s)':<22}{fmt(ts):>28}   {n_frames / med(ts):7.0f} frames/s   max diff {errs[n]:.1e}"
              f"   worker set-up {med(setups[n]):.2f} s (sum over workers)")
    t1, tn = times[1], times[args.workers]
    print(f"integration speed-up 1 → {args.workers} workers: median {med(t1) / med(tn):.2f}×, "
          f"best {min(t1) / min(tn):.2f}×; 1 worker against the local loop: median "
          f"{100 * (med(t1) - med(lt)) / med(lt):+.1f} %, best {100 * (min(t1) - min(lt)) / min(lt):+.1f} %")


if __name__ == "__main__":
    raise SystemExit(main())
