"""Background jobs in the App, in a real browser (Voila + headless Chromium).

The issue's scenario: start an FBP job and an iterative job from the Reconstruct tab, see the
loss curve and the preview change while the iterative one runs, cancel it, and see the result of
the other in the Explorer. Measured on the way (and written to ``test-artifacts/jobs.txt``):

* the rate of loss-curve / preview updates reaching the page while the job runs (1–10 Hz);
* a kernel round trip while the job runs: a slider step → the label the kernel recomputes
  (≤ 0.5 s), and the same for a dropdown that rebuilds the parameter form;
* Cancel: click → "cancelled" shown in the page (≤ 5 s: the job stops within one iteration and
  the page shows it; measured 0.16–0.66 s on this loaded 2-core machine).
"""
from __future__ import annotations

import time

import pytest

from browser_helpers import JOB_TIMEOUT_MS, REPO, RENDER_TIMEOUT_MS, open_dashboard

pytestmark = pytest.mark.skipif(not (REPO / "xrdwidgets" / "widgets" / "recon_panel.py").is_file(),
                                reason="xrdwidgets/widgets/recon_panel.py is not written yet")

PANEL = ".xrdwidgets-app .xrdw-recon-panel"
TV_LABEL = "TV (total variation, PDHG)"

#: Count changes of the loss curve's path and of the preview image for ``ms`` milliseconds.
_JS_COUNT_UPDATES = """async (ms) => {
  const root = document.querySelector('%s');
  const fig = root.querySelector('.js-plotly-plot');
  const seen = {loss: [], preview: []};
  const lossD = () => { const p = fig.querySelector('.scatterlayer .trace path.js-line');
                        return p ? p.getAttribute('d') : null; };
  const prevHref = () => { const i = fig.querySelector('.heatmaplayer image');
                           return i ? (i.getAttribute('href') || i.getAttribute('xlink:href')) : null; };
  let lastL = lossD(), lastP = prevHref();
  const t0 = performance.now();
  const obs = new MutationObserver(() => {
    const l = lossD(), p = prevHref(), t = performance.now() - t0;
    if (l !== lastL) { seen.loss.push(t); lastL = l; }
    if (p !== lastP) { seen.preview.push(t); lastP = p; }
  });
  obs.observe(fig, {subtree: true, attributes: true, childList: true});
  await new Promise(r => setTimeout(r, ms));
  obs.disconnect();
  return seen;
}""" % PANEL

#: Milliseconds from now until ``selector``'s text contains ``needle`` (-1 after ``timeout`` ms).
_JS_WAIT_TEXT = """([selector, needle, timeout]) => new Promise(res => {
  const t0 = performance.now();
  const tick = () => {
    const e = document.querySelector(selector);
    if (e && e.textContent.includes(needle)) return res(performance.now() - t0);
    if (performance.now() - t0 > timeout) return res(-1);
    requestAnimationFrame(tick);
  };
  tick();
})"""


def _text(page, selector):
    return page.inner_text(selector)


def _timed_text(page, selector, needle, action, timeout_ms=10_000):
    """Run ``action()`` and return the ms until ``selector`` shows ``needle`` (polled per frame)."""
    handle = page.evaluate_handle(
        "([s, n, t]) => { window.__wait = (%s)([s, n, t]); return true; }" % _JS_WAIT_TEXT,
        [selector, needle, timeout_ms])
    handle.dispose()
    action()
    return page.evaluate("() => window.__wait")


@pytest.fixture(scope="module")
def app(browser_context, voila_server):
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    open_dashboard(pg, voila_server, "app.ipynb", ready_selector=".xrdwidgets-app")
    pg.js_errors = errors
    pg.measured = {}
    yield pg
    pg.close()


def test_fbp_job_result_opens_in_the_explorer(app, artifacts):
    app.get_by_role("tab", name="Reconstruct", exact=True).click()
    app.locator(f"{PANEL} .js-plotly-plot").first.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    app.locator(f"{PANEL} .xrdw-start").click()
    # a finished job becomes the current result: the App stays where the user is (issue 20: no
    # tab switch the user did not ask for); opening Explore shows it, titled with the job's name
    assert app.get_by_role("tab", name="Reconstruct", exact=True).get_attribute("aria-selected") == "true"
    app.get_by_role("tab", name="Explore", exact=True).click()
    app.wait_for_function(
        "() => [...document.querySelectorAll('.xrdwidgets-app .xrdwidgets-explorer .gtitle')]"
        ".some(t => t.textContent.startsWith('fbp #1'))", timeout=JOB_TIMEOUT_MS)
    # the demo's own FBP stays available as an overlay next to the new result
    legend = app.inner_text(".xrdwidgets-app .xrdwidgets-explorer")
    assert "FBP" in legend or "truth" in legend
    app.screenshot(path=str(artifacts / "jobs_fbp_result.png"), full_page=True)


