"""The app as a scientist meets it (issue 20), in headless Chromium.

One server for the module, started as ``make demo`` does: ``xrdwidgets demo`` writes
``demo.h5`` into a folder, the app serves that folder (``--data-dir``) and opens ``demo.h5``
(``--open``). The tests run in file order on one page (one kernel), as a visitor would: the
written demo opened from the Data tab, downloads of a PNG figure and of a result file, the
centre-of-rotation gallery, a one-channel stack in Explore; every request the page made goes to
the server. Screenshots of every tab at 1280 px go to ``test-artifacts/ux_*.png``.
"""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from browser_helpers import ARTIFACTS, JOB_TIMEOUT_MS, RENDER_TIMEOUT_MS, REPO, skip_reason

APP = ".xrdwidgets-app"
TABS = ("Data", "Corrections", "Reconstruct", "Explore", "ROI image", "ROI pattern", "Peak fitting")
LONG_MS = 3 * JOB_TIMEOUT_MS   # liveness only: the machine may be heavily loaded


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """What `make demo-files` writes (tiny size), plus a one-channel stack with its FBP."""
    from xrdwidgets import cli, io as xio

    root = tmp_path_factory.mktemp("demo-out")
    assert cli.main(["demo", "--size", "tiny", "--out", str(root), "-q"]) == 0
    ds = xio.load(root / "demo.h5")
    one = ds[["sinogram", "fbp"]].isel(tth=slice(20, 21))
    xio.save(one, root / "one_channel.h5", producer="test")
    return root


@pytest.fixture(scope="module")
def ux_server(demo_folder):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from xrdwidgets.serve import appserver

    ARTIFACTS.mkdir(exist_ok=True)
    server = appserver.launch(REPO / "dashboards" / "app.ipynb", port=0, data_dir=demo_folder,
                              open_file="demo.h5", log_file=ARTIFACTS / "voila_ux.log")
    try:
        appserver.wait_ready(server, timeout=120)
        yield server
    finally:
        appserver.stop(server)


@pytest.fixture(scope="module")
def page(browser_context, ux_server):
    pg = browser_context.new_page()
    pg.set_viewport_size({"width": 1280, "height": 1100})
    pg.requests = []
    pg.on("request", lambda req: pg.requests.append(req.url))
    pg.console = []
    pg.on("console", lambda msg: pg.console.append((msg.type, msg.text)))
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    pg.goto(ux_server.url, wait_until="commit", timeout=RENDER_TIMEOUT_MS)
    pg.wait_for_selector(f"{APP} .xrdwidgets-explorer .heatmaplayer image", state="visible", timeout=LONG_MS)
    yield pg
    pg.close()


def _tab(pg, name):
    pg.get_by_role("tab", name=name, exact=True).first.click()


def _shot(pg, name):
    pg.wait_for_timeout(800)
    pg.screenshot(path=str(ARTIFACTS / f"ux_{name}.png"), full_page=True)


def test_opens_on_the_written_demo_file(page):
    # the page opened demo.h5 (24 × 30 × 60 here), not the built-in 40 × 48 × 100 demo
    title = page.locator(f"{APP} .xrdwidgets-explorer .js-plotly-plot .gtitle").first.text_content()
    assert "FBP (file)" in title
    _shot(page, "explore")
    _tab(page, "Data")
    status = page.locator(f"{APP} .xrdw-data-panel .xrdw-status").inner_text()
    assert "demo.h5" in status and "24 translation" in status


def test_demo_file_loaded_from_the_data_tab(page):
    _tab(page, "Data")
    page.locator(f"{APP} .xrdw-files select").select_option("demo.h5")
    page.locator(f"{APP} .xrdw-load").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('.xrdwidgets-app .xrdw-data-panel .xrdw-ok');"
        " return e && e.textContent.includes('loaded demo.h5') && e.textContent.includes('fbp'); }",
        timeout=LONG_MS)
    _shot(page, "data")


