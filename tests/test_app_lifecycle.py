"""``xrdwidgets app`` as a process: SIGTERM by PID ends it and its Voila child, a taken port is
named in a clear error (issue 20). Starts a real Voila server (skips without voila)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from xrdwidgets.serve import appserver

pytest.importorskip("voila")
REPO = Path(__file__).resolve().parents[1]


def _port_free(port: int) -> bool:
    """Whether a new server could listen on the port (as Tornado binds: SO_REUSEADDR, so
    connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _env(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("XRDWIDGETS_DATA_DIR", None)
    return env


def test_port_taken_is_an_error_naming_the_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(appserver.PortInUseError, match=f"port {port} .*already in use"):
            appserver.check_port_free(port)
        out = subprocess.run([sys.executable, "-m", "xrdwidgets.cli", "app", "--no-browser",
                              "--port", str(port)], capture_output=True, text=True, timeout=120,
                             cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode != 0
    assert f"port {port}" in out.stderr and "already in use" in out.stderr
    assert "serving" not in out.stdout


def test_sigterm_ends_the_app_and_its_voila_child(tmp_path):
    port = appserver.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xrdwidgets.cli", "app", "--no-browser", "--port",
                             str(port), "--data-dir", str(tmp_path)], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240  # liveness only: the machine may be loaded
        children: list[int] = []
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            children = children or _children(proc.pid)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/static/", timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not answer")
        children = _children(proc.pid)
        assert children, "no Voila child process"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        end = time.time() + 30
        while time.time() < end and (any(_alive(c) for c in children) or not _port_free(port)):
            time.sleep(0.2)
        assert not any(_alive(c) for c in children), "the Voila child outlived the app"
        assert _port_free(port)
        appserver.check_port_free(port)       # and the app itself would start there again
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_page_links_to_no_cdn():
    from xrdwidgets.serve.guarded_voila import strip_cdn_links

    page = ('<head><link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@fortawesome/'
            'fontawesome-free@^5/css/all.min.css" type="text/css" />\n<link rel="stylesheet" '
            'href="voila/static/x.css">')
    out = strip_cdn_links(page)
    assert "cdn.jsdelivr" not in out and 'href="voila/static/x.css"' in out
    assert b"cdn" not in strip_cdn_links(page.encode())


def test_app_serves_the_demo_output_by_default(tmp_path, monkeypatch):
    # `xrdwidgets demo` then `xrdwidgets app` in the same folder: that folder, demo.h5 opened
    from xrdwidgets import cli

    seen = {}
    monkeypatch.setattr(appserver, "serve", lambda target, **kw: seen.update(kw) or 0)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["app", "--no-browser"]) == 0
    assert seen["data_dir"] is None and seen["open_file"] is None       # nothing written yet
    (tmp_path / cli.DEMO_OUT).mkdir()
    (tmp_path / cli.DEMO_OUT / "demo.h5").write_bytes(b"")
    assert cli.main(["app", "--no-browser"]) == 0
    assert seen["data_dir"] == cli.DEMO_OUT and seen["open_file"] == "demo.h5"
    assert cli.main(["app", "--no-browser", "--data-dir", str(tmp_path), "--open", "x.h5"]) == 0
    assert seen["data_dir"] == str(tmp_path) and seen["open_file"] == "x.h5"


def test_open_file_must_lie_in_the_data_folder(tmp_path):
    with pytest.raises(PermissionError):
        appserver.launch(port=0, data_dir=tmp_path, open_file="../etc/passwd", demo_cache=False)
    with pytest.raises(FileNotFoundError):
        appserver.launch(port=0, data_dir=tmp_path, open_file="missing.h5", demo_cache=False)
