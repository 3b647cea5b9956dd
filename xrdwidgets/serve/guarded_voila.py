"""The Voila application that ``xrdwidgets app`` runs: Voila with three guards for strangers.

``python -m xrdwidgets.serve.guarded_voila NOTEBOOK [Voila options]`` is ``python -m voila`` with:

* **v1 kernel websockets only, well-formed messages only.** A kernel websocket must offer the
  ``v1.kernel.websocket.jupyter.org`` subprotocol (JupyterLab 4 and Voila's page do); one that
  does not is refused with HTTP 400 before the upgrade. Reason: on a legacy-protocol
  websocket, Voila 0.5.13 (``voila/tornado/kernel_websocket_handler.py``,
  ``read_header_from_binary_message``) parses every *outgoing* binary message as the v1 format;
  a legacy binary message (``uint32`` buffer count, offsets, JSON, buffers), e.g. the reply to a
  widget ``request_states``, makes it read a huge "offset count" from the first 8 bytes and
  build a list of that many offsets: the server's only thread spins at 100 % CPU and its memory
  grows without bound, so one message stops the whole server. jupyter_server 2.x
  (``deserialize_msg_from_ws_v1``) does the same with *incoming* v1 messages, so every incoming
  message is checked with :func:`v1_offsets` (bounded work) and the connection is closed on a
  malformed one; outgoing headers are read with :func:`read_v1_header`.
* **Kernel caps.** At most ``max_kernels`` kernels run at once and at most
  ``max_kernels_per_client`` were started by page visits from one client address (the remote
  IP tornado sees: behind a proxy on this machine every visitor is ``127.0.0.1``, so set
  ``max_kernels_per_client=0`` (no per-client cap) there and rely on the proxy). A page visit
  over a cap gets HTTP 503 with a short HTML page ("the server is full, try again in N
  minutes") and a ``Retry-After`` header; no kernel is started.
* **Closed pages free their kernel at once.** The page handler sets the ``_xsrf`` cookie that
  Voila's page sends with its "shut my kernel down" beacon when it is closed; without it (plain
  Voila 0.5.13 here) the beacon is refused (403) and the kernel lives until it is culled.
* **Memory back after culling.** After kernels end (culled or shut down), the server collects
  garbage and returns freed heap to the operating system (glibc ``malloc_trim``), so its
  resident memory falls back near its start instead of staying at its peak.

Options (traitlets, on the command line as ``--GuardedVoila.max_kernels=8`` etc.):
``max_kernels``, ``max_kernels_per_client``, ``retry_minutes``, ``release_memory``.
"""
from __future__ import annotations

import contextvars
import ctypes
import gc
import html
import json
import logging
import math
import re
from dataclasses import dataclass

from jupyter_core.utils import ensure_async
from tornado import web
from traitlets import Bool, Int

from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler
from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler, WebsocketHandler

log = logging.getLogger(__name__)

__all__ = ["V1_SUBPROTOCOL", "v1_offsets", "read_v1_header", "KernelCaps", "GuardedKernelWebsocketHandler",
           "CappedVoilaHandler", "strip_cdn_links", "GuardedVoila", "full_page", "main"]

#: The only kernel websocket subprotocol accepted.
V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
#: At most this many parts (offsets) in a v1 message read by :func:`read_v1_header`.
_MAX_PARTS = 4096
#: Largest header JSON (bytes) parsed by :func:`read_v1_header`.
_MAX_HEADER_BYTES = 1 << 20


