"""The Responses API translation (routing/proxy/translation/responses.py), as pure functions: requests to chat
payloads, chat completions and chunks to response objects and events, checked against the openai SDK's own types
and its stream accumulator (the strictest reader of these events we have)."""

import copy

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from routing.proxy.translation.responses import (
    BUILT_IN_TOOLS,
    ResponsesRequestError,
    StreamTranslator,
    estimate_input_chars,
    from_chat,
    items_for_storage,
    new_response_id,
    to_chat,
)

EVENT = TypeAdapter(ResponseStreamEvent)
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def body(**fields):
    return {"model": "rainymodel/auto", "input": "hi", **fields}


def rejection(payload, previous=None) -> tuple[str, str | None]:
    with pytest.raises(ResponsesRequestError) as caught:
        to_chat(payload, previous=previous)
    error = caught.value
    assert error.status == 400 and error.type == "invalid_request_error" and error.message
    assert error.body() == {
        "error": {"message": error.message, "type": "invalid_request_error", "param": error.param, "code": error.code}
    }
    return error.code, error.param


# --- to_chat: what the upstream receives


def test_string_input_is_one_user_message():
    assert to_chat(body()) == {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hi"}]}


def test_instructions_come_first_as_a_system_message():
    chat = to_chat(
        body(
            instructions="Be brief.",
            input=[{"role": "developer", "content": "Use metric units."}, {"role": "user", "content": "hi"}],
        )
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": "hi"},
    ]


def test_message_parts_become_chat_parts_with_images():
    chat = to_chat(
        body(
            input=[
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
                    ],
                }
            ]
        )
    )
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            ],
        }
    ]


def test_assistant_output_text_parts_become_a_string():
    chat = to_chat(
        body(
            input=[
                {"role": "user", "content": "hi"},
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": "Hello", "annotations": []},
                        {"type": "output_text", "text": " there", "annotations": []},
                    ],
                },
                {"role": "user", "content": "again"},
            ]
        )
    )
    assert chat["messages"][1] == {"role": "assistant", "content": "Hello there"}


def test_function_call_round_trip_gives_the_messages_a_chat_upstream_expects():
    chat = to_chat(
        body(
            tools=[WEATHER_TOOL],
            input=[
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_a",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                    "status": "completed",
                },
                {
                    "type": "function_call",
                    "id": "fc_2",
                    "call_id": "call_b",
                    "name": "get_weather",
                    "arguments": '{"city":"Rome"}',
                    "status": "completed",
                },
                {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_b",
                    "output": [{"type": "input_text", "text": "24C"}],
                },
            ],
        )
    )
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "24C"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        }
    ]


def test_text_before_a_function_call_is_the_same_assistant_turn():
    chat = to_chat(
        body(
            input=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Let me check."},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ]
        )
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


def test_previous_items_come_before_the_new_input():
    previous = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Call f"}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}", "status": "completed"},
    ]
    chat = to_chat(
        body(
            instructions="sys",
            previous_response_id="resp_1",
            input=[{"type": "function_call_output", "call_id": "c1", "output": "done"}],
        ),
        previous=previous,
    )
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool"]
    assert "previous_response_id" not in chat


def test_previous_allows_no_new_input():
    chat = to_chat({"model": "m"}, previous=[{"role": "user", "content": "hi"}])
    assert chat["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "choice, expected",
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice, expected):
    assert to_chat(body(tools=[WEATHER_TOOL], tool_choice=choice))["tool_choice"] == expected


def test_text_format_json_schema_becomes_response_format():
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    chat = to_chat(body(text={"format": {"type": "json_schema", "name": "point", "schema": schema, "strict": True}}))
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "point", "schema": schema, "strict": True},
    }
    assert to_chat(body(text={"format": {"type": "json_object"}}))["response_format"] == {"type": "json_object"}
    assert "response_format" not in to_chat(body(text={"format": {"type": "text"}}))


def test_sampling_limits_reasoning_user_and_stream_are_translated():
    chat = to_chat(
        body(
            max_output_tokens=300,
            temperature=0.2,
            top_p=0.9,
            reasoning={"effort": "low"},
            user="u-1",
            stream=True,
            parallel_tool_calls=False,
            tools=[WEATHER_TOOL],
        )
    )
    assert chat["max_tokens"] == 300 and chat["temperature"] == 0.2 and chat["top_p"] == 0.9
    assert chat["reasoning_effort"] == "low" and chat["user"] == "u-1"
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["parallel_tool_calls"] is False


