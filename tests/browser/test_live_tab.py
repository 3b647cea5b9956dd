"""The Live tab in a real browser: a simulated detector writes a scan while the page follows it.

A raw scan (32×32-pixel frames, 6 translations × 8 angles) is simulated beforehand; during the
test another process writes it frame by frame (SWMR HDF5, 8 frames/s) into the server's data
folder while the visitor follows it in the Live tab. The page must show the frame count grow
and FBP images of part of the angles (a missing wedge stated) before the writer finishes, then
"scan complete" and the stack loaded in the app. Screenshots: ``test-artifacts/live_*.png``.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from browser_helpers import JOB_TIMEOUT_MS, REPO, open_dashboard

pytest.importorskip("pyFAI")
pytestmark = pytest.mark.skipif(not (REPO / "xrdwidgets" / "widgets" / "live_panel.py").is_file(),
                                reason="xrdwidgets/widgets/live_panel.py is not written yet")

PANEL = ".xrdwidgets-app .xrdw-live-panel"
DRAWN = ".xrdwidgets-app .xrdwidgets-explorer .heatmaplayer image"
N_T, N_A = 6, 8


@pytest.fixture(scope="module")
def live_files(data_folder, tmp_path_factory):
    from xrdwidgets.integrate import open_frames
    from xrdwidgets.sim.frames import simulate_raw_scan

    work = tmp_path_factory.mktemp("live_sim")
    scan = simulate_raw_scan(work, n_translations=N_T, n_angles=N_A, shape=(32, 32), order="zigzag",
                             n_spot_frames=0, frames_per_file=48)
    with open_frames(scan.master) as src:
        np.save(work / "frames.npy", src.read(0, src.n_frames))
        np.save(work / "mask.npy", src.pixel_mask)
    (data_folder / "live").mkdir(exist_ok=True)
    shutil.copy(scan.poni, data_folder / "live" / "scan.poni")
    return work, data_folder / "live" / "scan.h5"


def _set(pg, cls, value):
    box = pg.locator(f"{PANEL} .{cls} input")
    box.fill(str(value))
    box.press("Enter")


def test_live_tab_updates_during_acquisition(browser_context, voila_server, live_files, artifacts):
    work, out = live_files
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    writer = None
    try:
        open_dashboard(pg, voila_server, "app.ipynb", ready_selector=DRAWN)
        pg.get_by_role("tab", name="Live", exact=True).click()
        pg.wait_for_selector(PANEL, state="visible", timeout=JOB_TIMEOUT_MS)
        _set(pg, "xrdw-live-source", "live/scan.h5")
        pg.locator(f"{PANEL} .xrdw-live-poni select").select_option("live/scan.poni")
        _set(pg, "xrdw-live-nt", N_T)
        _set(pg, "xrdw-live-na", N_A)
        pg.locator(f"{PANEL} .xrdw-live-order select").select_option("zigzag")
        _set(pg, "xrdw-live-bins", 120)
        pg.locator(f"{PANEL} .xrdw-live-start").click()
        pg.wait_for_function("s => document.querySelector(s)?.textContent.includes('waiting for frames')",
                             arg=f"{PANEL} .xrdw-live-status", timeout=JOB_TIMEOUT_MS)
        from xrdwidgets.live import writer as _w

        writer = subprocess.Popen([sys.executable, _w.__file__, str(work / "frames.npy"), str(out), "--rate", "8",
                                   "--mask", str(work / "mask.npy"), "--done"])
        # images of part of the angles while the writer is still writing
        pg.wait_for_function(
            "s => /FBP of [1-7]\\/8 angles/.test(document.querySelector(s)?.textContent || '')",
            arg=PANEL, timeout=JOB_TIMEOUT_MS)
        assert writer.poll() is None, "the writer finished before any partial image was shown"
        status = pg.inner_text(f"{PANEL} .xrdw-live-status")
        frames = int(re.search(r"(\d+)/48 frames", status).group(1))
        assert 0 < frames < 48
        assert "missing wedge" in pg.inner_text(PANEL)
        assert pg.locator(f"{PANEL} .heatmaplayer image").count() >= 3   # frame, sinogram, images
        pg.screenshot(path=str(artifacts / "live_during_scan.png"), full_page=True)
        # the frame count keeps growing
        pg.wait_for_function(
            "([s, n]) => { const m = (document.querySelector(s)?.textContent || '').match(/(\\d+)\\/48 frames/);"
            " return m && +m[1] > n; }", arg=[f"{PANEL} .xrdw-live-status", frames], timeout=JOB_TIMEOUT_MS)
        pg.wait_for_function("s => document.querySelector(s)?.textContent.includes('scan complete')",
                             arg=f"{PANEL} .xrdw-live-status", timeout=JOB_TIMEOUT_MS)
        assert writer.wait(timeout=30) == 0
        # the stack is loaded in the app and its FBP opens in Explore
        pg.wait_for_function("() => document.querySelector('.xrdwidgets-app').textContent.includes('loaded live scan.h5')",
                             timeout=JOB_TIMEOUT_MS)
        # no tab switch the visitor did not ask for; "Explore now" opens the FBP in Explore
        assert pg.get_by_role("tab", name="Live", exact=True).get_attribute("aria-selected") == "true"
        pg.locator(f"{PANEL} .xrdw-live-explore").click()
        pg.wait_for_function("() => document.querySelector('[role=tab][aria-selected=true]')?.textContent"
                             ".includes('Explore')", timeout=JOB_TIMEOUT_MS)
        text = pg.inner_text(".xrdwidgets-app")
        assert "translation=6" in text and "angle=8" in text and "tth=120" in text
        pg.screenshot(path=str(artifacts / "live_done_explore.png"), full_page=True)
        pg.get_by_role("tab", name="Live", exact=True).click()
        time.sleep(0.5)
        pg.screenshot(path=str(artifacts / "live_done_tab.png"), full_page=True)
        assert not errors
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        pg.close()
