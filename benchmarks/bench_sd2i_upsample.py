"""SD2Iu with nearest against bilinear upsampling: PSNR along the run on Shepp–Logan n².

Data: ``skimage.data.shepp_logan_phantom`` resized to ``n × n`` (anti-aliased), sinogram from
``skimage.transform.radon(..., circle=True)`` at 64 angles over [0°, 180°) — not our projector
(no inverse crime); reconstruction on a ``(n + 1)²`` grid aligned with radon's centre
(``centre_offset=0.5``, as :mod:`bench_quality`), rows/columns ``0 … n − 1`` scored.

Why: with the paper's loss (MAE + SSIM) the PSNR of SD2Iu rises, peaks and then falls while the
loss keeps falling: the network grows a checkerboard texture that the data barely constrain
(64 angles) and uses it to fit the small difference between radon's forward model and ours.
Nearest-neighbour upsampling is a classic source of such texture.

``--data ours`` makes the sinogram with the reconstruction's own projector instead (the
*inverse crime*, deliberately): the gap between the two runs is what the model mismatch costs.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_sd2i_upsample.py [--n 128] [--epochs 2000]
[--loss mae_ssim] [--modes nearest,bilinear] [--data radon|ours]``; prints the PSNR (dB) every
tenth of the run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import skimage_radon_projector

from xrdwidgets.recon.sd2i import iterate_sd2i_array


def run(n, epochs, loss, mode, data="radon"):
    truth = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    th = np.linspace(0.0, 180.0, 64, endpoint=False)
    op = skimage_radon_projector(th, n)
    if data == "radon":
        sino = torch.as_tensor(radon(truth, th, circle=True).astype(np.float32))
    else:  # the inverse crime, on purpose: data from the projector the reconstruction inverts
        padded = np.zeros((n + 1, n + 1), np.float32)
        padded[:n, :n] = truth * (np.hypot(*np.mgrid[:n, :n] - n // 2) < n // 2)
        sino = op(torch.as_tensor(padded)).float()
    t0 = time.perf_counter()
    trace = []
    for ev in iterate_sd2i_array(sino, op, epochs=epochs, loss=loss, preview_every=max(1, epochs // 10),
                                 net_options={"upsample": mode}):
        if ev.preview is not None and ev.metrics.get("phase") == "train":
            x = ev.preview[:n, :n]
            trace.append((ev.metrics["epoch"], 10 * np.log10(1.0 / np.mean((x - truth) ** 2))))
    return trace, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--loss", default="mae_ssim")
    p.add_argument("--modes", default="nearest,bilinear")
    p.add_argument("--data", choices=("radon", "ours"), default="radon")
    args = p.parse_args(argv)
    print(f"SD2Iu {args.n}², 64 angles, {args.data} data, loss {args.loss}, {args.epochs} epochs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads)")
    for mode in args.modes.split(","):
        trace, secs = run(args.n, args.epochs, args.loss, mode, args.data)
        best = max(trace, key=lambda t: t[1])
        print(f"{mode:>9}: " + " ".join(f"{e}:{v:.2f}" for e, v in trace)
              + f"  | best {best[1]:.2f} dB at {best[0]}, last {trace[-1][1]:.2f} dB ({secs:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