def test_proxy_only_fields_are_not_forwarded():
    chat = to_chat(
        body(metadata={"team": "a"}, store=True, previous_response_id=None, include=[], truncation="disabled")
    )
    assert set(chat) == {"model", "messages"}


def test_to_chat_does_not_change_the_request():
    request = body(input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}]}], tools=[WEATHER_TOOL])
    kept = copy.deepcopy(request)
    to_chat(request)
    assert request == kept


# --- to_chat: bad input is a clean 400 with OpenAI's code and param


@pytest.mark.parametrize(
    "payload, code, param",
    [
        ({"input": "hi"}, "missing_required_parameter", "model"),
        (body(model=5), "invalid_type", "model"),
        ({"model": "m"}, "missing_required_parameter", "input"),
        (body(input=""), "empty_string", "input"),
        (body(input=[]), "empty_array", "input"),
        (body(input=42), "invalid_type", "input"),
        (body(input=["hi"]), "invalid_type", "input[0]"),
        (body(input=[{"content": "hi"}]), "missing_required_parameter", "input[0].type"),
        (body(input=[{"type": "reasoning", "summary": []}]), "invalid_value", "input[0].type"),
        (body(input=[{"type": 3}]), "invalid_type", "input[0].type"),
        (body(input=[{"type": "message", "content": "hi"}]), "missing_required_parameter", "input[0].role"),
        (body(input=[{"role": "tool", "content": "hi"}]), "invalid_value", "input[0].role"),
        (body(input=[{"role": "user"}]), "missing_required_parameter", "input[0].content"),
        (body(input=[{"role": "user", "content": 7}]), "invalid_type", "input[0].content"),
        (
            body(input=[{"role": "user", "content": [{"type": "input_audio"}]}]),
            "invalid_value",
            "input[0].content[0].type",
        ),
        (
            body(input=[{"role": "user", "content": [{"text": "x"}]}]),
            "missing_required_parameter",
            "input[0].content[0].type",
        ),
        (
            body(input=[{"role": "user", "content": [{"type": "input_text"}]}]),
            "missing_required_parameter",
            "input[0].content[0].text",
        ),
        (
            body(input=[{"role": "user", "content": [{"type": "input_image"}]}]),
            "missing_required_parameter",
            "input[0].content[0].image_url",
        ),
        (
            body(input=[{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]),
            "unsupported_parameter",
            "input[0].content[0].file_id",
        ),
        (
            body(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "u", "detail": "max"}]}]),
            "invalid_value",
            "input[0].content[0].detail",
        ),
        (
            body(input=[{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]),
            "invalid_value",
            "input[0].content[0].type",
        ),
        (
            body(input=[{"type": "function_call", "name": "f", "arguments": "{}"}]),
            "missing_required_parameter",
            "input[0].call_id",
        ),
        (
            body(input=[{"type": "function_call", "call_id": "c", "arguments": "{}"}]),
            "missing_required_parameter",
            "input[0].name",
        ),
        (
            body(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}]),
            "invalid_type",
            "input[0].arguments",
        ),
        (
            body(input=[{"type": "function_call_output", "output": "x"}]),
            "missing_required_parameter",
            "input[0].call_id",
        ),
        (
            body(input=[{"type": "function_call_output", "call_id": "c"}]),
            "missing_required_parameter",
            "input[0].output",
        ),
        (
            body(input=[{"type": "function_call_output", "call_id": "nowhere", "output": "x"}]),
            "invalid_value",
            "input[0].call_id",
        ),
        (
            body(
                input=[
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c", "output": 5},
                ]
            ),
            "invalid_type",
            "input[1].output",
        ),
        (body(instructions=["be brief"]), "invalid_type", "instructions"),
        (body(tools={"type": "function"}), "invalid_type", "tools"),
        (body(tools=[{"name": "f"}]), "missing_required_parameter", "tools[0].type"),
        (body(tools=[{"type": "function"}]), "missing_required_parameter", "tools[0].name"),
        (body(tools=[{"type": "function", "name": "f", "parameters": "{}"}]), "invalid_type", "tools[0].parameters"),
        (body(tools=[{"type": "retrieval"}]), "invalid_value", "tools[0].type"),
        (body(tool_choice="any"), "invalid_value", "tool_choice"),
        (body(tool_choice={"type": "file_search"}), "invalid_value", "tool_choice.type"),
        (body(tool_choice={"type": "function"}), "missing_required_parameter", "tool_choice.name"),
        (body(tool_choice=1), "invalid_type", "tool_choice"),
        (body(parallel_tool_calls="yes"), "invalid_type", "parallel_tool_calls"),
        (body(text="json"), "invalid_type", "text"),
        (body(text={"format": {"type": "yaml"}}), "invalid_value", "text.format.type"),
        (body(text={"format": {}}), "missing_required_parameter", "text.format.type"),
        (
            body(text={"format": {"type": "json_schema", "schema": {}}}),
            "missing_required_parameter",
            "text.format.name",
        ),
        (
            body(text={"format": {"type": "json_schema", "name": "x"}}),
            "missing_required_parameter",
            "text.format.schema",
        ),
        (
            body(text={"format": {"type": "json_schema", "name": "x", "schema": []}}),
            "invalid_type",
            "text.format.schema",
        ),
        (
            body(text={"format": {"type": "json_schema", "name": "x", "schema": {}, "strict": "yes"}}),
            "invalid_type",
            "text.format.strict",
        ),
        (body(max_output_tokens=-5), "integer_below_min_value", "max_output_tokens"),
        (body(max_output_tokens=0), "integer_below_min_value", "max_output_tokens"),
        (body(max_output_tokens=100.5), "invalid_type", "max_output_tokens"),
        (body(max_output_tokens="100"), "invalid_type", "max_output_tokens"),
        (body(max_output_tokens=True), "invalid_type", "max_output_tokens"),
        (body(temperature=3), "decimal_above_max_value", "temperature"),
        (body(temperature="hot"), "invalid_type", "temperature"),
        (body(top_p=-0.1), "decimal_below_min_value", "top_p"),
        (body(reasoning="high"), "invalid_type", "reasoning"),
        (body(reasoning={"effort": "extreme"}), "invalid_value", "reasoning.effort"),
        (body(metadata=[]), "invalid_type", "metadata"),
        (body(metadata={"n": 1}), "invalid_type", "metadata.n"),
        (body(metadata={str(i): "v" for i in range(17)}), "object_above_max_properties", "metadata"),
        (body(user=5), "invalid_type", "user"),
        (body(stream="true"), "invalid_type", "stream"),
        (body(store=1), "invalid_type", "store"),
        (body(previous_response_id=5), "invalid_type", "previous_response_id"),
        (body(include="reasoning.encrypted_content"), "invalid_type", "include"),
        (body(truncation="middle"), "invalid_value", "truncation"),
        (body(background=True), "unsupported_parameter", "background"),
        (body(conversation="conv_1"), "unsupported_parameter", "conversation"),
        (body(prompt={"id": "pmpt_1"}), "unsupported_parameter", "prompt"),
    ],
)
def test_bad_input_is_a_400_with_code_and_param(payload, code, param):
    assert rejection(payload) == (code, param)


