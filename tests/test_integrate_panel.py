"""The Integrate tab, headless: file lists, preview, job → stack in the shared state / Data tab."""
import time

import numpy as np
import pytest

pytest.importorskip("pyFAI")
pytest.importorskip("ipywidgets")

from xrdwidgets.sim.frames import simulate_raw_scan  # noqa: E402
from xrdwidgets.widgets.app import TABS, App  # noqa: E402
from xrdwidgets.widgets.integrate_panel import IntegratePanel  # noqa: E402
from xrdwidgets.widgets.state import AppState  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    simulate_raw_scan(root / "raw", n_translations=5, n_angles=4, frames_per_file=8)
    (root / ".hidden.poni").write_text("x")
    return root


def _wait(panel, timeout=60):
    panel.job.wait(timeout=timeout, raise_on_error=False)
    end = time.time() + 10
    while panel.busy and time.time() < end:
        time.sleep(0.02)
    assert not panel.busy


def test_lists_files_of_the_data_folder_only(root):
    p = IntegratePanel(AppState(), data_dir=root)
    assert p.raw.options[0] == "raw/scan_master.h5"
    assert list(p.poni.options) == ["raw/scan.poni"]
    assert "raw/scan_mask.edf" in p.mask.options


def test_preview_shows_frame_rings_and_pattern(root):
    p = IntegratePanel(AppState(), data_dir=root)
    p.raw.value, p.poni.value, p.frame.value = "raw/scan_master.h5", "raw/scan.poni", 3
    p.preview()
    _wait(p)
    assert "rings at" in p.status.value, p.status.value
    assert np.asarray(p.fig.data[0].z).shape == (64, 64)
    assert len(p.fig.data[1].x) > 20 and len(p.fig.data[2].y) == 500
    assert p.frame.max == 19


def test_bad_choice_gives_a_one_line_error(root):
    p = IntegratePanel(AppState(), data_dir=root)
    p.raw.value, p.poni.value = "raw/scan_master.h5", "raw/scan.poni"
    p.frame.value = 500
    p.preview()
    _wait(p)
    assert "xrdw-error" in p.status.value and "frame 500 outside 0..19" in p.status.value
    assert str(root) not in p.status.value          # no server path shown
    p.raw.options = list(p.raw.options) + ["../../etc/passwd"]
    p.raw.value = "../../etc/passwd"
    p.start()
    assert "outside the data folder" in p.status.value and p.job is None or not p.busy


def test_app_integrates_and_opens_the_stack_in_data(root, tmp_path):
    app = App(data_dir=root, workdir=tmp_path)
    assert TABS[0] == "Integrate" and TABS.index("Data") == 1
    panel = app.panel("Integrate")
    panel.raw.value, panel.poni.value = "raw/scan_master.h5", "raw/scan.poni"
    panel.method.value = "trimmed"
    panel.bins.value = 120
    app.select("Integrate")
    job = panel.start()
    _wait(panel)
    assert job.state.value == "done", panel.status.value
    assert app.state.raw is not None and app.state.raw.shape == (5, 4, 120)
    assert app.tabs.selected_index == TABS.index("Data")
    assert "integrated scan_master.h5" in app.state.status
    assert list(tmp_path.glob("scan_master-tth-trimmed-120.h5"))   # written out of core


def test_listing_does_not_follow_links_out_of_the_data_folder(root, tmp_path_factory):
    import os

    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.poni").write_text("Wavelength: 1e-10\n")
    os.symlink(outside / "secret.poni", root / "escape.poni")
    os.symlink(outside, root / "linked_dir")
    try:
        p = IntegratePanel(AppState(), data_dir=root)
        assert list(p.poni.options) == ["raw/scan.poni"]
    finally:
        (root / "escape.poni").unlink()
        (root / "linked_dir").unlink()
