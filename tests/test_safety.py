"""Paths and uploads chosen by dashboard visitors (xrdwidgets.base.safety), and the served app's settings."""
from __future__ import annotations

import io as _io
import json
import os
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrdwidgets.base import safety
from xrdwidgets.serve import appserver
from xrdwidgets.base.safety import UnsafePathError, UploadError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path):
    """root/ with data files, a sub-folder, symlinks in and out; outside/ next to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.h5").write_bytes(b"x")
    (root / "sub" / "b.npy").write_bytes(b"x")
    (root / "store.zarr").mkdir()
    (root / "store.zarr" / "inner.npy").write_bytes(b"x")   # inside a store: not listed
    (root / ".hidden.h5").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    (outside / "secret.h5").write_bytes(b"x")
    os.symlink(outside / "secret.h5", root / "link_out.h5")
    os.symlink(outside, root / "dir_out")
    os.symlink(root / "a.h5", root / "sub" / "link_in.h5")
    return root, outside


# ============================================================================ confine
def test_confine_accepts_paths_inside(tree):
    root, _ = tree
    assert safety.confine("a.h5", root) == (root / "a.h5").resolve()
    assert safety.confine("sub/../a.h5", root) == (root / "a.h5").resolve()
    assert safety.confine(root / "sub" / "b.npy", root) == (root / "sub" / "b.npy").resolve()  # absolute inside
    assert safety.confine("sub/link_in.h5", root) == (root / "a.h5").resolve()  # symlink staying inside
    assert safety.confine("not_there.h5", root) == (root / "not_there.h5").resolve()
    with pytest.raises(FileNotFoundError, match="not_there.h5"):
        safety.confine("not_there.h5", root, must_exist=True)


@pytest.mark.parametrize("bad", ["../outside/secret.h5", "sub/../../outside/secret.h5", "..", "../",
                                 "link_out.h5", "dir_out/secret.h5", "/etc/passwd", "/"])
def test_confine_rejects_escapes(tree, bad):
    root, _ = tree
    with pytest.raises(UnsafePathError, match="outside the data folder") as info:
        safety.confine(bad, root)
    assert isinstance(info.value, PermissionError)
    assert str(root) not in str(info.value)  # the message does not reveal the server's folder


def test_confine_rejects_absolute_path_outside(tree):
    root, outside = tree
    with pytest.raises(PermissionError):
        safety.confine(outside / "secret.h5", root)
    (root.parent / "root2").mkdir()
    with pytest.raises(PermissionError):  # a sibling whose name starts like the root
        safety.confine(root.parent / "root2", root)


@pytest.mark.parametrize("bad", ["~", "~/x.h5", "~root/x.h5"])
def test_confine_never_expands_home(tree, bad):
    root, _ = tree
    with pytest.raises(ValueError, match="'~'"):
        safety.confine(bad, root)


@pytest.mark.parametrize("bad,exc", [("", ValueError), ("   ", ValueError), ("a\x00.h5", ValueError),
                                     (b"a.h5", TypeError), (None, TypeError), (3, TypeError)])
def test_confine_rejects_malformed(tree, bad, exc):
    root, _ = tree
    with pytest.raises(exc):
        safety.confine(bad, root)


def test_confine_without_a_data_folder():
    with pytest.raises(PermissionError, match="no data folder"):
        safety.confine("a.h5", None)


def test_data_root_from_argument_and_environment(tree, monkeypatch):
    root, _ = tree
    monkeypatch.delenv(safety.DATA_DIR_ENV, raising=False)
    assert safety.data_root() is None
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(root / "sub" / ".."))
    assert safety.data_root() == root.resolve()
    assert safety.data_root(root / "sub") == (root / "sub").resolve()
    with pytest.raises(NotADirectoryError):
        safety.data_root(root / "a.h5")
    monkeypatch.setenv(safety.DATA_DIR_ENV, str(root / "missing"))
    with pytest.raises(NotADirectoryError):
        safety.data_root()


def test_list_data_files_stays_inside(tree):
    root, _ = tree
    assert safety.list_data_files(root) == ["a.h5", "store.zarr", "sub/b.npy", "sub/link_in.h5"]
    assert safety.list_data_files(root, max_depth=0) == ["a.h5", "store.zarr"]
    assert len(safety.list_data_files(root, max_files=2)) == 2


# ============================================================================ uploads
def _h5_bytes(tmp_path, userblock=0) -> bytes:
    p = tmp_path / "f.h5"
    with h5py.File(p, "w", userblock_size=userblock) as f:
        f["x"] = np.arange(3)
    return p.read_bytes()


def _npy_bytes(arr) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_sniff_format(tmp_path):
    assert safety.sniff_format(_h5_bytes(tmp_path)) == "hdf5"
    assert safety.sniff_format(_h5_bytes(tmp_path, userblock=1024)) == "hdf5"
    assert safety.sniff_format(_npy_bytes(np.zeros(3))) == "npy"
    assert safety.sniff_format(b"PK\x03\x04 zip") is None
    assert safety.sniff_format(b"") is None


def test_check_upload_accepts_real_files(tmp_path):
    assert safety.check_upload("scan.h5", _h5_bytes(tmp_path), max_bytes=10**6) == "hdf5"
    assert safety.check_upload("SCAN.HDF5", _h5_bytes(tmp_path), max_bytes=10**6) == "hdf5"
    assert safety.check_upload("stack.npy", _npy_bytes(np.zeros((2, 2, 2))), max_bytes=10**6) == "npy"


@pytest.mark.parametrize("name,content,pattern", [
    ("big.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 2000, "larger than the upload limit"),
    ("empty.h5", b"", "empty"),
    ("script.py", b"print(1)", "not accepted"),
    ("noext", b"\x93NUMPY", "not accepted"),
    ("data.pkl", b"\x80\x04", "not accepted"),
    ("fake.h5", b"hello, I am text", "not a valid HDF5 file .*looks like text"),
    ("fake.npy", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "not a valid NPY file .*looks like a HDF5 file"),
    ("zipped.h5", b"PK\x03\x04" + b"\0" * 100, "zip archive"),
])
def test_check_upload_rejects(name, content, pattern):
    with pytest.raises(UploadError, match=pattern) as info:
        safety.check_upload(name, content, max_bytes=1000)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name,expected", [
    ("scan.h5", "scan.h5"), ("../../etc/passwd.h5", "passwd.h5"), ("C:\\Users\\me\\x.npy", "x.npy"),
    (".bashrc.h5", "bashrc.h5"), ("a b<c>.h5", "a_b_c_.h5"), ("", "upload"), ("..", "upload"),
    ("x" * 300 + ".h5", "x" * 97 + ".h5"),
])
def test_safe_filename(name, expected):
    assert safety.safe_filename(name) == expected


def test_write_upload_goes_to_a_fresh_private_folder(tmp_path):
    content = _npy_bytes(np.arange(6.0).reshape(1, 2, 3))
    p = safety.write_upload("../../evil name.npy", content, max_bytes=10**6, directory=tmp_path)
    assert p.parent.parent == tmp_path and p.name == "evil_name.npy"
    assert oct(p.parent.stat().st_mode & 0o777) == "0o700"
    assert p.read_bytes() == content
    with pytest.raises(UploadError):
        safety.write_upload("x.npy", b"nope", max_bytes=10**6, directory=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # a refused upload writes nothing


def test_max_upload_mb(monkeypatch):
    monkeypatch.delenv(safety.MAX_UPLOAD_ENV, raising=False)
    assert safety.max_upload_mb() == 200
    assert safety.max_upload_mb(5) == 5
    monkeypatch.setenv(safety.MAX_UPLOAD_ENV, "12.5")
    assert safety.max_upload_mb() == 12.5
    for bad in ("-1", "0", "nan", "inf", "lots"):
        monkeypatch.setenv(safety.MAX_UPLOAD_ENV, bad)
        with pytest.raises(ValueError):
            safety.max_upload_mb()


def test_no_eval_of_user_text_in_the_package():
    pat = re.compile(r"(?<![\w.])(eval|exec)\s*\(|pickle\.loads?\(|allow_pickle\s*=\s*True|literal_eval")
    hits = []
    for path in (REPO / "xrdwidgets").rglob("*.py"):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pat.search(line.split("#")[0]):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not hits, hits


# ============================================================================ the served app
def test_voila_command_keeps_secure_defaults(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text("{}")
    cmd = appserver.voila_command(nb, port=1234)
    assert cmd[:4] == [sys.executable, "-m", "xrdwidgets.serve.guarded_voila", str(nb.resolve())]  # Voila + guards
    assert "--Voila.ip=127.0.0.1" in cmd and "--port=1234" in cmd and "--no-browser" in cmd
    assert not any(a.startswith("--ip") for a in cmd)            # Voila ignores --ip silently
    assert "--strip_sources=True" in cmd and "--show_tracebacks=False" in cmd
    assert not any("file_allowlist" in a or "file_whitelist" in a or "token" in a for a in cmd)
    assert "--MappingKernelManager.cull_idle_timeout=300" in cmd      # issue 13: tuned to free memory
    assert "--MappingKernelManager.cull_interval=30" in cmd
    assert "--GuardedVoila.max_kernels=10" in cmd and "--GuardedVoila.max_kernels_per_client=3" in cmd
    assert "--MappingKernelManager.cull_connected=False" in cmd
    assert "--Voila.port_retries=0" in cmd
    assert not any("preheat" in a for a in cmd)
    pre = appserver.voila_command(nb, port=1, preheat=True, pool_size=3, cull_idle_timeout=5, open_browser=True)
    assert "--preheat_kernel=True" in pre and "--pool_size=3" in pre
    assert "--MappingKernelManager.cull_idle_timeout=5" in pre and "--no-browser" not in pre
    with pytest.raises(FileNotFoundError):
        appserver.voila_command(tmp_path / "missing.ipynb", port=1)


def test_run_folder_sets_the_websocket_limit_to_the_upload_limit():
    folder = appserver._run_folder(max_upload_mb=50)
    try:
        conf = json.loads((folder / "voila.json").read_text())
        # issue 13: the upload limit + 1 MB (was 2x + 16 MB: a client skipping the browser check
        # could send 416 MB messages)
        assert conf == {"Voila": {"tornado_settings": {"websocket_max_message_size": 51 * 2**20}}}
    finally:
        import shutil

        shutil.rmtree(folder)


def test_voila_reads_the_run_folder_config(tmp_path, monkeypatch):
    pytest.importorskip("voila.app")
    from xrdwidgets.serve.guarded_voila import GuardedVoila

    folder = appserver._run_folder(max_upload_mb=1)
    monkeypatch.chdir(folder)
    app = GuardedVoila()
    app.initialize(["--no-browser", "--Voila.ip=127.0.0.1", "--MappingKernelManager.cull_idle_timeout=7",
                    "--GuardedVoila.max_kernels=4", "--GuardedVoila.max_kernels_per_client=0"])
    assert app.tornado_settings == {"websocket_max_message_size": 2 * 2**20}
    assert (app.max_kernels, app.max_kernels_per_client) == (4, 0)
    assert app.ip == "127.0.0.1"
    assert app.voila_configuration.strip_sources and not app.voila_configuration.show_tracebacks


def test_dashboards_are_found_and_written_when_absent(tmp_path, monkeypatch):
    monkeypatch.delenv(appserver.DASHBOARDS_ENV, raising=False)
    assert appserver.dashboards_dir() == REPO / "dashboards"
    assert appserver.app_notebook() == REPO / "dashboards" / "app.ipynb"
    monkeypatch.setenv(appserver.DASHBOARDS_ENV, str(tmp_path))
    assert appserver.dashboards_dir() == tmp_path.resolve()
    monkeypatch.delenv(appserver.DASHBOARDS_ENV)
    # an installation without the repository: the app notebook is written to a temporary folder
    monkeypatch.setattr(appserver, "__file__", str(tmp_path / "pkg" / "appserver.py"))
    nb = appserver.app_notebook()
    assert nb.parent != REPO / "dashboards"
    cells = [c["source"] for c in json.loads(nb.read_text())["cells"]]
    assert cells == list(appserver.APP_CELLS)


def test_app_notebook_uses_the_documented_app_api():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(REPO / "dashboards" / "app.ipynb", as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from xrdwidgets.widgets.app import App" in code and "App.served(" in code
    from xrdwidgets.widgets.app import App

    assert callable(App.served)  # the classmethod the notebook calls exists


def test_launch_passes_data_folder_and_upload_limit(tmp_path, monkeypatch):
    seen = {}

    class FakePopen:
        def __init__(self, cmd, **kw):
            seen.update(kw, cmd=cmd)
            self.pid = 0

        def poll(self):
            return 0

    monkeypatch.setattr(appserver.subprocess, "Popen", FakePopen)
    monkeypatch.setenv(safety.DATA_DIR_ENV, "/somewhere/else")
    nb = tmp_path / "x.ipynb"
    nb.write_text("{}")
    servers = [appserver.launch(nb, port=4321, data_dir=tmp_path, max_upload_mb=7)]
    try:
        assert seen["env"][safety.DATA_DIR_ENV] == str(tmp_path.resolve())
        assert seen["env"][safety.MAX_UPLOAD_ENV] == "7"
        assert seen["start_new_session"] and Path(seen["cwd"]) == servers[0].run_dir
        assert servers[0].url == "http://127.0.0.1:4321/"
        assert seen["env"][safety.ALLOW_OVERWRITE_ENV] == "0"
        assert Path(seen["env"][safety.SCRATCH_ENV]) == servers[0].run_dir / "scratch"
        servers.append(appserver.launch(nb, port=0))
        # issue 13: the served app always has a data folder (exports never go to a working
        # directory): without one given, an empty private folder in the run folder
        assert Path(seen["env"][safety.DATA_DIR_ENV]) == servers[1].run_dir / "data"
        assert 0 < servers[1].port < 65536
    finally:
        import shutil

        for server in servers:
            shutil.rmtree(server.run_dir, ignore_errors=True)


def test_cli_app_builds_the_server_call(monkeypatch, tmp_path):
    from xrdwidgets import cli

    calls = {}
    monkeypatch.setattr(appserver, "serve", lambda target, **kw: calls.update(kw, target=target) or 0)
    assert cli.main(["app", "--port", "9999", "--data-dir", str(tmp_path), "--preheat", "--no-browser"]) == 0
    assert calls["target"] == appserver.app_notebook()
    assert calls["port"] == 9999 and calls["data_dir"] == str(tmp_path) and calls["preheat"]
    assert calls["open_browser"] is False
    assert cli.main(["app", "--tree", "--no-browser"]) == 0
    assert calls["target"] == appserver.dashboards_dir()
