"""Memory of the demo as Binder runs it: Voila server + the App's kernel, peak RSS.

Binder gives a session about 2 GB; the issue's budget is a peak RSS of at most 1.5 GB for the
demo and at most 200 MB of demo data. This script serves ``dashboards/`` the way
``xrdwidgets app`` does, opens the App in headless Chromium (the browser is the visitor's, not
Binder's, so it is not counted), runs what a course participant does — the demo loads, an FBP
job, an iterative (TV) job, a look at the Explore tab — and then reads the high-water mark
(``VmHWM`` in ``/proc/PID/status``) of the server and of every kernel it started. The sum of the
peaks is an upper bound of the container's peak (the processes do not peak at the same moment).
The demo files are written with ``xrdwidgets demo --size small`` (as ``binder/postBuild`` does) and
their size is reported.

Usage::

    python benchmarks/bench_binder_memory.py
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))


def peak_rss_gb(pid: int) -> float:
    """High-water mark of the resident set of ``pid`` in GiB (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 2**30
    return float("nan")


def rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 2**30
    return float("nan")


def demo_data_mb() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "xrdwidgets.cli", "demo", "--size", "small", "--out", tmp,
                        "--quiet"], check=True, cwd=REPO)
        return sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20


def drive(page, url: str, tv_iterations: int):
    panel = ".xrdwidgets-app .xrdw-recon-panel"
    page.goto(url + "voila/render/app.ipynb", wait_until="commit", timeout=120_000)
    page.wait_for_selector(".xrdwidgets-app .js-plotly-plot", state="visible", timeout=120_000)
    page.get_by_role("tab", name="Reconstruct", exact=True).click()
    page.locator(f"{panel} .xrdw-start").wait_for(state="visible", timeout=60_000)
    page.locator(f"{panel} .xrdw-start").click()                       # FBP of every channel
    page.wait_for_function("() => document.querySelector('%s .xrdw-recon-status').textContent"
                           ".includes('done')" % panel, timeout=120_000)
    page.get_by_role("tab", name="Reconstruct", exact=True).click()
    page.locator(f"{panel} .xrdw-method select").select_option(label="TV (total variation, PDHG)")
    box = page.locator(f"{panel} .xrdw-param-n_iter input")
    box.fill(str(tv_iterations))
    box.press("Enter")
    time.sleep(0.5)
    page.locator(f"{panel} .xrdw-start").click()
    page.wait_for_function("() => /tv #2 done/.test(document.querySelector('%s .xrdw-recon-status')"
                           ".textContent)" % panel, timeout=600_000)
    page.get_by_role("tab", name="Explore", exact=True).click()
    time.sleep(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tv-iterations", type=int, default=300)
    args = ap.parse_args()
    import psutil
    from browser_helpers import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    from xrdwidgets.serve import appserver

    data_mb = demo_data_mb()
    server = appserver.launch(REPO / "dashboards", port=0, log_file=Path(tempfile.mkdtemp()) / "voila.log")
    try:
        appserver.wait_ready(server, timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            t0 = time.perf_counter()
            drive(page, server.url, args.tv_iterations)
            took = time.perf_counter() - t0
            root = psutil.Process(server.process.pid)
            procs = [root] + root.children(recursive=True)
            rows = [(p.pid, " ".join(p.cmdline()[1:4])[:60], rss_gb(p.pid), peak_rss_gb(p.pid)) for p in procs]
            browser.close()
    finally:
        appserver.stop(server)
    print(f"demo session (page load, FBP job, TV job of {args.tv_iterations} iterations, Explore) "
          f"took {took:.1f} s")
    print(f"{'pid':>8}  {'process':<60}{'RSS GiB':>9}{'peak GiB':>10}")
    for pid, cmd, now, peak in rows:
        print(f"{pid:>8}  {cmd:<60}{now:>9.3f}{peak:>10.3f}")
    total = sum(r[3] for r in rows)
    print(f"sum of peaks (upper bound of the session's peak RSS): {total:.2f} GiB  (budget 1.5 GB)")
    print(f"demo data written by `xrdwidgets demo --size small`: {data_mb:.1f} MiB  (budget 200 MB)")


if __name__ == "__main__":
    main()
