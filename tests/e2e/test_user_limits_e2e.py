"""A user's limits seen from outside (issue 14): two keys of one user, on two RainyModel processes sharing Redis
and PostgreSQL, share the user's rpm and quota exactly; a 429 says it was the user's limit; the user's quota is
rebuilt from the request log of all the user's keys after Redis forgets it. Needs REDIS_URL (use a database of
your own, e.g. REDIS_URL=redis://127.0.0.1:6379/14) and is meant for DATABASE_URL on PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.conftest import _flush_redis
from tests.e2e.conftest import chat
from tests.e2e.test_limits_e2e import headers_for, wait_for_log_rows
from tests.fakes.routing_config import upstream


@pytest.fixture
def two_keys_of_one_user(api_key, django_user_model):
    def make(**user_limits):
        from apikeys.models import UserLimits, UserQuota

        user = django_user_model.objects.create_user("carol")
        quotas = user_limits.pop("quotas", [])
        limits = UserLimits.objects.create(user=user, **user_limits)
        for period, field, maximum in quotas:
            UserQuota.objects.create(user_limits=limits, period=period, **{field: maximum})
        return [api_key(owner=user)[1] for _ in range(2)]

    return make


async def fire(urls: list[str], keys: list[str], n: int) -> list[httpx.Response]:
    """`n` requests at once; request i goes to server i % 2 with key (i // 2) % 2: every key on every server."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(
            *(
                client.post(
                    urls[i % len(urls)] + "/v1/chat/completions", json=chat(), headers=headers_for(keys[(i // 2) % 2])
                )
                for i in range(n)
            )
        )


@pytest.mark.multiprocess
def test_two_keys_of_one_user_on_two_servers_share_the_users_rpm_exactly(
    redis_url, fake_upstream, make_routing, two_keys_of_one_user, rainymodel_server
):
    make_routing(upstream(fake_upstream))
    keys = two_keys_of_one_user(rpm_limit=30)
    servers = [rainymodel_server(), rainymodel_server()]
    urls = [s.url for s in servers]
    # First 20 one after another, every key on every server: all admitted, all counted on the user's one counter.
    for i in range(20):
        response = httpx.post(
            urls[i % 2] + "/v1/chat/completions", json=chat(), headers=headers_for(keys[(i // 2) % 2]), timeout=30
        )
        assert response.status_code == 200, response.text
    # Then a burst of 60 at once over both servers and keys: exactly the 10 left of the user's 30 pass.
    responses = asyncio.run(fire(urls, keys, 60))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 50
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["x-ratelimit-scope"] == "user"
    assert refused.headers["x-ratelimit-limit-requests"] == "30"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "your user's (all your keys together) limit of 30 requests" in refused.json()["error"]["message"]
    assert len(fake_upstream.requests.chat()) == 30
    assert wait_for_log_rows(80) == 80  # one RequestLog row per call, refused or not


@pytest.mark.multiprocess
def test_the_users_quota_is_shared_and_still_holds_after_redis_is_flushed(
    redis_url, fake_upstream, make_routing, two_keys_of_one_user, rainymodel_server
):
    make_routing(upstream(fake_upstream))
    keys = two_keys_of_one_user(quotas=[("day", "max_requests", 5)])
    servers = [rainymodel_server(), rainymodel_server()]
    statuses = []
    for i in range(8):
        response = httpx.post(
            servers[i % 2].url + "/v1/chat/completions",
            json=chat(),
            headers=headers_for(keys[(i // 2) % 2]),
            timeout=30,
        )
        statuses.append(response.status_code)
    assert statuses == [200] * 5 + [429] * 3
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert response.headers["x-ratelimit-scope"] == "user"

    assert wait_for_log_rows(8) == 8
    _flush_redis(redis_url)  # the shared state forgets every counter: rebuilt from both keys' admitted rows
    for server in servers:
        for key in keys:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
            assert refused.value.code == "quota_exceeded"
            assert "your user's (all your keys together) daily quota of 5 requests" in refused.value.message
            assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(fake_upstream.requests.chat()) == 5  # nothing refused ever reached the upstream
