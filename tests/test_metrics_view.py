"""`GET /metrics` (rainymodel_site/metrics_view.py) on real server processes: who may read it (the token, staff
signed in; 401 for everyone else, without a hint), that a token scrape needs no database, and the breakers' state
read from the shared store."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import httpx
import pytest
from django.db import connection

from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

TOKEN = "metrics-token-for-the-view-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server(rainymodel_server, make_routing, fake_upstream):
    make_routing(upstream(fake_upstream, name="only", max_retries=0, breaker_failures=1, breaker_cooldown_s=60))
    return rainymodel_server(env={"RAINYMODEL_METRICS_TOKEN": TOKEN})


def get(server, **kwargs) -> httpx.Response:
    return httpx.get(server.url + "/metrics", timeout=10, **kwargs)


def test_the_token_reads_the_prometheus_text_format(server):
    r = get(server, headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE rainymodel_requests_total counter" in r.text
    assert "# TYPE rainymodel_upstream_attempt_duration_seconds histogram" in r.text
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer rm-master-key-of-the-test-servers-00000000000"},  # the master key is not it
    ],
)
def test_anyone_else_gets_401_and_no_hint(server, headers):
    r = get(server, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": {"message": "Authentication required.", "code": "unauthorized"}}
    assert "www-authenticate" not in r.headers
    assert "rainymodel_" not in r.text


def test_without_a_token_configured_no_bearer_is_accepted(rainymodel_server, make_routing, fake_upstream):
    make_routing(upstream(fake_upstream))
    server = rainymodel_server()
    assert get(server, headers={"Authorization": "Bearer"}).status_code == 401
    assert get(server, headers={"Authorization": "Bearer x"}).status_code == 401


def test_staff_signed_in_read_it_other_users_do_not(server, client, django_user_model):
    staff = django_user_model.objects.create_user("ops", password="pw-ops-1234", is_staff=True)
    user = django_user_model.objects.create_user("someone", password="pw-user-1234")
    client.force_login(staff)
    assert get(server, cookies={"sessionid": client.cookies["sessionid"].value}).status_code == 200
    client.force_login(user)
    assert get(server, cookies={"sessionid": client.cookies["sessionid"].value}).status_code == 401
    assert get(server, cookies={"sessionid": "not-a-session"}).status_code == 401


def test_a_token_scrape_needs_no_database(rainymodel_server, make_routing, fake_upstream, api_key, tmp_path):
    """The server runs on a copy of the test database, which is then deleted: a token scrape still answers (and
    counts what was served), a staff session (a database read) no longer gets in."""
    if connection.vendor != "sqlite":
        pytest.skip("deletes a SQLite database file under the server")
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    copy = tmp_path / "copy.sqlite3"
    with closing(sqlite3.connect(connection.settings_dict["NAME"])) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)  # with what is still in the write-ahead log
    server = rainymodel_server(env={"RAINYMODEL_METRICS_TOKEN": TOKEN}, database_url=f"sqlite:///{copy}")
    chat = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(server.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    for path in tmp_path.glob("copy.sqlite3*"):
        path.unlink()
    r = get(server, headers=AUTH)
    assert r.status_code == 200
    assert 'rainymodel_requests_total{alias="rainymodel/auto",endpoint="chat",policy="auto",' in r.text, r.text[-3000:]
    assert get(server, cookies={"sessionid": "any"}).status_code == 401


def breaker_line(text: str, scope: str, state: str) -> str:
    return next(
        line
        for line in text.splitlines()
        if line.startswith("rainymodel_breaker_state{")
        and f'scope="{scope}"' in line
        and 'provider="only"' in line
        and f'state="{state}"' in line
    )


def test_breaker_state_comes_from_the_shared_store(server, fake_upstream, api_key):
    text = get(server, headers=AUTH).text
    assert breaker_line(text, "route", "closed").endswith(" 1.0")
    assert breaker_line(text, "route", "open").endswith(" 0.0")
    _, key = api_key()
    fake_upstream.script(fu.status(503))
    chat = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(server.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 502
    text = get(server, headers=AUTH).text
    assert breaker_line(text, "route", "open").endswith(" 1.0")
    assert breaker_line(text, "route", "closed").endswith(" 0.0")
    assert 'route="only/fake-model"' in breaker_line(text, "route", "open")
