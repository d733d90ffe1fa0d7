"""POST /v1/embeddings (issue 12): the openai SDK as client against the fake upstream on loopback, real sockets,
the log rows read back from the database."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest

from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 1}


def post_embeddings(proxy, key, body):
    proxy.reload()
    return httpx.post(proxy.url + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_float_embedding_with_routing_headers_and_one_log_row(fake_upstream, make_routing, api_key, proxy):
    make_routing(
        upstream(
            fake_upstream,
            name="ollama-a",
            kind="ollama",
            upstream_model="nomic-embed-text",
            input_price_per_mtok=2.0,
            output_price_per_mtok=50.0,
        )
    )
    _, key = api_key()
    raw = proxy.openai(key).embeddings.with_raw_response.create(
        model="rainymodel/auto", input="hello there world", encoding_format="float", user="u-1"
    )
    result = raw.parse()
    assert result.data[0].embedding == fu.embedding_for("hello there world")
    assert result.usage.prompt_tokens == 3
    h = raw.headers
    assert (h["x-rainymodel-route"], h["x-rainymodel-upstream"], h["x-rainymodel-provider"]) == (
        "free",
        "ollama",
        "ollama-a",
    )
    assert h["x-rainymodel-model"] == "nomic-embed-text" and h["x-rainymodel-alias"] == "rainymodel/auto"
    assert h["x-rainymodel-attempts"] == "1" and h["x-rainymodel-tried"] == "ollama-a/nomic-embed-text"
    sent = fake_upstream.requests[0]
    assert sent.path == "/v1/embeddings"
    assert sent.body == {
        "model": "nomic-embed-text",
        "input": "hello there world",
        "encoding_format": "float",
        "user": "u-1",
    }
    (row,) = proxy.logs(expected=1)
    assert (row.endpoint, row.status, row.stream, row.error_code) == ("embeddings", 200, False, "")
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (3, 0, False)
    assert float(row.cost_usd) == pytest.approx(3 * 2.0 / 1_000_000)
    assert row.id == h["x-request-id"]


def test_base64_is_decoded_by_the_sdk_and_dimensions_pass_through(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    result = client.embeddings.create(model="rainymodel/auto", input="hello", encoding_format="base64", dimensions=8)
    # Asked for explicitly, base64 reaches the caller as sent: little-endian float32.
    raw = base64.b64decode(result.data[0].embedding)
    assert list(struct.unpack("<8f", raw)) == fu.embedding_for("hello", 8)
    assert fake_upstream.requests[0].body["encoding_format"] == "base64"
    assert fake_upstream.requests[0].body["dimensions"] == 8
    # The SDK asks for base64 by itself when no format is given, and decodes it.
    default = client.embeddings.create(model="rainymodel/auto", input="hello")
    assert default.data[0].embedding == fu.embedding_for("hello")


def test_list_and_token_inputs(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client = proxy.openai(key)
    texts = client.embeddings.create(model="rainymodel/auto", input=["one", "two words"], encoding_format="float")
    assert [d.embedding for d in texts.data] == [fu.embedding_for("one"), fu.embedding_for("two words")]
    assert [d.index for d in texts.data] == [0, 1]
    tokens = client.embeddings.create(model="rainymodel/auto", input=[1, 2, 3], encoding_format="float")
    assert tokens.data[0].embedding == fu.embedding_for([1, 2, 3])
    lists = client.embeddings.create(model="rainymodel/auto", input=[[1, 2], [3]], encoding_format="float")
    assert [d.embedding for d in lists.data] == [fu.embedding_for([1, 2]), fu.embedding_for([3])]
    assert fake_upstream.requests[2].body["input"] == [[1, 2], [3]]
    assert [r.endpoint for r in proxy.logs(expected=3)] == ["embeddings"] * 3


@pytest.mark.parametrize(
    "failure", [fu.status(503), fu.hang(), fu.invalid_completion()], ids=["503", "timeout", "invalid_response"]
)
def test_failover_to_the_next_tier(failure, fake_upstream, second_upstream, make_routing, api_key, proxy):
    fake_upstream.script(failure)
    make_routing(
        upstream(fake_upstream, tier="free", name="hf", kind="hf", max_retries=0, **FAST),
        upstream(second_upstream, tier="premium", name="openrouter", kind="openrouter"),
    )
    _, key = api_key()
    raw = proxy.openai(key).embeddings.with_raw_response.create(
        model="rainymodel/auto", input="hi", encoding_format="float"
    )
    assert raw.parse().data[0].embedding == fu.embedding_for("hi")
    h = raw.headers
    assert (h["x-rainymodel-route"], h["x-rainymodel-provider"], h["x-rainymodel-attempts"]) == (
        "premium",
        "openrouter",
        "2",
    )
    assert h["x-rainymodel-tried"] == "hf/fake-model,openrouter/fake-model"
    expected_reason = {"503": "http_503", "timeout": "timeout"}.get(
        "503" if failure.status == 503 else "timeout" if failure.hang else "", "invalid_response"
    )
    assert h["x-rainymodel-fallback-reason"] == expected_reason
    (row,) = proxy.logs(expected=1)
    assert row.endpoint == "embeddings" and row.fallback and row.status == 200
    assert [a["outcome"] for a in row.attempts] == [expected_reason, "ok"]


def test_usage_is_estimated_when_the_upstream_reports_none(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.script(fu.no_usage())
    make_routing(upstream(fake_upstream, input_price_per_mtok=1.0))
    _, key = api_key()
    proxy.openai(key).embeddings.create(model="rainymodel/auto", input="x" * 400, encoding_format="float")
    (row,) = proxy.logs(expected=1)
    assert row.usage_estimated and row.prompt_tokens > 0 and row.completion_tokens == 0
    assert float(row.cost_usd) == pytest.approx(row.prompt_tokens / 1_000_000)


def test_all_routes_failing_is_a_502_in_openai_shape(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.status(500)
    make_routing(upstream(fake_upstream, max_retries=0))
    _, key = api_key()
    with pytest.raises(openai.InternalServerError) as failed:
        proxy.openai(key).embeddings.create(model="rainymodel/auto", input="hi")
    assert failed.value.status_code == 502 and failed.value.code == "all_upstreams_failed"
    (row,) = proxy.logs(expected=1)
    assert (row.endpoint, row.status) == ("embeddings", 502)


def test_rpm_limit_refuses_embeddings_like_chat(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=1)
    client = proxy.openai(key)
    client.embeddings.create(model="rainymodel/auto", input="hi")
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model="rainymodel/auto", input="hi")
    assert refused.value.code == "rate_limit_exceeded" and refused.value.type == "requests"
    h = refused.value.response.headers
    assert h["x-ratelimit-limit-requests"] == "1" and h["x-ratelimit-remaining-requests"] == "0"
    assert int(h["retry-after"]) >= 1
    rows = proxy.logs(expected=2)
    assert [(r.endpoint, r.status) for r in rows] == [("embeddings", 200), ("embeddings", 429)]
    assert len(fake_upstream.requests) == 1


def test_tpm_limit_refuses_an_embedding_larger_than_the_limit(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(tpm_limit=100)
    with pytest.raises(openai.RateLimitError) as refused:
        proxy.openai(key).embeddings.create(model="rainymodel/auto", input="word " * 400)
    assert refused.value.code == "rate_limit_exceeded" and refused.value.type == "tokens"
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "100"
    assert refused.value.response.headers["x-should-retry"] == "false"  # retrying cannot help
    assert not fake_upstream.requests
    (row,) = proxy.logs(expected=1)
    assert (row.endpoint, row.status) == ("embeddings", 429)


def test_token_quota_counts_embedding_tokens(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key(quotas=[("day", "max_tokens", 250)])
    client = proxy.openai(key)
    text = " ".join(["word"] * 100)  # the fake reports 100 prompt tokens
    client.embeddings.create(model="rainymodel/auto", input=text)
    client.embeddings.create(model="rainymodel/auto", input=text)
    client.embeddings.create(model="rainymodel/auto", input=text)  # 300 >= 250: the quota is used up now
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model="rainymodel/auto", input=text)
    assert refused.value.code == "quota_exceeded" and refused.value.type == "insufficient_quota"
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    rows = proxy.logs(expected=4)
    assert [r.status for r in rows] == [200, 200, 200, 429]
    assert sum(r.prompt_tokens for r in rows) == 300


def test_an_alias_without_embedding_routes_is_a_400_unsupported_endpoint(fake_upstream, make_routing, api_key, proxy):
    routing = make_routing(upstream(fake_upstream), alias="rainymodel/chat-only")
    for route in routing.routes:
        route.endpoints = ["chat"]
        route.save()
    from routing.config_version import bump_version

    bump_version()
    _, key = api_key()
    with pytest.raises(openai.BadRequestError) as refused:
        proxy.openai(key).embeddings.create(model="rainymodel/chat-only", input="hi")
    assert refused.value.code == "unsupported_endpoint" and refused.value.param == "model"
    assert "rainymodel/chat-only" in refused.value.message
    assert not fake_upstream.requests
    (row,) = proxy.logs(expected=1)
    assert (row.endpoint, row.status, row.error_code) == ("embeddings", 400, "unsupported_endpoint")


BAD_BODIES = [
    # (body, code, param)
    ({"input": "hi"}, "missing_required_parameter", "model"),
    ({"model": "rainymodel/auto"}, "missing_required_parameter", "input"),
    ({"model": "rainymodel/auto", "input": None}, "missing_required_parameter", "input"),
    ({"model": 5, "input": "hi"}, "invalid_type", "model"),
    ({"model": "rainymodel/auto", "input": ""}, "invalid_value", "input"),
    ({"model": "rainymodel/auto", "input": []}, "invalid_value", "input"),
    ({"model": "rainymodel/auto", "input": 42}, "invalid_type", "input"),
    ({"model": "rainymodel/auto", "input": {"text": "hi"}}, "invalid_type", "input"),
    ({"model": "rainymodel/auto", "input": ["a", ""]}, "invalid_value", "input[1]"),
    ({"model": "rainymodel/auto", "input": ["a", 1]}, "invalid_type", "input[1]"),
    ({"model": "rainymodel/auto", "input": [[1], 2]}, "invalid_type", "input[1]"),
    ({"model": "rainymodel/auto", "input": [1, [2]]}, "invalid_type", "input[1]"),
    ({"model": "rainymodel/auto", "input": [[1], []]}, "invalid_value", "input[1]"),
    ({"model": "rainymodel/auto", "input": [None]}, "invalid_type", "input[0]"),
    ({"model": "rainymodel/auto", "input": [True, 1]}, "invalid_type", "input[0]"),
    ({"model": "rainymodel/auto", "input": [1, -1]}, "integer_below_min_value", "input[1]"),
    ({"model": "rainymodel/auto", "input": [[1, 2**31]]}, "integer_above_max_value", "input[0][1]"),
    ({"model": "rainymodel/auto", "input": [1, 2.5]}, "invalid_type", "input[1]"),
    ({"model": "rainymodel/auto", "input": ["x"] * 2049}, "array_above_max_length", "input"),
    ({"model": "rainymodel/auto", "input": "hi", "encoding_format": "int8"}, "invalid_value", "encoding_format"),
    ({"model": "rainymodel/auto", "input": "hi", "encoding_format": 1}, "invalid_type", "encoding_format"),
    ({"model": "rainymodel/auto", "input": "hi", "dimensions": 0}, "integer_below_min_value", "dimensions"),
    ({"model": "rainymodel/auto", "input": "hi", "dimensions": -3}, "integer_below_min_value", "dimensions"),
    ({"model": "rainymodel/auto", "input": "hi", "dimensions": 8.5}, "invalid_type", "dimensions"),
    ({"model": "rainymodel/auto", "input": "hi", "dimensions": "8"}, "invalid_type", "dimensions"),
    ({"model": "rainymodel/auto", "input": "hi", "dimensions": True}, "invalid_type", "dimensions"),
    ({"model": "rainymodel/auto", "input": "hi", "stream": True}, "invalid_value", "stream"),
    ({"model": "rainymodel/auto", "input": "hi", "stream": "yes"}, "invalid_type", "stream"),
    ({"model": "rainymodel/auto", "input": "hi", "user": 7}, "invalid_type", "user"),
    ([{"model": "rainymodel/auto", "input": "hi"}], "invalid_json", None),
    ("just a string", "invalid_json", None),
]


def test_bad_input_is_a_400_in_openai_shape_with_one_log_row_each(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    for body, code, param in BAD_BODIES:
        response = post_embeddings(proxy, key, body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error"), body
        assert error["message"]
    not_json = httpx.post(proxy.url + "/v1/embeddings", content=b"{nope", headers={"Authorization": f"Bearer {key}"})
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    n = len(BAD_BODIES) + 1
    rows = proxy.logs(expected=n)
    assert len(rows) == n
    assert all(r.endpoint == "embeddings" and r.status == 400 for r in rows)
    assert [r.error_code for r in rows] == [code for _, code, _ in BAD_BODIES] + ["invalid_json"]
    assert not fake_upstream.requests  # none of them cost an upstream attempt


def test_the_sdk_sees_a_bad_request_error(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    with pytest.raises(openai.BadRequestError) as refused:
        proxy.openai(key).embeddings.create(model="rainymodel/auto", input=[], encoding_format="float")
    assert refused.value.code == "invalid_value" and refused.value.param == "input"


def test_get_on_embeddings_is_a_405_and_no_key_a_401(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    got = httpx.get(proxy.url + "/v1/embeddings", headers={"Authorization": f"Bearer {key}"})
    assert got.status_code == 405 and got.json()["error"]["code"] == "method_not_allowed"
    anonymous = httpx.post(proxy.url + "/v1/embeddings", json={"model": "rainymodel/auto", "input": "hi"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    rows = proxy.logs(expected=1)
    assert [(r.endpoint, r.status) for r in rows] == [("embeddings", 401)]
