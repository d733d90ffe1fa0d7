"""Alerts from real RainyModel server processes (tests/fakes/server.py) in front of fake upstreams, driven by the
openai SDK, received by a real SMTP server and a webhook receiver on loopback.

The quota test runs two servers sharing the test database and Redis (needs REDIS_URL: use a database number of your
own, e.g. REDIS_URL=redis://127.0.0.1:6379/12) and restarts both halfway; the others run on one server."""

from __future__ import annotations

import time

import openai
import pytest

from tests.alerts.conftest import WEBHOOK_SECRET, server_env, verify
from tests.fakes.routing_config import upstream
from tests.fakes.upstream import FakeUpstream, ok, status

CHAT = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hello"}]}


def client(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def kinds(received) -> list[str]:
    return [r.json()["kind"] for r in received]


@pytest.fixture
def fallback_upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.mark.multiprocess
def test_a_request_quota_alerts_once_per_threshold_across_two_servers_and_their_restart(
    redis_url, fake_upstream, make_routing, api_key, rainymodel_server, smtp, webhook_receiver, subscribers
):
    make_routing(upstream(fake_upstream))
    _, key = api_key(quotas=[("day", "max_requests", 20)])
    subscribers()
    servers = [rainymodel_server(server_env(smtp)), rainymodel_server(server_env(smtp))]
    for i in range(17):  # 80 % is request 16
        client(servers[i % 2], key).chat.completions.create(**CHAT)
    assert [r.json()["threshold"] for r in webhook_receiver.wait_for(1)] == ["requests:80"]

    for server in servers:
        assert server.stop()
    servers = [rainymodel_server(server_env(smtp)), rainymodel_server(server_env(smtp))]
    answers = []
    for i in range(8):  # 95 % is request 19, 100 % request 20; then the quota refuses
        try:
            client(servers[i % 2], key).chat.completions.create(**CHAT)
            answers.append(200)
        except openai.RateLimitError as exc:
            assert exc.code == "quota_exceeded"
            answers.append(429)
    assert answers == [200, 200, 200, 429, 429, 429, 429, 429]

    received = webhook_receiver.wait_for(3)
    time.sleep(1.0)  # room for a duplicate to arrive, if there were one
    assert [r.json()["threshold"] for r in webhook_receiver.received] == ["requests:80", "requests:95", "requests:100"]
    assert all(verify(WEBHOOK_SECRET, r) for r in received)
    assert [r.json()["details"]["used"] for r in received] == [16, 19, 20]
    subjects = sorted(m["Subject"].strip() for m in smtp.wait_for(3))
    assert len(smtp.messages) == 3
    assert [s.split(" has used ")[1].split("%")[0] for s in subjects] == ["100", "80", "95"]


def test_a_providers_breaker_alerts_once_when_it_opens_and_once_when_it_closes(
    fake_upstream, fallback_upstream, make_routing, api_key, rainymodel_server, smtp, webhook_receiver, subscribers
):
    credit_cooldown = 1.0
    make_routing(
        upstream(fake_upstream, name="primary", max_retries=0, credit_cooldown_s=credit_cooldown),
        upstream(fallback_upstream, tier="premium", name="fallback", max_retries=0),
    )
    _, key = api_key()
    subscribers(kinds=["breaker"])
    server = rainymodel_server(server_env(smtp))
    fake_upstream.script(status(402, code="insufficient_credits"))  # out of credit: the whole provider is taken out
    raw = client(server, key).chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["x-rainymodel-provider"] == "fallback"
    [opened] = webhook_receiver.wait_for(1)
    assert opened.json()["kind"] == "breaker_opened"
    assert opened.json()["details"] == {"provider": "primary", "reason": "credits_exhausted", "cooldown_s": 1.0}

    for _ in range(3):  # while open: the fallback answers, nothing new is announced
        client(server, key).chat.completions.create(**CHAT)
    time.sleep(credit_cooldown + 0.2)
    raw = client(server, key).chat.completions.with_raw_response.create(**CHAT)  # the probe, which succeeds
    assert raw.headers["x-rainymodel-provider"] == "primary"
    received = webhook_receiver.wait_for(2)
    time.sleep(0.5)
    assert kinds(webhook_receiver.received) == ["breaker_opened", "breaker_closed"]
    assert received[1].json()["details"]["provider"] == "primary"
    assert [m["Subject"].strip().split(": ")[0] for m in smtp.wait_for(2)] == [
        "[RainyModel] Provider primary's breaker opened (credits_exhausted)",
        "[RainyModel] Provider primary's breaker closed",
    ]


def test_every_route_of_an_alias_failing_alerts_once_per_incident_and_its_end(
    fake_upstream, make_routing, api_key, rainymodel_server, smtp, webhook_receiver, subscribers
):
    make_routing(upstream(fake_upstream, max_retries=0, breaker_failures=100))
    _, key = api_key()
    subscribers(kinds=["alias"])
    server = rainymodel_server(server_env(smtp))
    fake_upstream.default = status(500)
    for _ in range(4):
        with pytest.raises(openai.InternalServerError) as failed:
            client(server, key).chat.completions.create(**CHAT)
        assert failed.value.code == "all_upstreams_failed"
    [failing] = webhook_receiver.wait_for(1)
    assert failing.json()["kind"] == "alias_failing"
    assert failing.json()["title"] == "Every route of alias rainymodel/auto is failing (all_upstreams_failed)"

    fake_upstream.default = ok()
    client(server, key).chat.completions.create(**CHAT)
    received = webhook_receiver.wait_for(2)
    time.sleep(0.5)
    assert kinds(webhook_receiver.received) == ["alias_failing", "alias_recovered"]
    assert received[1].json()["details"]["alias"] == "rainymodel/auto"
    assert len(smtp.wait_for(2)) == 2
