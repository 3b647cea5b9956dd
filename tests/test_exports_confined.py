"""Exports from the dashboards are confined to ``<data folder>/results`` (issue 13, finding 1).

The attack is played as a visitor plays it: only widget values are set (the folder Text, the
overwrite Checkbox) and buttons pressed, exactly what the page's websocket messages do.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import xrdwidgets
from xrdwidgets.base import safety
from xrdwidgets.recon.fbp import fbp
from xrdwidgets.widgets.explorer import Explorer


@pytest.fixture(scope="module")
def vol():
    return fbp(xrdwidgets.demo(size="tiny")["sinogram"])


@pytest.fixture
def site(tmp_path):
    """A data folder, a folder outside it holding a user's file, and a symlink from inside out."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "FBP_y3_x4.xy").write_text("the user's own file\n")
    os.symlink(outside, root / "link_out")
    return root, outside


def _visitor_export(ex, folder, overwrite=True):
    """What a visitor can do: type a folder, tick overwrite, press 'save pattern'."""
    ex.select_pixel(3, 4)
    ex.w_pattern_fmt.value = "xy"
    ex.w_export_dir.value = folder
    ex.w_overwrite.value = overwrite
    ex.w_save_pattern.click()
    return ex.w_status.value


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_attack_reproduced_without_a_data_folder(vol, site, monkeypatch):
    """Without a data folder (the owner's own notebook) the owner may write anywhere: this is
    the behaviour the served app had, and what a visitor exploited."""
    root, outside = site
    monkeypatch.delenv(safety.DATA_DIR_ENV, raising=False)
    ex = Explorer(vol, name="FBP")
    status = _visitor_export(ex, str(outside))
    assert "saved" in status
    assert (outside / "FBP_y3_x4.xy").read_text() != "the user's own file\n"   # replaced


@pytest.mark.parametrize("folder", ["{outside}", "../outside", "../../", "results/../../outside",
                                    "../link_out", "../link_out/sub", "~", "/tmp", "/"])
def test_visitor_cannot_write_outside_the_results_folder(vol, site, monkeypatch, folder):
    root, outside = site
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(root))
    before_out, before_root = _files(outside), _files(root)
    ex = Explorer(vol, name="FBP")            # as the App builds it in a served kernel
    text = folder.format(outside=outside)
    status = _visitor_export(ex, text)
    assert "⚠" in status and "saved" not in status
    assert ("outside the results folder" in status) or ("not allowed" in status), status
    assert (outside / "FBP_y3_x4.xy").read_text() == "the user's own file\n"
    assert _files(outside) == before_out
    assert set(_files(root)) <= set(before_root) | {"results"}
    assert str(root) not in status                          # the data folder is never shown


def test_symlink_inside_results_pointing_out_is_refused(vol, site, monkeypatch):
    root, outside = site
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(root))
    (root / "results").mkdir()
    os.symlink(outside, root / "results" / "mine")                         # folder link
    os.symlink(outside / "FBP_y3_x4.xy", root / "results" / "FBP_y3_x4.xy")  # file link
    ex = Explorer(vol, name="FBP")
    assert "outside the results folder" in _visitor_export(ex, "mine")
    status = _visitor_export(ex, "")
    assert "⚠" in status and "saved" not in status
    assert (outside / "FBP_y3_x4.xy").read_text() == "the user's own file\n"
    assert _files(outside) == ["FBP_y3_x4.xy"]


def test_results_folder_itself_a_symlink_out_is_refused(vol, site, monkeypatch):
    root, outside = site
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(root))
    os.symlink(outside, root / "results")
    ex = Explorer(vol, name="FBP")
    status = _visitor_export(ex, "")
    assert "outside the data folder" in status and "saved" not in status
    assert _files(outside) == ["FBP_y3_x4.xy"]


def test_exports_go_to_results_and_replace_only_own_files(vol, site, monkeypatch):
    root, outside = site
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(root))
    monkeypatch.delenv(safety.ALLOW_OVERWRITE_ENV, raising=False)
    ex = Explorer(vol, name="FBP")
    assert ex.w_export_dir.value == "" and ex.w_export_dir.placeholder.startswith("results/")
    status = _visitor_export(ex, "", overwrite=False)
    assert "saved results/FBP_y3_x4.xy<" in status, status
    target = root / "results" / "FBP_y3_x4.xy"
    np.testing.assert_allclose(np.loadtxt(target)[:, 1], vol.values[3, 4], rtol=1e-6, atol=1e-7)
    assert "saved" in _visitor_export(ex, "", overwrite=True)             # own file: replaced
    assert "not replaced" in _visitor_export(ex, "", overwrite=False)
    assert "saved results/run1/FBP_y3_x4.xy" in _visitor_export(ex, "run1", overwrite=False)
    # another visitor (another kernel) may not replace it ...
    other = Explorer(vol, name="FBP")
    status = _visitor_export(other, "", overwrite=True)
    assert "was not written from this page" in status and "saved" not in status
    # ... nor a file the owner put there
    (root / "results" / "keep").mkdir()
    (root / "results" / "keep" / "FBP_y3_x4.xy").write_text("owner\n")
    assert "was not written" in _visitor_export(other, "keep", overwrite=True)
    assert (root / "results" / "keep" / "FBP_y3_x4.xy").read_text() == "owner\n"
    # unless the owner allows it (xrdwidgets app --allow-overwrite)
    monkeypatch.setenv(safety.ALLOW_OVERWRITE_ENV, "1")
    third = Explorer(vol, name="FBP")
    assert "saved" in _visitor_export(third, "keep", overwrite=True)
    assert (root / "results" / "keep" / "FBP_y3_x4.xy").read_text() != "owner\n"


def test_misconfigured_data_folder_refuses_exports(vol, tmp_path, monkeypatch):
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(tmp_path / "gone"))
    monkeypatch.chdir(tmp_path)
    ex = Explorer(vol, name="FBP")
    status = _visitor_export(ex, "", overwrite=False)
    assert "⚠" in status and "saved" not in status
    assert _files(tmp_path) == []                                       # not the working directory


def test_upload_folder_is_removed_when_the_kernel_ends(tmp_path):
    """An upload's temporary folder does not outlive the kernel (interpreter exit)."""
    code = textwrap.dedent(f"""
        import io, os, numpy as np
        from xrdwidgets.widgets import AppState
        from xrdwidgets.widgets.data_panel import DataPanel
        buf = io.BytesIO(); np.save(buf, np.zeros((4, 5, 6), np.float32))
        p = DataPanel(AppState())
        job = p.handle_upload("x.npy", buf.getvalue())
        job.wait() if hasattr(job, "wait") else None
        import time
        for _ in range(200):
            if p._upload_path is not None: break
            time.sleep(0.05)
        print(p._upload_path.parent)
    """)
    env = {**os.environ, safety.SCRATCH_ENV: str(tmp_path), "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    folder = out.stdout.strip().splitlines()[-1]
    assert folder.startswith(str(tmp_path))                    # in the server's scratch folder
    assert not os.path.exists(folder) and os.listdir(tmp_path) == []