def test_png_download_has_axes(page):
    import matplotlib.image as mpimg

    _tab(page, "Explore")
    page.locator(f"{APP} .xrdw-dl-image").click()
    link = page.locator(f"{APP} .xrdwidgets-explorer a.xrdw-download-link")
    link.wait_for(timeout=LONG_MS)
    with page.expect_download(timeout=LONG_MS) as dl:
        link.click()
    path = dl.value.path()
    assert dl.value.suggested_filename.endswith(".png")
    png = mpimg.imread(str(path), format="png")
    assert png.shape[0] > 4 * 24 and png.shape[1] > 4 * 24          # a figure, not the 24×24 array
    rgb = png[..., :3]
    assert np.all(rgb > 0.99, axis=-1)[:, :15].mean() > 0.5          # white margin with the labels
    assert np.any(np.all(rgb[:, : png.shape[1] // 8] < 0.3, axis=-1))  # dark label text drawn there


def test_result_download_is_an_hdf5_file(page):
    page.locator(f"{APP} .xrdw-dl-result").click()
    link = page.locator(f"{APP} .xrdwidgets-explorer a.xrdw-download-link", has_text=".h5")
    link.wait_for(timeout=LONG_MS)
    with page.expect_download(timeout=LONG_MS) as dl:
        link.click()
    data = Path(dl.value.path()).read_bytes()
    assert data[:8] == b"\x89HDF\r\n\x1a\n"
    from xrdwidgets import io as xio

    tmp = ARTIFACTS / "ux_download.h5"
    tmp.write_bytes(data)
    back = xio.load(tmp)
    back = back if hasattr(back, "dims") and not hasattr(back, "data_vars") else back[list(back.data_vars)[0]]
    assert dict(back.sizes) == {"y": 24, "x": 24, "tth": 60}


def test_centre_gallery_choice_appears_in_the_geometry(page):
    _tab(page, "Corrections")
    page.locator(f"{APP} .xrdw-gallery-start").click()
    buttons = page.locator(f"{APP} .xrdw-gallery-choose")
    buttons.nth(6).wait_for(timeout=LONG_MS)
    assert buttons.count() == 7
    chosen = buttons.nth(5).inner_text().strip()
    buttons.nth(5).click()
    page.wait_for_function(
        "(want) => { const e = document.querySelector('.xrdwidgets-app .xrdw-centre-offset');"
        " return e && Math.abs(parseFloat(e.textContent) - parseFloat(want)) < 0.006; }",
        arg=chosen, timeout=LONG_MS)
    _shot(page, "corrections")


def test_other_tabs_render_for_screenshots(page):
    for name in ("Reconstruct", "ROI image", "ROI pattern", "Peak fitting"):
        _tab(page, name)
        page.locator(f"{APP} .js-plotly-plot:visible").first.wait_for(timeout=LONG_MS)
        _shot(page, name.lower().replace(" ", "_"))


def test_reconstruct_estimate_then_a_two_batch_run(page):
    """ETA before Start; the loss curve of two channel batches is two pieces; the preview says
    which channels it shows."""
    _tab(page, "Reconstruct")
    panel = f"{APP} .xrdw-recon-panel"
    page.locator(f"{panel} .xrdw-method select").select_option(label="TV (total variation, PDHG)")
    page.locator(f"{panel} .xrdw-param-n_iter input").fill("60")
    page.locator(f"{panel} .xrdw-batch input").fill("30")
    page.locator(f"{panel} .xrdw-batch input").press("Enter")
    page.locator(f"{panel} .xrdw-param-n_iter input").press("Enter")
    page.locator(f"{panel} .xrdw-estimate").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('.xrdwidgets-app .xrdw-estimate-label');"
        " return e && e.textContent.includes('about') && e.textContent.includes('120 steps, 2 batches'); }",
        timeout=LONG_MS)
    page.locator(f"{panel} .xrdw-start").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('.xrdwidgets-app .xrdw-recon-status');"
        " return e && e.textContent.includes('done'); }", timeout=LONG_MS)
    page.wait_for_function(
        "() => { const t = [...document.querySelectorAll('.xrdwidgets-app .xrdw-recon-panel .annotation-text')]"
        ".map(a => a.textContent); return t.some(s => s.includes('Σ 2θ') && s.includes('channels 30–59')); }",
        timeout=LONG_MS)
    _shot(page, "reconstruct_run")


def test_peak_fit_map_titled_in_words(page):
    _tab(page, "Peak fitting")
    selects = page.locator(f"{APP} .xrdw-peakfit-panel select")
    # the ROI window here is 5 channels: a Gaussian on a constant (4 parameters) fits in it
    selects.nth(0).select_option(label="gaussian")
    selects.nth(1).select_option(label="constant")
    page.wait_for_timeout(500)
    page.locator(f"{APP} .xrdw-fit-start").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('.xrdwidgets-app .xrdw-fit-status');"
        " const f = document.querySelector('.xrdwidgets-app .xrdw-fit-error');"
        " return e && e.textContent.includes('did not converge') || f && f.textContent.trim(); }", timeout=LONG_MS)
    err = page.locator(f"{APP} .xrdw-fit-error").inner_text().strip()
    _shot(page, "peak_fitting_result")
    assert not err, err
    page.wait_for_function(
        "() => [...document.querySelectorAll('.xrdwidgets-app .xrdw-peakfit-panel .annotation-text')]"
        ".some(a => a.textContent.includes('integrated intensity of peak 0'))", timeout=LONG_MS)
    options = [o.replace("\xa0", " ").strip() for o in selects.nth(2).locator("option").all_inner_texts()]
    assert "weighted-profile R factor Rwp (fraction)" in options and "rwp" not in options, options
    assert "FWHM (2θ) of peak 0" in options and not any("tth" in o for o in options), options
    _shot(page, "peak_fitting_result")


