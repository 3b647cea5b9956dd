#!/usr/bin/env python
"""Run every notebook as Binder would: a venv made only from the Binder requirements, Binder's size.

Usage (from the repository root)::

    python benchmarks/binder_check.py                     # fresh venv in a temporary folder
    python benchmarks/binder_check.py --venv .binder-venv # build it there once, reuse it after
    python benchmarks/binder_check.py --reuse-current     # this interpreter (a quick local run)
    python benchmarks/binder_check.py notebooks/07_unmixing.ipynb   # only some notebooks

Steps:

1. **Environment.** ``python -m venv`` (no ``--system-site-packages``), then ``pip install`` of
   exactly the Binder requirements (``tools/binder_env.py --pip``: pyproject.toml's dependencies
   and the extras that binder/environment.yml is generated from), where ``torch`` — on Binder
   conda-forge's ``pytorch-cpu`` — is installed as ``--torch`` (default ``torch==2.13.0``, the CPU
   wheel of this project's machines; ``TORCH`` in the environment overrides it as in the
   Makefile); then the package itself with ``pip install --no-deps -e .``, as binder/postBuild
   does. ``--venv PATH`` keeps the venv and rebuilds it only when the requirements change.
2. **Size.** ``XRDWIDGETS_NB_SIZE`` is read from ``binder/start`` (``small``), so the notebooks
   run at the size a Binder visitor gets.
3. **Notebooks.** Every ``notebooks/*.ipynb``, one driver process per notebook (this
   interpreter, needs nbclient/nbformat/psutil), whose kernel is the venv's Python (a kernelspec
   written to a private ``JUPYTER_PATH``; ``PYTHONPATH`` removed, so the kernel sees only the
   venv). Peak memory: the kernel's process tree (kernel + children) is sampled every 0.1 s
   (sum of VmRSS), and the kernel's own high-water mark (``getrusage`` ``ru_maxrss``, exact)
   is read by a last cell; the larger of the two is reported.
4. **Verdict.** A table notebook / seconds / peak MB / result; exit 1 when a notebook fails or
   peaks over ``--limit-mb`` (2048, Binder's memory limit).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import binder_env  # noqa: E402

LIMIT_MB = 2048
STAMP = ".xrdwidgets-binder-requirements"
KERNEL_NAME = "xrdwidgets-binder-check"
_PEAK_CELL = ("import json as _j, resource as _r\n"
              "print('BINDER-CHECK-PEAK ' + _j.dumps({'self_kb': _r.getrusage(_r.RUSAGE_SELF).ru_maxrss, "
              "'children_kb': _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss}))")


def binder_size(start: Path = ROOT / "binder" / "start") -> str:
    """The ``XRDWIDGETS_NB_SIZE`` that binder/start exports (its default)."""
    m = re.search(r'XRDWIDGETS_NB_SIZE="\$\{XRDWIDGETS_NB_SIZE:-(\w+)\}"', start.read_text(encoding="utf-8"))
    if not m:
        raise SystemExit(f"{start}: no `export XRDWIDGETS_NB_SIZE=\"${{XRDWIDGETS_NB_SIZE:-SIZE}}\"` line found")
    return m.group(1)


def venv_requirements(torch: str) -> list[str]:
    """The Binder requirements under pip names, torch replaced by ``torch`` (the CPU wheel)."""
    out = []
    for req in binder_env.pip_requirements():
        name = binder_env.parse_requirement(req)[0]
        out.append(torch if binder_env._norm(name) == "torch" else req)
    return out


def _run(cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kw)


def build_venv(path: Path, torch: str) -> Path:
    """Create (or reuse, when its requirements are unchanged) a venv of the Binder requirements."""
    reqs = venv_requirements(torch)
    digest = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    python = path / "bin" / "python"
    stamp = path / STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        print(f"venv {path}: reused (requirements unchanged)", flush=True)
        return python
    t0 = time.perf_counter()
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(path)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([str(python), "-m", "pip", "install", "-q", *reqs], env=env)
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], env=env)
    stamp.write_text(digest)
    print(f"venv {path}: built in {time.perf_counter() - t0:.0f} s", flush=True)
    return python


# ----------------------------------------------------------------------------- one notebook
def _tree_rss_kb(proc) -> int:
    import psutil
    total = 0
    try:
        for p in proc.children(recursive=True):
            try:
                total += p.memory_info().rss // 1024
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def run_one(notebook: Path, python: str, size: str, timeout: float, save_dir: Path | None = None) -> dict:
    """Execute ``notebook`` with a kernel of ``python``; wall time, peak RSS, error (driver side)."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="binder-check-") as tmp:
        spec = Path(tmp) / "kernels" / KERNEL_NAME
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Binder check", "language": "python",
            "env": {"XRDWIDGETS_NB_SIZE": size}}))
        os.environ["JUPYTER_PATH"] = tmp
        os.environ["XRDWIDGETS_NB_SIZE"] = size
        os.environ.pop("PYTHONPATH", None)
        import nbclient
        import nbformat

        nb = nbformat.read(notebook, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(_PEAK_CELL))
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME,
                                         resources={"metadata": {"path": str(notebook.parent)}})
        me = psutil.Process()
        peak = {"tree_kb": 0}
        done = threading.Event()

        def sample():
            while not done.wait(0.1):
                peak["tree_kb"] = max(peak["tree_kb"], _tree_rss_kb(me))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        error = None
        try:
            client.execute()
        except Exception as exc:  # a failing cell: report it, do not stop the other notebooks
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    kernel = {}
    for out in nb.cells[-1].get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith("BINDER-CHECK-PEAK "):
                kernel = json.loads(line.split(" ", 1)[1])
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    if errors and error is None:
        error = f"{errors[0].get('ename')}: {errors[0].get('evalue')}"
    peak_kb = max(peak["tree_kb"], kernel.get("self_kb", 0))
    if save_dir is not None and error is None:   # the executed notebook, for the docs (make docs)
        nb.cells.pop()                            # the measuring cell
        save_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_dir / notebook.name)
    return {"notebook": notebook.name, "seconds": round(seconds, 1), "peak_mb": round(peak_kb / 1024, 1),
            "sampled_tree_mb": round(peak["tree_kb"] / 1024, 1),
            "kernel_maxrss_mb": round(kernel.get("self_kb", 0) / 1024, 1) if kernel else None,
            "error": error}


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--venv", type=Path, help="build the venv here (kept; reused while the requirements are unchanged)")
    where.add_argument("--reuse-current", action="store_true", help="run the kernels with this interpreter (no venv)")
    parser.add_argument("--torch", default=os.environ.get("TORCH", "torch==2.13.0"),
                        help="pip requirement installed for torch (Binder: conda-forge pytorch-cpu); default %(default)s")
    parser.add_argument("--size", help="XRDWIDGETS_NB_SIZE (default: the one binder/start sets)")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB, help="peak RSS limit per notebook (%(default)s MB)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per cell (%(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--save-executed", type=Path, metavar="DIR",
                        help="write each notebook that ran without error, with its outputs, into DIR "
                             "(docs/conf.py renders them when XRDWIDGETS_DOCS_EXECUTED=DIR)")
    parser.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--python", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or binder_size()

    if args.run_one:   # the per-notebook driver process
        sys.stdout.write("BINDER-CHECK-RESULT " + json.dumps(run_one(args.run_one, args.python, size, args.timeout, args.save_executed)) + "\n")
        return 0

    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    problems = binder_env.uncovered_imports(notebooks)
    if problems:
        print("imports not provided by the Binder environment:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="binder-venv-") as tmp:
        if args.reuse_current:
            python = sys.executable
        else:
            python = str(build_venv(args.venv.resolve() if args.venv else Path(tmp) / "venv", args.torch))
        t_env = time.perf_counter() - t_all
        print(f"kernel python: {python}; XRDWIDGETS_NB_SIZE={size}; limit {args.limit_mb:.0f} MB", flush=True)
        results = []
        for nb in notebooks:
            proc = subprocess.run([sys.executable, __file__, "--run-one", str(nb), "--python", python,
                                   "--size", size, "--timeout", str(args.timeout)]
                                  + (["--save-executed", str(args.save_executed.resolve())] if args.save_executed else []),
                                  capture_output=True, text=True, cwd=str(ROOT))
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BINDER-CHECK-RESULT ")]
            if line:
                res = json.loads(line[-1].split(" ", 1)[1])
            else:
                res = {"notebook": nb.name, "seconds": None, "peak_mb": None,
                       "error": f"driver exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
            res["ok"] = res["error"] is None and res["peak_mb"] is not None and res["peak_mb"] <= args.limit_mb
            results.append(res)
            print(f"  {res['notebook']:40s} {res['seconds'] or 0:7.1f} s {res['peak_mb'] or 0:8.0f} MB  "
                  f"{'ok' if res['ok'] else 'FAIL ' + (res['error'] or 'over the limit')}", flush=True)
    total = time.perf_counter() - t_all
    width = max(len(r["notebook"]) for r in results)
    print(f"\nBinder check (XRDWIDGETS_NB_SIZE={size}, limit {args.limit_mb:.0f} MB peak RSS)")
    print(f"{'notebook':{width}s}  seconds  peak MB  result")
    for r in results:
        verdict = "ok" if r["ok"] else ("over the limit" if r["error"] is None else "error: " + r["error"])
        print(f"{r['notebook']:{width}s}  {r['seconds'] or 0:7.1f}  {r['peak_mb'] or 0:7.0f}  {verdict}")
    print(f"environment {t_env:.0f} s; total {total:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": size, "limit_mb": args.limit_mb, "environment_s": t_env,
                                         "total_s": total, "results": results}, indent=1))
    failed = [r["notebook"] for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
