"""Cost of the method layer: the same runs on this tree and on a baseline tree, interleaved.

Measures, on the CPU (one thread), for each tree in a fresh subprocess:

* FBP stack rate (channels/s) of the default demo stack (100 translations × 120 angles × 300
  channels), best of 3;
* SD2I seconds per epoch (tiny demo, 10 channels, one batch, 40 epochs);
* ParallaxNet seconds per epoch (tiny demo, 20 channels in batches of 8 overlapping by 3, 8 epochs);
* Noise2Inverse seconds per training step (tiny demo, 20 channels, 3 epochs of 10 steps).

Each measurement is the CPU time of the process (``time.process_time``; one thread, so it is the
work done, and it does not count the time other processes take the CPU on a shared machine) of
the whole ``iterate`` run (set-up included) divided by the epochs/steps, best of ``--repeats``
runs that alternate between the trees. Prints a table with the ratio (this tree / baseline; < 1 is faster)::

    OMP_NUM_THREADS=1 python benchmarks/bench_method_layer.py --baseline ../main
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def measure() -> dict:
    """Run in a subprocess whose PYTHONPATH selects the tree."""
    import torch

    import xrdwidgets
    from xrdwidgets.recon import iterate, run_to_end  # both trees have these

    torch.set_num_threads(1)
    out = {}
    big = xrdwidgets.demo(size="default")["sinogram"]
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        run_to_end(iterate(big, "fbp", batch=128, device="cpu"))
        best = min(best, time.process_time() - t)
    out["fbp channels/s"] = big.sizes["tth"] / best
    tiny = xrdwidgets.demo(size="tiny")["sinogram"]
    runs = {
        "sd2i s/epoch": ("sd2i", tiny.isel(tth=slice(20, 30)), dict(epochs=40, batch=10, preview_every=0), 40),
        "parallaxnet s/epoch": ("parallaxnet", tiny.isel(tth=slice(10, 30)),
                                dict(epochs=8, batch=8, overlap=3, preview_every=0), 8 * 3),
        "noise2inverse s/step": ("noise2inverse", tiny.isel(tth=slice(10, 30)),
                                 dict(epochs=3, steps_per_epoch=10, batch_size=8, preview_every=0), 3 * 10),
    }
    for name, (method, stack, kw, n) in runs.items():
        t = time.process_time()
        run_to_end(iterate(stack, method, device="cpu", **kw))
        out[name] = (time.process_time() - t) / n
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="root of the baseline tree (holds xrdwidgets/)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per tree, alternating (best is kept)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure()))
        return 0
    trees = {"this": HERE, "baseline": Path(args.baseline).resolve()}
    best: dict = {k: {} for k in trees}
    for _ in range(args.repeats):
        for label, root in trees.items():
            env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
            r = subprocess.run([sys.executable, __file__, "--baseline", str(root), "--child"], env=env,
                               capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"the {label} tree ({root}) failed:\n{r.stderr[-3000:]}")
            got = json.loads(r.stdout.strip().splitlines()[-1])
            for k, v in got.items():
                keep = max if k.endswith("/s") else min
                best[label][k] = keep(best[label].get(k, v), v)
    print(f"| measure | this tree | baseline ({trees['baseline']}) | this / baseline |")
    print("|---|---|---|---|")
    for k in best["this"]:
        a, b = best["this"][k], best["baseline"][k]
        print(f"| {k} | {a:.4g} | {b:.4g} | {a / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
