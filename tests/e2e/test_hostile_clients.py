"""Hostile clients against a real server process started the way `make run` starts it (and, for the limits only
gunicorn can be told about, the way production does): raw sockets on loopback, nothing mocked.

The edge (rainymodel_site/asgi.py) refuses before reading a body: no or a wrong key (401, then 429 per IP on every
endpoint), a Content-Length over the limit (413); it stops reading a chunked body past the limit (413) and a
stalled one after RAINYMODEL_BODY_TIMEOUT_S (408). The HTTP protocol (rainymodel_site/http_protocol.py) bounds the
request head, the time to send it, and the connections per worker. docs/security.md has the measured table.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import httpx
import pytest

from bench.hostile import run_command_args
from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream
from tests.fakes.server import ProductionServer

MB = 1024 * 1024
CHAT = b'{"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture
def serve(fake_upstream, make_routing, api_key, rainymodel_server):
    """`serve(env=...)` -> (server started like `make run`, a valid key)."""
    make_routing(upstream(fake_upstream))
    _, key = api_key()

    def start(env: dict[str, str] | None = None):
        return rainymodel_server(env=env, extra_args=run_command_args()), key

    return start


def head(path: str, headers: dict[str, str], method: str = "POST", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(sock: socket.socket, timeout: float = 5.0) -> tuple[int | None, bytes]:
    """(status, raw answer) once one whole answer has arrived (by its Content-Length) or the server closed, or
    `timeout` passed (status None if nothing came)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            part = sock.recv(65536)
            if not part:
                break
            data += part
            response_head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", response_head)
            if _ and length and len(body) >= int(length.group(1)):
                break
    except TimeoutError:
        pass
    except ConnectionResetError:
        pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    return status, data


def rows(expected: int, timeout: float = 5.0) -> list[tuple[int, str]]:
    """(status, error_code) of the RequestLog rows the server wrote, oldest first, once there are `expected`."""
    from usage.models import RequestLog

    deadline = time.monotonic() + timeout
    while True:
        found = list(RequestLog.objects.order_by("created_at").values_list("status", "error_code"))
        if len(found) >= expected or time.monotonic() > deadline:
            time.sleep(0.2)  # and no more than that
            return list(RequestLog.objects.order_by("created_at").values_list("status", "error_code"))
        time.sleep(0.05)


# --- bodies: nothing is read before the key and the size are known -------------------------------------------------


def test_a_too_large_content_length_gets_413_before_any_body_is_sent(serve):
    server, key = serve()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Content-Length": str(200 * MB)}))
        status, data = answer(sock)
    assert status == 413 and b'"request_too_large"' in data and b"connection: close" in data.lower()
    assert rows(1) == [(413, "request_too_large")]


def test_a_request_without_a_key_gets_401_without_its_body_being_read(serve):
    server, _ = serve()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head("/v1/chat/completions", {"Content-Length": str(5 * MB)}))  # and never the body
        status, data = answer(sock)
    assert status == 401 and b'"invalid_api_key"' in data
    assert rows(1) == [(401, "invalid_api_key")]


def test_a_chunked_body_stops_being_read_once_past_the_limit(serve):
    server, key = serve(env={"RAINYMODEL_MAX_BODY_BYTES": str(MB)})
    chunk = b"%x\r\n" % (64 * 1024) + b"x" * (64 * 1024) + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Transfer-Encoding": "chunked"}))
        sock.settimeout(0.5)
        try:
            while sent < 64 * MB:  # the server would take all of it if it kept reading
                sock.sendall(chunk)
                sent += len(chunk)
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
        status, data = answer(sock)
    assert status == 413 and b'"request_too_large"' in data
    assert sent < 32 * MB  # 1 MB read, the rest at most what the socket buffers held
    assert rows(1) == [(413, "request_too_large")]


