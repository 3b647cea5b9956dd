"""Reconstruction quality: our FBP, SIRT, CGLS and TV next to scikit-image, in one run.

Data (the issue's quality target)
    Shepp–Logan 256² (``skimage.data.shepp_logan_phantom`` resized with anti-aliasing; data
    range 1), sinograms from ``skimage.transform.radon(..., circle=True)`` at 400 and at 64
    angles over [0°, 180°). scikit-image's ``iradon`` (ramp filter) and ``iradon_sart`` run on the
    same sinograms in the same process. Then, without any inverse crime, TV (and FBP for
    reference) on the *exact line integrals* of the analytic Shepp–Logan ellipses
    (:mod:`xrdwidgets.sim.phantoms`) at 64 angles, scored against the exact area-averaged raster.

Rotation centre
    ``radon`` rotates about pixel ``n // 2 = 128``; our projector's image centre is
    ``(n - 1) / 2 = 127.5``. To align them exactly we reconstruct on a ``257 × 257`` grid (centre
    pixel 128, the same pixel lattice as skimage's) with ``n_translations=256`` and
    ``centre_offset=+0.5`` (the axis sits at translation 128 = skimage's ``n // 2``), then keep rows
    and columns ``0 … 255``. No interpolation is involved. The exact-line-integral data use the
    native 256 grid (centre 127.5 on both sides).

Metrics
    PSNR (data range 1), SSIM (``skimage.metrics.structural_similarity``, data range 1) and MAE
    over the whole 256² image, raw and clipped to [0, 1].

Run: ``python benchmarks/bench_quality.py`` (about 1–1.5 min on 2 CPU cores; ``--quick`` for a
smoke run with fewer iterations).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage.data import shepp_logan_phantom
from skimage.metrics import structural_similarity
from skimage.transform import iradon, iradon_sart, radon, resize

from xrdwidgets.ops import ParallelProjector
from xrdwidgets.recon.cgls import cgls_array
from xrdwidgets.recon.fbp import fbp_array
from xrdwidgets.recon.sirt import sirt_array
from xrdwidgets.recon.tv import LAM_REL, tv_array
from xrdwidgets.sim.phantoms import shepp_logan

N = 256


def metrics(x, ref):
    """PSNR, SSIM, MAE of ``x`` against ``ref`` (data range 1), raw and clipped to [0, 1]."""
    out = {}
    for tag, img in (("raw", x), ("clip", np.clip(x, 0.0, 1.0))):
        mse = float(np.mean((img - ref) ** 2))
        out[f"psnr_{tag}"] = 10 * np.log10(1.0 / mse)
        out[f"ssim_{tag}"] = structural_similarity(img, ref, data_range=1.0)
        out[f"mae_{tag}"] = float(np.mean(np.abs(img - ref)))
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def built(op):
    """``op`` with its sparse matrices built (they are built lazily, at the first projection)."""
    op(torch.zeros(op.n, op.n, 1))
    return op


def skimage_radon_projector(angles_deg, n=N, device="cpu"):
    """Projector on skimage's pixel lattice (centre ``n // 2``) for an even ``n`` (default ``N``):
    an ``(n + 1)²`` grid whose rows/columns ``0 … n − 1`` are radon's image; see the docstring."""
    return built(ParallelProjector(n + 1, angles_deg, n_translations=n, centre_offset=0.5, mask=True,
                                   device=device))


def astra_recon(sino, angles_deg, algorithm, iters, min_constraint=None):
    """ASTRA CPU reconstruction of a skimage-layout sinogram (translation, angle), aligned.

    ASTRA's centre is the middle of its detector and volume ((n-1)/2); padding the detector and
    the volume by one (257) puts it at 128 = skimage's ``n // 2``; we keep rows/cols 0…255.
    """
    import astra

    n_t = sino.shape[0]
    m = n_t + 1
    padded = np.zeros((len(angles_deg), m), np.float32)
    padded[:, :n_t] = sino.T
    vg = astra.create_vol_geom(m, m)
    pg = astra.create_proj_geom("parallel", 1.0, m, np.deg2rad(angles_deg))
    pid = astra.create_projector("linear", pg, vg)
    sid = astra.data2d.create("-sino", pg, padded)
    rid = astra.data2d.create("-vol", vg, 0.0)
    cfg = astra.astra_dict(algorithm)
    cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid)
    if min_constraint is not None:
        cfg["option"] = {"MinConstraint": float(min_constraint)}
    aid = astra.algorithm.create(cfg)
    astra.algorithm.run(aid, iters)
    out = astra.data2d.get(rid)[:n_t, :n_t]
    astra.algorithm.delete(aid)
    astra.data2d.delete([sid, rid])
    astra.projector.delete(pid)
    return out


