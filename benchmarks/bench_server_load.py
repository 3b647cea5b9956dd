"""Load on the served app: N visitors at once, up to the kernel cap, and memory afterwards.

Serves ``dashboards/app.ipynb`` exactly as ``xrdwidgets app`` does (:func:`xrdwidgets.serve.appserver.launch`:
the guarded Voila, the demo cache) with a kernel cap ``--cap`` and no per-client cap (every
visitor here is 127.0.0.1), and short culling (``--cull`` seconds idle, checked every 2 s).
For each N in ``--loads``:

1. **Visits.** N headless-Chromium pages request the app at once; time to interactive (TTI) of
   each = from its request to the Explore tab's image drawn (kernel start, imports, the demo,
   widget rendering: what a visitor waits for).
2. **Peak memory** while they load and stay open: the server's resident set and the sum over
   server + kernels (psutil, sampled every 0.25 s; RSS sums count shared library pages once per
   process, so they are an upper bound), and each kernel's unique set (USS) once drawn.
3. **Pages closed.** The pages are closed (their "shut my kernel down" beacon fires); seconds
   until every kernel has ended, then the server's RSS and the total.

Then **abandoned visits**: ``cap`` plain GETs (no browser: kernels start, run the notebook, and no
page ever connects) plus one more GET, which must get the "server is full" page (HTTP 503); the
seconds until culling has ended them all, and the server's RSS after.

With ``--peer`` the whole run is repeated on a server with the memory release switched off
(``--GuardedVoila.release_memory=False``, what plain Voila does) and the server RSS after the
run is compared (ratio guarded / peer).

Usage::

    python benchmarks/bench_server_load.py                      # loads 1 2 4, cap 4
    python benchmarks/bench_server_load.py --loads 1 2 4 8 --cap 8 --peer
"""
from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "browser"))

from xrdwidgets.serve import appserver  # noqa: E402

DRAWN = ".xrdwidgets-app .xrdwidgets-explorer .heatmaplayer image"
MB = 2**20


def kernels(server_pid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(server_pid).children(recursive=True):
        try:
            if any("ipykernel" in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def rss(proc) -> float:
    try:
        return proc.memory_info().rss / MB
    except psutil.Error:
        return 0.0


def total_rss(server_pid: int) -> float:
    return rss(psutil.Process(server_pid)) + sum(rss(k) for k in kernels(server_pid))


class Sampler:
    """Peak of the server RSS and of server + kernels, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.25):
        self.pid, self.every = pid, every
        self.peak_total = self.peak_server = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_server = max(self.peak_server, rss(psutil.Process(self.pid)))
            self.peak_total = max(self.peak_total, total_rss(self.pid))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def wait_kernels(pid: int, n: int, timeout: float) -> float:
    """Seconds until at most ``n`` kernels run (``nan`` on timeout)."""
    t0 = time.perf_counter()
    while len(kernels(pid)) > n:
        if time.perf_counter() - t0 > timeout:
            return float("nan")
        time.sleep(0.2)
    return time.perf_counter() - t0


def get(port: int, timeout: float = 300.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def visits(ctx, server, n: int) -> dict:
    """N pages at once; TTI, peaks, USS, then close them and time the kernels' end."""
    pid = server.process.pid
    with Sampler(pid) as sampler:
        pages, t0 = [], []
        for _ in range(n):
            pg = ctx.new_page()
            t0.append(time.perf_counter())
            pg.goto(server.url, wait_until="commit", timeout=300_000)
            pages.append(pg)
        tti = []
        for pg, start in zip(pages, t0):
            pg.wait_for_selector(DRAWN, state="visible", timeout=300_000)
            tti.append(time.perf_counter() - start)
        time.sleep(1.0)
        uss = [k.memory_full_info().uss / MB for k in kernels(pid)]
        open_server = rss(psutil.Process(pid))
    for pg in pages:
        pg.close(run_before_unload=True)
    freed = wait_kernels(pid, 0, timeout=120)
    time.sleep(3)  # one memory-release check (every cull interval, here 2 s)
    return {"n": n, "tti_med": statistics.median(tti), "tti_max": max(tti), "peak_total": sampler.peak_total,
            "peak_server": sampler.peak_server, "uss": statistics.mean(uss) if uss else float("nan"),
            "open_server": open_server, "freed_s": freed, "after_server": rss(psutil.Process(pid)),
            "after_total": total_rss(pid)}


def abandoned(server, cap: int, cull: int) -> dict:
    pid = server.process.pid
    with ThreadPoolExecutor(cap) as pool:
        statuses = list(pool.map(lambda _: get(server.port), range(cap)))
    extra = get(server.port)
    running = len(kernels(pid))
    with Sampler(pid) as sampler:
        culled = wait_kernels(pid, 0, timeout=cull + 120)
        time.sleep(3)
    return {"ok": statuses.count(200), "extra": extra, "running": running, "culled_s": culled,
            "peak_total": sampler.peak_total, "after_server": rss(psutil.Process(pid)),
            "after_total": total_rss(pid)}


def run(args, extra_args=()) -> dict:
    from playwright.sync_api import sync_playwright

    from browser_helpers import CHROMIUM, CHROMIUM_ARGS

    server = appserver.launch(port=0, max_kernels=args.cap, max_kernels_per_client=0,
                              cull_idle_timeout=args.cull, cull_interval=2, extra_args=extra_args)
    out = {"rows": []}
    try:
        appserver.wait_ready(server, timeout=120)
        time.sleep(1)
        out["start_server"] = rss(psutil.Process(server.process.pid))
        profile = tempfile.mkdtemp(prefix="xrdwidgets-bench-")
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1200})
            try:
                for n in args.loads:
                    if n > args.cap:
                        print(f"skipping N={n} > cap {args.cap}")
                        continue
                    row = visits(ctx, server, n)
                    out["rows"].append(row)
                    print(f"  N={n}: TTI median {row['tti_med']:.1f} s, peak {row['peak_total']:.0f} MB",
                          flush=True)
            finally:
                ctx.close()
        out["abandoned"] = abandoned(server, args.cap, args.cull)
        out["end_server"] = rss(psutil.Process(server.process.pid))
    finally:
        appserver.stop(server)
    return out


