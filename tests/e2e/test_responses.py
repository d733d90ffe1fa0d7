"""POST /v1/responses (+ GET/DELETE /v1/responses/{id}) end to end: the official openai SDK against the real ASGI
app on loopback, over the fake chat-completions upstream (issue 13)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 5}
MODEL = "rainymodel/auto"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def post(proxy, key, body, path="/v1/responses", **kwargs):
    proxy.reload()
    return httpx.post(proxy.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def sse_events(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.decode().split("\n") if line.startswith("data: ")]


def test_create_text(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    raw = client.responses.with_raw_response.create(model=MODEL, input="hello there", instructions="be brief")
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text == fu.answer_for([{"role": "user", "content": "hello there"}])
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 20
    assert raw.headers["x-rainymodel-route"]
    sent = fake_upstream.requests.chat()[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.completion_tokens) == ("responses", 200, 20)


def test_function_tool_round_trip(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    fake_upstream.script(fu.ok(tool_call=("get_weather", '{"city": "Paris"}')), fu.ok(text="It is sunny."))
    first = client.responses.create(model=MODEL, input="weather in Paris?", tools=[WEATHER_TOOL])
    [call] = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Paris"})
    second = client.responses.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'},
        ],
    )
    assert second.output_text == "It is sunny."
    messages = fake_upstream.requests.chat()[-1].body["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"sky": "clear"}'}
    assert [r.endpoint for r in proxy.logs(2)] == ["responses", "responses"]


def test_json_schema_output(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    fake_upstream.default = fu.ok(text='{"answer": 42}')
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    response = proxy.openai(key).responses.create(
        model=MODEL,
        input="the answer?",
        text={"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"answer": 42}
    sent = fake_upstream.requests.chat()[-1].body
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema


def test_previous_response_id_after_store(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    first = client.responses.create(model=MODEL, input="remember the word kiwi", store=True)
    assert first.store is True
    second = client.responses.create(model=MODEL, input="which word?", previous_response_id=first.id)
    messages = fake_upstream.requests.chat()[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "remember the word kiwi"
    assert messages[1]["content"] == first.output_text
    assert second.previous_response_id == first.id
    # not stored (no store: true): it cannot be continued
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=MODEL, input="again", previous_response_id=second.id)
    assert caught.value.body["code"] == "previous_response_not_found"
    assert [r.status for r in proxy.logs(3)] == [200, 200, 404]


def test_stored_conversation_counts_in_the_prompt_estimate(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    first = client.responses.create(model=MODEL, input="long " * 2000, store=True)
    fake_upstream.default = fu.no_usage()
    client.responses.create(model=MODEL, input="and?", previous_response_id=first.id)
    row = proxy.logs(2)[-1]
    assert row.usage_estimated
    assert row.prompt_tokens >= 10000 // 4  # the 10 000 stored characters, not just this request's few bytes


def test_get_and_delete_are_scoped_to_the_key(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    _, other = api_key()
    client = proxy.openai(key)
    created = client.responses.create(model=MODEL, input="hi", store=True)
    assert client.responses.retrieve(created.id).output_text == created.output_text
    with pytest.raises(openai.NotFoundError):
        proxy.openai(other).responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        proxy.openai(other).responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):  # another key cannot continue it either
        proxy.openai(other).responses.create(model=MODEL, input="x", previous_response_id=created.id)
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_expired_response_is_not_found(fake_upstream, make_routing, api_key, proxy, settings):
    from django.core.management import call_command

    from responses_store.models import StoredResponse

    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    created = client.responses.create(model=MODEL, input="hi", store=True)
    for _ in range(100):
        if StoredResponse.objects.filter(id=created.id).exists():
            break
        time.sleep(0.02)
    StoredResponse.objects.filter(id=created.id).update(expires_at="2000-01-01T00:00Z")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="x", previous_response_id=created.id)
    call_command("responses", "prune")
    assert not StoredResponse.objects.exists()


def test_store_default_setting(fake_upstream, make_routing, api_key, proxy, settings):
    from responses_store.models import StoredResponse

    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    client.responses.create(model=MODEL, input="not stored")
    settings.RAINYMODEL_RESPONSES_STORE_DEFAULT = True
    kept = client.responses.create(model=MODEL, input="stored by the setting")
    assert kept.store is True
    with client.responses.stream(model=MODEL, input="streamed, stored by the setting") as stream:
        streamed = stream.get_final_response()
    assert streamed.store is True
    assert not client.responses.create(model=MODEL, input="refused", store=False).store
    assert client.responses.retrieve(kept.id).id == kept.id
    assert client.responses.retrieve(streamed.id).id == streamed.id
    assert set(StoredResponse.objects.values_list("id", flat=True)) == {kept.id, streamed.id}


def test_stream_text(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    with proxy.openai(key).responses.stream(model=MODEL, input="tell me a story") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == fu.answer_for([{"role": "user", "content": "tell me a story"}])
    assert final.usage.output_tokens == 20
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.stream, row.completion_tokens) == ("responses", 200, True, 20)


def test_stream_tool_call(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    fake_upstream.default = fu.ok(tool_call=("get_weather", '{"city": "Oslo"}'))
    with proxy.openai(key).responses.stream(model=MODEL, input="weather?", tools=[WEATHER_TOOL]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [call] = final.output
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Oslo"})


def test_failover_to_the_next_tier(fake_upstream, second_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    fake_upstream.default = fu.status(503)
    raw = proxy.openai(key).responses.with_raw_response.create(model=MODEL, input="hi")
    assert raw.parse().status == "completed"
    assert raw.headers["x-rainymodel-route"] == "premium"
    assert int(raw.headers["x-rainymodel-attempts"]) >= 2
    assert raw.headers["x-rainymodel-fallback-reason"]
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("responses", 200)
    assert len(row.attempts) >= 2


def test_streamed_failover_before_the_first_event(fake_upstream, second_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    fake_upstream.default = fu.status(503)
    with proxy.openai(key).responses.stream(model=MODEL, input="hi") as stream:
        final = stream.get_final_response()
    assert final.status == "completed"
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.stream) == ("responses", 200, True)


def test_mid_stream_break_is_continued(fake_upstream, second_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium", supports_prefill=True))
    _, key = api_key()
    fake_upstream.default = fu.cut_after(5)
    second_upstream.default = fu.continue_prefill()
    response = post(proxy, key, {"model": MODEL, "input": "tell me a story", "stream": True})
    events = sse_events(response.content)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == fu.answer_for([{"role": "user", "content": "tell me a story"}])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    # the continuation was sent as chat (the delivered text as an assistant prefill)
    assert second_upstream.requests.chat()[-1].body["messages"][-1]["role"] == "assistant"
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("responses", 200)


def test_mid_stream_break_without_rescue_fails(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, **FAST))
    _, key = api_key()
    fake_upstream.default = fu.cut_after(5)
    response = post(proxy, key, {"model": MODEL, "input": "tell me a story", "stream": True})
    assert response.status_code == 200 and response.headers["x-rainymodel-route"]
    kinds = [e["type"] for e in sse_events(response.content)]
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.failed"
    assert "response.completed" not in kinds and "response.output_text.done" not in kinds
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.error_code) == ("responses", 502, "stream_interrupted")


def test_first_delta_reaches_the_client_before_the_upstream_finishes(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, idle_timeout_s=5))
    _, key = api_key()
    post(proxy, key, {"model": MODEL, "input": "warm up"})
    fake_upstream.default = fu.ok(tokens=6, token_delay=0.4)  # the upstream needs >= 2 s in all
    started = time.monotonic()
    first_delta_after = None
    with httpx.stream(
        "POST",
        proxy.url + "/v1/responses",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "input": "tell me a story", "stream": True},
        timeout=30,
    ) as response:
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if first_delta_after is None and line == "event: response.output_text.delta":
                first_delta_after = time.monotonic() - started
    total = time.monotonic() - started
    assert first_delta_after is not None and first_delta_after < 0.6
    assert total >= 2.0
    assert "event: response.completed" in lines


def test_limits_refuse_it_like_chat(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=1)
    assert post(proxy, key, {"model": MODEL, "input": "one"}).status_code == 200
    refused = post(proxy, key, {"model": MODEL, "input": "two"})
    assert refused.status_code == 429
    assert refused.json()["error"]["type"]
    assert [(r.endpoint, r.status) for r in proxy.logs(2)] == [("responses", 200), ("responses", 429)]


BAD_INPUTS = [
    ({"input": "hi"}, "model"),
    ({"model": 5, "input": "hi"}, "model"),
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": ""}, "input"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": 7}, "input"),
    ({"model": MODEL, "input": [{"type": "bogus"}]}, None),
    ({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}, None),
    ({"model": MODEL, "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}, None),
    ({"model": MODEL, "input": "hi", "tools": [{"type": "web_search"}]}, None),
    ({"model": MODEL, "input": "hi", "tools": [{"type": "file_search"}]}, None),
    ({"model": MODEL, "input": "hi", "tools": "get_weather"}, None),
    ({"model": MODEL, "input": "hi", "tool_choice": "sometimes"}, None),
    ({"model": MODEL, "input": "hi", "temperature": 3}, "temperature"),
    ({"model": MODEL, "input": "hi", "top_p": "high"}, "top_p"),
    ({"model": MODEL, "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": MODEL, "input": "hi", "text": {"format": {"type": "yaml"}}}, None),
    ({"model": MODEL, "input": "hi", "store": "yes"}, "store"),
    ({"model": MODEL, "input": "hi", "stream": "yes"}, "stream"),
    ({"model": MODEL, "input": "hi", "background": True}, "background"),
    ({"model": MODEL, "input": "hi", "metadata": {"k": 1}}, None),
    ({"model": MODEL, "input": "hi", "previous_response_id": 12}, "previous_response_id"),
    ({"model": MODEL, "input": "hi", "reasoning": {"effort": "extreme"}}, None),
    ({"model": MODEL, "input": "hi", "truncation": "sometimes"}, "truncation"),
    ({"model": MODEL, "input": "hi", "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
]


@pytest.mark.parametrize(("body", "param"), BAD_INPUTS)
def test_bad_input_is_a_4xx_in_the_openai_shape(fake_upstream, make_routing, api_key, proxy, body, param):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    response = post(proxy, key, body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("responses", response.status_code)
    assert fake_upstream.requests.chat() == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_unparseable_body_is_a_400(fake_upstream, make_routing, api_key, proxy, raw):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    proxy.reload()
    response = httpx.post(
        proxy.url + "/v1/responses",
        content=raw,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"]
    [row] = proxy.logs(1)
    assert row.endpoint == "responses"


def test_unknown_previous_response_is_404(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    response = post(proxy, key, {"model": MODEL, "input": "hi", "previous_response_id": "resp_nope"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "previous_response_not_found"
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("responses", 404)


def test_missing_key_is_logged_under_responses(fake_upstream, make_routing, proxy):
    make_routing(upstream(fake_upstream))
    proxy.reload()
    response = httpx.post(proxy.url + "/v1/responses", json={"model": MODEL, "input": "hi"}, timeout=30)
    assert response.status_code == 401 and response.json()["error"]["code"]
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status) == ("responses", 401)


def test_streamed_response_is_stored_and_continued(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    with client.responses.stream(model=MODEL, input="remember kiwi", store=True) as stream:
        first = stream.get_final_response()
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.create(model=MODEL, input="which word?", previous_response_id=first.id)
    messages = fake_upstream.requests.chat()[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == first.output_text


def test_a_body_over_the_limit_is_413_logged_under_responses(fake_upstream, make_routing, api_key, proxy, settings):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    settings.RAINYMODEL_MAX_BODY_BYTES = 2000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    response = post(proxy, key, {"model": MODEL, "input": "x" * 5000})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    [row] = proxy.logs(1)
    assert (row.endpoint, row.status, row.error_code) == ("responses", 413, "request_too_large")


def test_it_runs_on_the_routes_serving_chat(fake_upstream, second_upstream, make_routing, api_key, proxy):
    from routing.models import Route

    make_routing(upstream(fake_upstream), upstream(second_upstream, tier="premium"))
    Route.objects.filter(provider__base_url=fake_upstream.base_url).update(endpoints=["embeddings"])
    Route.objects.filter(provider__base_url=second_upstream.base_url).update(endpoints=["chat"])
    _, key = api_key()
    raw = proxy.openai(key).responses.with_raw_response.create(model=MODEL, input="hi")
    assert raw.parse().status == "completed" and raw.headers["x-rainymodel-route"] == "premium"
    assert fake_upstream.requests.chat() == []
    Route.objects.update(endpoints=["embeddings"])
    refused = post(proxy, key, {"model": MODEL, "input": "hi"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_endpoint"
    assert [(r.endpoint, r.status) for r in proxy.logs(2)] == [("responses", 200), ("responses", 400)]
