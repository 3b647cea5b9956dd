"""Command line: ``xrdwidgets demo | info | integrate | live | reconstruct | resume | methods | app``.

``reconstruct`` offers every method of the registry (:mod:`xrdwidgets.recon.registry`), with the
method's parameters as flags generated from it.

Run ``xrdwidgets --help`` or ``xrdwidgets COMMAND --help``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

from ..base.checks import check_writable

log = logging.getLogger(__name__)

_EPILOG = """\
examples:
  xrdwidgets demo                       simulate a 3-phase XRD-CT scan, reconstruct it, write
                                        xrdwidgets-output/demo.h5 and demo.png
  xrdwidgets info xrdwidgets-output/demo.h5
                                        dims, coordinates, geometry and value ranges of a file
  xrdwidgets reconstruct scan.h5 --method fbp -o recon.h5
                                        reconstruct a sinogram stack (own HDF5, nDTomo or SD2I file)
  xrdwidgets methods                    list the methods: fbp sirt cgls tv sd2i parallaxnet noise2inverse
  xrdwidgets reconstruct scan.h5 --method sd2i --help
                                        the method's parameters, defaults and units
  xrdwidgets reconstruct scan.h5 --method sd2i --epochs 3000 --workdir run1 -o sd2i.h5
  xrdwidgets resume run1                continue it after Ctrl-C, a crash or a killed job
  xrdwidgets demo --raw && xrdwidgets integrate xrdwidgets-output/raw/scan_master.h5 \\
      --poni xrdwidgets-output/raw/scan.poni --trim 10 -o stack.h5
                                        raw detector frames → sinogram stack (pyFAI)
  xrdwidgets live scan.h5 --poni scan.poni --n-translations 32 --n-angles 24 -o stack.h5
                                        follow a scan being written; images while it runs
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
    from ..base.progress import run_to_end

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

    from .. import io
    from ..explore.figures import demo_summary_png
    from ..recon.fbp import iterate_fbp
    from ..sim.demo import demo

    if getattr(args, "raw", False):
        from .integrate_cmd import cmd_demo_raw

        return cmd_demo_raw(args)
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
    from .. import io

    print(io.describe(args.file))
    return 0


def cmd_methods(args) -> int:
    from ..recon.registry import methods

    for spec in methods().values():
        print(f"{spec.name:<14} {spec.label}: {spec.help}")
        if args.long:
            for p in spec.params:
                print(f"    {p.cli_flag:<20} {p.label} {_default_text(p)}: {p.help}")
            for name in spec.presets:
                print(f"    preset {name!r}: {spec.presets[name]}")
    print("\nxrdwidgets reconstruct FILE --method NAME --help lists a method's parameters")
    return 0


def _default_text(p) -> str:
    if p.default is None:
        return "(default: automatic)"
    return f"(default: {p.default}{' ' + p.units if p.units else ''})"


def _method_kwargs(args, spec) -> dict:
    """Every parameter of ``spec`` from the command line (its default where not given)."""
    return {p.name: getattr(args, "param_" + p.name) for p in spec.params}


def _check_out(out: Path, overwrite: bool) -> bool:
    if out.exists() and not overwrite:
        print(f"error: {out} exists; pass --overwrite or choose --out", file=sys.stderr)
        return False
    return True


def _source(record: dict):
    """The resumable job source of a recorded reconstruction: ``iterate(stack, method, **params)``."""
    import functools

    from .. import io
    from ..recon.iterative import iterate

    obj = io.load(record["file"])
    if record.get("variable"):
        obj = obj[record["variable"]]
    return functools.partial(iterate, obj, record["method"], **record["parameters"])


def _run_job(record: dict, *, workdir, resume: bool, quiet: bool) -> int:
    """Run a recorded reconstruction (as a :class:`~xrdwidgets.jobs.Job`), write ``record["out"]``."""
    from .. import io, jobs

    out = Path(record["out"])
    if not _check_out(out, record.get("overwrite", False)):
        return 2
    # before any reading or computing: the output must be writable (probe file)
    check_writable(out.parent, what=f"output folder of {out.name}")
    source = _source(record)
    name = f"{record['method']} {Path(record['file']).name}"
    with _cluster_client(record.get("cluster")) as (client, store):
        cluster = {} if client is None else {"client": client, "store": store}
        if client is not None:
            from ..distributed import dashboard_link

            print(f"running on the dask cluster {client.scheduler.address} (dashboard: "
                  f"{dashboard_link(client) or 'none'}); results streamed to {store}", file=sys.stderr)
        if resume:
            job = jobs.resume(workdir, source, name=name, **cluster)
        else:
            job = jobs.run(source, name=name, workdir=workdir, params={"cli": record}, **cluster)
        try:
            rec = job.wait(progress=not quiet)
        except KeyboardInterrupt:
            job.cancel()
            job.wait(timeout=30, raise_on_error=False)
            again = f"xrdwidgets resume {workdir}" if workdir else (
                "the same command" if client is not None else "")
            print("interrupted" + (f"; continue with: {again}" if again else ""), file=sys.stderr)
            return 130
    if job.state is not jobs.State.DONE:
        print(f"error: {job.message}", file=sys.stderr)
        return 1
    io.save(rec, out, overwrite=record.get("overwrite", False),
            producer=f"xrdwidgets reconstruct --method {record['method']}",
            parameters={"source": record["file"], **record["parameters"]})
    print(f"wrote {out}")
    return 0