def v1_offsets(msg) -> list[int] | None:
    """The part offsets of a v1 binary kernel message, or ``None`` when ``msg`` is not one.

    The v1 format: ``n`` (uint64, little-endian), ``n`` uint64 offsets, then the parts
    (channel, header, parent header, metadata, content, buffers…); part ``i`` is the bytes
    between offsets ``i`` and ``i + 1``. Unlike the parsers of Voila
    (``read_header_from_binary_message``) and jupyter_server (``deserialize_msg_from_ws_v1``),
    which build a list of ``n`` offsets for whatever ``n`` the first 8 bytes say, the work here
    is bounded whatever the bytes: ``n`` must be at least 3 (channel + header), at most 4096 and
    fit in the message, and the offsets must be increasing, start after the offset table and
    end inside the message.
    """
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        return None
    msg = memoryview(msg).cast("B")
    size = len(msg)
    if size < 8:
        return None
    count = int.from_bytes(msg[:8], "little")
    if count < 3 or count > _MAX_PARTS or 8 * (count + 1) > size:
        return None
    offsets = [int.from_bytes(msg[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
    if offsets[0] < 8 * (count + 1) or any(b < a for a, b in zip(offsets, offsets[1:])) or offsets[-1] > size:
        return None
    return offsets


def read_v1_header(msg) -> dict | None:
    """The header (a dict) of a v1 binary kernel message, or ``None`` when ``msg`` is not one
    (see :func:`v1_offsets`; a header over 1 MB is not parsed)."""
    offsets = v1_offsets(msg)
    if offsets is None or offsets[2] - offsets[1] > _MAX_HEADER_BYTES:
        return None
    try:
        header = json.loads(memoryview(msg).cast("B")[offsets[1]:offsets[2]].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def offered_subprotocols(header_value: str | None) -> list[str]:
    """The subprotocols listed in a ``Sec-WebSocket-Protocol`` request header."""
    return [p.strip() for p in (header_value or "").split(",") if p.strip()]


# ============================================================================ kernel caps
@dataclass
class Reservation:
    """A page visit that passed the caps: its client, and its kernel once started."""

    client: str
    kernel_id: str | None = None


#: The reservation of the page visit being handled (set by CappedVoilaHandler for its task).
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("xrdwidgets_reservation", default=None)


class KernelCaps:
    """Counts kernels per client and decides whether a page visit may start one.

    Parameters
    ----------
    max_kernels : int
        Kernels running at once, all clients (pre-heated ones included); 0: no cap.
    max_kernels_per_client : int
        Kernels started by page visits of one client address; 0: no per-client cap.
    """

    def __init__(self, max_kernels: int, max_kernels_per_client: int):
        self.max_kernels = int(max_kernels)
        self.max_kernels_per_client = int(max_kernels_per_client)
        self.owner: dict[str, str] = {}          # kernel id -> client
        self.pending: list[Reservation] = []     # visits whose kernel is not started yet

    def _forget_dead(self, alive) -> None:
        for kid in [k for k in self.owner if k not in alive]:
            del self.owner[kid]

    def usage(self, alive, client: str) -> tuple[int, int]:
        """``(kernels counted against the global cap, kernels counted against client's)``."""
        alive = set(alive)
        self._forget_dead(alive)
        waiting = [r for r in self.pending if r.kernel_id is None]
        total = len(alive) + len(waiting)
        mine = sum(1 for c in self.owner.values() if c == client) + sum(1 for r in waiting if r.client == client)
        return total, mine

    def reserve(self, alive, client: str) -> tuple[Reservation | None, str]:
        """A reservation for a new page visit, or ``(None, why)`` when a cap is reached."""
        total, mine = self.usage(alive, client)
        if self.max_kernels and total >= self.max_kernels:
            return None, f"all {self.max_kernels} places are taken"
        if self.max_kernels_per_client and mine >= self.max_kernels_per_client:
            return None, (f"you already have {mine} open page(s) of this app (at most "
                          f"{self.max_kernels_per_client}); close one")
        res = Reservation(client)
        self.pending.append(res)
        return res, ""

    def started(self, res: Reservation | None, kernel_id: str, *, replace: bool = False) -> None:
        """Record the kernel started for ``res`` (the first one; ``replace`` for a pooled one)."""
        if res is None or (res.kernel_id is not None and not replace):
            return
        if res.kernel_id is not None:
            self.owner.pop(res.kernel_id, None)
        res.kernel_id = kernel_id
        self.owner[kernel_id] = res.client

    def release(self, res: Reservation) -> None:
        """The page visit has been answered (its kernel, if any, stays counted while alive)."""
        if res in self.pending:
            self.pending.remove(res)


def full_page(reason: str, retry_minutes: int) -> str:
    """The HTML page a visitor over a cap sees."""
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Server full</title></head>"
            "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
            "<h2>The server is full</h2>"
            f"<p>{html.escape(reason[:1].upper() + reason[1:])}. Please try again in {int(retry_minutes)} minute"
            f"{'s' if int(retry_minutes) != 1 else ''}.</p>"
            "<p><small>Every open page of this dashboard runs its own Python process on the "
            "server; pages closed or left idle are shut down after a while, which frees a "
            "place.</small></p></body></html>")


# ============================================================================ handlers
class GuardedKernelWebsocketHandler(VoilaKernelWebsocketHandler):
    """Voila's kernel websocket, v1 subprotocol only, with a bounded header parser."""

    async def get(self, *args, **kwargs):
        offered = offered_subprotocols(self.request.headers.get("Sec-WebSocket-Protocol"))
        if V1_SUBPROTOCOL not in offered:
            log.warning("refused a kernel websocket from %s without the %s subprotocol (offered: %s)",
                        self.request.remote_ip, V1_SUBPROTOCOL, offered or "none")
            raise web.HTTPError(400, f"kernel websockets must use the {V1_SUBPROTOCOL} subprotocol")
        return await super().get(*args, **kwargs)

    def on_message(self, ws_message):
        # jupyter_server's v1 parser loops over whatever part count the first 8 bytes claim:
        # only well-formed binary v1 messages reach it
        if v1_offsets(ws_message) is None:
            log.warning("closed the kernel websocket of %s: a message that is not a v1 binary "
                        "kernel message (%s, %d bytes)", self.request.remote_ip,
                        type(ws_message).__name__, len(ws_message))
            self.close(1003, "malformed kernel message")
            return None
        return super().on_message(ws_message)

    def select_subprotocol(self, subprotocols):
        return V1_SUBPROTOCOL if V1_SUBPROTOCOL in subprotocols else None

    def write_message(self, message, binary: bool = False):
        if isinstance(message, (bytes, bytearray, memoryview)):
            header = read_v1_header(message)
        elif isinstance(message, dict):
            header = message.get("header")
        else:
            header = None
        if isinstance(header, dict) and header.get("msg_type") == "execute_input":
            return None  # Voila hides the notebook's code from the page
        return WebsocketHandler.write_message(self, message, binary)


#: ``<link>`` tags of Voila's lab template that load FontAwesome from a CDN; Voila's own bundle
#: (served from this server) already carries the icon font, so they are dropped from the page
#: and the page fetches nothing from another host (it works offline, e.g. at a beamline).
_CDN_LINK = re.compile(rb'<link[^>]*href="https?://cdn\.jsdelivr\.net/[^"]*"[^>]*>')


def strip_cdn_links(chunk):
    """``chunk`` (str or bytes of a page) without the CDN ``<link>`` tags (:data:`_CDN_LINK`)."""
    if isinstance(chunk, str):
        return _CDN_LINK.sub(b"", chunk.encode("utf-8")).decode("utf-8")
    if isinstance(chunk, (bytes, bytearray)):
        return _CDN_LINK.sub(b"", bytes(chunk))
    return chunk


class CappedVoilaHandler(TornadoVoilaHandler):
    """Voila's page handler, refusing a visit (HTTP 503 + a page) when a kernel cap is reached,
    and writing its page without links to a CDN (:func:`strip_cdn_links`)."""

    def write(self, chunk):
        super().write(strip_cdn_links(chunk))

    async def get(self, path=None):
        app = self.settings["xrdwidgets_guarded_voila"]
        caps: KernelCaps = app.kernel_caps
        client = self.request.remote_ip or "?"
        res, why = caps.reserve(self.kernel_manager.list_kernel_ids(), client)
        if res is None:
            log.warning("page visit from %s refused: %s", client, why)
            self.set_status(503)
            self.set_header("Retry-After", str(60 * app.retry_minutes))
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(full_page(why, app.retry_minutes))
            return
        # Voila's page shuts its kernel down on leaving (a beacon POST carrying the _xsrf
        # cookie); Voila never sets that cookie, so the POST got 403 and every closed page's
        # kernel lived on until culled. Reading the token sets the cookie.
        self.xsrf_token  # noqa: B018
        token = _CURRENT.set(res)
        try:
            await super().get(path)
        finally:
            _CURRENT.reset(token)
            caps.release(res)


def _attribute_kernels(kernel_manager, caps: KernelCaps) -> None:
    """Wrap the kernel manager so kernels started for a page visit are counted to its client."""
    start = kernel_manager.start_kernel

    async def start_kernel(*args, **kwargs):
        kernel_id = await ensure_async(start(*args, **kwargs))
        caps.started(_CURRENT.get(), kernel_id)
        return kernel_id

    kernel_manager.start_kernel = start_kernel
    rendered = getattr(kernel_manager, "get_rendered_notebook", None)
    if rendered is not None:  # pre-heated kernels: the visit takes one from the pool
        async def get_rendered_notebook(*args, **kwargs):
            out = await rendered(*args, **kwargs)
            caps.started(_CURRENT.get(), out[2], replace=True)
            return out

        kernel_manager.get_rendered_notebook = get_rendered_notebook


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``; else nothing)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ============================================================================ the application
class GuardedVoila(Voila):
    """Voila with v1-only kernel websockets, kernel caps and memory release (module docstring)."""

    name = "voila"
    max_kernels = Int(10, config=True, help="Kernels running at once (0: no cap).")
    max_kernels_per_client = Int(3, config=True, help="Kernels started by one client address "
                                 "(0: no per-client cap; set 0 behind a proxy on this machine).")
    release_memory = Bool(True, config=True, help="After kernels end, collect garbage and hand "
                          "freed heap back to the OS (malloc_trim).")
    retry_minutes = Int(0, config=True, help="Minutes shown on the 'server full' page "
                        "(0: from the kernel manager's culling settings).")

    def init_settings(self):
        settings = super().init_settings()
        self.kernel_caps = KernelCaps(self.max_kernels, self.max_kernels_per_client)
        _attribute_kernels(self.kernel_manager, self.kernel_caps)
        if not self.retry_minutes:
            km = self.kernel_manager
            seconds = int(getattr(km, "cull_idle_timeout", 0) or 0) + int(getattr(km, "cull_interval", 0) or 0)
            self.retry_minutes = max(1, math.ceil(seconds / 60)) if seconds else 5
        settings["xrdwidgets_guarded_voila"] = self
        if self.release_memory:
            self._start_memory_release()
        return settings

    def _start_memory_release(self):
        """Every cull interval (at most 30 s): when fewer kernels run than at the last look,
        :func:`release_memory`."""
        from tornado.ioloop import PeriodicCallback

        seen = [0]

        def check():
            n = len(self.kernel_manager.list_kernel_ids())
            if n < seen[0]:
                release_memory()
                log.info("kernels %d -> %d: memory released", seen[0], n)
            seen[0] = n

        interval = int(getattr(self.kernel_manager, "cull_interval", 0) or 0) or 30
        self._memory_callback = PeriodicCallback(check, 1000 * max(1, min(interval, 30)))
        self._memory_callback.start()



    def init_handlers(self):
        swap = {VoilaKernelWebsocketHandler: GuardedKernelWebsocketHandler,
                TornadoVoilaHandler: CappedVoilaHandler}
        out = []
        for spec in super().init_handlers():
            spec = tuple(spec)
            if len(spec) >= 2 and spec[1] in swap:
                spec = (spec[0], swap[spec[1]], *spec[2:])
            out.append(spec)
        return out

def main(argv=None):
    """Run :class:`GuardedVoila` (the command line of ``python -m voila``)."""
    GuardedVoila.launch_instance(argv=argv)


if __name__ == "__main__":
    main()
