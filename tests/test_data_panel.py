"""Headless tests of the data panel: folder, upload and simulation, all as background jobs."""
from __future__ import annotations

import datetime
import io as _io
import os
import threading

import h5py
import numpy as np
import pytest

pytest.importorskip("ipywidgets")

import xrdwidgets
from xrdwidgets import io
from xrdwidgets.base import safety
from xrdwidgets.widgets.data_panel import DataPanel, iterate_simulation
from xrdwidgets.widgets.state import AppState




@pytest.fixture
def folder(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    ds = xrdwidgets.demo(size="tiny")
    io.save(ds, root / "demo.h5")                         # own layout, with the truth
    io.save(ds["sinogram"], root / "sub" / "stack.h5")
    with h5py.File(root / "sd2i.h5", "w") as f:          # SD2I layout: 2-D (angles, translations)
        f["A"] = np.random.default_rng(0).random((30, 24))
        f["B"] = np.random.default_rng(1).random((20, 24))
    np.save(root / "arr.npy", np.random.default_rng(2).random((20, 24, 5)))  # (angle, translation, channel)
    (root / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    io.save(xrdwidgets.demo(size="tiny")["volume"], root / "volume.h5")
    np.save(outside / "secret.npy", np.zeros((2, 2, 2)))
    os.symlink(outside / "secret.npy", root / "escape.npy")
    return root


def _panel(root=None, **kw):
    state = AppState()
    return state, DataPanel(state, data_dir=root, **kw)


def _npy(arr) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_folder_lists_files_inside_only(folder):
    _, panel = _panel(folder)
    assert list(panel.files.options) == ["arr.npy", "broken.h5", "demo.h5", "sd2i.h5", "sub/stack.h5",
                                         "volume.h5"]
    (folder / "new.h5").write_bytes(b"x")
    panel.refresh_button.click()
    assert "new.h5" in panel.files.options


def test_no_folder_configured_says_how(monkeypatch):
    monkeypatch.delenv(safety.DATA_DIR_ENV, raising=False)
    _, panel = _panel()
    assert panel.files.options == () and "--data-dir" in panel.folder_note.value
    assert panel.refresh_button.disabled and panel.load_button.disabled


def test_data_dir_from_environment(folder, monkeypatch):
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(folder))
    _, panel = _panel()
    assert "demo.h5" in panel.files.options


def _blocked(monkeypatch, name):
    """Make ``data_panel.<name>`` (a function, or a generator function when it starts with
    ``iterate_``) wait for the returned event before it does its work, in the job's thread."""
    from xrdwidgets.widgets import data_panel

    release, real = threading.Event(), getattr(data_panel, name)

    def hold():
        assert release.wait(30), "the test never released the job"

    if name.startswith("iterate_"):
        def gated(*args, **kwargs):
            hold()
            return (yield from real(*args, **kwargs))
    else:
        def gated(*args, **kwargs):
            hold()
            return real(*args, **kwargs)
    monkeypatch.setattr(data_panel, name, gated)
    return release


def test_load_own_layout_with_truth(folder, monkeypatch):
    state, panel = _panel(folder)
    panel.files.value = "demo.h5"
    assert panel.sinogram.layout.display == "none"
    release = _blocked(monkeypatch, "_read_stack")
    job = panel.load_selected()
    # the callback only starts a job: it has returned while the reading is still held
    assert job is not None and not job.done and panel.busy and state.stack is None
    release.set()
    assert panel.wait(30)
    assert state.stack.dims == ("translation", "angle", "tth") and state.stack.shape == (24, 30, 60)
    assert state.truth is not None and "phase_maps" in state.truth
    assert "loaded demo.h5" in panel.status.value and "xrdw-ok" in panel.status.value
    assert not panel.load_button.disabled and not panel.busy


def test_load_sd2i_offers_its_sinograms(folder):
    state, panel = _panel(folder)
    panel.files.value = "sd2i.h5"
    assert panel.sinogram.layout.display == "" and list(panel.sinogram.options) == ["A", "B"]
    assert panel.sinogram.value == "A"
    panel.sinogram.value = "B"
    panel.load_button.click()
    assert panel.wait(30)
    assert state.stack.shape == (24, 20, 1) and state.stack.name == "B"
    assert "sd2i.h5 [B]" in panel.status.value


def test_load_npy_with_axis_order(folder):
    state, panel = _panel(folder)
    panel.files.value = "arr.npy"
    assert panel.npy_order.layout.display == ""
    panel.npy_order.value = ("angle", "translation", "channel")
    panel.load_selected()
    assert panel.wait(30)
    assert state.stack.dims == ("translation", "angle", "channel") and state.stack.shape == (24, 20, 5)


@pytest.mark.parametrize("name,text", [("broken.h5", "broken.h5: HDF5 file cannot be opened"),
                                       ("volume.h5", "the data panel loads sinogram stacks")])
def test_bad_files_give_one_line_errors_without_server_paths(folder, name, text):
    state, panel = _panel(folder)
    panel.files.value = name
    if panel.busy or "xrdw-error" not in panel.status.value:   # the probe may already refuse it
        panel.load_selected()
        assert panel.wait(30)
    msg = panel.status.value
    assert "xrdw-error" in msg and 'role="alert"' in msg and text in msg
    assert str(folder) not in msg and "Traceback" not in msg and "\n" not in msg
    assert state.stack is None
    # the panel still works
    panel.files.value = "sub/stack.h5"
    panel.load_selected()
    assert panel.wait(30) and state.stack is not None


def test_load_refuses_paths_outside(folder):
    _, panel = _panel(folder)
    assert "escape.npy" not in panel.files.options
    # a crafted value (never offered) is refused by confine() before anything is opened
    panel.files.set_trait("options", ("../outside/secret.npy",))
    panel.files.value = "../outside/secret.npy"
    assert panel.load_selected() is None
    assert "outside the data folder" in panel.status.value and panel.job is None


def test_upload_valid_hdf5_loads(folder):
    state, panel = _panel(folder)
    content = (folder / "sub" / "stack.h5").read_bytes()
    panel.handle_upload("my scan.h5", content)
    assert panel.wait(30)
    assert state.stack.shape == (24, 30, 60)
    assert "loaded my_scan.h5" in panel.status.value
    tmp = panel._upload_path
    assert tmp.exists() and tmp.name == "my_scan.h5"
    panel.close()
    assert not tmp.parent.exists()          # the temporary upload is deleted


def test_upload_through_the_widget_clears_its_bytes(folder):
    state, panel = _panel(folder)
    content = _npy(np.random.default_rng(0).random((8, 9, 4)))
    old = panel.upload
    old.set_trait("value", ({"name": "a.npy", "type": "", "size": len(content),
                             "content": memoryview(content),
                             "last_modified": datetime.datetime.now(datetime.timezone.utc)},))
    # the bytes do not stay in a widget: the upload button is replaced by a fresh one
    assert panel.upload is not old and old.comm is None and panel.upload.value == ()
    assert panel.upload in panel._upload_box.children and old not in panel._upload_box.children
    assert panel.wait(30)
    assert state.stack.shape == (8, 9, 4)
    assert not panel.upload.disabled


def test_leaving_the_upload_tab_renews_the_upload_button():
    _, panel = _panel()
    old = panel.upload
    panel.tabs.selected_index = 1
    assert panel.upload is old
    panel.tabs.selected_index = 2
    assert panel.upload is not old and old.comm is None
    panel.handle_upload("x.npy", _npy(np.ones((3, 3, 3))))
    assert panel.wait(30) and "loaded x.npy" in panel.status.value


def test_upload_sd2i_with_several_sinograms_asks_which(folder):
    state, panel = _panel(folder)
    panel.handle_upload("s.h5", (folder / "sd2i.h5").read_bytes())
    assert panel.wait(30)
    assert state.stack is None and "choose one" in panel.status.value
    assert list(panel.upload_sinogram.options) == ["A", "B"] and panel.upload_sinogram.layout.display == ""
    assert not panel.upload_load_button.disabled
    panel.upload_sinogram.value = "B"
    panel.upload_load_button.click()
    assert panel.wait(30)
    assert state.stack.name == "B" and "s.h5 [B]" in panel.status.value


@pytest.mark.parametrize("name,content,text", [
    ("bad.h5", b"not hdf5 at all", "not a valid HDF5 file"),
    ("bad.exe", b"MZ", "not accepted"),
    ("big.npy", b"\x93NUMPY" + b"\0" * (2 * 2**20), "larger than the upload limit of 1 MB"),
    ("trunc.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "trunc.h5: HDF5 file cannot be opened"),
    ("flat.npy", _npy(np.zeros((3, 4))), "flat.npy: the array has shape (3, 4)"),
    ("pickled.npy", _npy(np.array([{"a": 1}], dtype=object)), "pickled.npy: not a readable .npy file"),
])
def test_bad_uploads_give_clear_errors(name, content, text):
    state, panel = _panel(max_upload_mb=1)
    panel.handle_upload(name, content)
    assert panel.wait(30)
    msg = panel.status.value
    assert "xrdw-error" in msg and text in msg
    assert "/tmp" not in msg and "xrdwidgets-upload" not in msg and "Traceback" not in msg
    assert state.stack is None
    # the panel keeps working: a good upload afterwards loads
    panel.handle_upload("ok.npy", _npy(np.ones((4, 5, 3))))
    assert panel.wait(30) and state.stack.shape == (4, 5, 3)


def test_simulate_runs_as_a_job_and_sets_the_truth(monkeypatch):
    state, panel = _panel()
    panel.sim_phases.value = ("Ni", "TiO2")
    panel.sim_size.value = 24
    panel.sim_channels.value = 50
    panel.sim_seed.value = 3
    release = _blocked(monkeypatch, "iterate_simulation")
    panel.simulate_button.click()
    # the click only starts a job: it has returned while the simulation is still held
    assert panel.busy and panel.simulate_button.disabled and not panel.job.done and state.stack is None
    release.set()
    assert panel.wait(60)
    assert state.stack.shape == (24, 29, 50)
    assert list(state.truth["phase"].values) == ["Ni", "TiO2"]
    assert "loaded simulation" in panel.status.value and not panel.simulate_button.disabled
    assert panel.progress.value == 1.0


def test_simulate_with_parallax_and_no_noise():
    ds = None
    gen = iterate_simulation(["CeO2"], size=16, n_channels=40, dose=None, parallax_mm=30.0, seed=1)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            ds = stop.value
            break
    assert [e.iteration for e in events] == [1, 2]
    assert ds["sinogram"].shape == (16, 19, 40)
    np.testing.assert_allclose(ds["sinogram"].values, ds["clean"].values)
    noisy = iterate_simulation(["CeO2"], size=16, n_channels=40, dose=100.0, parallax_mm=30.0, seed=1)
    while True:
        try:
            next(noisy)
        except StopIteration as stop:
            ds2 = stop.value
            break
    vals = ds2["sinogram"].values
    assert np.allclose(vals, np.round(vals)) and vals.max() > 0       # Poisson counts


def test_simulate_refuses_bad_choices():
    state, panel = _panel()
    panel.sim_phases.value = ()
    assert panel.simulate() is None and "at least one phase" in panel.status.value
    with pytest.raises(ValueError):
        next(iterate_simulation(["Ni", "Ni"]))
    with pytest.raises(ValueError):
        next(iterate_simulation(["Ni"], size=2))


def test_a_second_action_while_busy_is_refused():
    state, panel = _panel()
    gate = threading.Event()
    original = panel._publish

    def slow_publish(*a, **k):
        gate.wait(10)
        return original(*a, **k)

    panel._publish = slow_publish
    panel.sim_size.value = 16
    panel.sim_channels.value = 50
    first = panel.simulate()
    assert panel.simulate() is None and "busy" in panel.status.value
    assert panel.handle_upload("x.npy", _npy(np.ones((2, 2, 2)))) is None
    gate.set()
    assert panel.wait(60) and first.state.value == "done"


def test_an_unexpected_error_is_named_not_dumped(monkeypatch, caplog):
    state, panel = _panel()
    import xrdwidgets.widgets.data_panel as dp

    def broken(*a, **k):
        raise ZeroDivisionError("division by zero")
        yield  # pragma: no cover

    monkeypatch.setattr(dp, "iterate_simulation", broken)
    panel.simulate()
    assert panel.wait(30)
    msg = panel.status.value
    assert "unexpected error (ZeroDivisionError: division by zero)" in msg and "server log" in msg
    assert "Traceback" not in msg
    assert any(r.exc_info for r in caplog.records if r.name == dp.__name__)  # the traceback is logged


def test_a_missing_data_folder_is_reported_without_its_path(tmp_path):
    _, panel = _panel(tmp_path / "gone")
    assert panel.root is None and "does not exist" in panel.folder_note.value
    assert str(tmp_path) not in panel.folder_note.value


def test_a_file_over_the_limit_is_refused_by_the_page_and_reported():
    # the page sends only the name and size of a file over the limit (see widgets/upload.py)
    _, panel = _panel(max_upload_mb=1)
    panel.upload._on_page_message(panel.upload, {"event": "rejected", "name": "../huge.npy",
                                                 "size": 30 * 2**20}, [])
    msg = panel.status.value
    assert "huge.npy: 30.0 MB is larger than the upload limit of 1 MB" in msg
    assert "nothing was sent" in msg and "xrdw-error" in msg and "../" not in msg
    assert panel.upload.rejected["count"] == 1


def test_a_file_within_the_limit_arrives_as_a_binary_buffer(folder):
    state, panel = _panel(folder)
    content = _npy(np.random.default_rng(1).random((6, 7, 3)))
    old = panel.upload
    old._on_page_message(old, {"event": "upload", "name": "b.npy", "size": len(content), "type": "",
                               "last_modified": 1.7e12}, [memoryview(content)])
    assert panel.upload is not old            # no reference to the bytes stays in a widget
    assert panel.wait(30) and state.stack.shape == (6, 7, 3)


def test_size_limited_upload_rejects_a_bad_limit():
    from xrdwidgets.widgets.upload import SizeLimitedUpload

    with pytest.raises(ValueError, match="max_bytes must be a positive number of bytes, found 0"):
        SizeLimitedUpload(0)