@contextlib.contextmanager
def _cluster_client(cluster: dict | None):
    """``(client, store)`` of a recorded ``--scheduler``/``--local-cluster`` choice, or ``(None, None)``."""
    if not cluster:
        yield None, None
        return
    from ..distributed import connect

    client, local = connect(scheduler=cluster.get("scheduler"), local=cluster.get("local"))
    try:
        yield client, cluster["store"]
    finally:
        client.close()
        if local is not None:
            local.close()


def _cluster_record(args, out: Path) -> dict | None:
    if args.scheduler is None and args.local_cluster is None:
        if args.store is not None:
            raise SystemExit("error: --store is for cluster runs; add --scheduler ADDRESS or --local-cluster N")
        return None
    if args.scheduler is not None and args.local_cluster is not None:
        raise SystemExit("error: give --scheduler ADDRESS or --local-cluster N, not both")
    if args.local_cluster is not None and args.local_cluster < 1:
        raise SystemExit(f"error: --local-cluster takes a number of worker processes >= 1, found {args.local_cluster}")
    if args.store is not None:
        store = Path(args.store)
    elif args.workdir:
        store = Path(args.workdir) / "volume.zarr"
    else:
        store = out.with_name(out.stem + ".zarr")
    return {"scheduler": args.scheduler, "local": args.local_cluster, "store": str(store.resolve())}


def cmd_reconstruct(args) -> int:
    from ..recon.registry import get_method

    spec = get_method(args.method)
    src = Path(args.file)
    out = Path(args.out) if args.out else src.with_name(src.stem + f"_{spec.name}.h5")
    if not _check_out(out, args.overwrite):
        return 2
    if args.workdir:
        from ..jobs import CHECKPOINT_FILE, CHUNKS_DIR, JOB_FILE, RESULT_FILE

        wd = Path(args.workdir)
        if any((wd / f).exists() for f in (JOB_FILE, CHECKPOINT_FILE, CHUNKS_DIR, RESULT_FILE)):
            print(f"error: {wd} holds a former run; continue it with: xrdwidgets resume {wd} "
                  "(or choose another --workdir)", file=sys.stderr)
            return 2
    record = {"command": "reconstruct", "file": str(src.resolve()), "variable": args.variable,
              "method": spec.name, "parameters": _method_kwargs(args, spec), "out": str(out.resolve()),
              "overwrite": bool(args.overwrite), "cluster": _cluster_record(args, out)}
    return _run_job(record, workdir=args.workdir, resume=False, quiet=args.quiet)


def cmd_resume(args) -> int:
    from ..jobs import job_info

    wd = Path(args.workdir)
    info = job_info(wd)
    record = (info or {}).get("params", {}).get("cli") if isinstance(info, dict) else None
    if not isinstance(record, dict) or record.get("command") != "reconstruct":
        print(f"error: {wd} is not the work folder of an `xrdwidgets reconstruct --workdir` run "
              f"(no reconstruct record in {wd / 'job.json'})", file=sys.stderr)
        return 2
    return _run_job(record, workdir=wd, resume=True, quiet=args.quiet)


def cmd_app(args) -> int:
    from ..serve import appserver

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


def _add_method_flags(parser, spec):
    """One flag per registry parameter of ``spec`` (defaults and units shown in ``--help``)."""
    g = parser.add_argument_group(f"{spec.name} parameters", spec.help)
    for p in spec.params:
        kw = {"dest": "param_" + p.name, "default": p.default}
        rng = ""
        if p.minimum is not None or p.maximum is not None:
            rng = f", range {'' if p.minimum is None else p.minimum}..{'' if p.maximum is None else p.maximum}"
        text = p.help if p.default is None and "default" in p.help else f"{p.help} {_default_text(p)[:-1]}{rng})"
        if p.kind == "bool":
            g.add_argument(p.cli_flag, action=argparse.BooleanOptionalAction, help=text, **kw)
            continue
        if p.kind == "choice":
            kw["choices"] = p.choices
        else:
            kw["type"] = {"int": int, "float": float, "str": str}[p.kind]
            kw["metavar"] = p.units.upper().replace(" ", "_") if p.units else p.kind.upper()
        g.add_argument(p.cli_flag, help=text.replace("%", "%%"), **kw)


