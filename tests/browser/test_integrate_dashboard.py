"""The Integrate tab of the app in a real browser: raw file → preview → job → stack in Data.

The raw scan (a simulated Eiger-like master file with its data files, PONI and mask) is written
into the server's data folder before the page opens; the visitor picks it, previews a frame (the
rings drawn over it and its pattern), runs the integration as a job, and the App shows the Data
tab with the integrated stack loaded. Screenshots: ``test-artifacts/integrate_*.png``.
"""
from __future__ import annotations

import pytest

from browser_helpers import JOB_TIMEOUT_MS, REPO, open_dashboard

pytest.importorskip("pyFAI")
pytestmark = pytest.mark.skipif(not (REPO / "xrdwidgets" / "widgets" / "integrate_panel.py").is_file(),
                                reason="xrdwidgets/widgets/integrate_panel.py is not written yet")

PANEL = ".xrdwidgets-app .xrdw-integrate-panel"
DRAWN = ".xrdwidgets-app .xrdwidgets-explorer .heatmaplayer image"


@pytest.fixture(scope="module")
def raw_scan(data_folder):
    from xrdwidgets.sim.frames import simulate_raw_scan

    return simulate_raw_scan(data_folder / "raw", n_translations=6, n_angles=5, frames_per_file=10)


@pytest.fixture(scope="module")
def integrate_page(browser_context, voila_server, raw_scan):
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    open_dashboard(pg, voila_server, "app.ipynb", ready_selector=DRAWN)
    pg.js_errors = errors
    yield pg
    pg.close()


def _wait_text(pg, selector, text):
    pg.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel); return e && e.textContent.includes(text); }",
        arg=[selector, text], timeout=JOB_TIMEOUT_MS)
    return pg.inner_text(selector)


def test_pick_file_and_preview_a_frame(integrate_page, artifacts):
    pg = integrate_page
    pg.get_by_role("tab", name="Integrate", exact=True).click()
    pg.wait_for_selector(PANEL, state="visible", timeout=JOB_TIMEOUT_MS)
    pg.locator(f"{PANEL} .xrdw-raw select").select_option("raw/scan_master.h5")
    pg.locator(f"{PANEL} .xrdw-poni select").select_option("raw/scan.poni")
    pg.locator(f"{PANEL} .xrdw-preview").click()
    text = _wait_text(pg, f"{PANEL} .xrdw-ok", "rings at")
    assert "frame 0 of 30 (64×64 px)" in text
    pg.wait_for_selector(f"{PANEL} .heatmaplayer image", state="attached", timeout=JOB_TIMEOUT_MS)
    assert pg.locator(f"{PANEL} .scatterlayer .trace").count() >= 2
    pg.screenshot(path=str(artifacts / "integrate_preview.png"), full_page=True)


def test_integrate_job_opens_the_stack_in_data(integrate_page, artifacts):
    pg = integrate_page
    pg.locator(f"{PANEL} .xrdw-integrate").click()
    _wait_text(pg, ".xrdwidgets-app", "loaded integrated scan_master.h5")
    pg.wait_for_selector(".xrdwidgets-app .xrdw-data-panel", state="visible", timeout=JOB_TIMEOUT_MS)
    assert pg.get_by_role("tab", name="Data", exact=True).get_attribute("aria-selected") == "true"
    status = pg.inner_text(".xrdwidgets-app")
    assert "translation=6" in status and "angle=5" in status and "tth=500" in status
    pg.screenshot(path=str(artifacts / "integrate_done_data_tab.png"), full_page=True)
    assert not pg.js_errors
