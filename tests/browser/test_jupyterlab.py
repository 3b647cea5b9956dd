"""Every figure renders inside ``Tab``, ``Accordion`` and ``HBox``, in JupyterLab 4 and in Voila.

plotly ``FigureWidget`` views created while hidden (a non-selected tab, a closed accordion) or
squeezed by a flex ``HBox`` are a known source of blank, zero-width or 700×450-overflowing
figures. The fixture notebook ``notebooks/containers.ipynb`` puts xrdwidgets figures in each of
those places (an Explorer in the first and in a hidden second tab of a ``Tab``, in a closed
``Accordion``, in an ``HBox`` next to a side panel; the Corrections and Reconstruct panels in a
``Tab``; the whole ``App``). A temporary copy is run in a real JupyterLab (all cells, through
``notebook:run-all-cells``) and rendered by Voila; after each container is shown (tab selected,
accordion opened, element scrolled into view), every visible plotly figure must:

* have a ``.js-plotly-plot`` whose box has the width/height of its plotly layout (non-zero, not
  plotly's 700×450 default of a figure that measured a zero-size container);
* fit inside the box that holds it and inside the container;
* be drawn: the heatmap's ``<image>`` exists, is non-empty and shows many colours (a pixel
  check on a screenshot), line traces have a path, and the title is the current one (the
  figure shows the state of the kernel, not its construction state).

In JupyterLab and in Voila a click on the Explorer's image must change the pattern (the ``d``
attribute of the line path, and its title) to the clicked pixel, with hover linkage off (and
hovering must then change nothing); with hover linkage on, hovering must. Every box-select
(drag) on the pattern must change the image to the new channel window.

Screenshots: ``test-artifacts/lab_*.png`` and ``voila_containers_*.png``.
"""
from __future__ import annotations

import io
import shutil
import time

import pytest
from browser_helpers import ARTIFACTS, RENDER_TIMEOUT_MS, REPO, skip_reason
from lab_helpers import MEASURE_JS, skip_reason_lab, start_lab, stop_lab

NOTEBOOKS = REPO / "tests" / "browser" / "notebooks"
NB = "containers.ipynb"
#: Running all the cells (kernel start, torch imports, demo data, two FBPs, widget rendering).
RUN_TIMEOUT_S = 150
#: A figure to appear after a tab/accordion click (a kernel round trip for lazily built panels).
SHOW_TIMEOUT_S = 30
#: A click / hover to show up in the pattern figure (kernel round trip + plotly redraw).
LINK_TIMEOUT_S = 20
VIEWPORT = {"width": 1600, "height": 1200}

#: Sizes of the figures (see xrdwidgets.widgets.plotting and the panels).
IMAGE, PATTERN = (470, 430), (600, 430)
CORRECTIONS, RECON = (660, 340), (740, 300)


def _skip(*, lab: bool):
    reason = skip_reason() or (skip_reason_lab() if lab else None)
    if reason:
        pytest.skip(reason)


def _nb_copy(tmp_path_factory, name: str):
    """A private copy of the fixture notebook (each server gets its own: JupyterLab may save)."""
    folder = tmp_path_factory.mktemp(name)
    shutil.copy(NOTEBOOKS / NB, folder / NB)
    return folder


def _new_page(browser_context):
    pg = browser_context.new_page()
    pg.set_viewport_size(VIEWPORT)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    return pg


# ============================================================================ measurements
def _figures(page, root: str) -> list[dict]:
    """Visible plotly figures under ``root`` (see ``lab_helpers.MEASURE_JS``)."""
    recs = page.evaluate(MEASURE_JS, root) or []
    return [r for r in recs if r["visible"] and r["plot"][2] > 0]


def _drawn(rec: dict) -> bool:
    hm_ok = all(h["box"][2] > 0 and h["box"][3] > 0 and h["href"] > 100 for h in rec["heatmaps"])
    return bool(rec["svg"]) and rec["svg"][2] > 0 and hm_ok and bool(rec["heatmaps"] or rec["lines"])


def _wait_figures(page, root: str, n: int, timeout: float = SHOW_TIMEOUT_S) -> list[dict]:
    """Poll until ``n`` visible figures under ``root`` are drawn; returns the last measurement."""
    page.locator(root).first.scroll_into_view_if_needed()
    end = time.time() + timeout
    recs: list[dict] = []
    while time.time() < end:
        recs = _figures(page, root)
        if len(recs) >= n and all(_drawn(r) for r in recs):
            page.wait_for_timeout(300)  # let plotly finish its last relayout
            return _figures(page, root)
        page.wait_for_timeout(250)
    return recs