def test_bad_stored_item_names_the_previous_response():
    assert rejection(body(), previous=[{"type": "web_search_call"}]) == (
        "invalid_value",
        "previous_response.items[0].type",
    )


@pytest.mark.parametrize("kind", BUILT_IN_TOOLS)
def test_built_in_tools_are_refused_never_dropped(kind):
    code, param = rejection(body(tools=[WEATHER_TOOL, {"type": kind}]))
    assert (code, param) == ("invalid_value", "tools[1].type")


def test_built_in_tool_error_says_why():
    with pytest.raises(ResponsesRequestError) as caught:
        to_chat(body(tools=[{"type": "web_search_preview"}]))
    assert "Built-in tools are not supported" in caught.value.message


# --- from_chat: the response object


def chat_completion(message, finish_reason="stop", usage=None):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen2.5:7b",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        "usage": usage if usage is not None else {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }


def test_text_completion_becomes_a_completed_response_the_sdk_parses():
    request = body(instructions="Be brief.", temperature=0.5, metadata={"team": "a"}, store=True)
    response = from_chat(
        chat_completion({"content": "Hello!"}), response_id="resp_abc", created_at=1700000000, request=request
    )
    parsed = Response.model_validate(response)
    assert parsed.id == "resp_abc" and parsed.object == "response" and parsed.status == "completed"
    assert parsed.output_text == "Hello!"
    assert "output_text" not in response  # an SDK property, not a wire field
    message = response["output"][0]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["id"].startswith("msg_")
    assert message["content"][0] == {"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}
    assert response["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 16,
    }
    assert response["instructions"] == "Be brief." and response["temperature"] == 0.5
    assert response["metadata"] == {"team": "a"} and response["store"] is True
    assert response["incomplete_details"] is None and response["error"] is None
    assert response["model"] == "qwen2.5:7b"


def test_tool_calls_become_function_call_items():
    request = body(tools=[WEATHER_TOOL], tool_choice="auto")
    chat = chat_completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        finish_reason="tool_calls",
    )
    response = from_chat(chat, response_id="resp_1", created_at=1, request=request)
    Response.model_validate(response)
    assert response["status"] == "completed"
    assert [(i["type"], i["call_id"], i["arguments"]) for i in response["output"]] == [
        ("function_call", "call_a", '{"city":"Paris"}'),
        ("function_call", "call_b", '{"city":"Rome"}'),
    ]
    assert all(i["id"].startswith("fc_") and i["status"] == "completed" for i in response["output"])
    assert response["tools"][0]["name"] == "get_weather"


