"""Fixtures of the browser tests: one Voila server for the session, one headless Chromium.

The server is started the way ``xrdwidgets app`` starts it (:func:`xrdwidgets.serve.appserver.launch`,
so the tests exercise the production command line), serving the whole ``dashboards/`` folder on
a free port of 127.0.0.1 with a data folder of test files. Readiness is polled on
``/voila/static/`` (a GET of a notebook page would start a kernel). At the end the server's
process group (server + kernels) is killed.

The browser is Debian's ``/usr/bin/chromium`` driven by Python Playwright (no browser download:
never run ``playwright install``), with a fresh profile. Without either, every test here skips
with the reason.

Screenshots go to ``test-artifacts/`` (git-ignored) at the repository root.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, CULL_IDLE_S, REPO, skip_reason


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def data_folder(tmp_path_factory):
    """A data folder with a small valid stack, a broken file, and a symlink pointing outside."""
    from xrdwidgets import io
    from xrdwidgets.sim.demo import demo

    root = tmp_path_factory.mktemp("data")
    outside = tmp_path_factory.mktemp("outside")
    io.save(demo(size="tiny")["sinogram"], root / "tiny_stack.h5")
    (root / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)  # signature, no file
    np.save(outside / "secret.npy", np.zeros((4, 4, 4)))
    os.symlink(outside / "secret.npy", root / "escape.npy")
    return root


@pytest.fixture(scope="session")
def voila_server(data_folder):
    """Voila serving ``dashboards/`` on a free port; yields the :class:`VoilaServer`."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from xrdwidgets.serve import appserver

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "voila.log").unlink(missing_ok=True)
    server = appserver.launch(REPO / "dashboards", port=0, data_dir=data_folder, max_upload_mb=5,
                              cull_idle_timeout=CULL_IDLE_S, cull_interval=1, log_file=ARTIFACTS / "voila.log")
    try:
        waited = appserver.wait_ready(server, timeout=60)
        print(f"\nVoila answered after {waited:.1f} s")
        yield server
    finally:
        appserver.stop(server)


@pytest.fixture(scope="session")
def browser_context():
    """A headless Chromium (persistent context on a fresh profile folder)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="xrdwidgets-chromium-")
    pw = sync_playwright().start()
    try:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1400})
        try:
            yield ctx
        finally:
            ctx.close()
    finally:
        pw.stop()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context):
    """A fresh tab; closed after the test (Voila then shuts its kernel down)."""
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    yield pg
    pg.close()

