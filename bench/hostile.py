"""Hostile clients against a real RainyModel process on loopback: how long each attack holds the server, what it
costs in memory and what the client gets back. The table in docs/security.md comes from this script.

    python bench/hostile.py --server run        # the `make run` command (uvicorn, flags from the Makefile)
    python bench/hostile.py --server gunicorn   # the production command (gunicorn -c gunicorn.conf.py)
    python bench/hostile.py --server plain      # uvicorn with no limits at all (what `make run` used to be)

Every attack is bounded: it stops after --cap seconds or when the server answers/closes, whichever comes first,
and sends at most a few hundred MB, all to 127.0.0.1. The last check SIGKILLs the server with streaming calls in
flight and counts the request-log rows that survive.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.server import ProductionServer, RainyModelServer  # noqa: E402
from tests.fakes.upstream import ok  # noqa: E402

MB = 1024 * 1024
CHAT = b'{"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]}'


def log(message: str) -> None:
    print(f"[hostile] {message}", file=sys.stderr, flush=True)


def run_command_args() -> tuple[str, ...]:
    """The HTTP flags of the Makefile's `run` target (everything after the port), so this measures `make run`."""
    for line in (ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines():
        if "uvicorn rainymodel_site.asgi:application" in line:
            words = line.split()
            return tuple(words[words.index("$(PORT)") + 1 :])
    raise SystemExit("no uvicorn command in the Makefile")


def start_server(kind: str, base_env: dict[str, str]) -> RainyModelServer:
    env = {"RAINYMODEL_LOG_FLUSH_S": "1.0", "REDIS_URL": "", "LOG_LEVEL": "WARNING"}
    if kind == "gunicorn":
        return ProductionServer(base_env=base_env, env=env).start()
    extra = run_command_args() if kind == "run" else ("--loop", "uvloop", "--http", "httptools")
    return RainyModelServer(base_env=base_env, env=env, extra_args=extra).start()


def setup_database(database_url: str, secret: str, fake_url: str) -> str:
    os.environ.update(
        {"DJANGO_SETTINGS_MODULE": "rainymodel_site.settings", "SECRET_KEY": secret, "DATABASE_URL": database_url}
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    from apikeys.services import apikey_create
    from tests.fakes.routing_config import make_routing, upstream

    call_command("migrate", verbosity=0, interactive=False)
    make_routing(upstream(fake_url, tier="free", name="fake", max_retries=0), alias="rainymodel/auto")
    _, key = apikey_create(name="hostile")
    return key


def count_rows() -> int:
    from django.db import connection

    from usage.models import RequestLog

    connection.close()
    return RequestLog.objects.count()


# --- one attack = one connection doing something nasty -------------------------------------------------------------


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def poll_answer(sock: socket.socket, buffer: bytearray) -> str | None:
    """'closed', a status line, or None while the server says nothing."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    if not data:
        return status_of(buffer) or "closed"
    buffer += data
    return status_of(buffer)


def status_of(buffer: bytearray) -> str | None:
    if b"\r\n" in buffer:
        return buffer.split(b"\r\n", 1)[0].decode(errors="replace").split(" ", 1)[1][:40]
    return None


def hold(sock: socket.socket, cap: float, feed=None) -> tuple[str, float, int]:
    """Keep the attack going (`feed()` returns bytes to send, b"" for nothing now, None when it has no more) until
    the server answers or closes, or `cap` seconds pass. Returns (what the server did, seconds, bytes sent)."""
    started = time.monotonic()
    buffer = bytearray()
    sent = 0
    pending = b""
    while time.monotonic() - started < cap:
        answer = poll_answer(sock, buffer)
        if answer:
            return answer, time.monotonic() - started, sent
        if feed is not None and not pending:
            chunk = feed()
            if chunk is None:
                feed = None
            else:
                pending = chunk
        if pending:
            try:
                n = sock.send(pending)
                pending = pending[n:]
                sent += n
            except BlockingIOError:
                time.sleep(0.001)
            except (ConnectionResetError, BrokenPipeError):
                return "reset", time.monotonic() - started, sent
        else:
            time.sleep(0.01)
    return f"held (cap {cap:.0f} s)", time.monotonic() - started, sent


def request_head(path: str, headers: dict[str, str], method: str = "POST", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def big_body_without_key(port, key, cap):
    sock = connect(port)
    total = 200 * MB
    sock.sendall(
        request_head("/v1/chat/completions", {"Content-Length": str(total), "Content-Type": "application/json"})
    )
    block = b"x" * MB
    left = [total]

    def feed():
        if left[0] <= 0:
            return b""
        left[0] -= MB
        return block

    what, seconds, sent = hold(sock, cap, feed)
    return what, seconds, f"{sent / MB:.0f} MB of 200 MB uploaded before the answer"


def huge_content_length(port, key, cap):
    sock = connect(port)
    sock.sendall(
        request_head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Content-Length": str(200 * MB)})
    )
    what, seconds, _ = hold(sock, cap)
    return what, seconds, "Content-Length 200 MB, valid key, no body sent"


def chunked_over_limit(port, key, cap):
    sock = connect(port)
    sock.sendall(
        request_head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Transfer-Encoding": "chunked"})
    )
    chunk = b"%x\r\n" % MB + b"x" * MB + b"\r\n"
    left = [100]

    def feed():
        if left[0] <= 0:
            return b""
        left[0] -= 1
        return chunk

    what, seconds, sent = hold(sock, cap, feed)
    return what, seconds, f"{sent / MB:.0f} MB chunked (of up to 100 MB) sent before the answer"


def huge_header(port, key, cap):
    sock = connect(port)
    head = request_head("/v1/models", {"Authorization": f"Bearer {key}", "X-Big": "a" * (32 * MB)}, "GET")
    view = [memoryview(head)]

    def feed():
        if not view[0]:
            return b""
        part, view[0] = view[0][:MB], view[0][MB:]
        return bytes(part)

    what, seconds, sent = hold(sock, cap, feed)
    return what, seconds, f"{sent / MB:.1f} MB of a 32 MB header sent"


def many_headers(port, key, cap):
    sock = connect(port)
    headers = {"Authorization": f"Bearer {key}", **{f"X-H{i}": "v" for i in range(10_000)}}
    sock.sendall(request_head("/v1/models", headers, "GET"))
    what, seconds, _ = hold(sock, cap)
    return what, seconds, "10,000 headers"


def slow_header(port, key, cap):
    sock = connect(port)
    head = request_head("/v1/models", {"Authorization": f"Bearer {key}"}, "GET")
    state: dict[str, Any] = {"i": 0, "next": 0.0}

    def feed():
        now = time.monotonic()
        if state["i"] >= len(head) or now < state["next"]:
            return b""
        state["i"] += 1
        state["next"] = now + 2.0
        return head[state["i"] - 1 : state["i"]]

    what, seconds, sent = hold(sock, cap, feed)
    return what, seconds, f"one header byte every 2 s ({sent} bytes sent)"


def stalled_body(port, key, cap):
    sock = connect(port)
    sock.sendall(
        request_head("/v1/chat/completions", {"Authorization": f"Bearer {key}", "Content-Length": str(len(CHAT))})
        + CHAT[:10]
    )
    what, seconds, _ = hold(sock, cap)
    return what, seconds, "10 of the body's bytes, then nothing"


def silent_connection(port, key, cap):
    sock = connect(port)
    what, seconds, _ = hold(sock, cap)
    return what, seconds, "connect, send nothing"


def many_stalled_connections(port, key, cap, count=300):
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sock.setblocking(False)
            socks.append(sock)
        except OSError:
            break
    started = time.monotonic()
    open_ = set(socks)
    while open_ and time.monotonic() - started < cap:
        time.sleep(0.25)
        for sock in list(open_):
            try:
                while sock.recv(65536):  # an answer (a 408) is read and dropped; b"" is the server's close
                    pass
                open_.discard(sock)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(sock)
    still_open = len(open_)
    seconds = time.monotonic() - started
    for sock in socks:
        sock.close()
    what = f"{still_open} of {len(socks)} still open" if still_open else f"all {len(socks)} closed"
    return what, seconds, f"{count} connections with half-sent headers"


def http10(port, key, cap):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        request_head(
            "/v1/chat/completions",
            {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Length": str(len(CHAT))},
            version="1.0",
        )
        + CHAT
    )
    started = time.monotonic()
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    framing = (
        "content-length"
        if b"content-length:" in head
        else "chunked (invalid for HTTP/1.0)"
        if b"transfer-encoding: chunked" in head
        else "close-delimited"
    )
    seconds = time.monotonic() - started
    return status_of(bytearray(data)) or "closed", seconds, f"HTTP/1.0 request; answer framed by {framing}"


ATTACKS = [
    big_body_without_key,
    huge_content_length,
    chunked_over_limit,
    huge_header,
    many_headers,
    slow_header,
    stalled_body,
    silent_connection,
    many_stalled_connections,
    http10,
]


def sigkill_with_streams(server: RainyModelServer, key: str, fake, streams: int) -> str:
    """`streams` streaming calls in flight (and as many finished just before), then SIGKILL; rows that survive."""
    import httpx

    time.sleep(1.5)  # earlier attacks' rows flushed first
    before = count_rows()
    finished_early = 0
    for _ in range(5):
        httpx.post(
            server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        finished_early += 1
    time.sleep(1.5)  # more than one flush interval: these five must survive

    def one_stream():
        try:
            with httpx.stream(
                "POST",
                server.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "rainymodel/auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            ) as response:
                for _ in response.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass

    fake.default = ok(tokens=400, token_delay=0.05)
    threads = [threading.Thread(target=one_stream, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    # The worker (gunicorn: its worker processes, then the arbiter, which would otherwise start new ones).
    assert server.process is not None and server.pid is not None, "the server is not running"
    for pid in [*server._children(), server.pid]:
        os.kill(pid, signal.SIGKILL)
    server.process.wait(5)
    for t in threads:
        t.join(5)
    survived = count_rows() - before
    return (
        f"{streams} streams in flight + {finished_early} calls finished >1 flush interval earlier: "
        f"{survived} rows survived ({finished_early} expected from the finished calls)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["run", "gunicorn", "plain"], default="run")
    parser.add_argument("--cap", type=float, default=30.0, help="longest any one attack is held, seconds")
    parser.add_argument("--streams", type=int, default=15, help="streaming calls in flight at SIGKILL")
    args = parser.parse_args(argv)

    from tests.fakes.upstream import FakeUpstream

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-hostile-"))
    secret = secrets.token_urlsafe(40)
    database_url = f"sqlite:///{workdir / 'hostile.sqlite3'}"
    base_env = {
        "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
        "SECRET_KEY": secret,
        "DATABASE_URL": database_url,
    }
    print("| attack | server | held (s) | RSS after (MB) | notes |\n|---|---|---|---|---|")
    with FakeUpstream() as fake:
        key = setup_database(database_url, secret, fake.base_url)
        server = start_server(args.server, base_env)
        try:
            for attack in ATTACKS:
                rss_before = server.rss_bytes()
                what, seconds, note = attack(server.port, key, args.cap)
                time.sleep(0.5)
                rss = server.rss_bytes()
                print(
                    f"| {attack.__name__} | {what} | {seconds:.1f} | {rss / MB:.0f} ({(rss - rss_before) / MB:+.0f})"
                    f" | {note} |",
                    flush=True,
                )
            print(f"\nSIGKILL: {sigkill_with_streams(server, key, fake, args.streams)}")
        finally:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