def _inside(inner, outer, tol=1.5) -> bool:
    return (inner[0] >= outer[0] - tol and inner[1] >= outer[1] - tol
            and inner[0] + inner[2] <= outer[0] + outer[2] + tol
            and inner[1] + inner[3] <= outer[1] + outer[3] + tol)


def _colours(page, bbox) -> int | None:
    """Distinct colours in a screenshot of ``bbox`` (x, y, w, h) of the page (None without PIL)."""
    try:
        from PIL import Image
    except ImportError:
        return None

    x, y, wd, ht = bbox
    png = page.screenshot(clip={"x": x + 2, "y": y + 2, "width": max(wd - 4, 1), "height": max(ht - 4, 1)})
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return len(img.getcolors(maxcolors=1 << 20) or [])


def check_figures(page, root: str, sizes: list[tuple], *, what: str, titles=(), min_colours: int = 8):
    """Assert that the visible figures under ``root`` have ``sizes`` (in DOM order), fit in
    their holders and in ``root``, and are drawn (heatmaps with many colours, lines)."""
    recs = _wait_figures(page, root, len(sizes))
    assert len(recs) == len(sizes), f"{what}: expected {len(sizes)} visible figures, found {len(recs)}: {recs}"
    for i, (rec, size) in enumerate(zip(recs, sizes)):
        tag = f"{what}, figure {i}"
        pw, ph = rec["plot"][2], rec["plot"][3]
        assert pw > 0 and ph > 0, f"{tag}: collapsed to {pw}×{ph}"
        assert list(rec["layout"]) == list(size), f"{tag}: plotly layout {rec['layout']}, expected {size}"
        svg = rec["svg"]
        assert svg, f"{tag}: no svg"
        sw, sh = svg[2], svg[3]
        assert (round(sw), round(sh)) != (700, 450), f"{tag}: plotly's 700×450 default size"
        assert abs(sw - size[0]) <= 1 and abs(sh - size[1]) <= 1, f"{tag}: drawn {sw}×{sh}, expected {size}"
        # the figure's element is not squeezed below its drawing (a flex container may stretch it)
        assert pw >= sw - 1 and ph >= sh - 1, f"{tag}: element {pw}×{ph} smaller than its drawing {sw}×{sh}"
        assert _inside(svg, rec["holder"]), f"{tag}: figure {svg} sticks out of its box {rec['holder']}"
        assert _inside(svg, rec["top"]), f"{tag}: figure {svg} sticks out of the container {rec['top']}"
        for h in rec["heatmaps"]:
            assert h["box"][2] > 10 and h["box"][3] > 10, f"{tag}: heatmap image {h['box']}"
            assert h["href"] > 100, f"{tag}: heatmap image has no data"
    for rec, title in zip(recs, titles):
        if title is not None:
            assert title in rec["title"], f"{what}: title {rec['title']!r}, expected {title!r}"
    # the first heatmap of the container is truly painted (many colours on screen)
    heat = [h for r in recs for h in r["heatmaps"] if h["href"] > 500]
    if heat and min_colours:
        n = _colours(page, heat[0]["box"])
        assert n is None or n >= min_colours, f"{what}: the heatmap shows {n} colours (not drawn?)"
    return recs


def _explorer_ok(page, root, *, what, name):
    recs = check_figures(page, root, [IMAGE, PATTERN], what=what, titles=(f"{name}:", "pixel ("))
    assert recs[1]["lines"] and len(recs[1]["lines"][0]) > 100, f"{what}: the pattern has no line"
    assert recs[0]["heatmaps"], f"{what}: the image figure has no heatmap"
    # the two figures side by side, not overlapping
    assert recs[0]["plot"][0] + recs[0]["plot"][2] <= recs[1]["plot"][0] + 1, f"{what}: figures overlap"
    return recs


def _shot(page, root: str, name: str):
    page.locator(root).first.scroll_into_view_if_needed()
    page.locator(root).first.screenshot(path=str(ARTIFACTS / name))


def _select_tab(page, root: str, title: str):
    page.locator(root).first.get_by_role("tab", name=title, exact=True).first.click()


# ============================================================================ the checks
def check_tab(page, prefix: str):
    root = ".fx-tab"
    _explorer_ok(page, root, what=f"{prefix}: Tab, first tab", name="tab0")
    _shot(page, root, f"{prefix}_tab_first.png")
    _select_tab(page, root, "second")
    _explorer_ok(page, root, what=f"{prefix}: Tab, second tab (created hidden)", name="tab1")
    _shot(page, root, f"{prefix}_tab_second.png")
    _select_tab(page, root, "first")
    _explorer_ok(page, root, what=f"{prefix}: Tab, back to the first tab", name="tab0")


