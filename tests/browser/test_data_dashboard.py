"""The data dashboard (``dashboards/data.ipynb``) in a real browser: render, simulate, load, upload.

The tests share one page (one kernel) and run in file order: each step starts from what the
previous one left, as a visitor would.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest

from browser_helpers import CULL_IDLE_S, JOB_TIMEOUT_MS, RENDER_TIMEOUT_MS, open_dashboard, upload


@pytest.fixture(scope="module")
def data_page(browser_context, voila_server):
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    took = open_dashboard(pg, voila_server, "data.ipynb", ready_selector=".xrdw-data-panel")
    pg.wait_for_selector(".js-plotly-plot", state="visible", timeout=RENDER_TIMEOUT_MS)
    print(f"\ndata dashboard: first render in {took:.1f} s")
    pg.js_errors = errors
    yield pg
    pg.close()


@pytest.fixture
def own_page(browser_context, voila_server):
    """A page (and kernel) of its own, for a test that may break its connection."""
    pg = browser_context.new_page()
    open_dashboard(pg, voila_server, "data.ipynb", ready_selector=".xrdw-data-panel")
    yield pg
    pg.close()


def _status(pg) -> str:
    return pg.inner_text(".xrdw-data-panel .xrdw-status")


def _wait_status(pg, kind: str, contains: str = ""):
    """Wait for a status message of ``kind`` (ok / error) containing ``contains``."""
    pg.wait_for_function(
        "([kind, text]) => { const e = document.querySelector('.xrdw-data-panel .xrdw-' + kind);"
        " return e && e.textContent.includes(text); }",
        arg=[kind, contains], timeout=JOB_TIMEOUT_MS)
    return _status(pg)


def _plot_title(pg) -> str:
    return pg.locator(".js-plotly-plot .gtitle").text_content()


def test_renders_without_sources_and_with_a_figure(data_page, artifacts):
    html = data_page.content()
    assert "import ipywidgets" not in html and "DataPanel(state)" not in html  # sources stripped
    assert "no data yet" in _plot_title(data_page)
    for tab in ("Folder", "Upload", "Simulate"):
        assert data_page.get_by_role("tab", name=tab).is_visible()
    data_page.screenshot(path=str(artifacts / "data_dashboard_initial.png"), full_page=True)


def test_simulate_button_updates_the_figure(data_page, artifacts):
    data_page.get_by_role("tab", name="Simulate").click()
    t0 = time.perf_counter()
    data_page.locator(".xrdw-data-panel .xrdw-simulate").click()
    text = _wait_status(data_page, "ok", "simulation")
    print(f"simulate (48 px, 200 channels): {time.perf_counter() - t0:.1f} s from the click")
    assert "48 translation" in text
    data_page.wait_for_function(
        "() => !document.querySelector('.js-plotly-plot .gtitle').textContent.includes('no data')",
        timeout=JOB_TIMEOUT_MS)
    assert "48 translation" in _plot_title(data_page)
    data_page.screenshot(path=str(artifacts / "data_dashboard_simulated.png"), full_page=True)


def test_folder_lists_only_files_inside_the_data_folder(data_page):
    data_page.get_by_role("tab", name="Folder").click()
    options = data_page.locator(".xrdw-data-panel .xrdw-files select").locator("option").all_inner_texts()
    assert "tiny_stack.h5" in options and "broken.h5" in options
    assert "escape.npy" not in options     # a symlink to a file outside the folder is not listed


def test_broken_file_gives_a_visible_error_then_a_good_file_loads(data_page, artifacts):
    files = data_page.locator(".xrdw-data-panel .xrdw-files select")
    files.select_option("broken.h5")
    data_page.locator(".xrdw-data-panel .xrdw-load").click()
    text = _wait_status(data_page, "error", "broken.h5")
    assert "Traceback" not in text and "/tmp" not in text     # one line, no server paths
    assert data_page.locator(".xrdw-data-panel [role=alert]").is_visible()
    data_page.screenshot(path=str(artifacts / "data_dashboard_broken_file.png"), full_page=True)
    files.select_option("tiny_stack.h5")
    data_page.locator(".xrdw-data-panel .xrdw-load").click()
    text = _wait_status(data_page, "ok", "tiny_stack.h5")
    assert "24 translation" in text
    data_page.wait_for_function(
        "() => document.querySelector('.js-plotly-plot .gtitle').textContent.includes('24 translation')",
        timeout=JOB_TIMEOUT_MS)


def _upload(pg, name: str, content: bytes):
    upload(pg, ".xrdw-data-panel .xrdw-upload", name, content)


def test_bad_upload_shows_an_error_and_the_page_keeps_working(data_page, artifacts):
    data_page.get_by_role("tab", name="Upload").click()
    _upload(data_page, "not_really.h5", b"just some text, not HDF5 at all\n" * 10)
    text = _wait_status(data_page, "error", "not_really.h5")
    assert "not a valid HDF5 file" in text and "Traceback" not in text
    data_page.screenshot(path=str(artifacts / "data_dashboard_bad_upload.png"), full_page=True)
    # the kernel connection survived: a good upload loads
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).random((16, 20, 8)).astype(np.float32))
    _upload(data_page, "good.npy", buf.getvalue())
    text = _wait_status(data_page, "ok", "good.npy")
    assert "16 translation × 20 angle × 8 channel" in text
    assert not data_page.js_errors, data_page.js_errors


def test_upload_over_the_limit_is_refused_in_the_panel(data_page):
    # the test server allows 5 MB uploads (the websocket limit is 2 × 5 + 16 MB)
    _upload(data_page, "big.npy", b"\x93NUMPY" + b"\x00" * (6 * 2**20))
    text = _wait_status(data_page, "error", "big.npy")
    assert "larger than the upload limit of 5 MB" in text


def test_upload_over_the_websocket_limit_is_refused_in_the_browser(own_page, artifacts):
    """A file larger than the server's websocket limit (2 × 5 + 16 MB here) would drop the kernel
    connection if it were sent. The page refuses it before reading it (UploadGuard): a visible
    error, the connection stays up, and the next upload and a simulation work at once."""
    own_page.get_by_role("tab", name="Upload").click()
    _upload(own_page, "huge.npy", b"\x93NUMPY" + b"\x00" * (30 * 2**20))
    text = _wait_status(own_page, "error", "huge.npy")
    assert "larger than the upload limit of 5 MB" in text and "nothing was sent" in text, text
    own_page.screenshot(path=str(artifacts / "data_dashboard_huge_upload.png"), full_page=True)
    _upload(own_page, "after_huge.h5", b"no")
    assert "not a valid HDF5 file" in _wait_status(own_page, "error", "after_huge.h5")
    own_page.get_by_role("tab", name="Simulate").click()
    own_page.locator(".xrdw-data-panel .xrdw-simulate").click()
    assert "simulation" in _wait_status(own_page, "ok", "simulation")


def test_an_idle_open_page_is_not_culled(data_page):
    """Idle kernels are culled only when no page is connected: an open page outlives the timeout."""
    time.sleep(CULL_IDLE_S + 2)
    data_page.get_by_role("tab", name="Simulate").click()
    data_page.locator(".xrdw-data-panel .xrdw-simulate").click()
    assert "simulation" in _wait_status(data_page, "ok", "simulation")
