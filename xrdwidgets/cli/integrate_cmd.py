"""Command-line pieces of raw-frame work: ``xrdwidgets integrate`` and ``xrdwidgets demo --raw``.

Kept apart from :mod:`xrdwidgets.cli.commands`, which only registers them.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

#: ``demo --raw`` sizes: detector pixels per side, translations, angles.
RAW_DEMO_SIZES = {"tiny": (64, 8, 6), "small": (128, 16, 12), "default": (256, 32, 24)}


def add_integrate_parser(sub):
    """Register ``xrdwidgets integrate`` on an argparse sub-parser collection."""
    g = sub.add_parser("integrate", help="raw detector frames + PONI → sinogram stack (pyFAI)",
                       description="Azimuthally integrate every frame of a raw scan (Eiger/NeXus HDF5 "
                                   "master or stack, or CBF/EDF/TIFF images) with pyFAI and assemble "
                                   "the sinogram stack (translation, angle, tth|q). Motor positions in "
                                   "the file give each frame's scan point, else --n-translations/--n-angles/"
                                   "--order. Resumable: run the same command again after an interruption. "
                                   "A scan still being written: follow it with `xrdwidgets live`.")
    g.add_argument("raw", nargs="+", help="master/stack HDF5 file(s), image files, a folder or a glob pattern")
    g.add_argument("--poni", required=True, help="pyFAI calibration (PONI file)")
    g.add_argument("--mask", default=None, help="mask image (EDF/TIFF/.npy/file.h5::dataset; non-zero = excluded)")
    g.add_argument("--dark", default=None, help="dark image")
    g.add_argument("--flat", default=None, help="flat-field image")
    g.add_argument("--unit", default="tth", choices=["tth", "q"], help="tth: 2θ in deg; q: 1/Å (default tth)")
    g.add_argument("--bins", type=int, default=1000, help="radial bins (default %(default)s)")
    g.add_argument("--range", dest="radial_range", nargs=2, type=float, default=None, metavar=("MIN", "MAX"),
                   help="radial range in the unit's units (default: the whole detector)")
    g.add_argument("--trim", type=float, default=None, metavar="PERCENT",
                   help="trimmed mean dropping PERCENT at each end of every bin (10: the papers' "
                        "10%% trimmed mean, removes single-crystal spots); default: plain mean")
    g.add_argument("--sigma-clip", dest="sigma", type=float, default=None, metavar="N",
                   help="sigma clipping at N standard deviations instead of the mean")
    g.add_argument("--polarization", type=float, default=None, help="polarisation factor (e.g. 0.99)")
    g.add_argument("--n-translations", dest="n_translations", type=int, default=None)
    g.add_argument("--n-angles", dest="n_angles", type=int, default=None)
    g.add_argument("--order", default="raster", help="acquisition order without motors: raster, zigzag, "
                   "interlaced, interlaced-zigzag, rotation-fast (default raster)")
    g.add_argument("--dataset", default=None, help="HDF5 dataset of the frames (default: found)")
    g.add_argument("--chunk", type=int, default=64, help="frames per batch (default %(default)s)")
    g.add_argument("--engine", default="auto", choices=["auto", "pyfai", "scipy", "torch"],
                   help="engine of the plain mean (default auto: torch on CUDA when present, else scipy)")
    g.add_argument("-o", "--out", required=True, help="output stack (.h5 or .zarr)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c = g.add_argument_group("cluster (dask.distributed)", "Integrate chunks of frames as tasks on a dask "
                             "cluster; frame files and the output must be on a file system every worker sees.")
    c.add_argument("--scheduler", default=None, metavar="ADDRESS", help="address of a running dask scheduler")
    c.add_argument("--local-cluster", type=int, default=None, metavar="N", help="start a local cluster of N "
                   "worker processes")
    g.set_defaults(func=cmd_integrate)
    return g


def _quiet_silx():
    import logging

    logging.getLogger("silx.opencl").setLevel(logging.ERROR)   # "pyopencl missing": not our concern


def cmd_integrate(args) -> int:
    from ..integrate import IntegrationOptions, iterate_integration

    _quiet_silx()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it or choose -o", file=sys.stderr)
        return 2
    method = "sigma_clip" if args.sigma is not None else ("trimmed" if args.trim is not None else "mean")
    opts = IntegrationOptions(unit=args.unit, bins=args.bins, radial_range=args.radial_range, method=method,
                              trim=args.trim if args.trim is not None else 10.0,
                              sigma=args.sigma if args.sigma is not None else 3.0,
                              polarization_factor=args.polarization, engine=args.engine)
    raw = args.raw[0] if len(args.raw) == 1 else args.raw
    if args.scheduler is not None and args.local_cluster is not None:
        print("error: give --scheduler ADDRESS or --local-cluster N, not both", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        client = None
        if args.scheduler is not None or args.local_cluster is not None:
            from ..distributed import connect, dashboard_link

            client, cluster = connect(scheduler=args.scheduler, local=args.local_cluster)
            stack.callback(client.close)
            if cluster is not None:
                stack.callback(cluster.close)
            print(f"integrating on the dask cluster {client.scheduler.address} (dashboard: "
                  f"{dashboard_link(client) or 'none'})", file=sys.stderr)
        gen = iterate_integration(raw, args.poni, out=out, mask=args.mask, dark=args.dark, flat=args.flat,
                                  options=opts, n_translations=args.n_translations, n_angles=args.n_angles,
                                  order=args.order, dataset=args.dataset, chunk=args.chunk,
                                  overwrite=args.overwrite, client=client)
        st = _run_with_bar(gen, args)
    s = st.sizes
    print(f"integrated {s['translation'] * s['angle']} frames → {s['translation']} translations × "
          f"{s['angle']} angles × {s[args.unit]} bins ({method})")
    print(f"wrote {out}")
    return 0


def _run_with_bar(gen, args):
    from tqdm.auto import tqdm

    from ..base.progress import run_to_end

    bar = None

    def cb(ev):
        nonlocal bar
        m = ev.metrics
        if bar is None:
            bar = tqdm(total=m["n_frames"], initial=m["frames"] - min(m["frames"], args.chunk), unit="frame",
                       desc="integrate", disable=args.quiet, file=sys.stderr, leave=False)
        bar.update(m["frames"] - bar.n)

    try:
        return run_to_end(gen, cb)
    finally:
        if bar is not None:
            bar.close()


def cmd_demo_raw(args) -> int:
    """``xrdwidgets demo --raw``: write a small simulated raw scan (Eiger-like HDF5) + PONI + mask."""
    from ..sim.frames import simulate_raw_scan

    _quiet_silx()
    out = Path(args.out) / "raw"
    master = out / "scan_master.h5"
    if master.exists() and not args.overwrite:
        print(f"error: {master} exists; pass --overwrite to replace it or --out to write elsewhere",
              file=sys.stderr)
        return 2
    px, n_t, n_a = RAW_DEMO_SIZES[args.size]
    scan = simulate_raw_scan(out, shape=(px, px), n_translations=n_t, n_angles=n_a, seed=args.seed,
                             pixel_size_mm=0.172 * 64 / px, air_margin=max(1, n_t // 8))
    print(f"simulated {n_t} translations × {n_a} angles = {n_t * n_a} frames of {px}×{px} px")
    for p in (scan.master, *scan.data_files, scan.poni, scan.mask):
        print(f"wrote {p}")
    print(f"next: xrdwidgets integrate {scan.master} --poni {scan.poni} --trim 10 -o {out / 'stack.h5'}")
    return 0