def check_accordion(page, prefix: str):
    root = ".fx-accordion"
    page.locator(root).scroll_into_view_if_needed()
    assert not _figures(page, root), f"{prefix}: the closed Accordion shows figures"
    page.locator(root).get_by_text("explorer", exact=True).first.click()
    _explorer_ok(page, root, what=f"{prefix}: Accordion (opened after render)", name="accordion")
    _shot(page, root, f"{prefix}_accordion.png")


def check_hbox(page, prefix: str):
    root = ".fx-hbox"
    recs = _explorer_ok(page, root, what=f"{prefix}: HBox", name="hbox")
    side = page.locator(".fx-side").bounding_box()
    assert side and side["width"] > 0, f"{prefix}: the side panel of the HBox is not shown"
    assert side["x"] + side["width"] <= recs[0]["plot"][0] + 1, f"{prefix}: the side panel overlaps the figure"
    _shot(page, root, f"{prefix}_hbox.png")


def check_panels(page, prefix: str):
    root = ".fx-panels"
    check_figures(page, root, [CORRECTIONS], what=f"{prefix}: Corrections panel in a Tab")
    _select_tab(page, root, "reconstruct")
    check_figures(page, root, [RECON], what=f"{prefix}: Reconstruct panel in a hidden tab", min_colours=0)
    _shot(page, root, f"{prefix}_panels_reconstruct.png")
    _select_tab(page, root, "corrections")


def check_app(page, prefix: str):
    root = ".xrdwidgets-app"
    for name in ("Data", "Corrections", "Reconstruct", "Explore"):
        assert page.locator(root).get_by_role("tab", name=name, exact=True).is_visible(), name
    _explorer_ok(page, root, what=f"{prefix}: App, Explore tab", name="FBP")
    _shot(page, root, f"{prefix}_app_explore.png")
    _select_tab(page, root, "Corrections")      # built by the kernel when first opened
    check_figures(page, root, [CORRECTIONS], what=f"{prefix}: App, Corrections tab")
    _shot(page, root, f"{prefix}_app_corrections.png")
    _select_tab(page, root, "Reconstruct")
    check_figures(page, root, [RECON], what=f"{prefix}: App, Reconstruct tab", min_colours=0)
    _select_tab(page, root, "Explore")
    _explorer_ok(page, root, what=f"{prefix}: App, back to Explore", name="FBP")


def _wait_pattern(page, root, pixel, timeout=LINK_TIMEOUT_S) -> list[dict]:
    """Poll until the pattern figure of the explorer under ``root`` shows ``pixel``."""
    end = time.time() + timeout
    recs = _figures(page, root)
    while time.time() < end:
        recs = _figures(page, root)
        if len(recs) == 2 and recs[1]["lines"] and f"pixel ({pixel[0]}, {pixel[1]})" in recs[1]["title"]:
            break
        page.wait_for_timeout(200)
    return recs


def check_click_linkage(page, prefix: str, root: str = ".fx-tab"):
    """With hover linkage off, hovering the image changes nothing and a click selects the
    clicked pixel (the pattern's line path and title change); with it on, hovering does."""
    _select_tab(page, root, "first")
    recs = _explorer_ok(page, root, what=f"{prefix}: linkage", name="tab0")
    before_d, before_title = recs[1]["lines"][0], recs[1]["title"]
    x, y, wd, ht = recs[0]["heatmaps"][0]["box"]
    n = 24                                                  # the tiny demo volume is 24×24

    def at(row, col):                                       # row 0 at the top (imshow orientation)
        return x + (col + 0.5) * wd / n, y + (row + 0.5) * ht / n

    hover = page.locator(root).locator(".xrdwidgets-explorer").first.get_by_role("checkbox", name="hover → pattern")
    hover.uncheck()
    page.mouse.move(*at(4, 20), steps=4)
    page.wait_for_timeout(1500)
    still = _figures(page, root)
    assert still[1]["lines"][0] == before_d and still[1]["title"] == before_title, \
        f"{prefix}: hovering changed the pattern although hover → pattern is off"
    row, col = 18, 6
    page.mouse.move(*at(row, col), steps=4)
    page.wait_for_timeout(300)
    page.mouse.click(*at(row, col))
    after = _wait_pattern(page, root, (row, col))
    js = f" (JavaScript errors on the page: {page.js_errors[:2]}, {len(page.js_errors)} in all)" if page.js_errors else ""
    assert after[1]["lines"][0] != before_d, f"{prefix}: the pattern did not change after a click on the image{js}"
    assert f"pixel ({row}, {col})" in after[1]["title"], \
        f"{prefix}: pattern title {after[1]['title']!r} (was {before_title!r}), expected pixel ({row}, {col}){js}"
    _shot(page, root, f"{prefix}_click_linkage.png")
    hover.check()
    page.mouse.move(*at(5, 5), steps=4)
    page.wait_for_timeout(300)
    page.mouse.move(*at(6, 12), steps=4)
    hovered = _wait_pattern(page, root, (6, 12))
    assert "pixel (6, 12)" in hovered[1]["title"], f"{prefix}: hover did not select the pixel: {hovered[1]['title']!r}"
    assert hovered[1]["lines"][0] != after[1]["lines"][0], f"{prefix}: the pattern did not change on hover"


