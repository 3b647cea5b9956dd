"""The served app against a hostile client (issue 13, findings 2 and 3).

A real ``xrdwidgets.serve.guarded_voila`` server (as ``xrdwidgets app`` runs it) serves a one-cell
notebook holding a widget with a binary buffer (so a widget ``request_states`` reply carries
buffers, the message that froze Voila). Requests come from 127.0.0.1 and 127.0.0.2 (two
"clients": Linux lets a socket use any loopback source address).
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("voila")
psutil = pytest.importorskip("psutil")

from xrdwidgets.serve import appserver
from xrdwidgets.serve.guarded_voila import V1_SUBPROTOCOL, read_v1_header, v1_offsets

MAX_KERNELS, PER_CLIENT, UPLOAD_MB = 3, 2, 1
NOTEBOOK_CELL = ("import ipywidgets as w\n"
                 "im = w.Image(value=b'\\x89PNG\\r\\n\\x1a\\n' + bytes(1000))\nim")


def _notebook(path):
    path.write_text(json.dumps(appserver._notebook_json([NOTEBOOK_CELL])))
    return path


def _get(port, path="/", source="127.0.0.1", timeout=90.0, headers=None):
    """``(status, headers, body)`` of a GET from ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _kernel_pids(server_pid):
    out = []
    for p in psutil.Process(server_pid).children(recursive=True):
        try:
            if any("ipykernel" in part for part in p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _rss_mb(pid):
    return psutil.Process(pid).memory_info().rss / 2**20


def _answers_quickly(port, limit_s=2.0):
    """The server answers a request that starts no kernel within ``limit_s`` seconds."""
    t0 = time.perf_counter()
    try:
        _get(port, "/voila/static/", timeout=limit_s)
    except (OSError, http.client.HTTPException):
        return False
    return time.perf_counter() - t0 < limit_s


def _kernel_id(html):
    found = re.findall(r'kernelId"\s*:\s*"([0-9a-f-]{36})"', html)
    assert found, "no kernel id in the page"
    return found[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    server = appserver.launch(_notebook(folder / "img.ipynb"), port=0, data_dir=folder, demo_cache=False,
                              max_upload_mb=UPLOAD_MB, max_kernels=MAX_KERNELS,
                              max_kernels_per_client=PER_CLIENT, cull_idle_timeout=120, cull_interval=5)
    try:
        appserver.wait_ready(server, timeout=90)
        server.kernel_ids = []
        yield server
    finally:
        appserver.stop(server)


def _page_kernel(served):
    if not served.kernel_ids:
        status, _, body = _get(served.port, source="127.0.0.5")
        assert status == 200
        served.kernel_ids.append(_kernel_id(body))
    return served.kernel_ids[0]


# ============================================================================ kernel caps
def test_twenty_quick_page_loads_hold_the_caps(served):
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: _get(served.port), range(20)))
    ok = [a for a in answers if a[0] == 200]
    full = [a for a in answers if a[0] == 503]
    assert len(ok) == PER_CLIENT and len(full) == 20 - PER_CLIENT, [a[0] for a in answers]
    status, headers, body = full[0]
    assert "The server is full" in body and "try again in" in body and "close one" in body
    assert int(headers["Retry-After"]) >= 60
    assert len(_kernel_pids(served.process.pid)) == PER_CLIENT
    served.kernel_ids += [_kernel_id(a[2]) for a in ok]
    served.xsrf = re.search(r"_xsrf=([^;]+)", ok[0][1].get("Set-Cookie", "")).group(1)
    # a client claiming to be someone else through proxy headers is still itself
    spoof = {"X-Forwarded-For": "203.0.113.7", "X-Real-Ip": "203.0.113.7", "Forwarded": "for=203.0.113.7"}
    assert _get(served.port, headers=spoof)[0] == 503
    # a second client gets the last place, then the global cap holds
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: _get(served.port, source="127.0.0.2"), range(5)))
    assert sorted(a[0] for a in answers) == [200] + [503] * 4
    assert any(f"all {MAX_KERNELS} places are taken" in a[2].lower() for a in answers if a[0] == 503)
    assert len(_kernel_pids(served.process.pid)) == MAX_KERNELS
    served.kernel_ids += [_kernel_id(a[2]) for a in answers if a[0] == 200]
    assert "Kernel started" in served.log_text() and "refused" in served.log_text()


