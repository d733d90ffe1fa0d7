"""The client IP that RainyModel logs and rate-limits by is the one the ASGI server validated: X-Forwarded-For is
believed only from the proxies listed in FORWARDED_ALLOW_IPS (uvicorn's and gunicorn's setting), on real server
processes under both uvicorn and gunicorn with uvicorn workers."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fakes.server import RainyModelServer

CHAT = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]}


class GunicornServer(RainyModelServer):
    """The production server: gunicorn with uvicorn workers (as render.yaml starts it), on a loopback port."""

    def command(self) -> list[str]:
        import sys

        return [
            sys.executable,
            "-m",
            "gunicorn",
            "rainymodel_site.asgi:application",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--graceful-timeout",
            "5",
        ]


@pytest.fixture(params=["uvicorn", "gunicorn"])
def start_server(request, transactional_db):
    """Factory: `start_server(env, unset=())` starts a server of this kind; `unset` names variables removed from
    its environment (to see the servers' own defaults)."""
    kind = RainyModelServer if request.param == "uvicorn" else GunicornServer
    servers = []

    def start(env: dict[str, str], unset: tuple[str, ...] = ()):
        server = kind(env=env)
        for name in unset:
            server.env.pop(name, None)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def logged_client_ip(server, forwarded_for: str | None) -> str | None:
    """Send one unauthenticated chat completion (a 401, still logged) and return the client IP of its row."""
    from usage.models import RequestLog

    request_id = f"ip-{time.monotonic_ns()}"
    headers = {"X-Request-ID": request_id}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    assert httpx.post(server.url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=10).status_code == 401
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = RequestLog.objects.filter(id=request_id).first()
        if row is not None:
            return row.client_ip
        time.sleep(0.05)
    raise AssertionError(f"no RequestLog row for {request_id}")


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(start_server):
    server = start_server(env={"FORWARDED_ALLOW_IPS": "192.0.2.1"})  # a proxy elsewhere: not the test client
    assert logged_client_ip(server, "203.0.113.9") == "127.0.0.1"
    assert logged_client_ip(server, "203.0.113.10, 198.51.100.1") == "127.0.0.1"


def test_the_default_trusts_only_a_proxy_on_the_same_machine(start_server):
    server = start_server(env={}, unset=("FORWARDED_ALLOW_IPS",))
    # The test client is 127.0.0.1, i.e. a local proxy such as nginx on the same host: its header is used.
    assert logged_client_ip(server, "203.0.113.9") == "203.0.113.9"
    assert logged_client_ip(server, None) == "127.0.0.1"


def test_behind_trusted_private_proxies_the_right_most_public_address_wins(start_server):
    # As on Render: the proxies reach the instance from private ranges; the client wrote the left-most entry.
    server = start_server(env={"FORWARDED_ALLOW_IPS": "127.0.0.1,10.0.0.0/8"})
    assert logged_client_ip(server, "6.6.6.6, 203.0.113.7, 10.1.2.3") == "203.0.113.7"


def test_a_forwarded_for_that_is_not_an_address_never_loses_the_row(start_server):
    server = start_server(env={"FORWARDED_ALLOW_IPS": "127.0.0.1"})
    assert logged_client_ip(server, "not-an-address") is None