def check_box_select(page, prefix: str, root: str = ".fx-tab", drags: int = 6):
    """Each drag on the pattern (box-select) shows the summed window's image within
    ``LINK_TIMEOUT_S``: the image title names the new channel window. Regression test: plotly
    sends a selection through the same widget trait as hovers, and ipywidgets keeps only the
    latest value of a trait while a message is unanswered, so the hover that follows a mouse-up
    used to replace the selection — 8–9 of 10 box-selects never reached the kernel."""
    _select_tab(page, root, "first")
    recs = _explorer_ok(page, root, what=f"{prefix}: box-select", name="tab0")
    px, py, pw, ph = recs[1]["plot"]
    title = recs[0]["title"]
    windows = []
    for k in range(drags):
        x0 = px + pw * (0.12 + 0.11 * k)
        x1 = x0 + pw * (0.06 + 0.02 * (k % 3))
        page.mouse.move(x0, py + ph * 0.5)
        page.mouse.down()
        page.mouse.move(x1, py + ph * 0.5, steps=4)
        page.mouse.up()
        for j in range(6):                                  # the hand moves on after the release
            page.mouse.move(x1 + 3 * j, py + ph * (0.5 + 0.02 * j))
            page.wait_for_timeout(25)
        end = time.time() + LINK_TIMEOUT_S
        while time.time() < end:
            now = _figures(page, root)[0]["title"]
            if now != title and "Σ" in now:
                break
            page.wait_for_timeout(100)
        assert now != title and "Σ" in now, \
            f"{prefix}: box-select {k + 1} of {drags} did not change the image (title {now!r}, before {title!r})"
        title = now
        windows.append(now.split("(channels")[-1])
    assert len(set(windows)) == drags, f"{prefix}: box-selects gave repeated windows {windows}"
    _shot(page, root, f"{prefix}_box_select.png")
    # The race made certain: a hover in flight, then the selection and two more pointer
    # events in the same task (as plotly emits them when the hand moves on at once).
    page.mouse.move(px + pw * 0.95, py + ph * 0.95)
    page.mouse.click(px + pw * 0.5, py + ph * 0.5)          # a single channel again
    end = time.time() + LINK_TIMEOUT_S
    while "Σ" in _figures(page, root)[0]["title"] and time.time() < end:
        page.wait_for_timeout(100)
    assert "Σ" not in _figures(page, root)[0]["title"], f"{prefix}: a click on the pattern did not pick a channel"
    page.evaluate(_JS_SELECT_BURST, root)
    end = time.time() + LINK_TIMEOUT_S
    while "Σ" not in _figures(page, root)[0]["title"] and time.time() < end:
        page.wait_for_timeout(100)
    assert "Σ" in _figures(page, root)[0]["title"], \
        f"{prefix}: a selection followed by hovers was lost (title {_figures(page, root)[0]['title']!r})"


#: On the pattern of the first explorer under ``root``: hover, box-select, unhover, hover.
_JS_SELECT_BURST = """(root) => {
  const gd = document.querySelector(root).querySelectorAll('.xrdwidgets-explorer')[0]
                     .querySelectorAll('.js-plotly-plot')[1];
  const [a, b] = gd._fullLayout.xaxis.range, x = gd._fullData[0].x;
  const pt = (i) => ({points: [{curveNumber: 0, pointNumber: i, x: x[i], y: 0}]});
  gd.emit('plotly_hover', pt(3));
  gd.emit('plotly_selected', {points: [], range: {x: [a + 0.3 * (b - a), a + 0.45 * (b - a)], y: [0, 1]}});
  gd.emit('plotly_unhover', pt(3));
  gd.emit('plotly_hover', pt(7));
}"""


# ============================================================================ JupyterLab
@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    _skip(lab=True)
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "jupyterlab.log"
    log.unlink(missing_ok=True)
    server = start_lab(_nb_copy(tmp_path_factory, "lab-notebook"), log_file=log)
    try:
        yield server
    finally:
        stop_lab(server)


