"""POST /v1/messages (+ /v1/messages/count_tokens): the Anthropic Messages API over chat-completions upstreams (issue
13), driven by the official anthropic SDK (and httpx for bad input) against the real server and a fake upstream on
loopback. The anthropic SDK appends /v1/messages to its base_url, so it is given the server root."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 2}
MODEL = "rainymodel/auto"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def client(proxy, key, **kwargs) -> anthropic.Anthropic:
    proxy.reload()
    return anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0, **kwargs)


def user(text="hello there"):
    return [{"role": "user", "content": text}]


def post(proxy, key, body, path="/v1/messages", headers=None, **kwargs):
    proxy.reload()
    h = {"x-api-key": key, "anthropic-version": "2023-06-01"} if key else {}
    h.update(headers or {})
    if isinstance(body, (bytes, str)):
        return httpx.post(
            proxy.url + path, content=body, headers={"content-type": "application/json", **h}, timeout=30, **kwargs
        )
    return httpx.post(proxy.url + path, json=body, headers=h, timeout=30, **kwargs)


def assert_anthropic_error(response, status, type_):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}, body
    assert body["error"]["type"] == type_ and isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


# --- messages.create ------------------------------------------------------------------------------------------------


def test_create_text_answer_with_headers_and_one_log_row(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, tier="free", name="hf", kind="hf"))
    _, key = api_key()
    raw = client(proxy, key).messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=user())
    message = raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert message.model == MODEL and message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == fu.answer_for([{"role": "user", "content": "hello there"}])
    assert message.id.startswith("msg_") and message.usage.output_tokens == 20
    h = raw.headers
    assert (h["x-rainymodel-route"], h["x-rainymodel-provider"], h["x-rainymodel-alias"]) == ("free", "hf", MODEL)
    assert h["x-rainymodel-model"] == "fake-model" and h["x-rainymodel-attempts"] == "1"
    sent = fake_upstream.requests.chat()[0]
    assert sent.body["model"] == "fake-model" and sent.body["max_tokens"] == 100
    assert sent.headers.get("authorization") != f"Bearer {key}" and key not in str(sent.headers)
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.stream) == ("messages", 200, False)
    assert row.completion_tokens == 20


def test_system_prompt_and_stop_sequence(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    words = fu.answer_words([{"role": "user", "content": "stop me"}], 20)
    stop = words[3]  # a word of the deterministic answer
    fake_upstream.script(fu.honour_stop())
    message = client(proxy, key).messages.create(
        model=MODEL, max_tokens=50, system="Be brief.", stop_sequences=[stop, "never-there"], messages=user("stop me")
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
    assert message.content[0].text == " ".join(words[:3]) + " "
    sent = fake_upstream.requests.chat()[0].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["stop"] == [stop, "never-there"]


def test_tool_use_then_tool_result_round_trip(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    fake_upstream.script(fu.tool_call("get_weather", '{"city": "Oslo"}'), fu.ok())
    sdk = client(proxy, key)
    first = sdk.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER], messages=user("weather in Oslo?"))
    assert first.stop_reason == "tool_use"
    [tool_use] = [block for block in first.content if block.type == "tool_use"]
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "Oslo"}
    history = user("weather in Oslo?") + [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "12 C, rain"}]},
    ]
    second = sdk.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER], messages=history)
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    sent = fake_upstream.requests.chat()
    assert sent[0].body["tools"][0]["function"]["name"] == "get_weather"
    chat_history = sent[1].body["messages"]
    assert chat_history[1]["tool_calls"][0]["id"] == tool_use.id
    assert chat_history[2] == {"role": "tool", "tool_call_id": tool_use.id, "content": "12 C, rain"}
    assert [r.endpoint for r in proxy.logs(2)] == ["messages", "messages"]


def test_failover_to_the_next_tier(fake_upstream, second_upstream, make_routing, api_key, proxy):
    make_routing(
        upstream(fake_upstream, tier="free", name="a", **FAST),
        upstream(second_upstream, tier="premium", name="b", **FAST),
    )
    _, key = api_key()
    fake_upstream.default = fu.status(503)
    raw = client(proxy, key).messages.with_raw_response.create(model=MODEL, max_tokens=10, messages=user())
    assert raw.parse().content[0].text == fu.answer_for(user())
    assert raw.headers["x-rainymodel-route"] == "premium" and raw.headers["x-rainymodel-provider"] == "b"
    assert raw.headers["x-rainymodel-fallback-reason"]
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("messages", 200)


# --- messages.stream ------------------------------------------------------------------------------------------------


def test_stream_text(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    with client(proxy, key).messages.stream(model=MODEL, max_tokens=100, messages=user("stream it")) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
        headers = stream.response.headers
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(types)
    assert final.content[0].text == fu.answer_for(user("stream it"))
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 20 and final.model == MODEL
    assert headers["content-type"].startswith("text/event-stream") and headers["x-rainymodel-alias"] == MODEL
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.stream) == ("messages", 200, True)


def test_stream_raw_events_include_ping(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    response = post(proxy, key, {"model": MODEL, "max_tokens": 10, "stream": True, "messages": user()})
    events = [line[len("event: ") :] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "ping", "content_block_start"]
    assert events[-2:] == ["message_delta", "message_stop"]


def test_stream_tool_use(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    fake_upstream.script(fu.tool_call("get_weather", '{"city": "Bergen"}', tokens=3))
    with client(proxy, key).messages.stream(
        model=MODEL, max_tokens=100, tools=[WEATHER], messages=user("weather?")
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[1].name == "get_weather" and final.content[1].input == {"city": "Bergen"}
    assert final.stop_reason == "tool_use"


def test_mid_stream_break_is_an_error_event_and_the_sdk_raises(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, **FAST))
    _, key = api_key()
    fake_upstream.script(fu.cut_after(3))
    response = post(proxy, key, {"model": MODEL, "max_tokens": 10, "stream": True, "messages": user()})
    assert response.status_code == 200
    assert "event: error" in response.text and "message_stop" not in response.text
    error = json.loads(response.text.rsplit("data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    fake_upstream.script(fu.cut_after(3))
    with pytest.raises(anthropic.APIStatusError):
        with client(proxy, key).messages.stream(model=MODEL, max_tokens=10, messages=user()) as stream:
            for _ in stream:
                pass
    rows = proxy.logs(2)
    assert [(r.endpoint, r.status, r.error_code) for r in rows] == [("messages", 502, "stream_interrupted")] * 2


def test_broken_stream_is_continued_on_the_next_route_with_the_chat_request(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    make_routing(
        upstream(fake_upstream, tier="free", name="a", **FAST),
        upstream(second_upstream, tier="premium", name="b", **FAST),
    )
    _, key = api_key()
    fake_upstream.script(fu.cut_after(5))
    with client(proxy, key).messages.stream(
        model=MODEL, max_tokens=50, system="Be brief.", messages=user("go on")
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == fu.answer_for(user("go on")) and final.stop_reason == "end_turn"
    rescue = second_upstream.requests.chat()[0].body
    assert rescue["messages"][0] == {"role": "system", "content": "Be brief."}  # chat, not the Anthropic body
    assert rescue["model"] == "fake-model" and "system" not in rescue
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.fallback) == ("messages", 200, True)


def test_stream_fails_over_before_the_first_event(fake_upstream, second_upstream, make_routing, api_key, proxy):
    make_routing(
        upstream(fake_upstream, tier="free", name="a", **FAST),
        upstream(second_upstream, tier="premium", name="b", **FAST),
    )
    _, key = api_key()
    fake_upstream.default = fu.status(503)
    with client(proxy, key).messages.stream(model=MODEL, max_tokens=50, messages=user()) as stream:
        final = stream.get_final_message()
        assert stream.response.headers["x-rainymodel-route"] == "premium"
    assert final.content[0].text == fu.answer_for(user())


def test_first_text_delta_arrives_before_the_upstream_finishes(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, idle_timeout_s=5, request_timeout_s=30))
    _, key = api_key()
    fake_upstream.script(fu.ok(tokens=10, token_delay=0.3))  # the upstream takes about 2.7 s in all
    proxy.reload()
    started = time.monotonic()
    first_delta = None
    with httpx.stream(
        "POST",
        proxy.url + "/v1/messages",
        headers={"x-api-key": key},
        timeout=30,
        json={"model": MODEL, "max_tokens": 10, "stream": True, "messages": user()},
    ) as response:
        for line in response.iter_lines():
            if first_delta is None and '"text_delta"' in line:
                first_delta = time.monotonic() - started
    total = time.monotonic() - started
    assert first_delta is not None and total > 2.5
    assert first_delta < total - 1.5  # not buffered: the first delta came well before the end


# --- errors in Anthropic's shape ------------------------------------------------------------------------------------


def test_rate_limit_is_a_rate_limit_error_with_retry_after(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=1)
    sdk = client(proxy, key)
    sdk.messages.create(model=MODEL, max_tokens=5, messages=user())
    with pytest.raises(anthropic.RateLimitError) as refused:
        sdk.messages.create(model=MODEL, max_tokens=5, messages=user())
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert refused.value.body["type"] == "error" and refused.value.body["error"]["type"] == "rate_limit_error"
    assert [(r.endpoint, r.status) for r in proxy.logs(2)] == [("messages", 200), ("messages", 429)]


def test_quota_and_tpm_refuse_it_like_chat(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(quotas=[("month", "max_requests", 1)])
    sdk = client(proxy, key)
    sdk.messages.create(model=MODEL, max_tokens=5, messages=user())
    with pytest.raises(anthropic.RateLimitError) as refused:
        sdk.messages.create(model=MODEL, max_tokens=5, messages=user())
    assert "quota" in refused.value.body["error"]["message"]
    assert refused.value.response.headers["x-should-retry"] == "false"
    _, small = api_key(tpm_limit=50)
    response = post(proxy, small, {"model": MODEL, "max_tokens": 10_000, "messages": user()})
    assert_anthropic_error(response, 429, "rate_limit_error")
    assert [(r.endpoint, r.status) for r in proxy.logs(3)] == [("messages", 200), ("messages", 429), ("messages", 429)]


def test_an_alias_whose_routes_do_not_serve_messages_is_a_400(fake_upstream, make_routing, api_key, proxy):
    from routing.config_version import bump_version

    routing = make_routing(upstream(fake_upstream))
    for route in routing.routes:
        route.endpoints = ["chat"]
        route.save()
    bump_version()
    _, key = api_key()
    error = assert_anthropic_error(
        post(proxy, key, {"model": MODEL, "max_tokens": 5, "messages": user()}), 400, "invalid_request_error"
    )
    assert "does not serve messages" in error["error"]["message"]
    assert fake_upstream.requests.chat() == []


def test_bad_key_is_an_authentication_error_at_the_edge(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    api_key()
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client(proxy, "rm-not-a-real-key").messages.create(model=MODEL, max_tokens=5, messages=user())
    assert refused.value.body["error"]["type"] == "authentication_error"
    assert_anthropic_error(post(proxy, None, {"model": MODEL}), 401, "authentication_error")
    assert [(r.endpoint, r.status) for r in proxy.logs(2)] == [("messages", 401)] * 2
    assert fake_upstream.requests.chat() == []


def test_any_key_header_and_any_anthropic_version_work(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    body = {"model": MODEL, "max_tokens": 5, "messages": user()}
    assert post(proxy, key, body, headers={"anthropic-version": "1999-01-01"}).status_code == 200
    assert post(proxy, None, body, headers={"authorization": f"Bearer {key}"}).status_code == 200
    # x-api-key works on the OpenAI endpoints too (one key door for /v1/)
    r = httpx.post(
        proxy.url + "/v1/chat/completions",
        headers={"x-api-key": key},
        timeout=30,
        json={"model": MODEL, "messages": user()},
    )
    assert r.status_code == 200


def test_upstream_errors_in_anthropic_shape(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, breaker_failures=100, **FAST))
    _, key = api_key()
    body = {"model": MODEL, "max_tokens": 5, "messages": user()}
    fake_upstream.default = fu.status(500)
    assert_anthropic_error(post(proxy, key, body), 502, "api_error")
    response = post(proxy, key, dict(body, stream=True))  # before any event: a plain error response
    assert_anthropic_error(response, 502, "api_error")
    fake_upstream.default = fu.context_length_exceeded()
    error = assert_anthropic_error(post(proxy, key, body), 400, "invalid_request_error")
    assert "maximum context length" in error["error"]["message"]
    fake_upstream.default = fu.hang()
    response = post(proxy, key, body)
    assert_anthropic_error(
        response, response.status_code, {502: "api_error", 504: "timeout_error"}[response.status_code]
    )
    assert [r.endpoint for r in proxy.logs(4)] == ["messages"] * 4


def test_open_breaker_is_overloaded_with_retry_after(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, breaker_failures=1, **FAST))
    _, key = api_key()
    body = {"model": MODEL, "max_tokens": 5, "messages": user()}
    fake_upstream.default = fu.status(503)
    assert_anthropic_error(post(proxy, key, body), 502, "api_error")
    with pytest.raises(anthropic.InternalServerError) as refused:  # the SDK's class for 503 (overloaded_error)
        client(proxy, key).messages.create(**body)
    assert refused.value.status_code == 503 and refused.value.body["error"]["type"] == "overloaded_error"
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert [(r.endpoint, r.status) for r in proxy.logs(2)] == [("messages", 502), ("messages", 503)]


def test_unknown_model_is_not_found(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream), catch_all=False)
    _, key = api_key()
    with pytest.raises(anthropic.NotFoundError):
        client(proxy, key).messages.create(model="rainymodel/nope", max_tokens=5, messages=user())
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("messages", 404)


def test_get_is_405_in_anthropic_shape(fake_upstream, make_routing, api_key, proxy):
    _, key = api_key()
    response = httpx.get(proxy.url + "/v1/messages", headers={"x-api-key": key})
    assert_anthropic_error(response, 405, "invalid_request_error")


BAD_BODIES = [
    ("not json", b"{nope"),
    ("array body", b"[1, 2]"),
    ("string body", b'"hi"'),
    ("empty body", b""),
    ("no model", {"max_tokens": 5, "messages": user()}),
    ("model not a string", {"model": 5, "max_tokens": 5, "messages": user()}),
    ("empty model", {"model": "", "max_tokens": 5, "messages": user()}),
    ("no max_tokens", {"model": MODEL, "messages": user()}),
    ("max_tokens zero", {"model": MODEL, "max_tokens": 0, "messages": user()}),
    ("max_tokens string", {"model": MODEL, "max_tokens": "5", "messages": user()}),
    ("max_tokens bool", {"model": MODEL, "max_tokens": True, "messages": user()}),
    ("no messages", {"model": MODEL, "max_tokens": 5}),
    ("messages empty", {"model": MODEL, "max_tokens": 5, "messages": []}),
    ("messages not a list", {"model": MODEL, "max_tokens": 5, "messages": "hi"}),
    ("message not an object", {"model": MODEL, "max_tokens": 5, "messages": ["hi"]}),
    ("system role in messages", {"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
    ("no content", {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user"}]}),
    ("content a number", {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}),
    (
        "unknown block type",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
    ),
    (
        "text block without text",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    ),
    ("temperature too high", {"model": MODEL, "max_tokens": 5, "temperature": 3, "messages": user()}),
    ("top_p a string", {"model": MODEL, "max_tokens": 5, "top_p": "high", "messages": user()}),
    ("top_k negative", {"model": MODEL, "max_tokens": 5, "top_k": -1, "messages": user()}),
    ("stream not a bool", {"model": MODEL, "max_tokens": 5, "stream": "yes", "messages": user()}),
    ("stop_sequences a string", {"model": MODEL, "max_tokens": 5, "stop_sequences": "END", "messages": user()}),
    ("system a number", {"model": MODEL, "max_tokens": 5, "system": 7, "messages": user()}),
    ("metadata not an object", {"model": MODEL, "max_tokens": 5, "metadata": "x", "messages": user()}),
    ("tools not a list", {"model": MODEL, "max_tokens": 5, "tools": {"name": "x"}, "messages": user()}),
    ("tool without name", {"model": MODEL, "max_tokens": 5, "tools": [{"input_schema": {}}], "messages": user()}),
    (
        "tool_choice unknown",
        {"model": MODEL, "max_tokens": 5, "tools": [WEATHER], "tool_choice": {"type": "sometimes"}, "messages": user()},
    ),
    (
        "tool_use without tool_result",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "assistant", "content": "again"},
            ],
        },
    ),
    (
        "tool_result in assistant message",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "y"}]}
            ],
        },
    ),
    (
        "image with a bad media type",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}
                    ],
                }
            ],
        },
    ),
]


@pytest.mark.parametrize("name,body", BAD_BODIES, ids=[name for name, _ in BAD_BODIES])
def test_bad_input_is_a_4xx_in_anthropic_shape_with_one_row(name, body, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    response = post(proxy, key, body)
    assert 400 <= response.status_code < 500
    assert_anthropic_error(response, response.status_code, "invalid_request_error")
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("messages", response.status_code)
    assert fake_upstream.requests.chat() == []


def test_too_large_body_is_request_too_large(fake_upstream, make_routing, api_key, proxy, settings):
    settings.RAINYMODEL_MAX_BODY_BYTES = 100_000
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    big = {"model": MODEL, "max_tokens": 5, "messages": user("x" * 200_000)}
    response = post(proxy, key, big)
    assert_anthropic_error(response, 413, "request_too_large")
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("messages", 413)


# --- count_tokens ---------------------------------------------------------------------------------------------------


def test_count_tokens_with_the_sdk_is_an_estimate_without_upstream_call_or_row(
    fake_upstream, make_routing, api_key, proxy
):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    counted = client(proxy, key).messages.count_tokens(
        model=MODEL, system="You are terse.", tools=[WEATHER], messages=user("how many tokens is this?")
    )
    assert counted.input_tokens > 10
    assert fake_upstream.requests.chat() == []
    assert proxy.logs(0, timeout=0.3) == []


def test_count_tokens_errors_are_in_anthropic_shape(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream), catch_all=False)
    _, key = api_key()
    path = "/v1/messages/count_tokens"
    assert_anthropic_error(
        post(proxy, None, {"model": MODEL, "messages": user()}, path=path), 401, "authentication_error"
    )
    assert_anthropic_error(post(proxy, key, {"model": MODEL}, path=path), 400, "invalid_request_error")
    assert_anthropic_error(post(proxy, key, b"{x", path=path), 400, "invalid_request_error")
    assert_anthropic_error(
        post(proxy, key, {"model": "rainymodel/nope", "messages": user()}, path=path), 404, "not_found_error"
    )