@pytest.mark.parametrize(
    "finish_reason, reason", [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_length_and_content_filter_are_incomplete(finish_reason, reason):
    response = from_chat(
        chat_completion({"content": "Once upon a"}, finish_reason=finish_reason),
        response_id="resp_1",
        created_at=1,
        request=body(max_output_tokens=3),
    )
    Response.model_validate(response)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": reason}
    assert response["output"][0]["status"] == "incomplete"


def test_usage_details_and_missing_usage():
    chat = chat_completion(
        {"content": "x"},
        usage={
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
    )
    usage = from_chat(chat, response_id="r", created_at=1, request=body())["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 64, "cache_write_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 30}
    chat = chat_completion({"content": "x"}, usage={})
    assert from_chat(chat, response_id="r", created_at=1, request=body())["usage"] is None


def test_json_schema_request_is_echoed_in_text_format():
    fmt = {"type": "json_schema", "name": "point", "schema": {"type": "object"}, "strict": True}
    response = from_chat(
        chat_completion({"content": '{"x": 1}'}), response_id="r", created_at=1, request=body(text={"format": fmt})
    )
    assert Response.model_validate(response).text.format.type == "json_schema"


# --- StreamTranslator: the event stream


def text_chunk(text=None, finish_reason=None, usage=None, choices=True):
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "qwen2.5:7b",
        "choices": [
            {"index": 0, "delta": {"content": text} if text is not None else {}, "finish_reason": finish_reason}
        ]
        if choices
        else [],
    }
    if usage:
        chunk["usage"] = usage
    return chunk


def tool_chunk(index, *, call_id=None, name=None, arguments=None, finish_reason=None):
    call = {"index": index, "function": {}}
    if call_id:
        call.update(id=call_id, type="function")
    if name:
        call["function"]["name"] = name
    if arguments is not None:
        call["function"]["arguments"] = arguments
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": finish_reason}],
    }


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def decode(frames: list[bytes]) -> list[dict]:
    """Parse framed SSE events, checking the frame: `event:` names the type `data:` carries."""
    events = []
    for frame in frames:
        assert frame.endswith(b"\n\n")
        event_line, data_line = frame[:-2].split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        payload = orjson.loads(data_line[6:])
        assert payload["type"] == event_line[7:].decode()
        EVENT.validate_python(payload)
        events.append(payload)
    return events


def run(translator, chunks, *, finish=True, usage=None):
    frames = translator.start()
    for chunk in chunks:
        frames += translator.feed(chunk)
    if finish:
        frames += translator.finish(usage)
    return frames


def translator(**request):
    return StreamTranslator(response_id="resp_s", created_at=1700000000, request=body(stream=True, **request))


def test_text_stream_event_sequence():
    frames = run(
        translator(),
        [text_chunk("Hel"), text_chunk("lo"), text_chunk(finish_reason="stop"), text_chunk(choices=False, usage=USAGE)],
    )
    events = decode(frames)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    item_id = events[2]["item"]["id"]
    assert all(e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0 for e in events[3:8])
    assert [e["delta"] for e in events[4:6]] == ["Hel", "lo"]
    assert events[6]["text"] == "Hello"
    completed = Response.model_validate(events[-1]["response"])
    assert completed.status == "completed" and completed.output_text == "Hello"
    assert completed.usage.input_tokens == 9 and completed.usage.output_tokens == 3


def test_each_chunk_of_text_leaves_in_the_same_feed_call():
    stream = translator()
    stream.start()
    assert [
        e["delta"] for e in decode(stream.feed(text_chunk("first"))) if e["type"] == "response.output_text.delta"
    ] == ["first"]
    assert [e["delta"] for e in decode(stream.feed(text_chunk("second")))] == ["second"]


def test_tool_call_stream_with_arguments_in_pieces():
    stream = translator(tools=[WEATHER_TOOL])
    frames = run(
        stream,
        [
            tool_chunk(0, call_id="call_a", name="get_weather", arguments=""),
            tool_chunk(0, arguments='{"ci'),
            tool_chunk(0, arguments='ty":"Paris"}'),
            tool_chunk(1, call_id="call_b", name="get_weather", arguments='{"city":'),
            tool_chunk(1, arguments='"Rome"}', finish_reason="tool_calls"),
        ],
        usage=USAGE,
    )
    events = decode(frames)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    first, second = events[2]["item"], events[7]["item"]
    assert first["type"] == "function_call" and first["call_id"] == "call_a" and first["name"] == "get_weather"
    assert events[2]["output_index"] == 0 and events[7]["output_index"] == 1 and second["call_id"] == "call_b"
    assert events[5] == {
        "type": "response.function_call_arguments.done",
        "sequence_number": 5,
        "item_id": first["id"],
        "output_index": 0,
        "arguments": '{"city":"Paris"}',
    }
    assert events[11]["item"]["arguments"] == '{"city":"Rome"}' and events[11]["item"]["status"] == "completed"
    final = Response.model_validate(events[-1]["response"])
    assert [(o.call_id, o.arguments) for o in final.output] == [
        ("call_a", '{"city":"Paris"}'),
        ("call_b", '{"city":"Rome"}'),
    ]
    assert [i["call_id"] for i in stream.output_items] == ["call_a", "call_b"]


def test_text_then_tool_call_are_two_items():
    events = decode(
        run(
            translator(),
            [
                text_chunk("Checking."),
                tool_chunk(0, call_id="c", name="f", arguments="{}"),
                tool_chunk(0, finish_reason="tool_calls"),
            ],
        )
    )
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "message"), (1, "function_call")]
    done = [e["type"] for e in events]
    assert done.index("response.output_item.done") < done.index("response.output_item.added", 3)