@pytest.fixture(scope="module")
def lab_page(browser_context, lab_server):
    """The fixture notebook open in JupyterLab with all its cells run."""
    pg = _new_page(browser_context)
    t0 = time.perf_counter()
    pg.goto(lab_server.url + f"lab/tree/{NB}?reset", wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
    pg.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                         timeout=RENDER_TIMEOUT_MS)
    pg.evaluate("""async () => { const nb = window.jupyterapp.shell.currentWidget;
                                 await nb.context.ready; await nb.sessionContext.ready; }""")
    pg.wait_for_function("""() => { const s = window.jupyterapp.shell.currentWidget.sessionContext.session;
        return s && s.kernel && s.kernel.connectionStatus === 'connected'; }""", timeout=RENDER_TIMEOUT_MS)
    pg.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    pg.wait_for_selector(".fx-done", state="attached", timeout=RUN_TIMEOUT_S * 1000)
    print(f"\nJupyterLab: page + run all cells {time.perf_counter() - t0:.1f} s")
    text = pg.locator(".jp-Notebook").inner_text()
    assert "Traceback" not in text, text[text.find("Traceback"):][:2000]
    counts = pg.evaluate("() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))"
                         ".map(e => e.textContent.trim())")
    assert all(c not in ("[ ]:", "[*]:", "") for c in counts), f"cells not all run: {counts}"
    yield pg
    pg.screenshot(path=str(ARTIFACTS / "lab_last.png"))
    pg.close()


def test_lab_figures_in_tab(lab_page):
    check_tab(lab_page, "lab")


def test_lab_figures_in_accordion(lab_page):
    check_accordion(lab_page, "lab")


def test_lab_figures_in_hbox(lab_page):
    check_hbox(lab_page, "lab")


def test_lab_panel_figures_in_tab(lab_page):
    check_panels(lab_page, "lab")


def test_lab_app_tabs(lab_page):
    check_app(lab_page, "lab")


def test_lab_click_on_image_changes_pattern(lab_page):
    check_click_linkage(lab_page, "lab")
    assert not lab_page.js_errors, lab_page.js_errors


def test_lab_box_select_on_pattern_changes_image(lab_page):
    check_box_select(lab_page, "lab")


# ============================================================================ Voila
@pytest.fixture(scope="module")
def voila_fx_server(tmp_path_factory):
    _skip(lab=False)
    from xrdwidgets.serve import appserver

    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "voila_containers.log"
    log.unlink(missing_ok=True)
    server = appserver.launch(_nb_copy(tmp_path_factory, "voila-notebook"), port=0, log_file=log)
    try:
        appserver.wait_ready(server, timeout=60)
        yield server
    finally:
        appserver.stop(server)


@pytest.fixture(scope="module")
def voila_page(browser_context, voila_fx_server):
    """The fixture notebook rendered by Voila."""
    pg = _new_page(browser_context)
    t0 = time.perf_counter()
    pg.goto(voila_fx_server.url + f"voila/render/{NB}", wait_until="commit", timeout=RENDER_TIMEOUT_MS)
    pg.wait_for_selector(".fx-done", state="attached", timeout=RUN_TIMEOUT_S * 1000)
    print(f"\nVoila: page rendered in {time.perf_counter() - t0:.1f} s")
    assert "Traceback" not in pg.content()
    yield pg
    pg.screenshot(path=str(ARTIFACTS / "voila_containers_last.png"), full_page=True)
    pg.close()


def test_voila_figures_in_containers(voila_page):
    check_tab(voila_page, "voila")
    check_accordion(voila_page, "voila")
    check_hbox(voila_page, "voila")
    check_panels(voila_page, "voila")
    check_app(voila_page, "voila")


def test_voila_click_on_image_changes_pattern(voila_page):
    # Regression test: anywidget (0.11) gives each model 2 s to load its ESM and otherwise
    # rejects the model's `ready` for good ("[anywidget] Failed to initialize model."): its
    # figures stay drawn but drop every later update from the kernel. plotly's ESM is its 5 MB
    # bundle, evaluated once per FigureWidget, so a page with many figures (this one has 12)
    # on a slow or busy machine loses all its interaction.
    errors = list(voila_page.js_errors)
    check_click_linkage(voila_page, "voila")
    assert not errors, f"JavaScript errors while the page loaded: {errors[:3]} ({len(errors)} in all)"


def test_voila_box_select_on_pattern_changes_image(voila_page):
    check_box_select(voila_page, "voila")
