"""``xrdwidgets live``: follow an acquisition in progress, integrate and reconstruct as frames arrive.

Kept apart from :mod:`xrdwidgets.cli.commands`, which only registers it.
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_live_parser(sub):
    """Register ``xrdwidgets live`` on an argparse sub-parser collection."""
    g = sub.add_parser("live", help="follow a scan being written: integrate new frames, reconstruct progressively",
                       description="Follow an acquisition in progress: an HDF5 file being written (SWMR, or a "
                                   "frame count that grows; raw frames or integrated patterns) or a folder "
                                   "where frame files appear. New frames are integrated with pyFAI as they "
                                   "arrive and the FBP of the angles measured so far is updated (the missing "
                                   "wedge is reported). At the end of the scan the sinogram stack (equal to "
                                   "'xrdwidgets integrate' of the same files) is written to --out.")
    g.add_argument("source", help="HDF5 file being written, or a folder of frame files")
    g.add_argument("--poni", default=None, help="pyFAI calibration (required for raw frames)")
    g.add_argument("--n-translations", dest="n_translations", type=int, required=True)
    g.add_argument("--n-angles", dest="n_angles", type=int, required=True)
    g.add_argument("--order", default="raster", help="acquisition order: raster, zigzag, interlaced, "
                   "interlaced-zigzag, rotation-fast (default raster)")
    g.add_argument("--step-mm", dest="step_mm", type=float, default=None, help="translation step (mm)")
    g.add_argument("--mask", default=None, help="mask image (non-zero = excluded)")
    g.add_argument("--unit", default="tth", choices=["tth", "q"])
    g.add_argument("--bins", type=int, default=1000, help="radial bins (default %(default)s)")
    g.add_argument("--trim", type=float, default=None, metavar="PERCENT", help="trimmed mean (e.g. 10)")
    g.add_argument("--dataset", default=None, help="HDF5 dataset of the frames or patterns (default: found)")
    g.add_argument("--period", type=float, default=0.5, help="polling period in s (default %(default)s)")
    g.add_argument("--update-every", dest="update_every", type=float, default=1.0,
                   help="least seconds between two image updates (default %(default)s)")
    g.add_argument("--idle-timeout", dest="idle_timeout", type=float, default=600.0,
                   help="give up when no frame arrived for this many seconds (default %(default)s)")
    g.add_argument("-o", "--out", required=True, help="output stack (.h5) written at the end of the scan")
    g.add_argument("--volume", default=None, help="also write the final FBP volume (.h5)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_live)
    return g


def cmd_live(args) -> int:
    from tqdm.auto import tqdm

    from .. import io
    from ..integrate import IntegrationOptions, ScanPlan
    from ..live import LiveSession, iterate_live
    from ..live.sources import open_live
    from ..base.progress import run_to_end

    outs = [Path(p) for p in (args.out, args.volume) if p]
    for p in outs:
        if p.exists() and not args.overwrite:
            print(f"error: {p} exists; pass --overwrite to replace it or choose another path", file=sys.stderr)
            return 2
    plan = ScanPlan.regular(args.n_translations, args.n_angles, order=args.order,
                            translation_step_mm=args.step_mm)
    opts = IntegrationOptions(unit=args.unit, bins=args.bins, method="trimmed" if args.trim is not None else "mean",
                              trim=args.trim if args.trim is not None else 10.0)
    src = open_live(args.source, **({"dataset": args.dataset} if args.dataset else {}))
    sess = LiveSession(src, args.poni, plan=plan, options=opts, mask=args.mask, update_every_s=args.update_every)
    gen = iterate_live(None, plan=plan, session=sess, period_s=args.period, idle_timeout_s=args.idle_timeout)
    bar = tqdm(total=plan.n_frames, unit="frame", desc="live", disable=args.quiet, file=sys.stderr, leave=False)

    def cb(ev):
        m = ev.metrics
        bar.update(m["frames"] - bar.n)
        bar.set_postfix(angles=f"{m['angles']}/{plan.shape[1]}", wedge=f"{m['missing_wedge_deg']:.0f}°")

    try:
        stack = run_to_end(gen, cb)
    finally:
        bar.close()
    io.save(stack, args.out, overwrite=args.overwrite, producer="xrdwidgets.live",
            parameters={"source": str(args.source)})
    print(f"followed {sess.received} frames → {plan.shape[0]} translations × {plan.shape[1]} angles × "
          f"{stack.shape[-1]} bins")
    print(f"wrote {args.out}")
    if args.volume:
        vol = sess.volume()
        io.save(vol, args.volume, overwrite=args.overwrite, producer="xrdwidgets.live")
        print(f"wrote {args.volume}")
    return 0
