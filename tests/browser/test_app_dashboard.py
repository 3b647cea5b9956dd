"""The main app (``dashboards/app.ipynb``, ``App.demo()``) in a real browser.

Measures the time to interactive: from the page request to the App's first tab drawn — the
Explorer's map and pattern (kernel start, imports, the demo simulation and its FBP, widget
rendering) — with a fresh kernel (≤ 10 s) and with a pre-heated one (``--preheat_kernel``, ≤ 5 s).
"""
from __future__ import annotations


import time

import pytest

from browser_helpers import JOB_TIMEOUT_MS, RENDER_TIMEOUT_MS, REPO, open_dashboard, skip_reason, upload

APP_TABS = ("Data", "Corrections", "Reconstruct", "Explore")
#: The App's first tab is drawn: the Explorer's heatmap image is on the page.
DRAWN = ".xrdwidgets-app .xrdwidgets-explorer .heatmaplayer image"

pytestmark = pytest.mark.skipif(not (REPO / "xrdwidgets" / "widgets" / "app.py").is_file(),
                                reason="xrdwidgets/widgets/app.py is not written yet")


@pytest.fixture(scope="module")
def app_page(browser_context, voila_server):
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    tti = open_dashboard(pg, voila_server, "app.ipynb", ready_selector=DRAWN)
    pg.app_tti = tti
    pg.js_errors = errors
    yield pg
    pg.close()


def test_app_renders_with_its_tabs(app_page, artifacts):
    tti = app_page.app_tti
    print(f"\napp: time to interactive (page request -> Explorer drawn) {tti:.1f} s")
    for name in APP_TABS:
        assert app_page.get_by_role("tab", name=name, exact=True).is_visible(), name
    html = app_page.content()
    assert "App.demo" not in html and "Traceback" not in html
    app_page.screenshot(path=str(artifacts / "app_initial.png"), full_page=True)
    (artifacts / "app_tti.txt").write_text(f"{tti:.2f} s (page request -> Explorer drawn, fresh kernel)\n")
    # liveness only: the 10 s target is a performance figure, measured by
    # benchmarks/bench_server_load.py (a wall-clock assertion here fails on a loaded machine)
    assert tti <= 60.0, f"time to interactive {tti:.1f} s"


def test_bad_upload_in_the_app_gives_a_visible_error(app_page, artifacts):
    app_page.get_by_role("tab", name="Data", exact=True).click()
    app_page.get_by_role("tab", name="Upload", exact=True).click()
    upload(app_page, ".xrdwidgets-app .xrdw-upload", "broken.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    app_page.wait_for_function(
        "() => { const e = document.querySelector('.xrdwidgets-app .xrdw-data-panel .xrdw-error');"
        " return e && e.textContent.includes('broken.h5'); }", timeout=JOB_TIMEOUT_MS)
    text = app_page.inner_text(".xrdwidgets-app .xrdw-data-panel .xrdw-status")
    assert "Traceback" not in text and "/tmp" not in text
    app_page.screenshot(path=str(artifacts / "app_bad_upload.png"), full_page=True)


def test_app_keeps_working_after_the_error(app_page, artifacts):
    # the other tabs still respond and the demo data is still loaded
    app_page.get_by_role("tab", name="Explore", exact=True).click()
    app_page.locator(".xrdwidgets-app .js-plotly-plot:visible").first.wait_for(timeout=RENDER_TIMEOUT_MS)
    app_page.get_by_role("tab", name="Data", exact=True).click()
    app_page.get_by_role("tab", name="Simulate", exact=True).click()
    app_page.locator(".xrdwidgets-app .xrdw-simulate").click()
    app_page.wait_for_function(
        "() => { const e = document.querySelector('.xrdwidgets-app .xrdw-data-panel .xrdw-ok');"
        " return e && e.textContent.includes('simulation'); }", timeout=JOB_TIMEOUT_MS)
    app_page.screenshot(path=str(artifacts / "app_after_error.png"), full_page=True)
    assert not app_page.js_errors, app_page.js_errors


@pytest.fixture(scope="module")
def preheated_server():
    """Voila serving only the app notebook with a pool of one pre-heated kernel, once filled."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from xrdwidgets.serve import appserver
    from browser_helpers import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    server = appserver.launch(REPO / "dashboards" / "app.ipynb", port=0, preheat=True, pool_size=1,
                              log_file=ARTIFACTS / "voila_preheat.log")
    try:
        appserver.wait_ready(server, timeout=60)
        deadline = time.time() + 120
        while "is filled with" not in server.log_text():   # the pool's kernel has run the notebook
            if time.time() > deadline:
                pytest.fail("the pre-heated kernel pool was not filled within 120 s:\n" + server.log_text()[-2000:])
            time.sleep(0.5)
        time.sleep(2.0)  # let the pool's kernel go idle
        yield server
    finally:
        appserver.stop(server)


def test_app_time_to_interactive_with_a_preheated_kernel(browser_context, preheated_server, artifacts):
    pg = browser_context.new_page()
    try:
        t0 = time.perf_counter()
        pg.goto(preheated_server.url, wait_until="commit", timeout=RENDER_TIMEOUT_MS)
        pg.wait_for_selector(DRAWN, state="visible", timeout=RENDER_TIMEOUT_MS)
        tti = time.perf_counter() - t0
        print(f"\napp: time to interactive with a pre-heated kernel {tti:.1f} s")
        (artifacts / "app_tti_preheated.txt").write_text(f"{tti:.2f} s (page request -> Explorer drawn, "
                                                         "pre-heated kernel)\n")
        # liveness only (the 5 s target is a performance figure, not a unit-test assertion)
        assert tti <= 60.0, f"time to interactive with a pre-heated kernel {tti:.1f} s"
    finally:
        pg.close()
