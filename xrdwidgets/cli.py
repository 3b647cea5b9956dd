"""Command line: ``xrdwidgets demo | info | reconstruct | app``.

Run ``xrdwidgets --help`` or ``xrdwidgets COMMAND --help``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .checks import check_writable

log = logging.getLogger("xrdwidgets.cli")

_EPILOG = """\
examples:
  xrdwidgets demo                       simulate a 3-phase XRD-CT scan, reconstruct it, write
                                        xrdwidgets-output/demo.h5 and demo.png
  xrdwidgets info xrdwidgets-output/demo.h5
                                        dims, coordinates, geometry and value ranges of a file
  xrdwidgets reconstruct scan.h5 --method fbp --out recon.h5
                                        reconstruct a sinogram stack (own HDF5, nDTomo or SD2I file)
  xrdwidgets app --data-dir ~/beamtime   serve the dashboard app (Voila) at http://127.0.0.1:8866/
                                        on the files of a beamtime folder
  xrdwidgets app --data-dir ~/beamtime --open sample1/scan.h5
                                        ... and open one of them when the page loads
"""


#: Default output folder of ``xrdwidgets demo`` (and data folder of ``xrdwidgets app`` when it exists).
DEMO_OUT = "xrdwidgets-output"


def _progress(total, desc, quiet):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, file=sys.stderr, leave=False)


def _run_with_bar(gen, desc, quiet):
    from .recon.base import run_to_end

    bar = None

    def cb(ev):
        nonlocal bar
        if bar is None:
            bar = _progress(ev.total, desc, quiet)
        bar.update(1)

    try:
        return run_to_end(gen, cb)
    finally:
        if bar is not None:
            bar.close()


def cmd_demo(args) -> int:
    import xarray as xr

    from . import io
    from .figures import demo_summary_png
    from .recon.fbp import iterate_fbp
    from .sim.demo import demo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out, what="output folder")
    h5, png = out / "demo.h5", out / "demo.png"
    for p in (h5, png):
        if p.exists() and not args.overwrite:
            print(f"error: {p} exists; pass --overwrite to replace it or --out to write elsewhere",
                  file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    ds = demo(seed=args.seed, size=args.size)
    t1 = time.perf_counter()
    rec = _run_with_bar(iterate_fbp(ds["sinogram"], batch=args.batch), "FBP", args.quiet)
    t2 = time.perf_counter()
    result = xr.merge([ds, rec.rename("fbp")], join="exact", combine_attrs="override")
    io.save(result, h5, overwrite=args.overwrite, producer="xrdwidgets demo",
            parameters={"seed": args.seed, "size": args.size, "method": "fbp"})
    demo_summary_png(result, png, overwrite=args.overwrite)
    s = ds["sinogram"].sizes
    print(f"simulated {s['translation']} translations × {s['angle']} angles × {s['tth']} channels "
          f"in {t1 - t0:.1f} s; FBP in {t2 - t1:.1f} s ({s['tth'] / (t2 - t1):.0f} channels/s)")
    print(f"wrote {h5}")
    print(f"wrote {png}")
    return 0


def cmd_info(args) -> int:
    from . import io

    print(io.describe(args.file))
    return 0


def _method_kwargs(args) -> dict:
    """The keyword arguments of ``--method`` given on the command line."""
    import inspect

    from .recon.iterative import METHODS

    fn = METHODS[args.method]
    accepted = {p for p, v in inspect.signature(fn).parameters.items() if v.kind == v.KEYWORD_ONLY}
    given = {"filter": args.filter, "n_iter": args.n_iter, "nonneg": args.nonneg or None,
             "lam_rel": args.lam_rel, "batch": args.batch, "device": args.device}
    return {k: v for k, v in given.items() if v is not None and k in accepted}


def cmd_reconstruct(args) -> int:
    from . import io
    from .recon.iterative import iterate

    src = Path(args.file)
    out = Path(args.out) if args.out else src.with_name(src.stem + f"_{args.method}.h5")
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite or choose --out", file=sys.stderr)
        return 2
    # before any reading or computing: the output must be writable (probe file)
    check_writable(out.parent, what=f"output folder of {out.name}")
    obj = io.load(src)
    if args.variable:
        obj = obj[args.variable]
    kwargs = _method_kwargs(args)
    rec = _run_with_bar(iterate(obj, args.method, **kwargs), args.method.upper(), args.quiet)
    io.save(rec, out, overwrite=args.overwrite, producer=f"xrdwidgets reconstruct --method {args.method}",
            parameters={"source": str(src), **kwargs})
    print(f"wrote {out}")
    return 0


def cmd_app(args) -> int:
    from . import appserver

    if args.notebook:
        target = Path(args.notebook)
    elif args.tree:
        target = appserver.dashboards_dir()
    else:
        target = appserver.app_notebook()

    data_dir, open_file = args.data_dir, args.open
    if data_dir is None and Path(DEMO_OUT, "demo.h5").is_file():
        # what `xrdwidgets demo` just wrote here: serve that folder and open the demo file
        data_dir = DEMO_OUT
        open_file = open_file or "demo.h5"
        print(f"xrdwidgets app: no --data-dir; serving ./{DEMO_OUT}/ (written by `xrdwidgets demo`)")
    elif data_dir is not None and open_file is None and Path(data_dir, "demo.h5").is_file():
        open_file = "demo.h5"

    def ready(server, waited):
        print(f"xrdwidgets app: serving {server.target} at {server.url} (ready in {waited:.1f} s); "
              "Ctrl-C stops it")

    return appserver.serve(target, open_browser=not args.no_browser, on_ready=ready, port=args.port,
                           data_dir=data_dir, open_file=open_file, max_upload_mb=args.max_upload_mb,
                           preheat=args.preheat, pool_size=args.pool_size,
                           cull_idle_timeout=args.cull_idle, max_kernels=args.max_kernels,
                           max_kernels_per_client=args.max_kernels_per_client,
                           allow_overwrite=args.allow_overwrite)


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(
        prog="xrdwidgets",
        description="XRD-CT (X-ray diffraction computed tomography) toolkit: simulate, load, "
                    "reconstruct and explore sinogram stacks (one sinogram per 2θ channel).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"xrdwidgets {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is being done")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="simulate a multi-phase scan, reconstruct it, write HDF5 + PNG",
                       description="Simulate the built-in 3-phase XRD-CT demo (a sinogram stack "
                                   "with its ground truth), reconstruct every channel with filtered "
                                   "back-projection, and write DIR/demo.h5 (everything, with "
                                   "provenance) and DIR/demo.png (a summary picture).")
    d.add_argument("--out", default=DEMO_OUT, metavar="DIR", help="output folder (default: %(default)s)")
    d.add_argument("--size", default="default", choices=["tiny", "small", "default"],
                   help="'default': 100 translations × 120 angles × 300 channels; 'small': 40×48×100; 'tiny': 24×30×60")
    d.add_argument("--seed", type=int, default=0, help="random seed of the simulated noise (default 0)")
    d.add_argument("--batch", type=int, default=128, help="channels reconstructed at once (default 128)")
    d.add_argument("--overwrite", action="store_true", help="replace existing output files")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="describe a data file (dims, coords, geometry, value ranges)",
                       description="Print what a file holds: variables, dims and sizes, coordinate "
                                   "ranges and units, scan geometry, value ranges, provenance. "
                                   "Reads the xrdwidgets HDF5 layout, nDTomo and SD2I HDF5 files, zarr.")
    i.add_argument("file", help="HDF5 (.h5/.hdf5) file or zarr folder")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("reconstruct", help="reconstruct a sinogram stack from a file",
                       description="Reconstruct every channel of a sinogram stack and write the "
                                   "volume (y, x, spectral) to an HDF5 file.")
    r.add_argument("file", help="input file with a sinogram stack")
    r.add_argument("--method", default="fbp", choices=["fbp", "sirt", "cgls", "tv"],
                   help="fbp: filtered back-projection (fast); sirt, cgls: iterative least squares; "
                        "tv: total-variation regularised (best at few angles / noisy data)")
    r.add_argument("--filter", default=None, help="FBP filter: ramp, shepp-logan, cosine, hamming, hann")
    r.add_argument("--n-iter", dest="n_iter", type=int, default=None, help="iterations (sirt, cgls, tv)")
    r.add_argument("--nonneg", action="store_true", help="non-negative images (sirt, cgls, tv)")
    r.add_argument("--lam-rel", dest="lam_rel", type=float, default=None,
                   help="tv: weight relative to the image range (default 0.06; raise for noisy data)")
    r.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if present)")
    r.add_argument("--variable", default=None, help="variable to use when the file holds several")
    r.add_argument("--batch", type=int, default=None, help="channels reconstructed at once (bounds memory)")
    r.add_argument("--out", default=None, help="output file (default: INPUT_METHOD.h5 next to the input)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_reconstruct)

    a = sub.add_parser("app", help="serve the dashboard app with Voila on 127.0.0.1",
                       description="Serve the xrdwidgets dashboard (dashboards/app.ipynb) with Voila "
                                   "on 127.0.0.1 (this machine only, no token): sources stripped, no "
                                   "tracebacks sent to the browser, idle kernels shut down. Visitors "
                                   "may read files only inside --data-dir.")
    a.add_argument("--port", type=int, default=8866, help="port (default %(default)s; 0: any free port)")
    a.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder whose HDF5/.npy/zarr files visitors may open, e.g. a beamtime folder "
                        "(default: ./xrdwidgets-output when `xrdwidgets demo` wrote it, else none)")
    a.add_argument("--open", default=None, metavar="FILE",
                   help="file inside DATA_DIR opened when the page loads (default: demo.h5 when "
                        "DATA_DIR holds it; else the built-in demo)")
    a.add_argument("--preheat", action="store_true",
                   help="keep kernels that have already run the notebook, so a visit renders at once")
    a.add_argument("--pool-size", type=int, default=1, help="pre-heated kernels per notebook (default 1)")
    a.add_argument("--cull-idle", type=int, default=300, metavar="SECONDS",
                   help="shut down kernels idle this long with no page open (default %(default)s)")
    a.add_argument("--max-upload-mb", type=float, default=200, help="largest upload (default %(default)s MB)")
    a.add_argument("--max-kernels", type=int, default=10, metavar="N",
                   help="pages (kernels) open at once; more get a 'server is full' page (default %(default)s)")
    a.add_argument("--max-kernels-per-client", type=int, default=3, metavar="N",
                   help="pages open at once from one address (default %(default)s; 0: no per-address cap, "
                        "e.g. behind a proxy on this machine, where every visitor is 127.0.0.1)")
    a.add_argument("--allow-overwrite", action="store_true",
                   help="let visitors replace files in DATA_DIR/results that their page did not write")
    a.add_argument("--tree", action="store_true", help="serve every dashboard in dashboards/ (a listing)")
    a.add_argument("--notebook", default=None, help="serve this notebook instead of the app")
    a.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    a.set_defaults(func=cmd_app)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError) as exc:  # user-facing errors: clear message, no traceback
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