# ============================================================================ websockets
def _run(coro):
    """Run ``coro`` to the end in a thread of its own (its own event loop): other tests in the same
    session (Playwright's sync API) may leave an event loop running in the main thread."""
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


async def _ws(port, kernel_id, subprotocols, messages, wait_s=3.0):
    """Open the kernel websocket, send ``messages``, read for ``wait_s``; returns
    ``(handshake error or None, close code, messages received)``."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    url = f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
    try:
        conn = await websocket_connect(HTTPRequest(url, connect_timeout=10, request_timeout=10),
                                       subprotocols=subprotocols)
    except HTTPClientError as exc:
        return exc.code, None, []
    got = []
    for m in messages:
        try:
            await conn.write_message(m, binary=isinstance(m, bytes))
        except Exception:
            break
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        if msg is None:
            break
        got.append(msg)
    code = conn.close_code
    conn.close()
    return None, code, got


def _kernel_msg(msg_type, content, buffers=()):
    from ipywidgets.widgets.widget import __control_protocol_version__

    meta = {"version": __control_protocol_version__} if msg_type == "comm_open" else {}
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": uuid.uuid4().hex,
                       "username": "", "date": "2026-01-01T00:00:00Z", "version": "5.3"},
            "parent_header": {}, "metadata": meta, "content": content, "channel": "shell",
            "buffers": list(buffers)}


def _legacy_binary(msg):
    """The legacy binary framing: uint32 buffer count, uint32 offsets, JSON, buffers (big-endian)."""
    from jupyter_server.services.kernels.connection.base import serialize_binary_message

    return serialize_binary_message(msg)


def _v1(msg):
    from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1

    parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
    return serialize_msg_to_ws_v1(parts + list(msg["buffers"]), "shell")


def _request_states_legacy():
    comm = uuid.uuid4().hex
    return [_legacy_binary(_kernel_msg("comm_open", {"comm_id": comm, "target_name": "jupyter.widget.control",
                                                     "data": {}})),
            _legacy_binary(_kernel_msg("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}}))]


def test_bounded_header_reader():
    legacy = _request_states_legacy()[1]
    # what Voila's read_header_from_binary_message (and jupyter_server's v1 parser) would loop over:
    assert int.from_bytes(legacy[:8], "little") > 10**9
    t0 = time.perf_counter()
    assert v1_offsets(legacy) is None and read_v1_header(legacy) is None
    assert time.perf_counter() - t0 < 0.5
    for junk in (b"", b"\xff" * 8, b"\xff" * 64, (3).to_bytes(8, "little") + b"\x00" * 24, "text"):
        assert read_v1_header(junk) is None
    msg = _kernel_msg("comm_msg", {"data": {}}, [b"\x00" * 10])
    assert read_v1_header(_v1(msg)) == msg["header"]


def test_legacy_websocket_request_states_is_refused(served):
    kernel = _page_kernel(served)
    rss0 = _rss_mb(served.process.pid)
    err, code, got = _run(_ws(served.port, kernel, None, _request_states_legacy()))
    assert err == 400 and not got                       # refused at the handshake
    assert _answers_quickly(served.port)
    assert _rss_mb(served.process.pid) - rss0 < 50
    assert "without the v1.kernel.websocket.jupyter.org subprotocol" in served.log_text()


def test_v1_websocket_works_and_malformed_messages_close_it(served):
    kernel = _page_kernel(served)
    rss0 = _rss_mb(served.process.pid)
    comm = uuid.uuid4().hex
    good = [_v1(_kernel_msg("comm_open", {"comm_id": comm, "target_name": "jupyter.widget.control", "data": {}})),
            _v1(_kernel_msg("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}}))]
    err, code, got = _run(_ws(served.port, kernel, [V1_SUBPROTOCOL], good))
    assert err is None and code is None                 # the page's protocol works ...
    replies = [m for m in got if (read_v1_header(m) or {}).get("msg_type") == "comm_msg"]
    assert any(b"update_states" in m and len(v1_offsets(m)) > 6 for m in replies)  # states + buffers
    # the same legacy-framed request on a v1 socket, and junk that claims 2**60 parts
    for bad in (_request_states_legacy()[1], (2**60).to_bytes(8, "little") + b"\x00" * 64, "{}"):
        err, code, got = _run(_ws(served.port, kernel, [V1_SUBPROTOCOL], [bad], wait_s=5))
        assert err is None and code == 1003, (bad[:16], code)
        assert _answers_quickly(served.port)
    assert _rss_mb(served.process.pid) - rss0 < 50


def test_code_sent_over_the_websocket_is_not_run(served, tmp_path):
    kernel = _page_kernel(served)
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').write('x')"
    msgs = [_v1(_kernel_msg(t, {"code": code, "silent": False, "store_history": False,
                                "user_expressions": {}, "allow_stdin": False}))
            for t in ("execute_request", "inspect_request", "complete_request")]
    err, code_, got = _run(_ws(served.port, kernel, [V1_SUBPROTOCOL], msgs, wait_s=3))
    assert err is None
    assert not any((read_v1_header(m) or {}).get("msg_type") == "execute_reply" for m in got)
    assert not marker.exists()
    assert "which is not allowed. Ignoring" in served.log_text()


def test_websocket_messages_are_bounded_by_the_upload_limit(served):
    kernel = _page_kernel(served)
    limit = appserver.websocket_limit(UPLOAD_MB)
    assert limit == (UPLOAD_MB + 1) * 2**20
    within = _v1(_kernel_msg("comm_msg", {"comm_id": "none", "data": {}}, [b"\x00" * (UPLOAD_MB * 2**20)]))
    err, code, _ = _run(_ws(served.port, kernel, [V1_SUBPROTOCOL], [within], wait_s=2))
    assert err is None and code is None
    over = _v1(_kernel_msg("comm_msg", {"comm_id": "none", "data": {}}, [b"\x00" * (limit + 1)]))
    err, code, _ = _run(_ws(served.port, kernel, [V1_SUBPROTOCOL], [over], wait_s=5))
    assert err is None and code == 1009                 # "message too big": connection dropped
    assert _answers_quickly(served.port)


def test_a_freed_place_is_given_again(served):
    """A page that closes shuts its kernel down (Voila's beforeunload POST); its place is free."""
    if len(served.kernel_ids) < MAX_KERNELS:
        pytest.skip("needs the caps test first")
    status, _, body = _get(served.port, source="127.0.0.3")
    assert status == 503
    kernel = served.kernel_ids.pop()
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    conn.request("POST", f"/voila/api/shutdown/{kernel}",
                 headers={"Cookie": f"_xsrf={served.xsrf}", "X-XSRFToken": served.xsrf})
    assert conn.getresponse().status == 204
    conn.close()
    deadline = time.monotonic() + 20
    while len(_kernel_pids(served.process.pid)) >= MAX_KERNELS and time.monotonic() < deadline:
        time.sleep(0.2)
    status, _, body = _get(served.port, source="127.0.0.3")
    assert status == 200
    served.kernel_ids.append(_kernel_id(body))


# ============================================================================ the upstream bug
@pytest.mark.slow
@pytest.mark.parametrize("attack", ["legacy request_states", "v1 claiming 2**60 parts"])
def test_plain_voila_freezes(tmp_path, attack):
    """The findings, reproduced on plain ``python -m voila`` (bounded: 30 s, +1.5 GB): Voila's
    outgoing parser on a legacy websocket, jupyter_server's incoming v1 parser."""
    if attack.startswith("legacy"):
        protocols, messages = "None", "t._request_states_legacy()"
    else:
        protocols, messages = "[t.V1_SUBPROTOCOL]", "[(2**60).to_bytes(8, 'little') + bytes(64)]"
    nb = _notebook(tmp_path / "img.ipynb")
    port = appserver.free_port()
    log = open(tmp_path / "voila.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(nb), f"--port={port}", "--no-browser",
                             "--Voila.ip=127.0.0.1"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _answers_quickly(port, 2) and time.monotonic() < deadline:
            time.sleep(0.3)
        status, _, body = _get(port)
        assert status == 200
        kernel = _kernel_id(body)
        rss0 = _rss_mb(proc.pid)
        ws = subprocess.Popen([sys.executable, "-c", (
            "import asyncio, sys; sys.path.insert(0, %r); import test_server_guards as t; "
            "print(asyncio.run(t._ws(%d, %r, %s, %s, wait_s=30)))")
            % (os.path.dirname(__file__), port, kernel, protocols, messages)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        frozen, grew = False, 0.0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            time.sleep(1)
            grew = _rss_mb(proc.pid) - rss0
            frozen = frozen or not _answers_quickly(port, 2)
            if frozen and grew > 60 or grew > 1500:
                break
        ws.kill()
        assert frozen and grew > 60, (frozen, grew)     # HTTP stops, memory keeps growing
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
