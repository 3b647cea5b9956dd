"""Serve the dashboards with Voila: the command line of ``xrdwidgets app``.

:func:`voila_command` builds the Voila command line, :func:`launch` starts it in a process group
of its own, :func:`wait_ready` polls until it answers, :func:`stop` ends the whole group, and
:func:`serve` does all of it for the CLI (until Ctrl-C).

What the served app looks like from outside
-------------------------------------------
* It listens on ``127.0.0.1`` only (``--Voila.ip``; Voila's ``--ip`` alias does not exist and
  would be ignored) without a token: anyone *on this machine* can open it. Publish it through
  an authenticating proxy (JupyterHub, Binder) rather than on a public address.
* Voila's secure defaults are kept and stated: notebook sources stripped, no tracebacks sent
  to the browser, the static-file allowlist left at its default (images only), only widget
  (comm) messages accepted from the page (Voila's own restriction).
* The server is :mod:`xrdwidgets.serve.guarded_voila` (Voila plus guards): kernel websockets must use
  the v1 subprotocol (a legacy one freezes Voila 0.5.13, see there); at most ``max_kernels``
  kernels run and at most ``max_kernels_per_client`` per client address (the remote IP; behind a
  proxy on this machine all visitors are one client, so set 0 there); a visit over a cap gets a
  "server is full, try again in N minutes" page (HTTP 503); after kernels end the server hands
  freed memory back to the OS.
* Every page visit starts a kernel; a page that closes shuts its kernel down; a kernel whose page
  has gone without that (no connection) and that has been idle for ``cull_idle_timeout`` seconds
  is shut down (checked every ``cull_interval``). ``preheat=True`` keeps a pool of kernels that
  have already run the notebook, so a visit renders at once (pool kernels count to the cap;
  the pool refills itself without asking, so it can go over the cap by up to the pool size).
* Websocket messages may be as large as the upload limit + 1 MB (:func:`websocket_limit`);
  Tornado drops a connection that sends more. An upload is one message; the upload button
  (:class:`xrdwidgets.widgets.upload.SizeLimitedUpload`) refuses a file over the upload limit in
  the browser, before it is read, and the panel says so; a file within it fits the websocket
  limit; a client that skips the browser check loses its connection. The integer setting goes
  in a ``voila.json`` written to a private run folder that is the server's working directory
  (Voila's command line cannot pass integers inside ``tornado_settings``).
* Exports from the dashboards go to ``<data folder>/results/`` (:func:`xrdwidgets.base.safety.results_root`)
  and replace only files this visitor's kernel wrote, unless ``allow_overwrite`` (passed as
  ``XRDWIDGETS_ALLOW_OVERWRITE``). Uploads go to a per-server scratch folder in the run folder,
  removed with it.
* The data folder reaches the notebooks' kernels as the environment variable
  ``XRDWIDGETS_DATA_DIR`` (:data:`xrdwidgets.base.safety.DATA_DIR_ENV`), the upload limit as
  ``XRDWIDGETS_MAX_UPLOAD_MB``; the data panel confines every path to the folder.

Where the dashboards are
------------------------
The notebooks live in ``dashboards/`` at the root of the repository, next to the package (the
editable install the project uses finds them there). An installation without the repository
(a plain wheel) has no such folder; then the app notebook (its two cells are
:data:`APP_CELLS`) is written to a temporary folder and served from there. Set
``XRDWIDGETS_DASHBOARDS`` to serve another folder.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..base import safety
from ..base.errors import BusyError, InputError

log = logging.getLogger(__name__)

__all__ = ["APP_NOTEBOOK", "APP_CELLS", "OPEN_ENV", "VoilaServer", "PortInUseError", "check_port_free", "dashboards_dir", "app_notebook", "free_port",
           "websocket_limit",
           "voila_command", "launch", "wait_ready", "stop", "serve"]

#: File name of the main dashboard inside the dashboards folder.
APP_NOTEBOOK = "app.ipynb"
#: Code cells of the app notebook (used when the repository's dashboards folder is absent).
APP_CELLS = (
    "from xrdwidgets.widgets.app import App\n\napp = App.served(size=\"small\")",
    "app.widget",
)
DASHBOARDS_ENV = "XRDWIDGETS_DASHBOARDS"
DEFAULT_PORT = 8866
#: Default culling: shut down kernels idle (and without a page) for 5 minutes; check every 30 s.
CULL_IDLE_TIMEOUT_S = 300
CULL_INTERVAL_S = 30
#: Default caps: kernels running at once, and per client address (see the module docstring).
MAX_KERNELS = 10
MAX_KERNELS_PER_CLIENT = 3
_WS_MARGIN_BYTES = 1 * 2**20
#: With pre-heated kernels: seconds before a used kernel is replaced (after its page is drawn).
PREHEAT_FILL_DELAY_S = 8.0


def websocket_limit(max_upload_mb: float) -> int:
    """Largest websocket message (bytes) for an upload limit: ``limit + 1 MB``.

    An upload within the limit is one binary message of its bytes plus a small JSON header; the
    page refuses larger files before sending them, so anything larger comes from a client that
    skipped that check, and Tornado closes its connection.
    """
    return int(max_upload_mb * 2**20) + _WS_MARGIN_BYTES


# ============================================================================ notebooks
def _notebook_json(cells) -> dict:
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
                   "outputs": [], "source": src} for i, src in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def dashboards_dir() -> Path:
    """The folder of dashboard notebooks (see the module docstring for how it is found)."""
    env = os.environ.get(DASHBOARDS_ENV, "").strip()
    if env:
        folder = Path(env).expanduser().resolve()
        if not folder.is_dir():
            raise NotADirectoryError(f"{DASHBOARDS_ENV}={env!r} is not a folder")
        return folder
    repo = Path(__file__).resolve().parents[2] / "dashboards"
    if (repo / APP_NOTEBOOK).is_file():
        return repo
    folder = Path(tempfile.mkdtemp(prefix="xrdwidgets-dashboards-"))
    (folder / APP_NOTEBOOK).write_text(json.dumps(_notebook_json(APP_CELLS), indent=1), encoding="utf-8")
    log.info("no dashboards folder next to the package; wrote %s", folder / APP_NOTEBOOK)
    return folder


def app_notebook() -> Path:
    """Path of the main dashboard notebook (``app.ipynb``)."""
    return dashboards_dir() / APP_NOTEBOOK


# ============================================================================ command line
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortInUseError(BusyError):
    """The port asked for is already taken on 127.0.0.1."""


def check_port_free(port: int) -> None:
    """Raise :class:`PortInUseError` (naming the port) when ``127.0.0.1:port`` is taken.

    Bound with ``SO_REUSEADDR`` as Tornado binds: connections of a stopped server left in
    TIME_WAIT do not count, a listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError as exc:
            raise PortInUseError(f"port {int(port)} on 127.0.0.1 is already in use (another xrdwidgets "
                                 f"app or server?); stop it or choose another with --port") from exc