def test_a_stalled_body_gets_408_and_its_row(serve):
    server, key = serve(env={"RAINYMODEL_BODY_TIMEOUT_S": "1"})
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Content-Length": str(len(CHAT))})
            + CHAT[:10]
        )
        started = time.monotonic()
        status, data = answer(sock, timeout=10)
    assert status == 408 and b'"request_timeout"' in data
    assert time.monotonic() - started < 5
    assert rows(1) == [(408, "request_timeout")]


def test_a_client_gone_in_the_middle_of_its_body_keeps_its_row(serve):
    server, key = serve()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Content-Length": str(len(CHAT))})
            + CHAT[:10]
        )
        time.sleep(0.3)
    assert rows(1) == [(499, "client_disconnected")]


def test_failed_keys_are_throttled_per_ip_on_every_endpoint(serve):
    server, _ = serve(env={"RAINYMODEL_AUTH_FAILURES_PER_MIN": "2"})
    bad = {"Authorization": "Bearer rm-wrong000000000000000000000000000000"}
    assert httpx.get(server.url + "/v1/models", headers=bad).status_code == 401
    assert httpx.get(server.url + "/v1/usage", headers=bad).status_code == 401
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/usage"), ("POST", "/v1/chat/completions")):
        r = httpx.request(method, server.url + path, headers=bad, json=chat() if method == "POST" else None)
        assert r.status_code == 429, path
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) > 0
    # Throttled before its body is read, too: the body is never sent here.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head("/v1/chat/completions", {**bad, "Content-Length": str(5 * MB)}))
        status, _ = answer(sock)
    assert status == 429
    # The model lookups keep their rows too (endpoint "models", issue 12); /v1/usage is not logged.
    assert rows(4) == [
        (401, "invalid_api_key"),
        (429, "rate_limit_exceeded"),
        (429, "rate_limit_exceeded"),
        (429, "rate_limit_exceeded"),
    ]


def test_unknown_urls_and_unserved_methods_without_a_body_still_get_404_and_405(serve):
    server, _ = serve()
    assert httpx.get(server.url + "/v1/nothing-here").status_code == 404
    assert httpx.delete(server.url + "/v1/models").status_code == 405
    # ... but a body is never read without a key, whatever the URL.
    assert httpx.post(server.url + "/v1/nothing-here", content=b"x" * 100).status_code == 401


# --- the request head, its timing and the number of connections ------------------------------------------------------


@pytest.mark.parametrize(
    "what, request_head, status",
    [
        ("a 64 KB header", head("/v1/models", {"X-Big": "a" * 64 * 1024}, "GET"), 431),
        ("a 32 MB header", head("/v1/models", {"X-Big": "a" * 32 * MB}, "GET"), 431),
        ("10,000 headers", head("/v1/models", {f"X-H{i}": "v" for i in range(10_000)}, "GET"), 431),
        ("101 headers", head("/v1/models", {f"X-H{i}": "v" for i in range(100)}, "GET"), 431),
        ("a 9 KB request line", head("/v1/models?q=" + "a" * 9000, {}, "GET"), 414),
    ],
)
def test_an_oversized_request_head_is_refused(serve, what, request_head, status):
    server, _ = serve()
    rss_before = server.rss_bytes()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        try:
            sock.sendall(request_head)
        except (ConnectionResetError, BrokenPipeError):
            pass
        got, data = answer(sock)
    assert got == status, what
    assert b'"error"' in data
    assert server.rss_bytes() - rss_before < 16 * MB, what
    assert httpx.get(server.url + "/health").status_code == 200


def test_headers_within_the_limits_are_served(serve):
    server, key = serve()
    r = httpx.get(
        server.url + "/v1/models",
        headers={"Authorization": f"Bearer {key}", "X-Pad": "a" * 8000, **{f"X-H{i}": "v" for i in range(90)}},
    )
    assert r.status_code == 200


