"""POST /v1/completions (legacy text completions, `suffix` for fill-in-the-middle) end to end: the official openai
SDK against the in-process RainyModel and fake upstreams on loopback, real sockets (issue 12, docs/api.md)."""

import time

import httpx
import openai
import orjson
import pytest

from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 5}
PROMPT = "def add(a, b):\n    "
SUFFIX = "\n    return result\n"
M = "rainymodel/auto"


def post(proxy, key, body, **kwargs):
    proxy.reload()
    return httpx.post(
        proxy.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs
    )


def stream(proxy, key, **extra):
    """A streamed completion over raw HTTP: (response, list of data payloads)."""
    proxy.reload()
    body = {"model": "rainymodel/auto", "prompt": PROMPT, "suffix": SUFFIX, "stream": True, **extra}
    with httpx.stream(
        "POST", proxy.url + "/v1/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=30
    ) as response:
        raw = response.read()
    return response, [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


def text_of(events):
    out = ""
    for e in events:
        if e != b"[DONE]":
            for choice in orjson.loads(e).get("choices") or ():
                out += choice.get("text") or ""
    return out


# --- answers ------------------------------------------------------------------------------------------------------


def test_sdk_fim_completion_with_suffix(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, input_price_per_mtok=1, output_price_per_mtok=2))
    _, key = api_key()
    raw = proxy.openai(key).completions.with_raw_response.create(
        model="rainymodel/auto", prompt=PROMPT, suffix=SUFFIX, max_tokens=64, temperature=0
    )
    completion = raw.parse()
    assert completion.choices[0].text == fu.completion_answer_for(PROMPT, SUFFIX)
    assert completion.model_extra["fake_suffix_received"] is True
    sent = fake_upstream.requests.completions()[0]
    assert sent.path == "/v1/completions"
    assert (sent.body["model"], sent.body["prompt"], sent.body["suffix"]) == ("fake-model", PROMPT, SUFFIX)
    assert sent.body["max_tokens"] == 64 and sent.body["temperature"] == 0
    assert raw.headers["x-rainymodel-route"] == "free" and raw.headers["x-rainymodel-attempts"] == "1"
    assert raw.headers["x-rainymodel-alias"] == "rainymodel/auto"
    row = proxy.logs(1)[0]
    assert (row.endpoint, row.status, row.usage_estimated) == ("completions", 200, False)
    assert row.prompt_tokens == completion.usage.prompt_tokens and row.completion_tokens == 20
    assert float(row.cost_usd) == pytest.approx((row.prompt_tokens * 1 + 20 * 2) / 1e6)


