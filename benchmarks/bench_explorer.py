"""Linked image–spectrum views: server time and bytes sent per update, and window-sum strategies.

Usage: python benchmarks/bench_explorer.py [--quick] [--browser] [--n 512] [--channels 2000]

Cases (float32):
  small   the demo's "small" truth volume (40 × 40 × 100) with one overlay
  large   n × n × channels (default 512 × 512 × 2000, 2 GB) with one overlay (another 2 GB)
  binned  1024 × 1024 × 256 (1 GB): the image is block-averaged to 512 × 512 before sending
For each case the updates go through the same handlers the browser triggers (heatmap click →
pixel, pattern click → channel, box-select → window of random width, log-uniform in
[2, channels]). "server ms" is the handler's wall time (maths + building and sending the
messages); "bytes" is everything the widgets send for that update (JSON text + binary buffers),
counted at ipywidgets' ``Widget._send`` by :class:`~xrdwidgets.widgets.plotting.MessageMeter`.

Then, for the large case, the window-sum strategies behind "channel window → image":
numpy ``sum`` over the last axis, one BLAS matrix–vector product over the contiguous
``(y·x, channel)`` view (what :func:`xrdwidgets.explore.sum_channels` does), and a float64
block-prefix-sum index (cumulative sums every 64 channels + direct partial sums at both ends).

``--browser`` (needs voila, playwright and chromium) also measures end-to-end latency in a
headless browser: a notebook with the large case is served by Voila, and the time from the
mouse event to the DOM change of the other figure is taken in the page. The browser, Voila and
the kernel share this machine's CPUs.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import xrdwidgets
from xrdwidgets import data, explore

# ---------------------------------------------------------------------------- data


def synthetic_volume(n: int, channels: int, *, scale: float = 1.0, seed: int = 0):
    """Smooth phase maps × peak patterns: an ``(n, n, channels)`` float32 volume (no noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] / n
    maps = np.stack([np.sin(6 * xx) ** 2, np.cos(5 * yy) ** 2, xx * yy,
                     np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 20)], -1).astype(np.float32)
    tth = np.linspace(2.0, 12.0, channels)
    peaks = np.stack([sum(np.exp(-0.5 * ((tth - c) / 0.03) ** 2) for c in rng.uniform(2.5, 11.5, 6))
                      for _ in range(4)]).astype(np.float32) * np.float32(scale)
    arr = (maps.reshape(-1, 4) @ peaks).reshape(n, n, channels)
    return data.volume(arr, spectral=tth, name="fbp", validate_values=False)


# ---------------------------------------------------------------------------- helpers
def pct(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]


def all_widgets(widget):
    out = [widget]
    for child in getattr(widget, "children", ()):
        out += all_widgets(child)
    return out


def rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def measure_explorer(vol, compare, *, n_pixel=200, n_channel=50, n_window=50, seed=0):
    """Per-update server ms and bytes for pixel / channel / window updates via the handlers."""
    from plotly.callbacks import BoxSelector, Points

    from xrdwidgets.widgets.plotting import MessageMeter
    from xrdwidgets.widgets.explorer import Explorer

    t0 = time.perf_counter()
    ex = Explorer(vol, compare=compare)
    t_build = time.perf_counter() - t0
    meter = MessageMeter(ex.image_fig, ex.pattern_fig, *[w for w in all_widgets(ex.widget)
                                                         if w not in (ex.image_fig, ex.pattern_fig)])
    rng = random.Random(seed)
    rows, cols, nch = ex.volume.shape
    yc, xc, sc = (ex.volume[d].values for d in ex.volume.dims)
    res = {}

    def run(kind, n, make_call):
        ts, bs = [], []
        for _ in range(n):
            call = make_call()
            with meter.measure() as m:
                t = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t)
            bs.append(m.bytes)
        res[kind] = (ts, bs)

    def pixel():
        r, c = rng.randrange(rows), rng.randrange(cols)
        pts = Points(point_inds=[[r, c]], xs=[float(xc[c])], ys=[float(yc[r])], trace_name="image", trace_index=0)
        return lambda: ex.image_fig.data[0]._dispatch_on_click(pts, None)

    def channel():
        k = rng.randrange(nch)
        pts = Points(point_inds=[k], xs=[float(sc[k])], ys=[0.0], trace_name="", trace_index=0)
        return lambda: ex.pattern_fig.data[0]._dispatch_on_click(pts, None)

    def window():
        width = round(math.exp(rng.uniform(math.log(2), math.log(nch))))
        i0 = rng.randrange(0, nch - width + 1)
        box = BoxSelector(xrange=[float(sc[i0]), float(sc[i0 + width - 1])], yrange=[0, 1])
        empty = Points(point_inds=[], xs=[], ys=[], trace_name="", trace_index=0)
        return lambda: ex.pattern_fig.data[0]._dispatch_on_selection(empty, box)

    run("pixel → pattern", n_pixel, pixel)
    run("channel → image", n_channel, channel)
    run("window → image", n_window, window)
    shown = ex.shown_image.shape
    ex.close()
    return res, t_build, shown