def voila_command(target, *, port: int, preheat: bool = False, pool_size: int = 1,
                  fill_delay: float = PREHEAT_FILL_DELAY_S, cull_idle_timeout: int = CULL_IDLE_TIMEOUT_S, cull_interval: int = CULL_INTERVAL_S,
                  max_kernels: int = MAX_KERNELS, max_kernels_per_client: int = MAX_KERNELS_PER_CLIENT,
                  open_browser: bool = False, python: str | None = None, extra_args=()) -> list[str]:
    """The Voila command line serving ``target`` (a notebook or a folder of notebooks).

    Parameters
    ----------
    target : path-like
        A notebook (served at ``/``) or a folder (a listing at ``/``, notebooks at
        ``/voila/render/NAME.ipynb``).
    port : int
        Port on 127.0.0.1 (no retries on other ports: a busy port is an error).
    preheat : bool
        Keep ``pool_size`` kernels per notebook that have already run it.
    fill_delay : float
        Seconds before a used pre-heated kernel is replaced. The replacement runs the whole
        notebook (imports, demo data); started at once (Voila's default, 1 s) it competes for the
        CPU with the page that is rendering, so it waits until that page is drawn.
    cull_idle_timeout, cull_interval : int
        Seconds; see the module docstring.
    max_kernels, max_kernels_per_client : int
        Kernel caps (0: none); see the module docstring.
    open_browser : bool
        Let Voila open a browser tab.
    python : str, optional
        Interpreter (default: this one, so kernels use this environment).
    extra_args : sequence of str
        More options for the server (e.g. ``--GuardedVoila.release_memory=False``), last.

    Returns
    -------
    list of str
    """
    target = Path(target).resolve()
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such notebook or folder")
    cmd = [python or sys.executable, "-m", "xrdwidgets.serve.guarded_voila", str(target),
           f"--port={int(port)}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
           "--strip_sources=True", "--show_tracebacks=False",
           f"--MappingKernelManager.cull_idle_timeout={int(cull_idle_timeout)}",
           f"--MappingKernelManager.cull_interval={int(cull_interval)}",
           "--MappingKernelManager.cull_connected=False",
           f"--GuardedVoila.max_kernels={int(max_kernels)}",
           f"--GuardedVoila.max_kernels_per_client={int(max_kernels_per_client)}"]
    if not open_browser:
        cmd.append("--no-browser")
    if preheat:
        cmd += ["--preheat_kernel=True", f"--pool_size={int(pool_size)}",
                f"--VoilaKernelManager.fill_delay={float(fill_delay)}"]
    return cmd + [str(a) for a in extra_args]