def test_length_ends_with_response_incomplete():
    events = decode(
        run(translator(max_output_tokens=2), [text_chunk("Once"), text_chunk(" upon", finish_reason="length")])
    )
    assert events[-1]["type"] == "response.incomplete"
    assert "response.completed" not in [e["type"] for e in events]
    response = Response.model_validate(events[-1]["response"])
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and response.output_text == "Once upon"


def test_failure_mid_stream_ends_with_response_failed_never_completed():
    stream = translator()
    frames = run(stream, [text_chunk("Hal"), text_chunk("f a sen")], finish=False)
    frames += stream.fail("server_error", "The upstream stream broke and no route could continue it.")
    events = decode(frames)
    types = [e["type"] for e in events]
    assert types[-1] == "response.failed"
    assert not {"response.completed", "response.output_text.done", "response.output_item.done"} & set(types)
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert failed.output[0].status == "incomplete" and failed.output_text == "Half a sen"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert stream.finish() == [] and stream.feed(text_chunk("more")) == []  # nothing after the end


def test_usage_given_to_finish_wins():
    events = decode(run(translator(), [text_chunk("x", finish_reason="stop")], usage=USAGE))
    assert events[-1]["response"]["usage"]["total_tokens"] == 12


def test_empty_stream_completes_with_no_output():
    events = decode(run(translator(), [text_chunk(finish_reason="stop")]))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1]["response"]["output"] == []


