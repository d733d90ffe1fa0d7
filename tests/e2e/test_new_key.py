"""A key works on its very first request (issue 9): a real server process whose poller is slowed to 30 s, so only
the unknown-key version check (routing/snapshot.catch_up) can make it see a key created while it runs. With
REDIS_URL set the server reads the config version from Redis; with DATABASE_URL on PostgreSQL, from there."""

import httpx
import openai

from apikeys.services import apikey_create
from tests.fakes.routing_config import upstream

SLOW_POLL = {"RAINYMODEL_SNAPSHOT_POLL_S": "30"}
CHAT = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hello"}]}


def test_a_key_created_while_the_server_runs_works_at_once(fake_upstream, make_routing, rainymodel_server):
    make_routing(upstream(fake_upstream))
    server = rainymodel_server(env=SLOW_POLL)
    for n in range(3):  # back to back: each new key gets its own check, not one skipped by the rate limit
        _, full_key = apikey_create(name=f"fresh-{n}")
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=full_key, max_retries=0)
        completion = client.chat.completions.create(**CHAT)
        assert completion.choices[0].message.content


def test_unknown_keys_are_still_401_and_a_real_one_still_works_after_them(
    fake_upstream, make_routing, rainymodel_server
):
    make_routing(upstream(fake_upstream))
    server = rainymodel_server(env={**SLOW_POLL, "RAINYMODEL_AUTH_FAILURES_PER_MIN": "1000"})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for n in range(20):
            r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer rm-{n:040d}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        _, full_key = apikey_create(name="after-the-flood")
        r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {full_key}"})
        assert r.status_code == 200
