"""A JupyterLab server for the browser tests, and DOM measurements of plotly figures.

:func:`start_lab` starts ``jupyter lab`` on a free port of 127.0.0.1 in a process group of its
own, serving a folder (a temporary copy of the fixture notebooks), with private config and
runtime folders: no token, no password, no browser, the app exposed as ``window.jupyterapp``
(so a test can run ``notebook:run-all-cells``), news and update checks off. The lab
extensions (ipywidgets, anywidget, plotly) are found in ``sys.prefix/share/jupyter`` as usual:
only the *user* folders are replaced. :func:`stop_lab` kills the whole group (server + kernels).

:data:`MEASURE_JS` measures every plotly figure under a container: its size, its widget's
size, the size of the nearest ancestor that is the container, and whether the heatmap / line
traces were actually drawn.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def skip_reason_lab() -> str | None:
    """Why JupyterLab cannot be started here (``None`` when it can)."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed (pip install jupyterlab)"
    try:
        import ipykernel  # noqa: F401
    except ImportError:
        return "ipykernel is not installed"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabServer:
    process: subprocess.Popen
    url: str
    root: Path
    home: Path
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


#: User settings of the test server (no pop-ups asking to fetch news).
_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}


def start_lab(root: Path, *, log_file: Path, timeout: float = 90.0) -> LabServer:
    """Start JupyterLab serving ``root`` and wait until ``/api/status`` answers."""
    home = Path(tempfile.mkdtemp(prefix="xrdwidgets-lab-"))
    cfg, data, runtime = home / "config", home / "data", home / "runtime"
    for d in (cfg, data, runtime):
        d.mkdir()
    settings = cfg / "lab" / "user-settings"
    for rel, value in _USER_SETTINGS.items():
        p = settings / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value), encoding="utf-8")
    port = free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_DATA_DIR=str(data),
               JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_PLATFORM_DIRS="0")
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTERLAB_SETTINGS_DIR", None)
    env.pop("JUPYTERLAB_WORKSPACES_DIR", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={root}", "--IdentityProvider.token=", "--ServerApp.password=",
           "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
           "--ServerApp.open_browser=False"]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(proc, f"http://127.0.0.1:{port}/", root, home, Path(log_file))
    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            stop_lab(server)
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + "api/status", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.perf_counter() - t0 > timeout:
            stop_lab(server)
            raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{server.log_text()[-3000:]}")
        time.sleep(0.25)


def stop_lab(server: LabServer, timeout: float = 10.0) -> None:
    """SIGTERM to the server's process group (server + kernels), then SIGKILL."""
    proc = server.process
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    # kernels are in the same group; make sure none is left
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    shutil.rmtree(server.home, ignore_errors=True)


#: ``(rootSelector) => [...]``: one record per plotly figure under the first element matching
#: ``rootSelector``. Sizes are bounding boxes ``[x, y, w, h]`` in CSS pixels.
MEASURE_JS = r"""
(root) => {
  const box = (e) => { if (!e) return null; const r = e.getBoundingClientRect();
                       return [r.x, r.y, r.width, r.height]; };
  const top = typeof root === 'string' ? document.querySelector(root) : root;
  if (!top) return null;
  return Array.from(top.querySelectorAll('.js-plotly-plot')).map((plot) => {
    const full = plot._fullLayout || {};
    const svg = plot.querySelector('svg.main-svg');
    const hm = Array.from(plot.querySelectorAll('g.heatmaplayer g.hm image'));
    const lines = Array.from(plot.querySelectorAll('.scatterlayer .trace path.js-line'));
    const title = plot.querySelector('.g-gtitle .gtitle');
    // the fixed-size Box around the figure (xrdwidgets' fixed_box), else the figure's parent widget
    let holder = plot.parentElement;
    while (holder && holder !== top && !holder.classList.contains('widget-box')) holder = holder.parentElement;
    const visible = !!(plot.offsetParent || plot.getClientRects().length);
    return {
      plot: box(plot), svg: box(svg), holder: box(holder), top: box(top), visible,
      layout: [full.width || null, full.height || null],
      heatmaps: hm.map((im) => ({ box: box(im), href: (im.getAttribute('href') || im.getAttribute('xlink:href') || '').length })),
      lines: lines.map((p) => (p.getAttribute('d') || '')),
      title: title ? title.textContent : '',
    };
  });
}
"""