def test_list_and_token_prompts_pass_through(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    client.completions.create(model="rainymodel/auto", prompt=["one", "two"])
    client.completions.create(model="rainymodel/auto", prompt=[[1, 2, 3], [4]], extra_body={"top_k": 5})
    bodies = [r.body for r in fake_upstream.requests.completions()]
    assert bodies[0]["prompt"] == ["one", "two"]
    assert bodies[1]["prompt"] == [[1, 2, 3], [4]] and bodies[1]["top_k"] == 5  # unknown fields pass through
    assert [row.endpoint for row in proxy.logs(2)] == ["completions", "completions"]


def test_tokens_are_estimated_when_the_upstream_reports_no_usage(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.no_usage()
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    assert post(proxy, key, {"model": "rainymodel/auto", "prompt": PROMPT, "suffix": SUFFIX}).status_code == 200
    row = proxy.logs(1)[0]
    assert row.usage_estimated and row.prompt_tokens > 0 and row.completion_tokens > 0


def test_sdk_streams_a_fim_completion(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    chunks = list(
        proxy.openai(key).completions.create(
            model="rainymodel/auto", prompt=PROMPT, suffix=SUFFIX, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == fu.completion_answer_for(PROMPT, SUFFIX)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
    assert fake_upstream.requests.completions()[0].body["suffix"] == SUFFIX
    row = proxy.logs(1)[0]
    assert (row.endpoint, row.status, row.stream, row.completion_tokens) == ("completions", 200, True, 20)


def test_stream_without_include_usage_gets_no_usage_chunk_but_is_counted(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    response, events = stream(proxy, key)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == b"[DONE]"
    assert all(orjson.loads(e)["choices"] for e in events[:-1])
    assert fake_upstream.requests.completions()[0].body["stream_options"] == {"include_usage": True}
    assert proxy.logs(1)[0].completion_tokens == 20


def test_malformed_events_are_dropped_and_a_missing_done_is_added(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.script(fu.malformed_event(after=0, done=False))
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    _, events = stream(proxy, key)
    assert text_of(events) == fu.completion_answer_for(PROMPT, SUFFIX)
    assert b"{this is not json" not in events and events[-1] == b"[DONE]"
    assert events.count(b"[DONE]") == 1


def test_text_reaches_the_client_before_the_upstream_finishes(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, idle_timeout_s=5))
    _, key = api_key()
    fake_upstream.default = fu.ok(tokens=6, token_delay=0.4)  # the upstream needs >= 2 s in all
    proxy.reload()
    started = time.monotonic()
    first_text_after = None
    with httpx.stream(
        "POST",
        proxy.url + "/v1/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": M, "prompt": PROMPT, "stream": True},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if first_text_after is None and line.startswith("data: {") and '"text": ""' not in line:
                first_text_after = time.monotonic() - started
    total = time.monotonic() - started
    assert total >= 2.0 and first_text_after is not None
    assert first_text_after < total - 1.0  # relayed as it came, not buffered until the end


# --- failover -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [fu.status(503), fu.hang()], ids=["503", "timeout"])
def test_failover_to_the_next_tier(first, fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = first
    make_routing(upstream(fake_upstream, max_retries=0, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    raw = proxy.openai(key).completions.with_raw_response.create(model="rainymodel/auto", prompt=PROMPT, suffix=SUFFIX)
    assert raw.parse().choices[0].text == fu.completion_answer_for(PROMPT, SUFFIX)
    assert raw.headers["x-rainymodel-route"] == "premium" and raw.headers["x-rainymodel-attempts"] == "2"
    assert raw.headers["x-rainymodel-fallback-reason"] == ("http_503" if first.status == 503 else "timeout")
    assert raw.headers["x-rainymodel-tried"].count(",") == 1
    row = proxy.logs(1)[0]
    assert (row.endpoint, row.status, row.tier) == ("completions", 200, "premium")


def test_a_200_that_is_not_a_text_completion_moves_on(fake_upstream, second_upstream, make_routing, api_key, proxy):
    chat_shaped = b'{"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "hi"}}]}'
    fake_upstream.default = fu.invalid_completion(body=chat_shaped)
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    r = post(proxy, key, {"model": M, "prompt": PROMPT, "suffix": SUFFIX})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == fu.completion_answer_for(PROMPT, SUFFIX)
    assert r.headers["x-rainymodel-fallback-reason"] == "invalid_response"


def test_streamed_failover_before_the_first_event(fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.status(503)
    make_routing(upstream(fake_upstream, max_retries=0, **FAST), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    response, events = stream(proxy, key)
    assert text_of(events) == fu.completion_answer_for(PROMPT, SUFFIX) and events[-1] == b"[DONE]"
    assert response.headers["x-rainymodel-route"] == "premium"
    assert response.headers["x-rainymodel-fallback-reason"] == "http_503"


def test_routes_that_do_not_serve_completions_are_skipped(fake_upstream, second_upstream, make_routing, api_key, proxy):
    make_routing(
        upstream(fake_upstream, endpoints=["chat"]),
        upstream(second_upstream, tier="premium", endpoints=["completions"]),
    )
    _, key = api_key()
    r = post(proxy, key, {"model": "rainymodel/auto", "prompt": PROMPT, "suffix": SUFFIX})
    assert r.status_code == 200 and r.headers["x-rainymodel-route"] == "premium"
    assert fake_upstream.requests.completions() == [] and len(second_upstream.requests.completions()) == 1


def test_an_upstream_400_to_suffix_is_returned_to_the_client(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.reject_suffix()
    make_routing(upstream(fake_upstream), upstream(second_upstream, tier="premium"))
    _, key = api_key()
    with pytest.raises(openai.BadRequestError) as refused:
        proxy.openai(key).completions.create(model="rainymodel/auto", prompt=PROMPT, suffix=SUFFIX)
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "suffix"
    assert second_upstream.requests.completions() == []  # the chain does not move on (the outcome table)
    row = proxy.logs(1)[0]
    assert (row.endpoint, row.status, row.error_code) == ("completions", 400, "unsupported_parameter")


# --- mid-stream breaks --------------------------------------------------------------------------------------------


def test_a_cut_stream_is_restarted_on_the_next_route_and_spliced(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.cut_after(7)
    # supports_prefill is ignored for completions: the continuation is a plain restart of the same request.
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium", supports_prefill=True))
    _, key = api_key()
    _, events = stream(proxy, key, temperature=0)
    assert text_of(events) == fu.completion_answer_for(PROMPT, SUFFIX)  # nothing repeated, nothing missing
    assert events[-1] == b"[DONE]"
    restarted = second_upstream.requests.completions()[0].body
    assert (restarted["prompt"], restarted["suffix"]) == (PROMPT, SUFFIX)
    row = proxy.logs(1)[0]
    assert row.status == 200 and [a["outcome"] for a in row.attempts] == ["stream_interrupted", "restarted"]
    assert row.tier == "premium"


def test_a_restart_that_does_not_reproduce_the_delivered_text_ends_interrupted(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.cut_after(5)
    second_upstream.default = fu.ok(tokens=2)  # ends before passing the 5 delivered words
    make_routing(upstream(fake_upstream, **FAST), upstream(second_upstream, tier="premium", **FAST))
    _, key = api_key()
    _, events = stream(proxy, key)
    assert b"[DONE]" not in events
    assert text_of(events[:-1]) == fu.completion_answer_for(PROMPT, SUFFIX, 5)
    assert orjson.loads(events[-1])["error"]["code"] == "stream_interrupted"
    row = proxy.logs(1)[0]
    assert (row.endpoint, row.status, row.error_code) == ("completions", 502, "stream_interrupted")


def test_sdk_raises_on_an_interrupted_completion_stream(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.cut_after(3)
    make_routing(upstream(fake_upstream, **FAST))
    _, key = api_key()
    with pytest.raises(openai.APIError):
        for _ in proxy.openai(key).completions.create(model="rainymodel/auto", prompt=PROMPT, stream=True):
            pass
    assert proxy.logs(1)[0].error_code == "stream_interrupted"


# --- limits -------------------------------------------------------------------------------------------------------


def test_rpm_limit_refuses_completions_like_chat(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=1)
    client = proxy.openai(key)
    client.completions.create(model="rainymodel/auto", prompt=PROMPT, suffix=SUFFIX)
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model="rainymodel/auto", prompt=PROMPT, suffix=SUFFIX)
    assert refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert len(fake_upstream.requests.completions()) == 1
    assert [(r.endpoint, r.status) for r in proxy.logs(2)] == [("completions", 200), ("completions", 429)]


def test_token_quota_counts_completion_tokens(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(quotas=[("day", "max_tokens", 20)])
    client = proxy.openai(key)
    client.completions.create(model="rainymodel/auto", prompt=PROMPT, max_tokens=5)  # 20 words + the prompt
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model="rainymodel/auto", prompt=PROMPT, max_tokens=5)
    assert refused.value.code == "quota_exceeded"
    assert len(fake_upstream.requests.completions()) == 1


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,code,param",
    [
        ({"prompt": "x"}, "missing_required_parameter", "model"),
        ({"model": M}, "missing_required_parameter", "prompt"),
        ({"model": M, "prompt": None}, "missing_required_parameter", "prompt"),
        ({"model": 7, "prompt": "x"}, "invalid_type", "model"),
        ({"model": M, "prompt": 42}, "invalid_type", "prompt"),
        ({"model": M, "prompt": {"text": "x"}}, "invalid_type", "prompt"),
        ({"model": M, "prompt": []}, "empty_array", "prompt"),
        ({"model": M, "prompt": ["a", 1]}, "invalid_type", "prompt[1]"),
        ({"model": M, "prompt": [1, "a"]}, "invalid_type", "prompt[1]"),
        ({"model": M, "prompt": [1, -5]}, "integer_below_min_value", "prompt[1]"),
        ({"model": M, "prompt": [1, 10**9]}, "integer_above_max_value", "prompt[1]"),
        ({"model": M, "prompt": [[1], []]}, "empty_array", "prompt[1]"),
        ({"model": M, "prompt": [[1], 2]}, "invalid_type", "prompt[1]"),
        ({"model": M, "prompt": [1.5]}, "invalid_type", "prompt[0]"),
        ({"model": M, "prompt": ["x"] * 2049}, "array_above_max_length", "prompt"),
        ({"model": M, "prompt": "x", "suffix": 5}, "invalid_type", "suffix"),
        ({"model": M, "prompt": ["a", "b"], "suffix": "end"}, "invalid_value", "suffix"),
        ({"model": M, "prompt": "x", "max_tokens": "16"}, "invalid_type", "max_tokens"),
        ({"model": M, "prompt": "x", "max_tokens": 16.0}, "invalid_type", "max_tokens"),
        ({"model": M, "prompt": "x", "max_tokens": -1}, "integer_below_min_value", "max_tokens"),
        ({"model": M, "prompt": "x", "temperature": 3}, "decimal_above_max_value", "temperature"),
        ({"model": M, "prompt": "x", "top_p": "high"}, "invalid_type", "top_p"),
        ({"model": M, "prompt": "x", "n": 0}, "integer_below_min_value", "n"),
        ({"model": M, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "array_above_max_length", "stop"),
        ({"model": M, "prompt": "x", "echo": "yes"}, "invalid_type", "echo"),
        ({"model": M, "prompt": "x", "logprobs": 6}, "integer_above_max_value", "logprobs"),
        ({"model": M, "prompt": "x", "logprobs": True}, "invalid_type", "logprobs"),
        ({"model": M, "prompt": "x", "best_of": 1, "n": 2}, "invalid_value", "best_of"),
        ({"model": M, "prompt": "x", "best_of": 2, "stream": True}, "invalid_value", "best_of"),
        ({"model": M, "prompt": "x", "seed": "1"}, "invalid_type", "seed"),
        ({"model": M, "prompt": "x", "user": 1}, "invalid_type", "user"),
        ({"model": M, "prompt": "x", "stream": "true"}, "invalid_type", "stream"),
        ({"model": M, "prompt": "x", "stream_options": {"include_usage": True}}, "invalid_value", "stream_options"),
        (
            {"model": M, "prompt": "x", "stream": True, "stream_options": {"include_usage": 1}},
            "invalid_type",
            "stream_options.include_usage",
        ),
    ],
)
def test_bad_input_is_a_400_in_openai_shape_with_one_row(
    body, code, param, fake_upstream, make_routing, api_key, proxy
):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    r = post(proxy, key, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error" and error["message"]
    assert fake_upstream.requests.completions() == []
    rows = proxy.logs(1)
    assert [(row.endpoint, row.status, row.error_code) for row in rows] == [("completions", 400, code)]


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1]", b'"prompt"'])
def test_bodies_that_are_not_a_json_object_are_400(content, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    proxy.reload()
    r = httpx.post(
        proxy.url + "/v1/completions",
        content=content,
        timeout=10,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert [(row.endpoint, row.status) for row in proxy.logs(1)] == [("completions", 400)]


def test_suffix_on_an_alias_without_completions_routes_is_unsupported_endpoint(
    fake_upstream, make_routing, api_key, proxy
):
    make_routing(upstream(fake_upstream, endpoints=["chat"]))
    _, key = api_key()
    r = post(proxy, key, {"model": "rainymodel/auto", "prompt": PROMPT, "suffix": SUFFIX})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "unsupported_endpoint" and "rainymodel/auto" in error["message"]
    assert r.headers["x-rainymodel-alias"] == "rainymodel/auto"
    assert fake_upstream.requests.completions() == []
    assert [(row.endpoint, row.status, row.error_code) for row in proxy.logs(1)] == [
        ("completions", 400, "unsupported_endpoint")
    ]


def test_unknown_model_and_missing_key_are_logged_under_completions(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream), catch_all=False)
    _, key = api_key()
    assert post(proxy, key, {"model": "rainymodel/nope", "prompt": "x"}).status_code == 404
    assert httpx.post(proxy.url + "/v1/completions", json={"model": M, "prompt": "x"}, timeout=10).status_code == 401
    assert (
        httpx.get(proxy.url + "/v1/completions", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code
        == 405
    )
    rows = proxy.logs(2)
    assert {(row.endpoint, row.status) for row in rows} >= {("completions", 404), ("completions", 401)}
