"""FBP / projector speed against scikit-image and ASTRA (CPU), measured in one run.

Usage: python benchmarks/bench_fbp.py [--quick] [--large]

Cases (float32, ramp filter):
  1. one 256² image, 400 angles            ours vs ASTRA CPU FBP vs skimage iradon
  2. stack 121 transl. × 121 angles × 500 ch  ours (whole stack, operator build included)
                                              vs ASTRA FBP looped over channels vs skimage looped
  3. one SIRT/CGLS iteration (A and Aᵀ) on that stack vs ASTRA SIRT iteration per channel × channels
  4. --large: 512² × 512 angles × 100 channels with bounded memory (peak RSS reported)
ASTRA's rotation centre is half a pixel from scikit-image's for even n; timings do not depend on it.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from xrdwidgets.ops import ParallelProjector
from xrdwidgets.recon import fbp_array


def best_of(fn, repeat=3):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def astra_fbp_fn(n, angles_deg):
    import astra

    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(angles_deg))
    pid = astra.create_projector("linear", pg, vg)

    def run(sino_an):  # (angles, translations)
        sid = astra.data2d.create("-sino", pg, sino_an)
        rid = astra.data2d.create("-vol", vg)
        cfg = astra.astra_dict("FBP")
        cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid)
        cfg["option"] = {"FilterType": "ram-lak"}
        aid = astra.algorithm.create(cfg)
        astra.algorithm.run(aid)
        out = astra.data2d.get(rid)
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        return out

    return run, (astra, vg, pg, pid)


def astra_sirt_iter_time(n, angles_deg, iters=10):
    import astra

    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(angles_deg))
    pid = astra.create_projector("linear", pg, vg)
    sino = np.random.rand(len(angles_deg), n).astype(np.float32)
    sid = astra.data2d.create("-sino", pg, sino)
    rid = astra.data2d.create("-vol", vg)
    cfg = astra.astra_dict("SIRT")
    cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid)
    aid = astra.algorithm.create(cfg)
    t = time.perf_counter()
    astra.algorithm.run(aid, iters)
    dt = (time.perf_counter() - t) / iters
    astra.algorithm.delete(aid)
    astra.data2d.delete([sid, rid])
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer channels for the looped peers")
    ap.add_argument("--large", action="store_true", help="also run the 512² × 512 × 100 case")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from skimage.transform import iradon

    rows = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")

    # 1. single image
    n, na = 256, 400
    th = np.linspace(0, 180, na, endpoint=False)
    s = np.random.default_rng(0).random((n, na)).astype(np.float32)
    t_ours = best_of(lambda: fbp_array(s, th, device=args.device))
    t_sk = best_of(lambda: iradon(s, th, filter_name="ramp", circle=True))
    try:
        run, _ = astra_fbp_fn(n, th)
        t_astra = best_of(lambda: run(np.ascontiguousarray(s.T)))
    except ImportError:
        t_astra = float("nan")
    rows.append(("256² × 400 angles, one image (s)", t_ours, t_astra, t_sk))

    # 2. stack
    n, na, C = 121, 121, 500
    th = np.linspace(0, 180, na, endpoint=False)
    stack = np.random.default_rng(1).random((n, na, C)).astype(np.float32)

    def ours_stack():
        op = ParallelProjector(n, th, mask=True, device=args.device)
        return fbp_array(torch.from_numpy(stack), th, projector=op)

    t_stack = best_of(ours_stack)
    k = 20 if args.quick else 100
    t_sk_loop = best_of(lambda: [iradon(stack[:, :, c], th, filter_name="ramp", circle=True) for c in range(k)], 1) / k
    try:
        run, _ = astra_fbp_fn(n, th)
        t_astra_loop = best_of(lambda: [run(np.ascontiguousarray(stack[:, :, c].T)) for c in range(k)], 1) / k
    except ImportError:
        t_astra_loop = float("nan")
    ch_ours, ch_astra, ch_sk = C / t_stack, 1 / t_astra_loop, 1 / t_sk_loop

    # 3. iteration cost (one forward + one adjoint) on the whole stack
    op = ParallelProjector(n, th, mask=True, device=args.device)
    x = torch.rand(n, n, C)
    op(x)  # build
    t_iter = best_of(lambda: op.T(op(x)))
    try:
        t_astra_it = astra_sirt_iter_time(n, th) * C
    except ImportError:
        t_astra_it = float("nan")

    print()
    print(f"{'case':45s} {'ours':>10s} {'ASTRA cpu':>10s} {'skimage':>10s} {'×ASTRA':>8s} {'×skimage':>9s}")
    r = rows[0]
    print(f"{r[0]:45s} {r[1]:10.3f} {r[2]:10.3f} {r[3]:10.3f} {r[2] / r[1]:8.2f} {r[3] / r[1]:9.2f}")
    print(f"{'stack 121×121×500 FBP (channels/s)':45s} {ch_ours:10.0f} {ch_astra:10.0f} {ch_sk:10.0f} "
          f"{ch_ours / ch_astra:8.1f} {ch_ours / ch_sk:9.1f}")
    print(f"{'stack 121×121×500, one iteration A+Aᵀ (s)':45s} {t_iter:10.3f} {t_astra_it:10.3f} {'':>10s} "
          f"{t_astra_it / t_iter:8.1f}")

    if args.large:
        n, na, C = 512, 512, 100
        th = np.linspace(0, 180, na, endpoint=False)
        big = torch.rand(n, na, C)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        t = time.perf_counter()
        op = ParallelProjector(n, th, mask=True, device=args.device, memory_budget=2**30)
        img = fbp_array(big, th, projector=op)
        dt = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{'512² × 512 angles × 100 ch FBP':45s} {dt:10.2f} s  ({C / dt:.1f} ch/s); matrices if all kept "
              f"{op.matrix_bytes / 2**30:.2f} GiB, budget 1 GiB; peak RSS {rss:.2f} GiB (before {rss0:.2f})")
        del img


if __name__ == "__main__":
    main()