def run(args):
    rows = []

    def add(data, angles, method, iters, seconds, x, ref):
        rows.append({"data": data, "angles": angles, "method": method, "iters": iters,
                     "time_s": seconds, **metrics(np.asarray(x, np.float64), ref)})
        r = rows[-1]
        print(f"  … {data:>6} {angles:>4} {method:<22} {r['psnr_raw']:6.2f} dB  ({seconds:.1f} s)", flush=True)

    truth = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True)
    iters = {400: dict(sirt=args.sirt400, cgls=args.cgls400, tv=args.tv400),
             64: dict(sirt=args.sirt64, cgls=args.cgls64, tv=args.tv64)}
    for na in (400, 64):
        th = np.linspace(0.0, 180.0, na, endpoint=False)
        sino = radon(truth, th, circle=True)
        ref_name = "radon"
        x, t = timed(lambda: iradon(sino, th, circle=True, filter_name="ramp"))
        add(ref_name, na, "skimage iradon (ramp)", "", t, x, truth)
        if na <= args.sart_max_angles:
            def sart():
                img = iradon_sart(sino, th)
                return iradon_sart(sino, th, image=img)
            x, t = timed(sart)
            add(ref_name, na, "skimage iradon_sart", 2, t, x, truth)
        try:
            x, t = timed(lambda: astra_recon(sino, th, "SIRT", 250, min_constraint=0.0))
            add(ref_name, na, "ASTRA SIRT (x>=0)", 250, t, x, truth)
            x, t = timed(lambda: astra_recon(sino, th, "CGLS", 20))
            add(ref_name, na, "ASTRA CGLS", 20, t, x, truth)
        except ImportError:
            print("  (astra-toolbox not installed: no ASTRA rows)")
        op, t_op = timed(lambda: skimage_radon_projector(th))
        crop = (slice(0, N), slice(0, N))
        s = torch.as_tensor(sino, dtype=torch.float32)
        x, t = timed(lambda: fbp_array(s, th, projector=op))
        add(ref_name, na, "ours FBP (ramp)", "", t, x.numpy()[crop], truth)
        k = iters[na]
        x, t = timed(lambda: sirt_array(s, op, k["sirt"], nonneg=True, preview_every=0))
        add(ref_name, na, "ours SIRT (x>=0)", k["sirt"], t, x.numpy()[crop], truth)
        x, t = timed(lambda: cgls_array(s, op, k["cgls"], preview_every=0))
        add(ref_name, na, "ours CGLS", k["cgls"], t, x.numpy()[crop], truth)
        x, t = timed(lambda: cgls_array(s, op, k["cgls"], nonneg=True, preview_every=0))
        add(ref_name, na, "ours CGLS (x>=0)", k["cgls"], t, x.numpy()[crop], truth)
        x, t = timed(lambda: tv_array(s, op, k["tv"], nonneg=True, preview_every=0))
        add(ref_name, na, "ours TV (x>=0)", k["tv"], t, x.numpy()[crop], truth)
        print(f"  (projector matrices for {na} angles built in {t_op:.1f} s, not in the times)", flush=True)

    # no inverse crime: exact line integrals of the analytic ellipses, native 256 grid
    na = 64
    th = np.linspace(0.0, 180.0, na, endpoint=False)
    ph = shepp_logan().in_pixels(N)
    raster = ph.raster()
    s = torch.as_tensor(ph.line_integrals(np.arange(N) - (N - 1) / 2.0, th), dtype=torch.float32)
    op = built(ParallelProjector(N, th, mask=True, device="cpu"))
    x, t = timed(lambda: fbp_array(s, th, projector=op))
    add("exact", na, "ours FBP (ramp)", "", t, x.numpy(), raster)
    x, t = timed(lambda: tv_array(s, op, args.tv64, nonneg=True, preview_every=0))
    add("exact", na, "ours TV (x>=0)", args.tv64, t, x.numpy(), raster)
    x, t = timed(lambda: tv_array(s, op, args.tv64, preview_every=0))
    add("exact", na, "ours TV", args.tv64, t, x.numpy(), raster)
    return rows


def table(rows):
    head = (f"{'data':<6} {'angles':>6}  {'method':<22} {'iters':>5} {'time s':>7}  "
            f"{'PSNR':>6} {'PSNR[0,1]':>9}  {'SSIM':>6} {'SSIM[0,1]':>9}  {'MAE':>7} {'MAE[0,1]':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['data']:<6} {r['angles']:>6}  {r['method']:<22} {str(r['iters']):>5} {r['time_s']:7.1f}  "
            f"{r['psnr_raw']:6.2f} {r['psnr_clip']:9.2f}  {r['ssim_raw']:6.4f} {r['ssim_clip']:9.4f}  "
            f"{r['mae_raw']:7.4f} {r['mae_clip']:8.4f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    p.add_argument("--sirt400", type=int, default=100)
    p.add_argument("--cgls400", type=int, default=20)
    p.add_argument("--tv400", type=int, default=100)
    p.add_argument("--sirt64", type=int, default=300)
    p.add_argument("--cgls64", type=int, default=20)
    p.add_argument("--tv64", type=int, default=300)
    p.add_argument("--sart-max-angles", type=int, default=400,
                   help="run iradon_sart (2 iterations) only up to this many angles")
    args = p.parse_args(argv)
    if args.quick:
        for k in ("sirt400", "cgls400", "tv400", "sirt64", "cgls64", "tv64"):
            setattr(args, k, max(2, getattr(args, k) // 10))
    print(f"Shepp–Logan {N}², torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"TV lam_rel={LAM_REL}", flush=True)
    t0 = time.perf_counter()
    rows = run(args)
    print()
    print(table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s. Targets: ours FBP @400 >= 31 dB; ours TV @64 >= 33 dB.")
    fbp400 = next(r for r in rows if r["angles"] == 400 and r["method"] == "ours FBP (ramp)")
    tv64 = next(r for r in rows if r["data"] == "radon" and r["angles"] == 64 and r["method"].startswith("ours TV"))
    print(f"FBP @400: {fbp400['psnr_raw']:.2f} dB {'OK' if fbp400['psnr_raw'] >= 31 else 'MISSED'}; "
          f"TV @64: {tv64['psnr_raw']:.2f} dB {'OK' if tv64['psnr_raw'] >= 33 else 'MISSED'}")


if __name__ == "__main__":
    main()
