"""Per-key limits seen from outside (SPEC §7, issue 5): real servers over real sockets, a fake upstream, the openai
SDK. Tests marked `multiprocess` start two RainyModel processes sharing Redis and need REDIS_URL (use a database
of your own, e.g. REDIS_URL=redis://127.0.0.1:6379/4); the others run on one process with the in-process store."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.conftest import _flush_redis
from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream


def headers_for(key: str, **extra) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def wait_for_log_rows(expected: int, timeout: float = 10.0) -> int:
    """Committed RequestLog rows (written by the server processes), once there are `expected` of them."""
    from usage.models import RequestLog

    deadline = time.monotonic() + timeout
    while True:
        count = RequestLog.objects.count()
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


async def fire(urls: list[str], key: str, n: int, body: dict) -> list[httpx.Response]:
    """`n` requests at once, spread round-robin over the servers."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(
            *(
                client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body, headers=headers_for(key))
                for i in range(n)
            )
        )


# --- across two processes sharing Redis ---------------------------------------------------------------------------


@pytest.mark.multiprocess
def test_rpm_limit_holds_across_two_servers_sharing_redis(
    redis_url, fake_upstream, make_routing, api_key, rainymodel_server
):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=60)
    servers = [rainymodel_server(), rainymodel_server()]
    responses = asyncio.run(fire([s.url for s in servers], key, 100, chat()))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60 and statuses.count(429) == 40
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    served = {s.url: 0 for s in servers}
    for i, r in enumerate(responses):
        served[servers[i % 2].url] += r.status_code == 200
    assert all(served.values()), served  # both servers admitted some: the count really is shared


@pytest.mark.multiprocess
def test_daily_token_quota_is_refused_once_used_and_still_after_redis_is_flushed(
    redis_url, fake_upstream, make_routing, api_key, rainymodel_server
):
    fake_upstream.default = fu.ok(tokens=300)
    make_routing(upstream(fake_upstream))
    _, key = api_key(quotas=[("day", "max_tokens", 1000)])
    servers = [rainymodel_server(), rainymodel_server()]
    statuses = []
    for i in range(6):  # ~305 tokens each: the fourth request uses the quota up, the fifth is refused
        response = httpx.post(
            servers[i % 2].url + "/v1/chat/completions", json=chat(), headers=headers_for(key), timeout=30
        )
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert response.json()["error"]["type"] == "insufficient_quota"
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"

    assert wait_for_log_rows(6) == 6
    _flush_redis(redis_url)  # the shared state forgets every counter
    for server in servers:
        response = httpx.post(server.url + "/v1/chat/completions", json=chat(), headers=headers_for(key), timeout=30)
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "quota_exceeded"
    assert len(fake_upstream.requests.chat()) == 4  # nothing refused ever reached the upstream


# --- one process --------------------------------------------------------------------------------------------------


def test_a_used_up_quota_stays_used_up_when_the_shared_state_is_lost(fake_upstream, make_routing, api_key, proxy):
    from rainymodel_site.shared_state import state

    fake_upstream.default = fu.ok(tokens=300)
    make_routing(upstream(fake_upstream))
    _, key = api_key(quotas=[("day", "max_tokens", 1000), ("day", "max_requests", 100)])
    statuses = [proxy.post(key, chat()).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    proxy.logs(expected=5)
    state().flush_sync()
    refused = proxy.post(key, chat())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    # Rebuilt once from the log, then counted on: no request was counted twice.
    assert refused.headers["x-ratelimit-limit-requests"] == "100"
    assert refused.headers["x-ratelimit-remaining-requests"] == "96"


def test_the_openai_sdk_sees_rate_limit_error_with_retry_after(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=1)
    client = proxy.openai(key)
    raw = client.chat.completions.with_raw_response.create(model="rainymodel/auto", messages=chat()["messages"])
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
    assert refused.value.status_code == 429 and refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert len(fake_upstream.requests.chat()) == 1


def test_the_openai_sdk_sees_an_exhausted_quota_as_insufficient_quota_and_does_not_retry(
    fake_upstream, make_routing, api_key, proxy
):
    make_routing(upstream(fake_upstream))
    _, key = api_key(quotas=[("month", "max_requests", 1)])
    proxy.reload()
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=2)  # the SDK's default
    client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
    assert refused.value.code == "quota_exceeded" and refused.value.type == "insufficient_quota"
    assert "monthly quota of 1 requests" in refused.value.message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(proxy.logs(expected=2)) == 2  # one answer, one refusal: no retries


