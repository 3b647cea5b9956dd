"""Shared constants and helpers of the browser tests (imported by conftest and the tests)."""
from __future__ import annotations

import os
import time
from pathlib import Path

CHROMIUM = os.environ.get("XRDWIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
#: First render of a dashboard: kernel start + imports (torch) + the notebook's cells.
RENDER_TIMEOUT_MS = 60_000
#: Idle-kernel culling of the test server (short, so a test can check that an open page survives it).
CULL_IDLE_S = 6
#: A load / simulation job in a rendered dashboard.
JOB_TIMEOUT_MS = 60_000


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (``None`` when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install playwright; no browser download needed)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import voila  # noqa: F401
    except ImportError:
        return "voila is not installed (pip install -e '.[apps]')"
    return None


def open_dashboard(page, server, notebook: str, *, ready_selector: str, timeout_ms: int = RENDER_TIMEOUT_MS):
    """Open ``dashboards/<notebook>`` and wait for ``ready_selector``; returns the seconds taken
    from the page request to the selector being visible."""
    t0 = time.perf_counter()
    page.goto(server.url + f"voila/render/{notebook}", wait_until="commit", timeout=timeout_ms)
    page.wait_for_selector(ready_selector, state="visible", timeout=timeout_ms)
    return time.perf_counter() - t0


def upload(page, button_selector: str, name: str, content: bytes):
    """Pick a file in the browser's file chooser opened by an ipywidgets FileUpload button."""
    with page.expect_file_chooser() as chooser:
        page.locator(button_selector).click()
    chooser.value.set_files(files=[{"name": name, "mimeType": "application/octet-stream", "buffer": content}])
