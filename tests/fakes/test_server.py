"""RainyModelServer runs the real ASGI app as a process on the test database (tests/fakes/server.py)."""

import httpx
import pytest

from tests.fakes.server import MASTER_KEY_HEADERS, RainyModelServer, ServerFailed, database_url_for


def test_database_url_for_sqlite_and_postgres():
    assert (
        database_url_for({"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.sqlite3"})
        == "sqlite:////tmp/x.sqlite3"
    )
    assert (
        database_url_for(
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "test_rm",
                "USER": "u",
                "PASSWORD": "p@ss",
                "HOST": "127.0.0.1",
                "PORT": "5432",
            }
        )
        == "postgres://u:p%40ss@127.0.0.1:5432/test_rm"
    )


def test_server_starts_on_the_test_database_and_stops_gracefully(rainymodel_server, make_routing, fake_upstream):
    from tests.fakes.routing_config import upstream

    make_routing(upstream(fake_upstream))
    server = rainymodel_server()
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    ready = httpx.get(server.url + "/health/ready", headers=MASTER_KEY_HEADERS).json()
    assert ready["checks"]["database"]["ok"] is True
    assert server.rss_bytes() > 10_000_000
    assert server.stop() is True
    assert not server.running()
    assert "Application shutdown complete" in server.log_text()


def test_server_that_cannot_start_raises_with_its_output(transactional_db):
    server = RainyModelServer(env={"SECRET_KEY": "dev-only-insecure-secret-key-change-me", "DEBUG": "false"})
    with pytest.raises(ServerFailed, match="SECRET_KEY"):
        server.start(timeout=15)


def test_fixtures_combine_into_a_working_proxy_with_a_request_log(
    rainymodel_server, make_routing, api_key, fake_upstream
):
    from tests.fakes.routing_config import upstream
    from tests.fakes.upstream import answer_for
    from usage.models import RequestLog

    make_routing(upstream(fake_upstream, upstream_model="up-model"))
    _, key = api_key()
    server = rainymodel_server()
    messages = [{"role": "user", "content": "hello harness"}]
    response = httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "rainymodel/auto", "messages": messages},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == answer_for(messages, 20)
    assert fake_upstream.requests.chat()[0].body["model"] == "up-model"
    assert server.stop() is True
    assert RequestLog.objects.count() == 1
