"""POST /v1/chat/completions without streaming: the openai SDK as client, a fake upstream on loopback, and one
test per row of SPEC §5.6's outcome table."""

import time

import httpx
import openai
import pytest

from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 2}


def messages(content="hello there"):
    return [{"role": "user", "content": content}]


def test_sdk_sync_gets_the_upstream_answer_with_routing_headers(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, tier="free", name="hf", kind="hf"))
    _, key = api_key()
    raw = proxy.openai(key).chat.completions.with_raw_response.create(model="rainymodel/auto", messages=messages())
    completion = raw.parse()
    assert completion.choices[0].message.content == fu.answer_for(messages())
    assert completion.model == "fake-model"
    h = raw.headers
    assert (h["x-rainymodel-route"], h["x-rainymodel-upstream"], h["x-rainymodel-provider"]) == ("free", "hf", "hf")
    assert (h["x-rainymodel-model"], h["x-rainymodel-alias"], h["x-rainymodel-policy"]) == (
        "fake-model",
        "rainymodel/auto",
        "auto",
    )
    assert h["x-rainymodel-attempts"] == "1" and h["x-rainymodel-tried"] == "hf/fake-model"
    assert int(h["x-rainymodel-latency-ms"]) >= 0 and h["x-request-id"].startswith("req_")
    assert "x-rainymodel-fallback-reason" not in h


async def test_sdk_async_works_unchanged(fake_upstream, make_routing, api_key, proxy):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_routing)(upstream(fake_upstream))
    _, key = await sync_to_async(api_key)()
    await sync_to_async(proxy.reload)()
    import openai as sdk

    client = sdk.AsyncOpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    completion = await client.chat.completions.create(model="gpt-4o", messages=messages("async"))
    assert completion.choices[0].message.content == fu.answer_for(messages("async"))
    await client.close()


def test_body_passes_through_but_model_and_credentials_are_ours(
    fake_upstream, make_routing, api_key, proxy, monkeypatch
):
    monkeypatch.setenv("FAKE_SECRET", "sk-provider-secret")
    make_routing(
        upstream(
            fake_upstream,
            api_key_env="FAKE_SECRET",
            extra_headers={"X-Title": "RainyModel"},
            upstream_model="qwen2.5:14b",
        )
    )
    _, key = api_key()
    body = chat(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        response_format={"type": "json_object"},
        some_future_field={"x": 1},
        temperature=0.2,
    )
    assert proxy.post(key, body).status_code == 200
    sent = fake_upstream.requests.chat()[0]
    assert sent.body["model"] == "qwen2.5:14b"
    assert {k: sent.body[k] for k in ("tools", "response_format", "some_future_field", "temperature")} == {
        k: body[k] for k in ("tools", "response_format", "some_future_field", "temperature")
    }
    assert sent.headers["authorization"] == "Bearer sk-provider-secret"
    assert sent.headers["x-title"] == "RainyModel"
    assert key not in str(sent.headers)


