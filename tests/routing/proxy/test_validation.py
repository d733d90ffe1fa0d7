"""The chat-completions body checks (routing/proxy/validation.py), as pure functions: OpenAI's codes and params."""

import pytest

from routing.proxy.validation import InvalidRequest, client_ip, validate_chat_completion

USER = {"role": "user", "content": "hi"}


def body(**fields):
    return {"model": "rainymodel/auto", "messages": [USER], **fields}


def rejection(payload) -> tuple[str, str | None]:
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_completion(payload)
    assert caught.value.status == 400 and caught.value.type == "invalid_request_error"
    return caught.value.code, caught.value.param


@pytest.mark.parametrize("value", [5000.0, "5000", 1e30, True, [5], {"n": 5}])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_max_tokens_that_is_not_an_integer_is_invalid_type(field, value):
    assert rejection(body(**{field: value})) == ("invalid_type", field)


def test_invalid_type_message_names_the_field_and_what_was_sent():
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_completion(body(max_tokens=5000.0))
    assert caught.value.message == (
        "Invalid type for 'max_tokens': expected an integer, but got a decimal number instead."
    )


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n"])
def test_counts_below_one_are_integer_below_min_value(field):
    assert rejection(body(**{field: 0})) == ("integer_below_min_value", field)
    assert rejection(body(**{field: -678})) == ("integer_below_min_value", field)


@pytest.mark.parametrize(
    "field,value,code",
    [
        ("n", 129, "integer_above_max_value"),
        ("n", 2.0, "invalid_type"),
        ("seed", "42", "invalid_type"),
        ("seed", 4.2, "invalid_type"),
        ("temperature", "0.7", "invalid_type"),
        ("temperature", True, "invalid_type"),
        ("temperature", 2.5, "decimal_above_max_value"),
        ("temperature", -0.1, "decimal_below_min_value"),
        ("top_p", 1.5, "decimal_above_max_value"),
        ("presence_penalty", -3, "decimal_below_min_value"),
        ("frequency_penalty", 2.01, "decimal_above_max_value"),
        ("frequency_penalty", [1], "invalid_type"),
        ("logprobs", 1, "invalid_type"),
        ("top_logprobs", 21, "integer_above_max_value"),
        ("stream", "yes", "invalid_type"),
        ("stream", 1, "invalid_type"),
        ("stream_options", 3, "invalid_type"),
        ("stop", 5, "invalid_type"),
        ("stop", ["a", "b", "c", "d", "e"], "array_above_max_length"),
        ("tools", {"type": "function"}, "invalid_type"),
        ("tool_choice", "sometimes", "invalid_value"),
        ("tool_choice", 1, "invalid_type"),
        ("parallel_tool_calls", "true", "invalid_type"),
        ("response_format", "json", "invalid_type"),
        ("logit_bias", [1, 2], "invalid_type"),
        ("user", 7, "invalid_type"),
    ],
)
def test_optional_fields_of_the_wrong_type_or_range(field, value, code):
    assert rejection(body(**{field: value})) == (code, field)


@pytest.mark.parametrize(
    "fields,code,param",
    [
        ({"stream_options": {"include_usage": "yes"}}, "invalid_type", "stream_options.include_usage"),
        ({"stop": ["a", 3]}, "invalid_type", "stop[1]"),
        ({"tools": ["f"]}, "invalid_type", "tools[0]"),
        ({"tools": [{"function": {"name": "f"}}]}, "missing_required_parameter", "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "missing_required_parameter", "tools[0].function"),
        ({"tools": [{"type": "function", "function": {}}]}, "missing_required_parameter", "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": 3}}]}, "invalid_type", "tools[0].function.name"),
        ({"tool_choice": {"function": {"name": "f"}}}, "missing_required_parameter", "tool_choice.type"),
        ({"response_format": {}}, "missing_required_parameter", "response_format.type"),
        ({"response_format": {"type": "yaml"}}, "invalid_value", "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "missing_required_parameter", "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "missing_required_parameter",
            "response_format.json_schema.name",
        ),
    ],
)
def test_nested_fields_report_their_path(fields, code, param):
    assert rejection(body(**fields)) == (code, param)


@pytest.mark.parametrize(
    "messages,code,param",
    [
        ([USER, USER, {"role": "bot", "content": "x"}], "invalid_value", "messages[2].role"),
        ([{"content": "x"}], "missing_required_parameter", "messages[0].role"),
        ([{"role": 1, "content": "x"}], "invalid_type", "messages[0].role"),
        (["hi"], "invalid_type", "messages[0]"),
        ([{"role": "user"}], "missing_required_parameter", "messages[0].content"),
        ([{"role": "user", "content": 5}], "invalid_type", "messages[0].content"),
        ([{"role": "user", "content": ["text"]}], "invalid_type", "messages[0].content[0]"),
        ([{"role": "user", "content": [{"text": "x"}]}], "missing_required_parameter", "messages[0].content[0].type"),
        ([USER, {"role": "tool", "content": "42"}], "missing_required_parameter", "messages[1].tool_call_id"),
        ([USER, {"role": "assistant", "content": None, "tool_calls": "f"}], "invalid_type", "messages[1].tool_calls"),
        ([], "invalid_type", "messages"),
        ("hi", "invalid_type", "messages"),
    ],
)
def test_messages_are_checked_one_by_one(messages, code, param):
    assert rejection({"model": "m", "messages": messages}) == (code, param)


def test_invalid_role_lists_the_supported_ones():
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_completion({"model": "m", "messages": [{"role": "bot", "content": "x"}]})
    assert caught.value.message.startswith("Invalid value: 'bot'. Supported values are: 'system', 'developer'")


@pytest.mark.parametrize(
    "payload,code,param",
    [
        ({"messages": [USER]}, "missing_required_parameter", "model"),
        ({"model": 5, "messages": [USER]}, "invalid_type", "model"),
        ({"model": "  ", "messages": [USER]}, "invalid_type", "model"),
        ({"model": "m"}, "missing_required_parameter", "messages"),
    ],
)
def test_model_and_messages_are_required(payload, code, param):
    assert rejection(payload) == (code, param)


def test_a_full_valid_request_passes_and_unknown_fields_pass_through():
    payload = body(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,"}}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        max_tokens=5000,
        max_completion_tokens=None,
        n=1,
        seed=-3,
        temperature=0,
        top_p=1,
        presence_penalty=-2,
        frequency_penalty=1.5,
        logprobs=True,
        top_logprobs=0,
        stop=["\n\n"],
        stream=True,
        stream_options={"include_usage": True, "future_flag": 1},
        tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
            {"type": "web_search_preview"},
        ],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": {}}},
        user="u-1",
        logit_bias={"50256": -100},
        metadata={"a": "b"},
        reasoning_effort="high",
        some_future_field={"anything": [1, "x"]},
        temperature_unit="kelvin",
    )
    before = repr(payload)
    validate_chat_completion(payload)
    assert repr(payload) == before  # validation never rewrites the body


def test_null_optional_fields_are_accepted():
    validate_chat_completion(body(max_tokens=None, stream=None, stop=None, tools=None, temperature=None))


@pytest.mark.parametrize(
    "remote_addr,logged",
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("not-an-address", None),
        ("203.0.113.9, 10.0.0.1", None),
        ("", None),
        (None, None),
    ],
)
def test_client_ip_is_an_address_or_nothing(remote_addr, logged):
    assert client_ip(remote_addr) == logged