def _add_reconstruct(sub, method):
    r = sub.add_parser("reconstruct", help="reconstruct a sinogram stack from a file (any method)",
                       description="Reconstruct every channel of a sinogram stack with a registered method "
                                   "and write the volume (y, x, spectral) to an HDF5 file. "
                                   "`xrdwidgets methods` lists the methods; `--method M --help` lists M's "
                                   "parameters. With --workdir the run checkpoints there and "
                                   "`xrdwidgets resume DIR` continues it after a stop or a crash.")
    r.add_argument("file", help="input file with a sinogram stack (own HDF5, nDTomo or SD2I file, zarr)")
    names = ["fbp", "sirt", "cgls", "tv", "sd2i", "parallaxnet", "noise2inverse"]
    if method is not None:
        from ..recon.registry import methods

        names = list(methods())
    r.add_argument("-m", "--method", default="fbp", choices=names, help="reconstruction method (default fbp)")
    r.add_argument("--variable", default=None, help="variable to use when the file holds several")
    r.add_argument("-o", "--out", default=None, help="output file (default: INPUT_METHOD.h5 next to the input)")
    r.add_argument("--workdir", default=None, metavar="DIR",
                   help="work folder: checkpoints as it runs; `xrdwidgets resume DIR` continues it")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c = r.add_argument_group("cluster (dask.distributed; see xrdwidgets.distributed)",
                             "Run the channel batches as tasks on a dask cluster; each finished batch is "
                             "written to a zarr store, and the same command (or `xrdwidgets resume DIR`) "
                             "continues a stopped run without redoing finished batches.")
    c.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running dask scheduler, e.g. tcp://host:8786")
    c.add_argument("--local-cluster", type=int, default=None, metavar="N",
                   help="start a local cluster of N worker processes (one per GPU when there are GPUs)")
    c.add_argument("--store", default=None, metavar="PATH",
                   help="zarr store of the batches (default: DIR/volume.zarr with --workdir, else OUT.zarr)")
    r.set_defaults(func=cmd_reconstruct)
    if method is not None:
        from ..recon.registry import get_method

        _add_method_flags(r, get_method(method))


def _requested_method(argv) -> str | None:
    """The ``--method`` of a ``reconstruct`` command line (``fbp`` when absent; None for other commands)."""
    argv = list(argv)
    if "reconstruct" not in argv:
        return None
    rest = argv[argv.index("reconstruct") + 1:]
    for i, a in enumerate(rest):
        if a in ("-m", "--method") and i + 1 < len(rest):
            return rest[i + 1].lower()
        if a.startswith("--method="):
            return a.split("=", 1)[1].lower()
    return "fbp"


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``method`` adds that method's parameter flags to ``reconstruct``."""
    from .._version import __version__

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
    d.add_argument("--raw", action="store_true",
                   help="write a simulated raw scan instead (detector frames, PONI, mask in DIR/raw)")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="describe a data file (dims, coords, geometry, value ranges)",
                       description="Print what a file holds: variables, dims and sizes, coordinate "
                                   "ranges and units, scan geometry, value ranges, provenance. "
                                   "Reads the xrdwidgets HDF5 layout, nDTomo and SD2I HDF5 files, zarr.")
    i.add_argument("file", help="HDF5 (.h5/.hdf5) file or zarr folder")
    i.set_defaults(func=cmd_info)

    _add_reconstruct(sub, method)

    rs = sub.add_parser("resume", help="continue a `reconstruct --workdir DIR` run after a stop or crash",
                        description="Continue the reconstruction whose work folder is WORKDIR (after Ctrl-C, a "
                                    "crash or a killed job): finished channel batches are taken from its "
                                    "checkpoint, the running one continues from its saved state where the "
                                    "method saves one, and the output file named then is written.")
    rs.add_argument("workdir", metavar="WORKDIR", help="the --workdir of the run to continue")
    rs.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rs.set_defaults(func=cmd_resume)

    m = sub.add_parser("methods", help="list the reconstruction methods",
                       description="List the reconstruction methods (the registry); --long adds their "
                                   "parameters with defaults and units, and the named presets.")
    m.add_argument("-l", "--long", action="store_true", help="also list each method's parameters")
    m.set_defaults(func=cmd_methods)

    from .integrate_cmd import add_integrate_parser

    add_integrate_parser(sub)

    from .live_cmd import add_live_parser

    add_live_parser(sub)

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
    argv = sys.argv[1:] if argv is None else list(argv)
    method = _requested_method(argv)
    if method is not None:
        from ..recon.registry import methods

        if method not in methods():
            method = None  # argparse's `choices` reports it
    parser = build_parser(method)
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


    sys.exit(main())