def _run_folder(max_upload_mb: float) -> Path:
    """A private working folder holding the ``voila.json`` with the integer tornado settings."""
    folder = Path(tempfile.mkdtemp(prefix="xrdwidgets-voila-"))
    limit = websocket_limit(max_upload_mb)
    (folder / "voila.json").write_text(json.dumps(
        {"Voila": {"tornado_settings": {"websocket_max_message_size": limit}}}, indent=1), encoding="utf-8")
    return folder


@dataclass
class VoilaServer:
    """A running Voila process (from :func:`launch`)."""

    process: subprocess.Popen
    target: Path
    url: str
    port: int
    run_dir: Path
    log_path: Path
    command: list = field(default_factory=list)

    def log_text(self) -> str:
        """What the server has written so far (stdout + stderr)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


#: Environment variable naming the file (inside the data folder) the app opens first.
OPEN_ENV = "XRDWIDGETS_OPEN"


def launch(target=None, *, port: int | None = None, data_dir=None, open_file=None, max_upload_mb: float = 200,
           allow_overwrite: bool = False, log_file=None, env: dict | None = None, demo_cache: bool = True,
           **kwargs) -> VoilaServer:
    """Start Voila in the background, in a new process group (see :func:`stop`).

    Parameters
    ----------
    target : path-like, optional
        Notebook or folder; default the app notebook (:func:`app_notebook`).
    port : int, optional
        Default :data:`DEFAULT_PORT`; ``0`` picks a free port.
    data_dir : path-like, optional
        The data folder visitors may read (checked to exist; passed as ``XRDWIDGETS_DATA_DIR``);
        their exports go to its ``results/`` sub-folder. Default: an empty private folder in
        the run folder (so exports never land in a working directory; deleted by :func:`stop`).
    open_file : str, optional
        A file inside ``data_dir`` (relative to it, or a path inside it) that the app opens
        first (passed as ``XRDWIDGETS_OPEN``); checked to exist before the server starts.
    max_upload_mb : float
        Largest upload the page may send (sets the websocket message limit).
    allow_overwrite : bool
        Let visitors replace files in ``results/`` that their page did not write.
    log_file : path-like, optional
        Where the server's output goes (default ``voila.log`` in the run folder, which
        :func:`stop` deletes).
    env : dict, optional
        Extra environment variables for the server and its kernels.
    demo_cache : bool
        Compute the demo and its FBP once, now, into the run folder, and point the kernels at
        it (:func:`xrdwidgets.sim.demo.write_demo_cache`): a visit then reads the demo instead
        of simulating and reconstructing it (about a second less to the first render).
    **kwargs
        Passed to :func:`voila_command` (``preheat``, ``pool_size``, ``cull_idle_timeout``, …).
    """
    target = Path(target) if target is not None else app_notebook()
    port = DEFAULT_PORT if port is None else (free_port() if int(port) == 0 else int(port))
    check_port_free(port)
    open_rel = None
    if open_file is not None:
        if data_dir is None:
            raise InputError(f"open_file={open_file!r} needs a data folder (--data-dir)")
        root = safety.data_root(data_dir)
        open_rel = safety.confine(open_file, root, must_exist=True).relative_to(root).as_posix()
    cmd = voila_command(target, port=port, **kwargs)
    run_dir = _run_folder(max_upload_mb)
    full_env = dict(os.environ)
    full_env.pop(safety.DATA_DIR_ENV, None)
    if data_dir is not None:
        root = safety.data_root(data_dir)
    else:
        root = run_dir / "data"
        root.mkdir()
    full_env[safety.DATA_DIR_ENV] = str(root)
    full_env.pop(OPEN_ENV, None)
    if open_rel is not None:
        full_env[OPEN_ENV] = open_rel
    (run_dir / "scratch").mkdir(mode=0o700)
    full_env[safety.SCRATCH_ENV] = str(run_dir / "scratch")
    full_env[safety.ALLOW_OVERWRITE_ENV] = "1" if allow_overwrite else "0"
    full_env[safety.MAX_UPLOAD_ENV] = f"{safety.max_upload_mb(max_upload_mb):g}"
    if demo_cache:
        from ..sim.demo import DEMO_CACHE_ENV, write_demo_cache

        write_demo_cache(run_dir / "demo-cache")
        full_env[DEMO_CACHE_ENV] = str(run_dir / "demo-cache")
    full_env.update(env or {})
    log_path = Path(log_file) if log_file is not None else run_dir / "voila.log"
    log.info("starting %s", " ".join(cmd))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=run_dir, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return VoilaServer(proc, target.resolve(), f"http://127.0.0.1:{port}/", port, run_dir, log_path, cmd)


def wait_ready(server: VoilaServer, timeout: float = 60.0) -> float:
    """Poll ``/voila/static/`` (which starts no kernel) until the server answers.

    Returns the seconds waited. Raises ``RuntimeError`` (with the server's output) when the
    process exits first, ``TimeoutError`` when it does not answer in time.
    """
    t0 = time.perf_counter()
    url = server.url + "voila/static/"
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"Voila exited with code {server.process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                pass
            return time.perf_counter() - t0
        except urllib.error.HTTPError as exc:   # any HTTP answer means the server is up
            if exc.code < 500:
                return time.perf_counter() - t0
        except (urllib.error.URLError, OSError):
            pass
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"Voila did not answer at {url} within {timeout:.0f} s:\n"
                               f"{server.log_text()[-3000:]}")
        time.sleep(0.2)


def stop(server: VoilaServer, timeout: float = 10.0) -> None:
    """End the server and its kernels: SIGTERM to its process group, then SIGKILL."""
    proc = server.process
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout)
    else:  # kernels may outlive a crashed server
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    shutil.rmtree(server.run_dir, ignore_errors=True)


def serve(target=None, *, open_browser: bool = True, on_ready=None, **kwargs) -> int:
    """Run the app until the server ends or Ctrl-C (the ``xrdwidgets app`` command).

    Parameters
    ----------
    target : path-like, optional
        Notebook or folder (default: the app notebook).
    open_browser : bool
        Open the page in the default browser once the server answers.
    on_ready : callable, optional
        ``on_ready(server, seconds_waited)`` once the server answers (the CLI prints the URL).
    **kwargs
        Passed to :func:`launch`.

    Returns
    -------
    int
        Exit code: 0 after Ctrl-C or SIGTERM, else the server's.

    Notes
    -----
    SIGTERM (``kill PID``) and SIGHUP end the server like Ctrl-C: its whole process group
    (Voila and its kernels) is stopped before this returns, so no child outlives the command.
    """
    server = launch(target, **kwargs)

    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, _interrupt)
        except (ValueError, OSError):  # not the main thread: the caller handles signals
            pass
    try:
        waited = wait_ready(server)
        log.info("serving %s at %s (ready in %.1f s)", server.target, server.url, waited)
        if on_ready is not None:
            on_ready(server, waited)
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        return server.process.wait() or 0
    except KeyboardInterrupt:
        log.info("stopping the server")
        return 0
    finally:
        for sig in previous:  # a second signal must not interrupt the stopping
            signal.signal(sig, signal.SIG_IGN)
        try:
            stop(server)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