def test_a_silent_connection_and_a_dripped_header_are_closed_after_the_header_timeout(serve):
    server, key = serve(env={"RAINYMODEL_HEADER_TIMEOUT_S": "1"})
    silent = socket.create_connection(("127.0.0.1", server.port))
    drip = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    request_head = head("/v1/models", {"Authorization": f"Bearer {key}"}, "GET")
    try:
        for byte in request_head[:12]:  # one byte every 0.2 s: alive, but never finished in time
            drip.sendall(bytes([byte]))
            time.sleep(0.2)
    except (ConnectionResetError, BrokenPipeError):
        pass
    for sock in (silent, drip):
        status, data = answer(sock, timeout=5)
        sock.close()
        assert status == 408 and b'"request_timeout"' in data
    assert time.monotonic() - started < 5
    # A kept-alive connection's next request has the same deadline from its first byte.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request_head)
        status, data = answer(sock)
        assert status == 200
        sock.sendall(request_head[:5])
        status, data = answer(sock, timeout=5)
        assert status == 408


def test_connections_beyond_the_cap_are_refused_and_the_server_stays_usable(serve):
    server, key = serve(env={"RAINYMODEL_MAX_CONNECTIONS": "5", "RAINYMODEL_HEADER_TIMEOUT_S": "2"})
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.port)) as extra:
            status, data = answer(extra)
        assert status == 503 and b'"server_busy"' in data
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


# --- HTTP/1.0 ---------------------------------------------------------------------------------------------------------


def test_an_http_1_0_client_gets_a_content_length_not_a_chunked_body(serve):
    server, key = serve()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            head(
                "/v1/chat/completions",
                {
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    "Content-Length": str(len(CHAT)),
                },
                version="1.0",
            )
            + CHAT
        )
        status, data = answer(sock, timeout=10)
    response_head, body = data.split(b"\r\n\r\n", 1)
    headers = dict(line.split(b": ", 1) for line in response_head.lower().split(b"\r\n")[1:])
    assert status == 200
    assert b"transfer-encoding" not in headers
    assert int(headers[b"content-length"]) == len(body)
    assert b'"choices"' in body


# --- production: gunicorn with gunicorn.conf.py -----------------------------------------------------------------------


def test_gunicorn_conf_limits_reach_the_http_parser(fake_upstream, make_routing, api_key, transactional_db):
    """uvicorn_worker ignores gunicorn's limit_request_* and worker_connections; RainyModelWorker applies them."""
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    server = ProductionServer(env={"GUNICORN_CMD_ARGS": "--limit-request-fields 10"}).start()
    try:
        ok = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        many = httpx.get(
            server.url + "/v1/models", headers={"Authorization": f"Bearer {key}", **{f"X-H{i}": "v" for i in range(6)}}
        )
        assert many.status_code == 431
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Content-Length": str(200 * MB)})
            )
            status, _ = answer(sock)
        assert status == 413
    finally:
        server.stop()


# --- kill -9 -------------------------------------------------------------------------------------------------------


def test_sigkill_loses_only_calls_in_flight_and_the_last_flush_interval(
    fake_upstream, make_routing, api_key, rainymodel_server
):
    """The documented bound (docs/operations.md): a call finished more than RAINYMODEL_LOG_FLUSH_S before a SIGKILL
    has its row; calls still in flight (streams included) have none."""
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    server = rainymodel_server(env={"RAINYMODEL_LOG_FLUSH_S": "0.2"}, extra_args=run_command_args())
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(5):
        assert httpx.post(server.url + "/v1/chat/completions", json=chat(), headers=auth).status_code == 200
    time.sleep(0.6)
    fake_upstream.default = fu.ok(tokens=200, token_delay=0.05)

    def stream():
        try:
            with httpx.stream(
                "POST", server.url + "/v1/chat/completions", json=chat(stream=True), headers=auth, timeout=30
            ) as response:
                for _ in response.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(5)
    for t in threads:
        t.join(5)
    found = rows(5, timeout=1)
    assert found.count((200, "")) >= 5 and len(found) <= 5 + len(threads)