def sdk_client(frames: list[bytes]) -> openai.OpenAI:
    """The official SDK reading `frames` as the body of POST /v1/responses (no server: an httpx transport)."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(frames))

    # openai annotates http_client with the Client of the httpx2 it depends on; an httpx.Client is what it accepts
    # at run time (these tests run through one).
    return openai.OpenAI(
        api_key="rm-test",
        base_url="http://proxy.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),  # type: ignore[arg-type]
    )


def test_the_sdk_stream_helper_accumulates_the_events():
    frames = run(
        translator(),
        [
            text_chunk("Hel"),
            text_chunk("lo"),
            tool_chunk(0, call_id="c", name="f", arguments='{"a":'),
            tool_chunk(0, arguments="1}", finish_reason="tool_calls"),
        ],
        usage=USAGE,
    )
    with sdk_client(frames).responses.stream(model="rainymodel/auto", input="hi") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert final.output_text == "Hello" and final.output[1].arguments == '{"a":1}'


def test_the_sdk_reads_a_failed_stream_without_a_final_response():
    stream = translator()
    frames = run(stream, [text_chunk("Hal")], finish=False) + stream.fail("server_error", "broke")
    with sdk_client(frames).responses.stream(model="rainymodel/auto", input="hi") as sdk_stream:
        seen = [event.type for event in sdk_stream]
        with pytest.raises(RuntimeError):
            sdk_stream.get_final_response()
    assert seen[-1] == "response.failed"


# --- helpers


def test_new_response_id_is_resp_and_hex():
    first, second = new_response_id(), new_response_id()
    assert first.startswith("resp_") and first != second
    int(first[5:], 16)


def test_items_for_storage_can_be_continued():
    chat = chat_completion(
        {
            "content": None,
            "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        "tool_calls",
    )
    response = from_chat(chat, response_id="r", created_at=1, request=body(input="Call f"))
    stored = items_for_storage("Call f", response["output"])
    assert stored[0] == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Call f"}]}
    follow_up = to_chat(
        body(input=[{"type": "function_call_output", "call_id": "call_a", "output": "ok"}]), previous=stored
    )
    assert [m["role"] for m in follow_up["messages"]] == ["user", "assistant", "tool"]
    stored[1]["name"] = "changed"
    assert response["output"][0]["name"] == "f"  # a copy, not the response's own items


def test_stream_output_items_can_be_stored_and_continued():
    stream = translator()
    run(stream, [text_chunk("Paris is in France."), text_chunk(finish_reason="stop")])
    stored = items_for_storage([{"role": "user", "content": "Where is Paris?"}], stream.output_items)
    chat = to_chat(body(input="And Rome?"), previous=stored)
    assert chat["messages"] == [
        {"role": "user", "content": "Where is Paris?"},
        {"role": "assistant", "content": "Paris is in France."},
        {"role": "user", "content": "And Rome?"},
    ]


def test_estimate_input_chars_counts_text_and_tools_and_never_raises():
    request = body(
        instructions="abcd",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "12345"}, {"type": "input_image"}]},
            {"type": "function_call", "call_id": "c", "name": "ff", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "xyz"},
            "junk",
            None,
        ],
    )
    assert estimate_input_chars(request) == 4 + 5 + 4 + 3
    assert estimate_input_chars(body(input="hello", tools=[WEATHER_TOOL])) == 5 + len(orjson.dumps([WEATHER_TOOL]))
    assert estimate_input_chars({"input": 5, "instructions": [], "tools": "x"}) == 0
    assert estimate_input_chars(body(input="hello"), previous=[{"role": "user", "content": "abc"}]) == 5 + 3


def test_whole_tool_calls_all_at_index_0_are_separate_items():
    """Some upstreams send each complete tool call as its own chunk without a distinct index."""
    events = decode(
        run(
            translator(),
            [
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "id": "call_a",
                                        "type": "function",
                                        "function": {"name": "f", "arguments": '{"a":1}'},
                                    }
                                ]
                            },
                        }
                    ]
                },
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "id": "call_b",
                                        "type": "function",
                                        "function": {"name": "g", "arguments": '{"b":2}'},
                                    }
                                ]
                            },
                            "finish_reason": "tool_calls",
                        }
                    ]
                },
            ],
        )
    )
    output = Response.model_validate(events[-1]["response"]).output
    assert [(o.call_id, o.name, o.arguments) for o in output] == [
        ("call_a", "f", '{"a":1}'),
        ("call_b", "g", '{"b":2}'),
    ]