def test_iterative_job_streams_then_cancels_promptly(app, artifacts):
    app.get_by_role("tab", name="Reconstruct", exact=True).click()
    # SIRT converges slowly: its preview keeps changing while the test watches
    app.locator(f"{PANEL} .xrdw-method select").select_option(label="SIRT")
    n_iter = app.locator(f"{PANEL} .xrdw-param-n_iter input")
    n_iter.wait_for(state="visible", timeout=10_000)
    n_iter.fill("100000")
    n_iter.press("Enter")
    time.sleep(0.5)  # the value reaches the kernel
    app.locator(f"{PANEL} .xrdw-start").click()
    app.wait_for_function(
        "() => document.querySelector('%s .xrdw-recon-status').textContent.includes('running')" % PANEL,
        timeout=JOB_TIMEOUT_MS)
    time.sleep(1.0)

    # the loss curve and the preview stream while the job runs
    seen = app.evaluate(_JS_COUNT_UPDATES, 3000)
    loss_hz, preview_hz = len(seen["loss"]) / 3.0, len(seen["preview"]) / 3.0
    app.measured.update(loss_hz=loss_hz, preview_hz=preview_hz)
    assert 1.0 <= loss_hz <= 12.0, seen["loss"]
    assert preview_hz >= 0.3, seen["preview"]
    app.screenshot(path=str(artifacts / "jobs_running.png"), full_page=True)

    # kernel round trips stay fast while the job runs: a slider step and a dropdown change
    label = f"{PANEL} .xrdw-channel-label"
    before = _text(app, label)
    handle = app.locator(f"{PANEL} .xrdw-channels .noUi-handle").last
    slider_ms = _timed_text(app, label, "99 channels", lambda: (handle.focus(), handle.press("ArrowLeft")))
    assert slider_ms >= 0, f"the channel label did not follow the slider (was {before!r})"
    t0 = time.perf_counter()
    app.locator(f"{PANEL} .xrdw-method select").select_option(label=TV_LABEL)
    app.locator(f"{PANEL} .xrdw-param-lam_rel").wait_for(state="attached", timeout=10_000)
    dropdown_ms = (time.perf_counter() - t0) * 1000
    app.measured.update(slider_ms=slider_ms, dropdown_ms=dropdown_ms)
    assert slider_ms <= 500, slider_ms
    assert dropdown_ms <= 500, dropdown_ms

    # Cancel: click → "cancelled" in the page
    cancel_ms = _timed_text(app, f"{PANEL} .xrdw-recon-status", "cancelled",
                            lambda: app.locator(f"{PANEL} .xrdw-cancel").click())
    app.measured["cancel_ms"] = cancel_ms
    assert 0 <= cancel_ms <= 5000, cancel_ms   # takes effect within one iteration (issue: ≤ 5 s)
    app.screenshot(path=str(artifacts / "jobs_cancelled.png"), full_page=True)
    jobs_text = app.inner_text(f"{PANEL} .widget-select select").replace("\xa0", " ")
    assert "sirt #2: cancelled" in jobs_text and "fbp #1: done" in jobs_text, jobs_text

    # the cancelled job gave no result: the Explorer still shows the FBP job's
    app.get_by_role("tab", name="Explore", exact=True).click()
    titles = app.eval_on_selector_all(".xrdwidgets-app .xrdwidgets-explorer .gtitle",
                                      "ts => ts.map(t => t.textContent)")
    assert any(t.startswith("fbp #1") for t in titles), titles
    assert not any(t.startswith("sirt #2") for t in titles), titles
    assert not app.js_errors, app.js_errors
    m = app.measured
    (artifacts / "jobs.txt").write_text(
        f"during a running SIRT job: loss curve {m['loss_hz']:.1f} updates/s, preview {m['preview_hz']:.1f}/s; "
        f"slider step -> kernel label {m['slider_ms']:.0f} ms; method dropdown -> new form "
        f"{m['dropdown_ms']:.0f} ms; Cancel click -> 'cancelled' shown {m['cancel_ms']:.0f} ms\n")
    print("\n" + (artifacts / "jobs.txt").read_text())


def test_analysis_tabs_roi_and_peak_fit_in_the_browser(app, artifacts):
    """ROI image → ROI pattern (suggested peaks) → Peak fitting as a job; hovering the map shows
    the pixel's data, fit and residual."""
    app.get_by_role("tab", name="ROI image", exact=True).click()
    app.locator(".xrdwidgets-app .xrdw-roi-image-panel .heatmaplayer image").wait_for(
        state="visible", timeout=RENDER_TIMEOUT_MS)
    app.get_by_role("tab", name="ROI pattern", exact=True).click()
    pattern_panel = ".xrdwidgets-app .xrdw-roi-pattern-panel"
    app.locator(f"{pattern_panel} .scatterlayer .trace path.js-line").first.wait_for(
        state="attached", timeout=RENDER_TIMEOUT_MS)
    assert "suggested peaks" in app.inner_text(pattern_panel)
    app.screenshot(path=str(artifacts / "analysis_roi_pattern.png"), full_page=True)

    app.get_by_role("tab", name="Peak fitting", exact=True).click()
    fit = ".xrdwidgets-app .xrdw-peakfit-panel"
    app.locator(f"{fit} .xrdw-fit-start").click()
    app.wait_for_function("() => /done/.test(document.querySelector('%s .xrdw-fit-status').textContent)" % fit,
                          timeout=JOB_TIMEOUT_MS)
    assert not app.inner_text(f"{fit} .xrdw-fit-error").strip()
    drag = app.locator(f"{fit} .nsewdrag").first
    box = drag.bounding_box()
    lines = f"{fit} .scatterlayer .trace path.js-line"
    before = app.locator(lines).count()
    app.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    app.wait_for_function("(n) => document.querySelectorAll('%s').length >= Math.max(n, 2)" % lines,
                          arg=before, timeout=10_000)
    app.screenshot(path=str(artifacts / "analysis_peak_fit.png"), full_page=True)
    assert not app.js_errors, app.js_errors