def test_client_request_id_is_echoed(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    r = proxy.post(key, chat(), headers={"X-Request-ID": "my-trace-42"})
    assert r.headers["x-request-id"] == "my-trace-42"
    r = proxy.post(key, chat(), headers={"X-Request-ID": "not sane <script>"})
    assert r.headers["x-request-id"].startswith("req_")


# --- the outcome table ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_on_the_same_route(status, fake_upstream, make_routing, api_key, proxy):
    fake_upstream.script(fu.status(status))
    make_routing(upstream(fake_upstream, max_retries=2, **FAST))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200
    assert len(fake_upstream.requests.chat()) == 2
    assert r.headers["x-rainymodel-attempts"] == "2"
    assert r.headers["x-rainymodel-fallback-reason"] == f"http_{status}"


def test_retries_exhausted_moves_to_the_next_route(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.status(503)
    make_routing(upstream(fake_upstream, max_retries=1, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-route"] == "premium"
    assert len(fake_upstream.requests.chat()) == 2 and len(second_upstream.requests.chat()) == 1
    assert r.headers["x-rainymodel-tried"].count(",") == 1


def test_connect_error_retries_then_next_route(second_upstream, make_routing, api_key, proxy):
    make_routing(
        upstream("http://127.0.0.1:9/v1", max_retries=1, name="dead", **FAST),
        upstream(second_upstream, tier="internal"),
    )
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-route"] == "internal"
    assert r.headers["x-rainymodel-attempts"] == "3"
    assert r.headers["x-rainymodel-fallback-reason"] == "connect_error"


def test_reset_before_headers_is_retried(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.script(fu.reset())
    make_routing(upstream(fake_upstream, max_retries=2, **FAST))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and len(fake_upstream.requests.chat()) == 2


def test_429_with_short_retry_after_waits_and_retries_same_route(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.script(fu.status(429, retry_after=1))
    make_routing(upstream(fake_upstream, max_retries=2, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    started = time.monotonic()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-route"] == "free"
    assert time.monotonic() - started >= 0.95
    first, second = fake_upstream.requests.chat()
    assert second.received_at - first.received_at >= 0.95
    assert second_upstream.requests.chat() == []


def test_429_without_retry_after_backs_off_and_retries(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.script(fu.status(429))
    make_routing(upstream(fake_upstream, max_retries=1, **FAST))
    _, key = api_key()
    assert proxy.post(key, chat()).status_code == 200
    assert len(fake_upstream.requests.chat()) == 2


def test_429_with_long_retry_after_moves_on_at_once(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.script(fu.status(429, retry_after=60))
    make_routing(upstream(fake_upstream, max_retries=2, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    started = time.monotonic()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-route"] == "premium"
    assert time.monotonic() - started < 1
    assert len(fake_upstream.requests.chat()) == 1
    assert r.headers["x-rainymodel-fallback-reason"] == "http_429"


def test_a_silent_route_times_out_and_is_not_retried(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.hang()
    make_routing(upstream(fake_upstream, max_retries=2, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-fallback-reason"] == "timeout"
    assert len(fake_upstream.requests.chat()) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_credential_or_model_errors_move_to_next_route(
    status, fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.status(status)
    make_routing(upstream(fake_upstream, max_retries=2, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-fallback-reason"] == f"http_{status}"
    assert len(fake_upstream.requests.chat()) == 1


def test_402_moves_on_with_credits_exhausted(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.status(402)
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-fallback-reason"] == "credits_exhausted"


def test_context_length_skips_routes_whose_window_is_no_larger(
    fake_upstream, second_upstream, third_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.context_length_exceeded()
    make_routing(
        upstream(fake_upstream, context_window=8000, **FAST),
        upstream(second_upstream, context_window=8000, **FAST),
        upstream(third_upstream, tier="premium", context_window=32000),
    )
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-route"] == "premium"
    assert len(fake_upstream.requests.chat()) == 1
    assert second_upstream.requests.chat() == []


def test_context_length_with_no_larger_route_returns_the_400(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.context_length_exceeded()
    make_routing(
        upstream(fake_upstream, context_window=8000, **FAST), upstream(second_upstream, context_window=4000, **FAST)
    )
    _, key = api_key()
    with pytest.raises(openai.BadRequestError) as err:
        proxy.openai(key).chat.completions.create(model="rainymodel/auto", messages=messages())
    assert err.value.code == "context_length_exceeded"
    assert second_upstream.requests.chat() == []


@pytest.mark.parametrize(
    "behaviour,status,code",
    [
        (fu.content_filter(), 400, "content_filter"),
        (fu.status(413, code="request_too_large"), 413, "request_too_large"),
        (fu.status(422, code="unprocessable"), 422, "unprocessable"),
    ],
)
def test_client_errors_come_back_unchanged_without_retry(
    behaviour, status, code, fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = behaviour
    make_routing(upstream(fake_upstream, max_retries=2, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == status and r.json()["error"]["code"] == code
    assert len(fake_upstream.requests.chat()) == 1 and second_upstream.requests.chat() == []
    assert r.headers["x-rainymodel-route"] == "error"


def test_200_that_is_not_a_completion_moves_on(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.invalid_completion()
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-fallback-reason"] == "invalid_response"


def test_every_route_failing_is_a_502_naming_each_without_urls(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.status(500)
    second_upstream.default = fu.status(401)
    make_routing(
        upstream(fake_upstream, name="alpha", max_retries=0, **FAST),
        upstream(second_upstream, name="beta", tier="premium", **FAST),
    )
    _, key = api_key()
    with pytest.raises(openai.InternalServerError) as err:
        proxy.openai(key).chat.completions.create(model="rainymodel/auto", messages=messages())
    assert err.value.status_code == 502
    body = err.value.body
    assert body["code"] == "all_upstreams_failed"
    assert "alpha/fake-model (http_500)" in body["message"] and "beta/fake-model (http_401)" in body["message"]
    assert "127.0.0.1" not in body["message"]
    assert err.value.response.headers["x-rainymodel-upstream"] == "none"


def test_every_route_timing_out_is_a_504(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.hang()
    make_routing(upstream(fake_upstream, **FAST))
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_overall_deadline_bounds_all_attempts_and_waits(fake_upstream, make_routing, api_key, proxy, settings):
    settings.RAINYMODEL_DEADLINE_S = 1.0
    fake_upstream.default = fu.status(429, retry_after=3)  # would wait 3 s per retry
    make_routing(upstream(fake_upstream, max_retries=5, **FAST))
    _, key = api_key()
    started = time.monotonic()
    r = proxy.post(key, chat())
    assert time.monotonic() - started < 1.5
    assert r.status_code == 502


# --- errors as the SDK sees them ----------------------------------------------------------------------------------


def test_sdk_exception_classes(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    make_routing(alias="rainymodel/agent", catch_all=False)  # no routes at all: empty chain
    _, key = api_key()
    _, chat_only = api_key(allowed_aliases=["rainymodel/auto"])
    client = proxy.openai(key)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="rainymodel/auto", messages=messages(), extra_headers={"X-RainyModel-Policy": "nope"}
        )
    with pytest.raises(openai.AuthenticationError):
        proxy.openai("rm-wrongwrongwrongwrongwrongwrongwrong").chat.completions.create(
            model="rainymodel/auto", messages=messages()
        )
    with pytest.raises(openai.PermissionDeniedError):
        proxy.openai(chat_only).chat.completions.create(model="rainymodel/agent", messages=messages())
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="rainymodel/missing", messages=messages())
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="rainymodel/agent", messages=messages())
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"]


def test_sdk_sees_rate_limit_error(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=1)
    client = proxy.openai(key)
    client.chat.completions.create(model="rainymodel/auto", messages=messages())
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="rainymodel/auto", messages=messages())
    assert err.value.response.headers["retry-after"]
    assert err.value.code == "rate_limit_exceeded"


def test_models_lists_listed_enabled_aliases_the_key_may_use(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    make_routing(upstream(fake_upstream), alias="rainymodel/chat", catch_all=False)
    make_routing(upstream(fake_upstream), alias="rainymodel/hidden", catch_all=False, listed=False)
    _, key = api_key()
    _, limited = api_key(allowed_aliases=["rainymodel/chat"])
    ids = [m.id for m in proxy.openai(key).models.list()]
    assert sorted(ids) == ["rainymodel/auto", "rainymodel/chat"]
    assert [m.id for m in proxy.openai(limited).models.list()] == ["rainymodel/chat"]
    r = httpx.get(proxy.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["x-request-id"]


def test_api_key_header_and_master_key_authenticate(fake_upstream, make_routing, api_key, proxy, settings):
    settings.RAINYMODEL_MASTER_KEY = "master-secret-for-tests"
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    assert proxy.post(None, chat(), headers={"api-key": key}).status_code == 200
    assert proxy.post("master-secret-for-tests", chat()).status_code == 200
    rows = proxy.logs(2)
    assert [r.key_prefix for r in rows] == [key[:12], "master"]


def test_tokens_are_estimated_when_the_upstream_reports_no_usage(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.no_usage()
    make_routing(upstream(fake_upstream, input_price_per_mtok=2, output_price_per_mtok=6))
    _, key = api_key()
    assert proxy.post(key, chat()).status_code == 200
    row = proxy.logs(1)[0]
    answer_chars = len(fu.answer_for([{"role": "user", "content": "hello there"}]))
    assert row.usage_estimated
    assert row.completion_tokens == (answer_chars + 3) // 4 and row.prompt_tokens > 0
    assert float(row.cost_usd) == pytest.approx((row.prompt_tokens * 2 + row.completion_tokens * 6) / 1e6)
