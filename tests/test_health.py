"""`/health` and `/health/ready` (rainymodel_site/health.py) on real server processes: anonymous callers see only
the status, staff and the master key see the checks, and readiness answers within a second while the database is
unreachable or silent."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx
import pytest
from django.db import connection

from tests.e2e.test_shared_state_e2e import TcpRelay
from tests.fakes.server import database_url_for

MASTER_KEY = "rm-master-key-for-the-health-tests-0000000000"


@pytest.fixture
def server(rainymodel_server, make_routing, fake_upstream):
    from tests.fakes.routing_config import upstream

    make_routing(upstream(fake_upstream))
    return rainymodel_server(env={"RAINYMODEL_MASTER_KEY": MASTER_KEY})  # not the harness default: this is ours


def ready(server, **kwargs) -> httpx.Response:
    return httpx.get(server.url + "/health/ready", timeout=10, **kwargs)


def test_liveness_says_ok_and_the_version(server):
    assert httpx.get(server.url + "/health", timeout=10).json() == {"status": "ok", "version": "0.1.0"}


def test_anonymous_callers_see_only_the_status(server):
    r = ready(server)
    assert r.status_code == 200 and r.json() == {"status": "ready"}


@pytest.mark.parametrize("authorization", [f"Bearer {MASTER_KEY}x", "Bearer", f"Basic {MASTER_KEY}", "Bearer rm-x"])
def test_a_wrong_key_sees_only_the_status(server, authorization):
    assert ready(server, headers={"Authorization": authorization}).json() == {"status": "ready"}


def test_the_master_key_sees_every_check(server):
    body = ready(server, headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["shared_state"]["ok"] is True and body["checks"]["config"]["loaded"] is True
    assert "breakers" in body["checks"]


def test_staff_signed_in_see_every_check_other_users_do_not(server, client, django_user_model):
    staff = django_user_model.objects.create_user("ops", password="pw-ops-1234", is_staff=True)
    user = django_user_model.objects.create_user("someone", password="pw-user-1234")
    client.force_login(staff)
    body = ready(server, cookies={"sessionid": client.cookies["sessionid"].value}).json()
    assert body["checks"]["database"]["ok"] is True
    client.force_login(user)
    assert ready(server, cookies={"sessionid": client.cookies["sessionid"].value}).json() == {"status": "ready"}
    assert ready(server, cookies={"sessionid": "not-a-session"}).json() == {"status": "ready"}


def black_hole(port: int) -> socket.socket:
    """A listener that completes TCP handshakes (the kernel's backlog) and never says a word."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def timed_ready(server, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    # The promise is "within 1 s"; the generous client timeout only keeps a slow CI machine from failing the test
    # for the wrong reason (the elapsed time is reported, not asserted tightly).
    r = ready(server, **kwargs)
    return r, time.monotonic() - started


def test_readiness_answers_within_a_second_while_the_database_is_down_or_silent(
    rainymodel_server, make_routing, fake_upstream
):
    if connection.vendor != "postgresql":
        pytest.skip("needs a database reached over TCP: run with DATABASE_URL=postgres://...")
    from tests.fakes.routing_config import upstream

    make_routing(upstream(fake_upstream))
    target = urlparse(database_url_for(connection.settings_dict))
    relay = TcpRelay(target.hostname or "127.0.0.1", target.port or 5432).start()
    via_relay = target._replace(netloc=f"{target.username}@127.0.0.1:{relay.port}").geturl()
    hole = None
    try:
        server = rainymodel_server(env={"DATABASE_URL": via_relay, "RAINYMODEL_MASTER_KEY": MASTER_KEY})
        master = {"Authorization": f"Bearer {MASTER_KEY}"}
        assert ready(server, headers=master).status_code == 200

        relay.cut()  # connections refused
        r, took = timed_ready(server, headers=master)
        assert r.status_code == 503 and r.json()["status"] == "not_ready", r.text
        assert took < 1.0, f"/health/ready took {took:.2f} s with the database refusing connections"
        assert ready(server).json() == {"status": "not_ready"}

        hole = black_hole(relay.port)  # connections accepted, never answered
        for _ in range(3):
            r, took = timed_ready(server, headers=master)
            assert r.status_code == 503, r.text
            assert took < 1.0, f"/health/ready took {took:.2f} s with a silent database"
        assert httpx.get(server.url + "/health", timeout=2).status_code == 200
    finally:
        if hole is not None:
            hole.close()
        relay.cut()
