"""SD2I (SD2Iu generator) next to FBP, SIRT, CGLS and TV on undersampled Shepp–Logan, and on real data.

Data (the SD2I paper's simulated test)
    Shepp–Logan 256² (``skimage.data.shepp_logan_phantom`` resized with anti-aliasing; data range
    1), sinogram from ``skimage.transform.radon(..., circle=True)`` at 64 angles over [0°, 180°):
    the forward model of the data differs from our pixel-driven projector (no inverse crime).
    The grid alignment is :mod:`bench_quality`'s (a 257² grid whose centre pixel is radon's
    ``n // 2``, ``centre_offset=+0.5``, rows/columns 0…255 kept); its helpers are reused.

SD2Iu
    The paper's settings (k = 8, 64 filters, Adam 5e-4, learning rate halved after 300 epochs
    without improvement) for ``--epochs`` epochs (paper: 6000), with the library's default loss
    ``mae`` (``--loss mae_ssim``: the paper's, which overfits the model mismatch here: see
    :mod:`xrdwidgets.recon.sd2i`). Measured, one thread, 6000 epochs: ``mae`` 33.95 dB / 0.988;
    ``mae_ssim`` best 31.1 dB at 1000 epochs, 26.4 dB after 1200. On a CPU that is
    hours at 256²: ``--budget`` (seconds, default 600) caps the run — a few epochs are timed
    first and the number of epochs is cut to what fits. The PSNR of the image along the run is
    printed every ``--every`` epochs. ``--workdir DIR`` runs all ``--epochs`` as a resumable job
    instead: ``--budget`` is then the wall time of this invocation, the job checkpoints every
    ``--every`` epochs and on stopping, and the same command continues it (e.g. over several
    sessions on a CPU) until the last epoch, when the table is printed.

Real data (``--real``)
    ``../shared/data/sd2i_experimental_sinograms.h5`` beside the repository (skipped when
    absent): the undersampled sinogram (``--dataset``: ``photocatalyst_angsamp``, the default,
    60 of 300 angles; ``POX_angsamp``; ``MnNaWSiO2_angsamp``) by FBP, SIRT, CGLS, TV (only FBP
    with ``--skip-classic``) and SD2Iu, scored against CGLS of the full angle set (the paper's
    protocol). Measured tables: :mod:`xrdwidgets.recon.sd2i`. ``--upsample bilinear`` changes
    SD2Iu's upsampling (photocatalyst, 3000 epochs: no better than nearest).

Metrics: PSNR and SSIM (scikit-image, data range of the reference), over the whole image.

Run: ``python benchmarks/bench_sd2i.py [--epochs 6000] [--budget 600] [--device cuda] [--real]
[--workdir DIR]``.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.data import shepp_logan_phantom
from skimage.metrics import structural_similarity
from skimage.transform import radon, resize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import N, skimage_radon_projector

from xrdwidgets import jobs
from xrdwidgets.ops import ParallelProjector
from xrdwidgets.base.progress import run_to_end
from xrdwidgets.recon.cgls import cgls_array
from xrdwidgets.recon.fbp import fbp_array
from xrdwidgets.recon.sd2i import iterate_sd2i_array
from xrdwidgets.recon.sirt import sirt_array
from xrdwidgets.recon.tv import tv_array

# ../shared/data next to the repository (as the tests find it)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sd2i_experimental_sinograms.h5"


def add_row(rows, name, iters, seconds, x, ref):
    """Append the table row of image ``x`` (PSNR, SSIM against ``ref``) and print it."""
    rows.append({"method": name, "iters": iters, "time_s": seconds, **scores(x, ref)})
    print(f"  … {name:<18} {rows[-1]['psnr']:6.2f} dB  SSIM {rows[-1]['ssim']:.4f}  ({seconds:.1f} s)", flush=True)


def classic_rows(rows, runs, ref, skip):
    """Time each ``(name, iters, fn)`` of ``runs`` (``fn()`` → numpy image; only the first when
    ``skip``) and add its row."""
    for name, iters, fn in runs[:1] if skip else runs:
        t0 = time.perf_counter()
        x = fn()
        add_row(rows, name, iters, time.perf_counter() - t0, x, ref)


def scores(x, ref):
    x = np.asarray(x, np.float64)
    rng = float(ref.max() - ref.min())
    mse = float(np.mean((x - ref) ** 2))
    return {"psnr": 10 * np.log10(rng**2 / mse), "ssim": structural_similarity(x, ref, data_range=rng)}


def _sd2i_kwargs(args):
    """The SD2Iu settings taken from the command line (``iterate_sd2i_array`` keywords)."""
    return {"loss": args.loss, "pretrain": args.pretrain, "net_options": {"upsample": args.upsample}}


def _sd2i_label(args):
    return f"SD2Iu ({args.loss})" if args.upsample == "nearest" else f"SD2Iu ({args.loss}, {args.upsample})"


def time_per_epoch(sino, op, device, epochs=6, **kw):
    """Median seconds per epoch of a short SD2Iu run (the first epoch, with set-up, excluded)."""
    stamps = []
    run_to_end(iterate_sd2i_array(sino, op, epochs=epochs, preview_every=0, **kw),
               lambda ev: stamps.append(time.perf_counter()))
    return float(np.median(np.diff(stamps)))


def _psnr_printer(ref, crop, trace):
    def cb(ev):
        if ev.preview is not None and ev.metrics.get("phase") == "train":
            s = scores(ev.preview[crop], ref)
            trace.append((ev.metrics["epoch"], ev.loss, s["psnr"], s["ssim"], ev.metrics["lr"]))
            print(f"      epoch {ev.metrics['epoch']:5d}  loss {ev.loss:.5f}  lr {ev.metrics['lr']:.2e}  "
                  f"PSNR {s['psnr']:6.2f} dB  SSIM {s['ssim']:.4f}", flush=True)
    return cb


def _numpy(x):
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)


def run_sd2i(sino, op, args, ref, crop, label):
    """SD2Iu for as many epochs as ``args`` allow; returns (image, epochs, seconds, s/epoch, trace)."""
    kw = _sd2i_kwargs(args)
    t_ep = time_per_epoch(sino, op, args.device, **kw)
    if args.workdir:
        return run_sd2i_job(sino, op, args, ref, crop, label, t_ep)
    epochs = args.epochs
    if args.budget:
        epochs = max(1, min(epochs, int((args.budget - args.pretrain * t_ep) / t_ep)))
    print(f"  … {label}: {t_ep:.3f} s/epoch → {epochs} epochs", flush=True)
    trace = []
    t0 = time.perf_counter()
    x = run_to_end(iterate_sd2i_array(sino, op, epochs=epochs, preview_every=args.every, **kw),
                   _psnr_printer(ref, crop, trace))
    return _numpy(x)[crop], epochs, time.perf_counter() - t0, t_ep, trace


def _with_callback(make, cb, checkpoint=None):
    """``make(checkpoint=...)``'s events passed through ``cb``; returns the generator's result."""
    gen = make(checkpoint=checkpoint)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        cb(ev)
        yield ev


def _save_image(result, path):
    import h5py

    with h5py.File(path, "w") as f:
        f["image"] = _numpy(result)


def run_sd2i_job(sino, op, args, ref, crop, label, t_ep):
    """All ``args.epochs`` as a resumable job in ``args.workdir``, for at most ``args.budget`` s now.

    Returns the same tuple as :func:`run_sd2i` when the last epoch is done, else ``None`` (the
    job is stopped with a checkpoint; run the same command again to continue)."""
    wd = Path(args.workdir)
    info = jobs.job_info(wd) or {}
    seconds_before = float(info.get("params", {}).get("seconds_total", 0.0)) if info else 0.0
    make = functools.partial(iterate_sd2i_array, sino, op, epochs=args.epochs, preview_every=args.every,
                             checkpoint_every=args.every, **_sd2i_kwargs(args))
    trace = []
    t0 = time.perf_counter()
    job = jobs.run(functools.partial(_with_callback, make, _psnr_printer(ref, crop, trace)), name=label,
                   workdir=wd, resume=True, save_result=_save_image,
                   params={"epochs": args.epochs, "loss": args.loss, "pretrain": args.pretrain,
                           "upsample": args.upsample,
                           "angles": args.angles, "seconds_total": seconds_before})
    start = (job.resumed_from or {}).get("iteration", 0) if job.resumed_from else 0
    print(f"  … {label}: {t_ep:.3f} s/epoch, {args.epochs} epochs as a job in {wd} "
          f"(continuing after {start})" if start else
          f"  … {label}: {t_ep:.3f} s/epoch, {args.epochs} epochs as a job in {wd}", flush=True)
    try:
        job.wait(timeout=args.budget or None, raise_on_error=True)
    except TimeoutError:
        pass
    secs = time.perf_counter() - t0
    if not job.done:
        job.cancel()
        job.wait(timeout=600)
        ck = job.last_checkpoint or {}
        print(f"  … stopped after {secs:.0f} s at epoch {ck.get('iteration', '?')} (checkpoint in {wd}); "
              "run the same command to continue", flush=True)
        _record_seconds(wd, seconds_before + secs)
        return None
    _record_seconds(wd, seconds_before + secs)
    import h5py

    with h5py.File(wd / "result.h5", "r") as f:
        x = f["image"][()]
    return x[crop], args.epochs, seconds_before + secs, t_ep, trace


def _record_seconds(wd, total):
    """Keep the wall time of all invocations in ``job.json`` (``params.seconds_total``)."""
    import json

    path = Path(wd) / "job.json"
    try:
        meta = json.loads(path.read_text())
        meta.setdefault("params", {})["seconds_total"] = total
        path.write_text(json.dumps(meta, indent=1))
    except (OSError, ValueError):
        pass


def simulated(args):
    truth = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True)
    th = np.linspace(0.0, 180.0, args.angles, endpoint=False)
    sino = radon(truth, th, circle=True).astype(np.float32)
    op = skimage_radon_projector(th, device=args.device)
    crop = (slice(0, N), slice(0, N))
    s = torch.as_tensor(sino, device=op.device)
    rows = []

    def image(x):
        return x.cpu().numpy()[crop]

    classic_rows(rows, [
        ("FBP (ramp)", "", lambda: image(fbp_array(s, th, projector=op))),
        ("SIRT (x>=0)", args.sirt, lambda: image(sirt_array(s, op, args.sirt, nonneg=True, preview_every=0))),
        ("CGLS", args.cgls, lambda: image(cgls_array(s, op, args.cgls, preview_every=0))),
        ("TV (x>=0)", args.tv, lambda: image(tv_array(s, op, args.tv, nonneg=True, preview_every=0))),
    ], truth, args.skip_classic)
    got = run_sd2i(s, op, args, truth, crop, f"SD2Iu {N}²")
    if got is None:
        return rows, None, []
    x, epochs, secs, t_ep, trace = got
    add_row(rows, _sd2i_label(args), epochs, secs, x, truth)
    return rows, t_ep, trace


def real(args):
    from xrdwidgets import io
    from xrdwidgets.recon import reconstruct

    if not DATA.exists():
        print(f"  ({DATA} not found: real-data part skipped)")
        return None
    base = args.dataset.removesuffix("_angsamp")
    full = io.load_sd2i(DATA, base)
    under = io.load_sd2i(DATA, args.dataset)
    print(f"  {base}: {full.sizes['angle']} angles; {args.dataset}: {under.sizes['angle']} angles, "
          f"{under.sizes['translation']} translations", flush=True)
    t0 = time.perf_counter()
    ref = reconstruct(full, "cgls", n_iter=args.cgls, nonneg=True, device=args.device).isel(channel=0).values
    print(f"  reference CGLS ({args.cgls} it, x>=0) of the full set: {time.perf_counter() - t0:.1f} s", flush=True)
    ref_c = np.clip(ref, 0, None)
    rows = []

    def image(method, **kw):
        return reconstruct(under, method, device=args.device, **kw).isel(channel=0).values

    classic_rows(rows, [
        ("FBP (ramp)", "", lambda: image("fbp")),
        ("SIRT (x>=0)", args.sirt, lambda: image("sirt", n_iter=args.sirt, nonneg=True)),
        ("CGLS (x>=0)", args.cgls, lambda: image("cgls", n_iter=args.cgls, nonneg=True)),
        ("TV (x>=0)", args.tv, lambda: image("tv", n_iter=args.tv, nonneg=True)),
    ], ref_c, args.skip_classic)
    th = under.angle.values
    n = under.sizes["translation"]
    op = ParallelProjector(n, th, mask=True, device=args.device or "cpu")
    sino = torch.as_tensor(np.asarray(under.isel(channel=0).transpose("translation", "angle").values, np.float32),
                           device=op.device)
    crop = (slice(None), slice(None))
    got = run_sd2i(sino, op, args, ref_c, crop, f"SD2Iu {n}²")
    if got is None:                                  # a --workdir job stopped by --budget
        return None
    x, epochs, secs, _t_ep, _ = got
    add_row(rows, _sd2i_label(args), epochs, secs, x, ref_c)
    return rows


def table(rows):
    head = f"{'method':<24} {'iters':>6} {'time s':>8}  {'PSNR dB':>8} {'SSIM':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<24} {r['iters']!s:>6} {r['time_s']:8.1f}  {r['psnr']:8.2f} {r['ssim']:7.4f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6000, help="most SD2Iu epochs (paper: 6000)")
    p.add_argument("--budget", type=float, default=600.0,
                   help="seconds for one SD2Iu run: the epochs are cut to fit (0: no cap)")
    p.add_argument("--every", type=int, default=100, help="print the PSNR every this many epochs")
    p.add_argument("--loss", default="mae", help="SD2I loss (mae, the default; mae_ssim, the paper's; mse, ...)")
    p.add_argument("--pretrain", type=int, default=0, help="pre-training epochs towards FBP")
    p.add_argument("--upsample", default="nearest", choices=("nearest", "bilinear"),
                   help="SD2Iu upsampling (nearest, the paper's; bilinear)")
    p.add_argument("--angles", type=int, default=64)
    p.add_argument("--sirt", type=int, default=300)
    p.add_argument("--cgls", type=int, default=20)
    p.add_argument("--tv", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--real", action="store_true", help="also the SD2I paper's experimental data")
    p.add_argument("--only-real", action="store_true", help="only the experimental data")
    p.add_argument("--dataset", default="photocatalyst_angsamp")
    p.add_argument("--workdir", default=None,
                   help="run all --epochs as a resumable job in this folder (--budget: seconds now)")
    p.add_argument("--skip-classic", action="store_true", help="only FBP and SD2Iu")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}", flush=True)
    if not args.only_real:
        print(f"Shepp–Logan {N}², skimage radon, {args.angles} angles over 180°", flush=True)
        rows, t_ep, trace = simulated(args)
        print()
        print(table(rows))
        if t_ep is None:
            return
        print(f"\nSD2Iu time per epoch at {N + 1}² ({args.device}): {t_ep:.3f} s "
              f"(6000 epochs ≈ {6000 * t_ep / 3600:.1f} h). Paper target: 40.10 dB / 0.9931 after 6000 epochs.")
        if trace:
            best = max(trace, key=lambda r: r[2])
            print(f"SD2Iu PSNR along the run: best {best[2]:.2f} dB at epoch {best[0]}, "
                  f"last {trace[-1][2]:.2f} dB at epoch {trace[-1][0]}")
    if args.real or args.only_real:
        print(f"\nReal data: {args.dataset}", flush=True)
        rows = real(args)
        if rows:
            print()
            print(table(rows))
            print("(scores against CGLS of the full angle set, clipped at 0)")


if __name__ == "__main__":
    main()