def table(res: dict, cap: int, cull: int) -> str:
    lines = [f"server RSS at start: {res['start_server']:.0f} MB; kernel cap {cap}; culling after {cull} s idle",
             "",
             "| N pages | TTI median (s) | TTI max (s) | peak server+kernels RSS (MB) | kernel USS (MB) "
             "| server RSS open / peak (MB) | kernels ended after close (s) | server RSS after (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['n']} | {r['tti_med']:.1f} | {r['tti_max']:.1f} | {r['peak_total']:.0f} | "
                     f"{r['uss']:.0f} | {r['open_server']:.0f} / {r['peak_server']:.0f} | {r['freed_s']:.1f} | "
                     f"{r['after_server']:.0f} |")
    a = res["abandoned"]
    lines += ["",
              f"abandoned visits: {cap} GETs -> {a['ok']} pages (HTTP 200), {a['running']} kernels; one more GET -> "
              f"HTTP {a['extra']} ('server is full'); all culled after {a['culled_s']:.1f} s; peak "
              f"{a['peak_total']:.0f} MB; server RSS after culling {a['after_server']:.0f} MB "
              f"(start {res['start_server']:.0f} MB)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loads", type=int, nargs="+", default=[1, 2, 4], help="pages opened at once")
    p.add_argument("--cap", type=int, default=4, help="kernel cap (max_kernels)")
    p.add_argument("--cull", type=int, default=10, help="cull_idle_timeout in seconds")
    p.add_argument("--peer", action="store_true", help="repeat without the memory release and compare")
    args = p.parse_args(argv)
    res = run(args)
    print("\n## guarded server (memory release on)\n")
    print(table(res, args.cap, args.cull))
    if args.peer:
        peer = run(args, extra_args=["--GuardedVoila.release_memory=False"])
        print("\n## peer: same server, memory release off (plain Voila's behaviour)\n")
        print(table(peer, args.cap, args.cull))
        print(f"\nserver RSS after the run: guarded {res['end_server']:.0f} MB vs peer {peer['end_server']:.0f} MB "
              f"(ratio {res['end_server'] / peer['end_server']:.2f}); growth over start: guarded "
              f"{res['end_server'] - res['start_server']:+.0f} MB, peer {peer['end_server'] - peer['start_server']:+.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