def print_case(name, shape, res, t_build, shown):
    print(f"\n{name}: volume {shape[0]}×{shape[1]}×{shape[2]} float32 "
          f"({np.prod(shape) * 4 / 1e9:.2f} GB), image sent {shown[0]}×{shown[1]}, "
          f"construction {t_build * 1e3:.0f} ms")
    print(f"  {'update':<18}{'n':>5}{'server p50 ms':>15}{'p95 ms':>9}{'bytes p50':>12}{'p95':>11}")
    for kind, (ts, bs) in res.items():
        print(f"  {kind:<18}{len(ts):>5}{pct(ts, 50) * 1e3:>15.1f}{pct(ts, 95) * 1e3:>9.1f}"
              f"{pct(bs, 50):>12,.0f}{pct(bs, 95):>11,.0f}")


# ---------------------------------------------------------------------------- window sums
class BlockPrefix:
    """Float64 cumulative sums at every ``block``-th channel (an alternative we measured)."""

    def __init__(self, arr, block=64):
        self.a, self.b = arr, block
        n = arr.shape[2]
        nb = -(-n // block)
        self.p = np.zeros((nb + 1,) + arr.shape[:2])
        for k in range(nb):
            np.add(self.p[k], arr[:, :, k * block:(k + 1) * block].sum(-1, dtype=np.float64), out=self.p[k + 1])

    def window(self, i0, i1):
        b0, b1 = -(-i0 // self.b), i1 // self.b
        if b1 <= b0:
            return explore.sum_channels(self.a, i0, i1)
        out = self.p[b1] - self.p[b0]
        if i0 < b0 * self.b:
            out += explore.sum_channels(self.a, i0, b0 * self.b)
        if b1 * self.b < i1:
            out += explore.sum_channels(self.a, b1 * self.b, i1)
        return out


def window_strategies(arr, n=40, seed=1):
    rng = random.Random(seed)
    nch = arr.shape[2]
    wins = []
    for _ in range(n):
        width = round(math.exp(rng.uniform(math.log(2), math.log(nch))))
        i0 = rng.randrange(0, nch - width + 1)
        wins.append((i0, i0 + width))
    wins.append((0, nch))
    t = time.perf_counter()
    index = BlockPrefix(arr)
    t_index = time.perf_counter() - t
    rows = []
    for label, fn in [("numpy sum (last axis)", lambda a, b: arr[:, :, a:b].sum(-1)),
                      ("BLAS gemv, contiguous (used)", lambda a, b: explore.sum_channels(arr, a, b)),
                      ("block-prefix index, B=64", index.window)]:
        ts = []
        for a, b in wins:
            t = time.perf_counter()
            fn(a, b)
            ts.append(time.perf_counter() - t)
        full = ts[-1]
        rows.append((label, pct(ts[:-1], 50), pct(ts[:-1], 95), full))
    print(f"\nwindow sum of {arr.shape[0]}×{arr.shape[1]}×{nch} float32, {n} random windows "
          "(log-uniform width) + the full range")
    print(f"  {'strategy':<32}{'p50 ms':>9}{'p95 ms':>9}{'all channels ms':>17}")
    for label, p50, p95, full in rows:
        print(f"  {label:<32}{p50 * 1e3:>9.1f}{p95 * 1e3:>9.1f}{full * 1e3:>17.1f}")
    print(f"  block-prefix index: build {t_index:.2f} s, memory {index.p.nbytes / 1e6:.0f} MB "
          f"(extra, float64); gemv and numpy need none")
    a, b = wins[0]
    ref = arr[:, :, a:b].sum(-1, dtype=np.float64)
    err = np.abs(explore.sum_channels(arr, a, b) - ref).max() / max(np.abs(ref).max(), 1e-30)
    print(f"  gemv float32 accumulation: max relative error {err:.1e} vs float64 sum")


# ---------------------------------------------------------------------------- browser
_NOTEBOOK = r'''
import sys, json, time
sys.path.insert(0, {bench_dir!r})
from bench_explorer import synthetic_volume
import ipywidgets as W
from xrdwidgets.widgets.explorer import Explorer
vol = synthetic_volume({n}, {channels})
ex = Explorer(vol, compare={{"SIRT": synthetic_volume({n}, {channels}, scale=0.9)}})
tab = W.Tab(children=[W.HTML("intro"), ex.widget], titles=["intro", "explorer"])
tab
'''

_JS_WAIT = """([idx, timeout]) => { window.__t0 = performance.now(); window.__p = new Promise(res => {
  const gd = document.querySelectorAll('.xrdwidgets-explorer')[0].querySelectorAll('.js-plotly-plot')[idx];
  let done = false;
  const skip = ['hoverlayer', 'modebar-container', 'selectionlayer', 'zoomlayer', 'outline-controllers'];
  const relevant = (m) => { for (let n = m.target; n && n !== gd; n = n.parentNode)
      if (n.classList && skip.some(c => n.classList.contains(c))) return false; return true; };
  const obs = new MutationObserver((muts) => {
    if (done || !muts.some(relevant)) return;
    done = true; obs.disconnect(); requestAnimationFrame(() => res(performance.now() - window.__t0));
  });
  obs.observe(gd, {subtree: true, attributes: true, childList: true});
  setTimeout(() => { if (!done) { done = true; obs.disconnect(); res(-1); } }, timeout);
}); }"""


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def browser_latency(n, channels, *, repeats=40):
    """End-to-end ms (mouse event → DOM change of the other figure) in headless chromium."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("\n--browser: playwright is not installed; skipped")
        return
    import nbformat

    chromium = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
    voila = Path(sys.executable).with_name("voila")
    tmp = Path(tempfile.mkdtemp(prefix="bench_explorer_"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_NOTEBOOK.format(
        bench_dir=str(Path(__file__).resolve().parent), n=n, channels=channels))])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "bench.ipynb")
    port = _free_port()
    results = {}
    with open(tmp / "voila.log", "w") as log:
        proc = subprocess.Popen([str(voila), "bench.ipynb", f"--port={port}", "--no-browser"],
                                cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        try:
            _drive_browser(port, chromium, repeats, results)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbrowser end-to-end (headless chromium + Voila, {n}×{n}×{channels}, one overlay): "
          "mouse event → other figure redrawn")
    print(f"  {'update':<24}{'n':>4}{'p50 ms':>9}{'p95 ms':>9}{'missed':>8}")
    for kind, vals in results.items():
        ok = [v for v in vals if v >= 0]
        print(f"  {kind:<24}{len(vals):>4}{pct(ok, 50):>9.0f}{pct(ok, 95):>9.0f}{len(vals) - len(ok):>8}")


def _drive_browser(port, chromium, repeats, results):
    from playwright.sync_api import sync_playwright

    for _ in range(240):
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    with sync_playwright() as pw:
        kw = {"executable_path": chromium} if chromium else {}
        browser = pw.chromium.launch(args=["--no-sandbox"], **kw)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"http://localhost:{port}/", timeout=600_000)
        page.wait_for_selector(".xrdwidgets-explorer .js-plotly-plot", state="attached", timeout=600_000)
        time.sleep(3)
        page.get_by_text("explorer", exact=True).first.click()
        time.sleep(2)
        ex = page.query_selector_all(".xrdwidgets-explorer")[0]
        img, pat = (p.query_selector(".nsewdrag").bounding_box() for p in ex.query_selector_all(".js-plotly-plot"))
        rng = random.Random(0)

        def at(box, fx, fy):
            return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

        def timed(target, action, *args, timeout=8000):
            page.evaluate(_JS_WAIT, [target, timeout])
            action(*args)
            return page.evaluate("() => window.__p")

        page.mouse.move(*at(img, 0.5, 0.5))
        time.sleep(1)
        hovers = []
        for _ in range(repeats):
            hovers.append(timed(1, page.mouse.move, *at(img, rng.uniform(.05, .95), rng.uniform(.05, .95))))
            time.sleep(0.15)
        results["hover image → pattern"] = hovers
        for cb in ex.query_selector_all("input[type=checkbox]"):   # clicks only from here on
            if "hover" in cb.evaluate("e => e.parentElement.textContent") and cb.is_checked():
                cb.uncheck()
        for label, target, box in (("click image → pattern", 1, img), ("click pattern → image", 0, pat)):
            clicks = []
            for _ in range(repeats // 2):
                p = at(box, rng.uniform(.05, .95), rng.uniform(.05, .95) if target == 1 else 0.5)
                page.mouse.move(*p)
                time.sleep(0.2)
                clicks.append(timed(target, page.mouse.click, *p))
            results[label] = clicks
        sel = []
        for _ in range(repeats // 4):
            x0, y = at(pat, rng.uniform(.05, .6), 0.5)
            x1 = x0 + rng.uniform(.05, .3) * pat["width"]
            page.mouse.move(x0, y)
            page.mouse.down()
            page.mouse.move(x1, y, steps=4)
            sel.append(timed(0, page.mouse.up))
            time.sleep(1.0)
        results["box-select → image"] = sel
        browser.close()


# ---------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small case only")
    ap.add_argument("--browser", action="store_true", help="also measure in a headless browser")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--channels", type=int, default=2000)
    args = ap.parse_args()
    print(f"bench_explorer: numpy {np.__version__}, {os.cpu_count()} CPUs")

    small = xrdwidgets.demo(size="small")["volume"]
    res, tb, shown = measure_explorer(small, {"half": small * 0.5})
    print_case("small (demo)", small.shape, res, tb, shown)
    if args.quick:
        return
    vol = synthetic_volume(args.n, args.channels)
    other = synthetic_volume(args.n, args.channels, scale=0.9)
    res, tb, shown = measure_explorer(vol, {"SIRT": other})
    print_case("large", vol.shape, res, tb, shown)
    window_strategies(vol.values)
    del other
    binned = synthetic_volume(1024, 256)
    res, tb, shown = measure_explorer(binned, None, n_pixel=100, n_channel=30, n_window=30)
    print_case("binned", binned.shape, res, tb, shown)
    print(f"\npeak RSS {rss_gb():.1f} GB")
    del vol, binned
    if args.browser:
        browser_latency(args.n, args.channels)


if __name__ == "__main__":
    main()