def test_one_channel_stack_explored_without_empty_figures(page):
    _tab(page, "Data")
    page.locator(f"{APP} .xrdw-files select").select_option("one_channel.h5")
    page.locator(f"{APP} .xrdw-load").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('.xrdwidgets-app .xrdw-data-panel .xrdw-ok');"
        " return e && e.textContent.includes('loaded one_channel.h5'); }", timeout=LONG_MS)
    _tab(page, "Explore")
    ex = f"{APP} .xrdwidgets-explorer"
    page.wait_for_function(
        "() => { const t = document.querySelectorAll('.xrdwidgets-app .xrdwidgets-explorer .gtitle');"
        " return t.length && t[0].textContent.includes('FBP (file)') && t[0].textContent.includes('channel 0')"
        " || (t.length && t[0].textContent.includes('(channel 0)')); }", timeout=LONG_MS)
    page.locator(f"{ex} .heatmaplayer image").first.wait_for(timeout=LONG_MS)
    # the pattern of one channel is a visible point, not an empty box
    page.locator(f"{ex} .scatterlayer .points path").first.wait_for(timeout=LONG_MS)
    label = page.locator(ex).inner_text()
    assert " 1 (channel" not in label
    _shot(page, "explore_one_channel")


#: Why the page still logs "Unsatisfied version" warnings (measured, see test below): Voila 0.5.13
#: serves JupyterLab 4.2.5 core packages (@jupyterlab/services 7.2.5, coreutils 6.2.5) as shared
#: singletons, while (a) its own @voila-dashboards/widgets-manager8 was built against 4.5.10 and
#: (b) jupyterlab_widgets 3.0.17 (required by ipywidgets 8.1.9) against 4.6.2. webpack warns and
#: uses the served 4.2.5 (strictVersion false): nothing fails. With ipywidgets 8.1.5 +
#: jupyterlab_widgets 3.0.13 (built against 4.2.4) the 9 warnings of (b) go, but Voila's own (a)
#: grow from 4 to 11; denying the jupyterlab-manager extension in Voila leaves no widget
#: manager ("No version of module @jupyter-widgets/base is registered"). Only a Voila release
#: whose widgets manager matches its core removes them.
UNSATISFIED_WHY = ("Voila 0.5.13 serves JupyterLab 4.2.5 core modules while its own widgets-manager8 "
                   "(^4.5.10) and jupyterlab_widgets 3.0.17 (^4.6.2) were built against newer ones")


def test_console_has_no_errors(page):
    errors = [t for kind, t in page.console if kind == "error"]
    assert not errors, errors[:5]
    # what the warnings are (the measurement behind UNSATISFIED_WHY): only core modules at the
    # versions Voila serves; nothing about our widgets' own packages
    unsatisfied = [t for kind, t in page.console if "Unsatisfied version" in t or "No satisfying version" in t]
    served = ("4.2.5", "7.2.5", "6.2.5")
    for t in unsatisfied:
        assert "@jupyterlab/" in t and any(v in t for v in served), t


@pytest.mark.xfail(strict=True, reason=UNSATISFIED_WHY)
def test_console_has_no_unsatisfied_version_warnings(page):
    unsatisfied = [t for kind, t in page.console if "Unsatisfied version" in t]
    assert not unsatisfied, f"{len(unsatisfied)} warnings, e.g. {unsatisfied[:2]}"


def test_no_request_left_the_server(page, ux_server):
    host = urlparse(ux_server.url).netloc
    outside = [u for u in page.requests
               if not u.startswith(("data:", "blob:", "about:")) and urlparse(u).netloc != host]
    assert not outside, outside
    assert len(page.requests) > 10
    assert not page.js_errors, page.js_errors