def test_only_limited_keys_get_x_ratelimit_headers(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, limited = api_key(rpm_limit=100, tpm_limit=50_000)
    _, unlimited = api_key()
    response = proxy.post(limited, chat())
    assert response.status_code == 200
    assert (response.headers["x-ratelimit-limit-requests"], response.headers["x-ratelimit-remaining-requests"]) == (
        "100",
        "99",
    )
    assert response.headers["x-ratelimit-limit-tokens"] == "50000"
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    second = proxy.post(limited, chat())  # the first request's real tokens now count
    assert int(second.headers["x-ratelimit-remaining-tokens"]) < 50_000
    assert not [h for h in proxy.post(unlimited, chat()).headers if h.startswith("x-ratelimit")]


def test_failed_authentication_is_rate_limited_per_client_ip(fake_upstream, make_routing, proxy, settings):
    settings.RAINYMODEL_AUTH_FAILURES_PER_MIN = 3
    make_routing(upstream(fake_upstream))
    statuses = [proxy.post("rm-" + "x" * 40, chat()).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    refused = proxy.post("rm-" + "y" * 40, chat())
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and "failed authentication" in refused.text
    assert int(refused.headers["retry-after"]) >= 1


def test_max_concurrent_holds_under_ten_streams_and_disconnects_free_the_slots(
    fake_upstream, make_routing, api_key, rainymodel_server
):
    fake_upstream.default = fu.ok(tokens=400, token_delay=0.05)  # a 20 s stream unless the client leaves
    make_routing(upstream(fake_upstream))
    _, key = api_key(max_concurrent=2)
    server = rainymodel_server()
    body = chat(stream=True)

    async def scenario():
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20)) as client:

            async def open_stream():
                request = client.build_request(
                    "POST", server.url + "/v1/chat/completions", json=body, headers=headers_for(key)
                )
                return await client.send(request, stream=True)

            responses = await asyncio.gather(*(open_stream() for _ in range(10)))
            streaming = [r for r in responses if r.status_code == 200]
            refused = [r for r in responses if r.status_code != 200]
            for r in refused:
                await r.aread()
            assert len(streaming) == 2 and len(refused) == 8, [r.status_code for r in responses]
            assert {r.status_code for r in refused} == {429}
            assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
            # The two streams really are streaming: read a little of each, then hang up mid-answer.
            for r in streaming:
                async for _ in r.aiter_bytes():
                    break
                await r.aclose()
            # Their slots come back once the server notices the disconnects.
            deadline = time.monotonic() + 10
            while True:
                again = await asyncio.gather(open_stream(), open_stream())
                if all(r.status_code == 200 for r in again) or time.monotonic() > deadline:
                    break
                for r in again:
                    await r.aclose()
                await asyncio.sleep(0.2)
            assert [r.status_code for r in again] == [200, 200]
            for r in again:
                await r.aclose()

    asyncio.run(scenario())
    assert len(fake_upstream.requests.chat()) >= 4


# --- what a key may use -------------------------------------------------------------------------------------------


def test_a_key_limited_to_an_alias_and_a_policy_is_refused_the_others(fake_upstream, make_routing, api_key, proxy):
    routing = make_routing(upstream(fake_upstream, tier="free"), alias="rainymodel/chat")
    make_routing(upstream(fake_upstream, tier="free"), alias="rainymodel/agent", catch_all=False)
    _, key = api_key(
        allowed_aliases=["rainymodel/chat"], allowed_policies=["free"], default_policy=routing.policies["free"]
    )
    client = proxy.openai(key)

    answer = client.chat.completions.with_raw_response.create(model="rainymodel/chat", messages=chat()["messages"])
    assert answer.headers["x-rainymodel-policy"] == "free"
    with pytest.raises(openai.PermissionDeniedError) as wrong_model:
        client.chat.completions.create(model="rainymodel/agent", messages=chat()["messages"])
    assert wrong_model.value.status_code == 403 and wrong_model.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as wrong_policy:
        client.chat.completions.create(
            model="rainymodel/chat", messages=chat()["messages"], extra_headers={"X-RainyModel-Policy": "premium"}
        )
    assert wrong_policy.value.code == "policy_not_allowed"
    assert [m.id for m in client.models.list()] == ["rainymodel/chat"]

    _, everything = api_key()
    assert sorted(m.id for m in proxy.openai(everything).models.list()) == ["rainymodel/agent", "rainymodel/chat"]
    assert len(fake_upstream.requests.chat()) == 1
