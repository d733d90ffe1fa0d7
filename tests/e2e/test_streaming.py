"""Streaming (SPEC §5.7): first-event gating, no buffering, event checks, [DONE], usage, and continuation of a
stream that breaks after tokens were sent."""

import time

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 5}
MESSAGES = [{"role": "user", "content": "tell me a story"}]


def stream(proxy, key, **extra):
    """POST a streaming request; returns (response, list of data payloads as bytes)."""
    proxy.reload()
    with httpx.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "rainymodel/auto", "messages": MESSAGES, "stream": True, **extra},
        timeout=30,
    ) as response:
        body = response.read()
    events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    return response, events


def text_of(events):
    out = ""
    for e in events:
        if e == b"[DONE]":
            continue
        obj = orjson.loads(e)
        for choice in obj.get("choices") or ():
            out += choice.get("delta", {}).get("content") or ""
    return out


def test_sdk_streams_the_whole_answer(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    pieces = [
        c.choices[0].delta.content or ""
        for c in proxy.openai(key).chat.completions.create(model="rainymodel/auto", messages=MESSAGES, stream=True)
        if c.choices
    ]
    assert "".join(pieces) == fu.answer_for(MESSAGES)


async def test_async_sdk_streams(fake_upstream, make_routing, api_key, proxy):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_routing)(upstream(fake_upstream))
    _, key = await sync_to_async(api_key)()
    await sync_to_async(proxy.reload)()
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    text = ""
    async for chunk in await client.chat.completions.create(model="rainymodel/auto", messages=MESSAGES, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == fu.answer_for(MESSAGES)
    await client.close()


def test_first_token_reaches_the_client_before_the_upstream_finishes(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, idle_timeout_s=5))
    _, key = api_key()
    proxy.post(key, chat())  # warm up: first-request costs (client pools, imports) are not what is measured
    fake_upstream.default = fu.ok(tokens=6, token_delay=0.4)  # the upstream needs >= 2 s in all
    client = httpx.Client(timeout=30)
    started = time.monotonic()
    with client.stream(
        "POST", proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=chat(stream=True)
    ) as response:
        first_content_after = None
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if (
                first_content_after is None
                and line.startswith("data: ")
                and '"content": "' in line
                and '"content": ""' not in line
            ):
                first_content_after = time.monotonic() - started
    total = time.monotonic() - started
    assert first_content_after < 0.6
    assert total >= 2.0
    assert lines[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in lines  # the rest still arrived


def test_failure_before_the_first_event_still_fails_over(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.first_token_delay(3)
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    response, events = stream(proxy, key)
    assert response.status_code == 200
    assert response.headers["x-rainymodel-route"] == "premium"
    assert response.headers["x-rainymodel-fallback-reason"] == "timeout"
    assert text_of(events) == fu.answer_for(MESSAGES) and events[-1] == b"[DONE]"


def test_upstream_error_status_before_first_event_fails_over(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.status(503)
    make_routing(upstream(fake_upstream, max_retries=0, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    response, events = stream(proxy, key)
    assert response.headers["x-rainymodel-route"] == "premium" and events[-1] == b"[DONE]"


def test_malformed_events_are_dropped(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.malformed_event(after=2)
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    _, events = stream(proxy, key)
    for e in events[:-1]:
        orjson.loads(e)  # every relayed event is JSON
    assert text_of(events) == fu.answer_for(MESSAGES)


def test_missing_done_is_added_after_a_finish_reason(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.no_done()
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    _, events = stream(proxy, key)
    assert events[-1] == b"[DONE]" and events.count(b"[DONE]") == 1


def test_usage_chunk_only_when_the_client_asked(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    _, plain = stream(proxy, key)
    _, with_usage = stream(proxy, key, stream_options={"include_usage": True})
    assert all(fake.body["stream_options"]["include_usage"] for fake in fake_upstream.requests.chat())
    usage_only = [e for e in with_usage[:-1] if not orjson.loads(e)["choices"]]
    assert len(usage_only) == 1 and orjson.loads(usage_only[0])["usage"]["completion_tokens"] == 20
    assert all(orjson.loads(e)["choices"] for e in plain[:-1])
    rows = proxy.logs(2)
    assert [(r.completion_tokens, r.usage_estimated) for r in rows] == [(20, False), (20, False)]


def test_stall_after_tokens_continues_with_a_prefill(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.stall_after(5)
    second_upstream.default = fu.continue_prefill()
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium", supports_prefill=True))
    _, key = api_key()
    response, events = stream(proxy, key)
    assert text_of(events) == fu.answer_for(MESSAGES)
    assert events[-1] == b"[DONE]"
    prefill = second_upstream.requests.chat()[0].messages[-1]
    assert prefill["role"] == "assistant" and prefill["content"] == fu.answer_for(MESSAGES, 5)
    row = proxy.logs(1)[0]
    assert row.status == 200 and [a["outcome"] for a in row.attempts] == ["stream_interrupted", "continued"]
    assert row.tier == "premium"  # the log names the route that finished the answer


def test_cut_stream_restarts_on_a_route_without_prefill_and_splices(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.cut_after(7)
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    _, events = stream(proxy, key)
    assert text_of(events) == fu.answer_for(MESSAGES)  # nothing repeated, nothing missing
    assert events[-1] == b"[DONE]"
    assert second_upstream.requests.chat()[0].messages == MESSAGES  # a plain restart


def test_rejected_prefill_falls_back_to_restart_on_the_same_route(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.cut_after(4)
    second_upstream.default = fu.reject_prefill()
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium", supports_prefill=True))
    _, key = api_key()
    _, events = stream(proxy, key)
    assert text_of(events) == fu.answer_for(MESSAGES) and events[-1] == b"[DONE]"
    assert len(second_upstream.requests.chat()) == 2


def test_no_route_to_continue_ends_with_stream_interrupted_and_no_done(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.cut_after(3)
    second_upstream.default = fu.status(400, code="prefill_not_supported", message="no prefill here")
    make_routing(
        upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium", supports_prefill=True, **FAST)
    )
    _, key = api_key()
    _, events = stream(proxy, key)
    assert b"[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted"
    assert "prefill" not in error["message"]  # the rescue's own error is never shown
    row = proxy.logs(1)[0]
    assert (row.status, row.error_code) == (502, "stream_interrupted")


def test_sdk_raises_on_an_interrupted_stream(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.cut_after(3)
    make_routing(upstream(fake_upstream, **FAST))
    _, key = api_key()
    with pytest.raises(openai.APIError):
        for _ in proxy.openai(key).chat.completions.create(model="rainymodel/auto", messages=MESSAGES, stream=True):
            pass


def test_idle_stall_with_no_rescue_route_is_interrupted(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.stall_after(2)
    make_routing(upstream(fake_upstream, **FAST))
    _, key = api_key()
    started = time.monotonic()
    _, events = stream(proxy, key)
    assert time.monotonic() - started < 3
    assert orjson.loads(events[-1])["error"]["code"] == "stream_interrupted"


def test_streamed_tokens_are_estimated_when_upstream_gives_no_usage(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.no_usage()
    make_routing(upstream(fake_upstream, input_price_per_mtok=1, output_price_per_mtok=2))
    _, key = api_key()
    stream(proxy, key)
    row = proxy.logs(1)[0]
    assert row.usage_estimated and row.completion_tokens > 0 and row.prompt_tokens > 0
    assert float(row.cost_usd) == pytest.approx((row.prompt_tokens * 1 + row.completion_tokens * 2) / 1e6)


def test_streaming_latency_header_is_time_to_first_token(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.ok(tokens=5, token_delay=0.2)
    make_routing(upstream(fake_upstream, idle_timeout_s=5))
    _, key = api_key()
    response, _ = stream(proxy, key)
    assert int(response.headers["x-rainymodel-latency-ms"]) < 500
    row = proxy.logs(1)[0]
    assert row.latency_ms >= 800 and row.ttft_ms < 500
