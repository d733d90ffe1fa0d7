"""Bad input gets its 4xx and an OpenAI-shaped error, never a 500 or an HTML page; each call is still logged."""

import httpx
import pytest

from tests.e2e.conftest import chat
from tests.fakes.routing_config import upstream


@pytest.fixture
def key(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, full_key = api_key()
    proxy.reload()
    return full_key


def post_raw(proxy, key, content: bytes, content_type="application/json"):
    return httpx.post(
        proxy.url + "/v1/chat/completions",
        content=content,
        timeout=10,
        headers={"Authorization": f"Bearer {key}", "content-type": content_type},
    )


@pytest.mark.parametrize(
    "body,code,param",
    [
        (b"{not json", "invalid_json", None),
        (b"", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b'"text"', "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "missing_required_parameter", "model"),
        (b'{"model": "rainymodel/auto"}', "missing_required_parameter", "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "model"),
        (b'{"model": "rainymodel/auto", "messages": []}', "invalid_type", "messages"),
        (b'{"model": "rainymodel/auto", "messages": "hi"}', "invalid_type", "messages"),
        (b'{"model": "rainymodel/auto", "messages": ["hi"]}', "invalid_type", "messages[0]"),
        (
            b'{"model": "rainymodel/auto", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "invalid_type",
            "stream",
        ),
        (
            b'{"model": "rainymodel/auto", "messages": [{"role": "user", "content": "x"}], "stream_options": 3}',
            "invalid_type",
            "stream_options",
        ),
    ],
)
def test_malformed_bodies_are_400_with_a_code(body, code, param, key, proxy):
    r = post_raw(proxy, key, body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error" and error["message"]


def test_a_body_over_the_limit_is_413(key, proxy, settings):
    settings.RAINYMODEL_MAX_BODY_BYTES = 2000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    r = proxy.post(key, chat(content="x" * 5000))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert [(row.status, row.error_code) for row in proxy.logs(1)] == [(413, "request_too_large")]


def test_unknown_policy_lists_the_valid_ones(key, proxy):
    r = proxy.post(key, chat(), headers={"X-RainyModel-Policy": "Cheapest"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "unknown_policy" and "auto" in error["message"] and "premium" in error["message"]


def test_unknown_policy_names_the_default_keyword_apart_from_real_policies(key, proxy):
    error = proxy.post(key, chat(), headers={"X-RainyModel-Policy": "Cheapest"}).json()["error"]
    assert "Valid policies: auto, free, premium." in error["message"]
    assert "send 'default' (or no header) for the default policy" in error["message"]


def test_key_limited_to_policies_without_a_default_uses_its_first_allowed_one(
    fake_upstream, make_routing, api_key, proxy
):
    make_routing(upstream(fake_upstream, tier="premium"))
    _, limited = api_key(allowed_policies=["premium", "auto"])
    r = proxy.post(limited, chat())
    assert r.status_code == 200 and r.headers["x-rainymodel-policy"] == "premium"
    assert proxy.post(limited, chat(), headers={"X-RainyModel-Policy": "AUTO"}).headers["x-rainymodel-policy"] == "auto"


def test_missing_and_unknown_keys_are_401(key, proxy):
    for headers in (
        {},
        {"Authorization": "Bearer rm-unknown0000000000000000000000000000"},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {key}x"},
    ):
        r = httpx.post(proxy.url + "/v1/chat/completions", json=chat(), headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_unknown_paths_and_methods_under_v1_are_json(key, proxy):
    r = httpx.get(proxy.url + "/v1/nothing-here", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    assert r.headers["x-request-id"]
    r = httpx.get(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.delete(proxy.url + "/v1/models", timeout=10)
    assert r.status_code == 405 and "error" in r.json()


def test_odd_bodies_never_produce_a_500_and_are_all_logged(key, proxy):
    weird = [
        b"null",
        b"{}",
        b'{"model": null, "messages": null}',
        b'{"model": "", "messages": [{}]}',
        b'{"model": "rainymodel/auto", "messages": [{}], "stream": null}',
        b"1e999999",
        b'{"model": "\\u0000", "messages": [{"role": "user"}]}',
        b"{" * 5000 + b"}" * 5000,
    ]
    for body in weird:
        r = post_raw(proxy, key, body)
        assert 400 <= r.status_code < 500 or r.status_code == 200, (body[:40], r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/json")
    # Each of them is logged, whatever it contained (PostgreSQL refuses NUL characters in text).
    assert len(proxy.logs(len(weird))) == len(weird)


@pytest.mark.parametrize("raw_value", [b"5000.0", b'"5000"', b"1e30", b"true", b"1" + b"0" * 30])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_non_integer_max_tokens_is_invalid_type_not_a_way_around_the_tpm_estimate(
    field, raw_value, proxy, fake_upstream, make_routing, api_key
):
    # With a tpm limit of 100, an integer max_tokens of 5000 is refused before any upstream call; the same number
    # spelled as a decimal, a string or a boolean must not slip past the estimate to the upstream.
    make_routing(upstream(fake_upstream))
    _, limited = api_key(tpm_limit=100)
    proxy.reload()
    body = (
        b'{"model": "rainymodel/auto", "messages": [{"role": "user", "content": "x"}], "'
        + field.encode()
        + b'": '
        + raw_value
        + b"}"
    )
    r = post_raw(proxy, limited, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("invalid_type", field, "invalid_request_error")
    assert fake_upstream.requests.chat() == []
    assert [(row.status, row.error_code) for row in proxy.logs(1)] == [(400, "invalid_type")]


@pytest.mark.parametrize(
    "extra,code,param",
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "bot", "content": "c"},
                ]
            },
            "invalid_value",
            "messages[2].role",
        ),
        ({"temperature": 3}, "decimal_above_max_value", "temperature"),
        ({"top_p": "high"}, "invalid_type", "top_p"),
        ({"n": 0}, "integer_below_min_value", "n"),
        ({"stop": ["1", "2", "3", "4", "5"]}, "array_above_max_length", "stop"),
        ({"tools": [{"type": "function", "function": {}}]}, "missing_required_parameter", "tools[0].function.name"),
        ({"response_format": {"type": "yaml"}}, "invalid_value", "response_format.type"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "invalid_type", "stream_options.include_usage"),
    ],
)
def test_the_openai_sdk_sees_a_400_with_openais_code_and_param(extra, code, param, key, proxy, fake_upstream):
    import openai

    client = proxy.openai(key)
    request = dict({"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]}, **extra)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == 400
    assert (caught.value.code, caught.value.param) == (code, param)
    assert fake_upstream.requests.chat() == []
    assert [(row.status, row.error_code) for row in proxy.logs(1)] == [(400, code)]


def test_unknown_fields_and_valid_optional_ones_still_reach_the_upstream(key, proxy, fake_upstream):
    client = proxy.openai(key)
    answer = client.chat.completions.create(
        model="rainymodel/auto",
        messages=[{"role": "developer", "content": "brief"}, {"role": "user", "content": "hi"}],
        max_tokens=50,
        temperature=0.2,
        stop=["\n"],
        seed=7,
        extra_body={"future_field": {"x": [1]}},
    )
    assert answer.choices[0].message.content
    sent = fake_upstream.requests.chat()[-1].body
    assert sent["future_field"] == {"x": [1]} and sent["max_tokens"] == 50 and sent["stop"] == ["\n"]
