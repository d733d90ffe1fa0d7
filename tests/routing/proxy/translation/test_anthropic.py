"""routing/proxy/translation/anthropic.py: pure translation between Anthropic Messages and chat completions.

Outputs are validated against the official anthropic SDK's pydantic types (Message, RawMessageStreamEvent,
ErrorResponse), and streams are folded into a final message by the SDK's own accumulator, so a shape the SDK
would reject fails here, not in a client.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anthropic
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from routing.proxy.translation import anthropic as translation
from routing.proxy.translation.anthropic import AnthropicError, StreamTranslator

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


def request(**fields) -> dict:
    body = {"model": "rainymodel/chat", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    return body


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def parse_events(frames: list[bytes]) -> list[tuple[str, dict]]:
    """Each frame is one `event: <type>\\ndata: <json>\\n\\n`; the data's `type` must match the event name."""
    events = []
    for frame in frames:
        assert frame.endswith(b"\n\n") and frame.count(b"\n\n") == 1, frame
        name_line, data_line = frame[:-2].split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: "), frame
        name, data = name_line[7:].decode(), orjson.loads(data_line[6:])
        assert data["type"] == name
        events.append((name, data))
    return events


def sdk_message(frames: list[bytes]) -> Message:
    """Validate every event against the SDK types and fold them into the final Message as the SDK does."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in parse_events(frames):
        if name == "ping":
            assert data == {"type": "ping"}
            continue
        event = STREAM_EVENT.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None, "no events"
    return Message.model_validate(snapshot.model_dump())


def chunk(content=None, *, tool_calls=None, finish_reason=None, usage=None, **choice_fields) -> dict:
    delta = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, **choice_fields}],
    }
    if usage is not None:
        data["usage"] = usage
    return data


def completion(content="Hello", *, tool_calls=None, finish_reason="stop", usage=None, **choice_fields) -> dict:
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "upstream-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, **choice_fields}],
        "usage": usage if usage is not None else {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


# --- to_chat: what the upstream gets -----------------------------------------------------------------------------


def test_minimal_request_becomes_a_chat_payload():
    assert translation.to_chat(request()) == {
        "model": "rainymodel/chat",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_system_string_and_blocks_become_one_system_message_first():
    assert translation.to_chat(request(system="Be brief."))["messages"][0] == {"role": "system", "content": "Be brief."}
    blocks = [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in French."},
    ]
    messages = translation.to_chat(request(system=blocks))["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief.\nAnswer in French."}
    assert messages[1] == {"role": "user", "content": "Hi"}


def test_sampling_fields_stop_sequences_user_and_stream_are_mapped():
    chat = translation.to_chat(
        request(
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["\n\nHuman:", "END"],
            metadata={"user_id": "u-42"},
            stream=True,
        )
    )
    assert chat["temperature"] == 0.2 and chat["top_p"] == 0.9
    assert "top_k" not in chat  # chat completions has no top_k: validated, then dropped (documented)
    assert chat["stop"] == ["\n\nHuman:", "END"]
    assert chat["user"] == "u-42"
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_unknown_and_ignored_fields_are_not_forwarded():
    chat = translation.to_chat(
        request(
            thinking={"type": "enabled", "budget_tokens": 1024},
            service_tier="auto",
            container="c",
            anthropic_beta=["x"],
        )
    )
    assert set(chat) == {"model", "max_tokens", "messages"}


def test_user_image_blocks_become_image_url_parts():
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    messages = translation.to_chat(request(messages=[{"role": "user", "content": content}]))["messages"]
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_text_only_blocks_become_a_plain_string():
    content = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    messages = translation.to_chat(request(messages=[{"role": "user", "content": content}]))["messages"]
    assert messages == [{"role": "user", "content": "one\ntwo"}]


def test_tools_and_tool_choice_are_mapped():
    chat = translation.to_chat(request(tools=[WEATHER_TOOL], tool_choice={"type": "any"}))
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "Weather for a city",
            },
        }
    ]
    assert chat["tool_choice"] == "required"
    assert translation.to_chat(request(tools=[WEATHER_TOOL], tool_choice={"type": "auto"}))["tool_choice"] == "auto"
    assert translation.to_chat(request(tools=[WEATHER_TOOL], tool_choice={"type": "none"}))["tool_choice"] == "none"
    named = translation.to_chat(
        request(
            tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
        )
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert named["parallel_tool_calls"] is False


def test_tool_use_then_tool_result_round_trip_gives_the_messages_a_chat_upstream_expects():
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "station offline"}],
                },
                {"type": "text", "text": "Thanks, summarise please."},
            ],
        },
    ]
    chat = translation.to_chat(request(messages=messages, tools=[WEATHER_TOOL]))
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: station offline"},
        {"role": "user", "content": "Thanks, summarise please."},
    ]


def test_images_in_a_tool_result_follow_the_tool_messages_in_a_user_message():
    messages = [
        {"role": "user", "content": "Look at the screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {"p": "a.png"}}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "a.png"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    ],
                }
            ],
        },
    ]
    chat = translation.to_chat(request(messages=messages))["messages"]
    assert chat[2] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "a.png\n[1 image(s) from tool result t1 follow in the next user message]",
    }
    assert chat[3] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
    }
    assert len(chat) == 4


def test_assistant_with_only_tool_use_has_null_content():
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ]
    chat = translation.to_chat(request(messages=messages))["messages"]
    assert chat[1]["content"] is None and chat[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert chat[2] == {"role": "tool", "tool_call_id": "t", "content": ""}
    assert len(chat) == 3  # no empty user message after the tool results


def test_assistant_prefill_string_is_kept_last():
    messages = [{"role": "user", "content": "Answer with JSON"}, {"role": "assistant", "content": "{"}]
    assert translation.to_chat(request(messages=messages))["messages"][-1] == {"role": "assistant", "content": "{"}


BAD_REQUESTS = [
    ("not an object", ["a list"], "body"),
    ("model missing", {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ("model not a string", request(model=42), "model"),
    ("model empty", request(model=""), "model"),
    ("max_tokens missing", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ("max_tokens a float", request(max_tokens=100.0), "max_tokens"),
    ("max_tokens a string", request(max_tokens="100"), "max_tokens"),
    ("max_tokens a bool", request(max_tokens=True), "max_tokens"),
    ("max_tokens zero", request(max_tokens=0), "max_tokens"),
    ("messages missing", {"model": "m", "max_tokens": 5}, "messages"),
    ("messages not a list", request(messages={"role": "user"}), "messages"),
    ("messages empty", request(messages=[]), "messages"),
    ("message not an object", request(messages=["hi"]), "messages.0"),
    ("role missing", request(messages=[{"content": "x"}]), "messages.0.role"),
    ("role system", request(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    ("content missing", request(messages=[{"role": "user"}]), "messages.0.content"),
    ("content a number", request(messages=[{"role": "user", "content": 3}]), "messages.0.content"),
    ("block not an object", request(messages=[{"role": "user", "content": ["x"]}]), "messages.0.content.0"),
    (
        "block type unknown",
        request(messages=[{"role": "user", "content": [{"type": "document"}]}]),
        "messages.0.content.0.type",
    ),
    (
        "text not a string",
        request(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
        "messages.0.content.0.text",
    ),
    (
        "image without source",
        request(messages=[{"role": "user", "content": [{"type": "image"}]}]),
        "messages.0.content.0.source",
    ),
    (
        "image media type",
        request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="}}
                    ],
                }
            ]
        ),
        "messages.0.content.0.source.media_type",
    ),
    (
        "image file source",
        request(
            messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]
        ),
        "messages.0.content.0.source.type",
    ),
    (
        "image url not http",
        request(
            messages=[
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}}]}
            ]
        ),
        "messages.0.content.0.source.url",
    ),
    (
        "tool_use in a user message",
        request(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
        "messages.0.content.0.type",
    ),
    (
        "tool_result in an assistant message",
        request(messages=[{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]),
        "messages.0.content.0.type",
    ),
    (
        "tool_use without id",
        request(messages=[{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]),
        "messages.0.content.0.id",
    ),
    (
        "tool_use input not an object",
        request(
            messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]
        ),
        "messages.0.content.0.input",
    ),
    (
        "tool_result for an unknown id",
        request(
            messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]
        ),
        "messages.0.content.0.tool_use_id",
    ),
    (
        "tool_use left unanswered",
        request(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": "never mind"},
            ]
        ),
        "messages.2",
    ),
    (
        "one of two tool_use ids unanswered",
        request(
            messages=[
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "a", "name": "f", "input": {}},
                        {"type": "tool_use", "id": "b", "name": "f", "input": {}},
                    ],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]},
            ]
        ),
        "messages.1",
    ),
    (
        "tool_result with a bad image",
        request(
            messages=[
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "image", "source": {"type": "url", "url": "ftp://x/y.png"}}],
                        }
                    ],
                },
            ]
        ),
        "messages.1.content.0.content.0.source.url",
    ),
    (
        "tool_result with a document",
        request(
            messages=[
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document", "source": {}}]}
                    ],
                },
            ]
        ),
        "messages.1.content.0.content.0.type",
    ),
    (
        "is_error not a bool",
        request(
            messages=[
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]},
            ]
        ),
        "messages.1.content.0.is_error",
    ),
    ("system a number", request(system=7), "system"),
    ("system block not text", request(system=[{"type": "image"}]), "system.0.type"),
    ("tools not a list", request(tools={"name": "f"}), "tools"),
    ("tool without name", request(tools=[{"input_schema": {}}]), "tools.0.name"),
    ("tool name with spaces", request(tools=[{"name": "get weather", "input_schema": {}}]), "tools.0.name"),
    ("tool without input_schema", request(tools=[{"name": "f"}]), "tools.0.input_schema"),
    ("server tool", request(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type"),
    ("tool_choice unknown type", request(tools=[WEATHER_TOOL], tool_choice={"type": "required"}), "tool_choice.type"),
    ("tool_choice a string", request(tools=[WEATHER_TOOL], tool_choice="auto"), "tool_choice"),
    ("tool_choice any without tools", request(tool_choice={"type": "any"}), "tool_choice"),
    (
        "tool_choice names an unknown tool",
        request(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "x"}),
        "tool_choice.name",
    ),
    ("stop_sequences a string", request(stop_sequences="END"), "stop_sequences"),
    ("stop_sequences with a number", request(stop_sequences=["END", 5]), "stop_sequences.1"),
    ("temperature too high", request(temperature=1.5), "temperature"),
    ("temperature a string", request(temperature="0.5"), "temperature"),
    ("top_p negative", request(top_p=-0.1), "top_p"),
    ("top_k a float", request(top_k=1.5), "top_k"),
    ("metadata not an object", request(metadata="u"), "metadata"),
    ("metadata.user_id a number", request(metadata={"user_id": 5}), "metadata.user_id"),
    ("stream a string", request(stream="true"), "stream"),
]


@pytest.mark.parametrize(("case", "body", "param"), BAD_REQUESTS, ids=[case for case, _, _ in BAD_REQUESTS])
def test_bad_request_is_a_400_in_anthropics_shape(case, body, param):
    with pytest.raises(AnthropicError) as raised:
        translation.to_chat(body)
    error = raised.value
    assert error.status == 400 and error.type == "invalid_request_error"
    assert error.message.startswith(param + ": "), error.message
    parsed = ErrorResponse.model_validate(orjson.loads(error.body()))
    assert parsed.error.type == "invalid_request_error" and parsed.error.message == error.message


def test_there_are_at_least_20_bad_input_cases():
    assert len(BAD_REQUESTS) >= 20


# --- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "type"),
    [
        (400, "invalid_json", "invalid_request_error"),
        (401, "invalid_api_key", "authentication_error"),
        (403, "model_not_allowed", "permission_error"),
        (404, "model_not_found", "not_found_error"),
        (405, "method_not_allowed", "invalid_request_error"),
        (413, "request_too_large", "request_too_large"),
        (429, "rate_limit_exceeded", "rate_limit_error"),
        (500, "internal_error", "api_error"),
        (502, "all_upstreams_failed", "api_error"),
        (503, "no_available_route", "overloaded_error"),
        (504, "upstream_timeout", "timeout_error"),
        (529, None, "overloaded_error"),
    ],
)
def test_our_errors_map_to_anthropic_types_the_sdk_knows(status, code, type):
    error = translation.error_for_status(status, "Something went wrong.", code)
    assert (error.status, error.type) == (status, type)
    body = orjson.loads(error.body())
    assert body == {"type": "error", "error": {"type": type, "message": "Something went wrong."}}
    if type != "request_too_large":  # in Anthropic's error docs (a 413 from its edge), not in the SDK's ErrorType
        parsed = ErrorResponse.model_validate(body)
        assert parsed.error.type == type


def test_error_body_is_exactly_anthropics_shape():
    assert orjson.loads(translation.error_body("rate_limit_error", "Slow down.")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down."},
    }


# --- from_chat -----------------------------------------------------------------------------------------------------


def test_text_completion_becomes_a_message():
    message = translation.from_chat(completion("Hello there"), message_id="msg_1", model="rainymodel/chat")
    assert message == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "rainymodel/chat",
        "content": [{"type": "text", "text": "Hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }
    Message.model_validate(message)


def test_length_becomes_max_tokens():
    message = translation.from_chat(completion("Once upon", finish_reason="length"), message_id="m", model="a")
    assert message["stop_reason"] == "max_tokens"
    assert Message.model_validate(message).stop_reason == "max_tokens"


def test_tool_calls_become_tool_use_blocks_with_parsed_input():
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
    ]
    message = translation.from_chat(
        completion(None, tool_calls=calls, finish_reason="tool_calls"), message_id="m", model="a"
    )
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"
    parsed = Message.model_validate(message)
    assert parsed.content[0].input == {"city": "Paris"}


def test_tool_calls_with_finish_reason_stop_still_say_tool_use():
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    message = translation.from_chat(completion("", tool_calls=calls, finish_reason="stop"), message_id="m", model="a")
    assert message["stop_reason"] == "tool_use"


def test_invalid_tool_arguments_are_kept_as_raw_arguments():
    calls = [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"city": "Par'}},
        {"id": "d", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}},
    ]
    message = translation.from_chat(
        completion(None, tool_calls=calls, finish_reason="tool_calls"), message_id="m", model="a"
    )
    assert message["content"][0]["input"] == {"_raw_arguments": '{"city": "Par'}
    assert message["content"][1]["input"] == {"_raw_arguments": "[1, 2]"}
    Message.model_validate(message)


def test_stop_sequence_named_by_the_upstream():
    chat = completion("The answer is 4", stop_reason="###")  # vLLM names the matched stop string
    message = translation.from_chat(chat, message_id="m", model="a", stop_sequences=["###", "END"])
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "###")
    assert message["content"][0]["text"] == "The answer is 4"
    Message.model_validate(message)


def test_stop_sequence_left_at_the_end_of_the_text_is_cut_and_reported():
    message = translation.from_chat(
        completion("The answer is 4END"), message_id="m", model="a", stop_sequences=["###", "END"]
    )
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")
    assert message["content"] == [{"type": "text", "text": "The answer is 4"}]


def test_plain_stop_without_a_match_is_end_turn():
    message = translation.from_chat(completion("The answer is 4"), message_id="m", model="a", stop_sequences=["###"])
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)


def test_content_filter_is_refusal():
    message = translation.from_chat(completion("", finish_reason="content_filter"), message_id="m", model="a")
    assert message["stop_reason"] == "refusal" and message["content"] == []
    Message.model_validate(message)


def test_missing_usage_is_estimated():
    message = translation.from_chat(completion("x" * 40, usage={}), message_id="m", model="a", input_tokens=7)
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 10}


# --- streaming -----------------------------------------------------------------------------------------------------


def new_stream(**kwargs) -> StreamTranslator:
    return StreamTranslator(message_id="msg_stream", model="rainymodel/chat", input_tokens=9, **kwargs)


def test_text_stream_is_translated_chunk_by_chunk():
    t = new_stream()
    frames = t.start()
    assert [name for name, _ in parse_events(frames)] == ["message_start", "ping"]
    first = t.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    assert first == []  # nothing to say yet: no empty block is opened
    per_chunk = [t.feed(chunk(piece)) for piece in ("Hel", "lo", " world")]
    # Each text piece is sent at once: the first chunk opens the block and carries its delta.
    assert [name for name, _ in parse_events(per_chunk[0])] == ["content_block_start", "content_block_delta"]
    assert [len(frames_) for frames_ in per_chunk[1:]] == [1, 1]
    last = t.feed(chunk(finish_reason="stop"))
    last += t.feed({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})
    end = t.finish()
    assert [name for name, _ in parse_events(end)] == ["content_block_stop", "message_delta", "message_stop"]
    frames += first + [f for fs in per_chunk for f in fs] + last + end
    message = sdk_message(frames)
    assert message.id == "msg_stream" and message.model == "rainymodel/chat"
    assert [block.text for block in message.content] == ["Hello world"]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    assert t.delivered_text == "Hello world"


def test_tool_use_stream_with_partial_json():
    t = new_stream()
    frames = t.start()
    frames += t.feed(chunk("Checking."))
    frames += t.feed(
        chunk(
            tool_calls=[
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]
        )
    )
    frames += t.feed(chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"ci'}}]))
    frames += t.feed(chunk(tool_calls=[{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]))
    frames += t.feed(
        chunk(
            tool_calls=[
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                }
            ]
        )
    )
    frames += t.feed(chunk(finish_reason="tool_calls"))
    frames += t.finish()
    events = parse_events(frames)
    starts = [(data["index"], data["content_block"]) for name, data in events if name == "content_block_start"]
    assert starts == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        (2, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
    ]
    pieces = [
        data["delta"]["partial_json"] for name, data in events if name == "content_block_delta" and data["index"] == 1
    ]
    assert pieces == ['{"ci', 'ty": "Paris"}']
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == [0, 1, 2]
    message = sdk_message(frames)
    assert message.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("text", None),
        ("tool_use", {"city": "Paris"}),
        ("tool_use", {"tz": "CET"}),
    ]


def test_tool_arguments_for_a_closed_block_are_refused():
    t = new_stream()
    t.start()
    t.feed(chunk(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]))
    t.feed(chunk(tool_calls=[{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]))
    with pytest.raises(translation.StreamOutOfOrder):
        t.feed(chunk(tool_calls=[{"index": 0, "function": {"arguments": "}"}}]))


def test_complete_tool_calls_all_at_index_0_become_separate_blocks():
    t = new_stream()
    frames = t.start()
    frames += t.feed(chunk(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x": 1}'}}]))
    frames += t.feed(chunk(tool_calls=[{"index": 0, "id": "b", "function": {"name": "g", "arguments": '{"y": 2}'}}]))
    frames += t.feed(chunk(finish_reason="stop"))  # Ollama says stop after tool calls
    message = sdk_message(frames + t.finish())
    assert [(b.id, b.name, b.input) for b in message.content] == [("a", "f", {"x": 1}), ("b", "g", {"y": 2})]
    assert message.stop_reason == "tool_use"


def test_stream_stop_sequence_named_by_the_upstream():
    t = new_stream(stop_sequences=["###"])
    frames = t.start() + t.feed(chunk("4")) + t.feed(chunk(finish_reason="stop", stop_reason="###")) + t.finish()
    message = sdk_message(frames)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "###")


def test_stream_stop_sequence_seen_at_the_end_of_the_text():
    t = new_stream(stop_sequences=["</answer>"])
    frames = t.start() + t.feed(chunk("4</ans")) + t.feed(chunk("wer>")) + t.feed(chunk(finish_reason="stop"))
    message = sdk_message(frames + t.finish())
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "</answer>")


def test_stream_max_tokens():
    t = new_stream()
    frames = t.start() + t.feed(chunk("Once upon a")) + t.feed(chunk(finish_reason="length"))
    message = sdk_message(frames + t.finish({"prompt_tokens": 5, "completion_tokens": 3}))
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_stream_without_usage_estimates_output_tokens():
    t = new_stream()
    frames = t.start() + t.feed(chunk("x" * 20)) + t.feed(chunk(finish_reason="stop")) + t.finish()
    message = sdk_message(frames)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 5)
    assert t.usage_estimated


def test_usage_from_a_chunk_is_not_an_estimate():
    t = new_stream()
    t.start()
    t.feed(chunk("Hi", finish_reason="stop", usage={"prompt_tokens": 4, "completion_tokens": 1}))
    assert not t.usage_estimated


def test_failure_mid_stream_ends_with_an_error_event_and_no_message_stop():
    t = new_stream()
    frames = t.start() + t.feed(chunk("Partial ans"))
    failed = t.fail("api_error", "The upstream stream broke and could not be continued.")
    assert len(failed) == 1
    assert failed[0].startswith(b"event: error\ndata: ") and failed[0].endswith(b"\n\n")
    error = ErrorResponse.model_validate(orjson.loads(failed[0].split(b"data: ", 1)[1]))
    assert error.error.type == "api_error"
    # Nothing can follow a failure: no block stop, no message_stop, however the caller goes on.
    assert t.finish() == [] and t.feed(chunk("more")) == [] and t.fail("api_error", "again") == []
    names = [name for name, _ in parse_events(frames + failed)]
    assert "message_stop" not in names and names[-1] == "error"


def test_nothing_follows_finish():
    t = new_stream()
    t.start()
    t.finish()
    assert t.feed(chunk("late")) == [] and t.finish() == [] and t.fail("api_error", "x") == []


def test_empty_stream_is_still_a_valid_message():
    t = new_stream()
    message = sdk_message(t.start() + t.feed(chunk(finish_reason="stop")) + t.finish())
    assert message.content == [] and message.stop_reason == "end_turn"


def test_other_choices_and_reasoning_deltas_are_not_relayed():
    t = new_stream()
    t.start()
    assert t.feed({"choices": [{"index": 1, "delta": {"content": "other"}}]}) == []
    assert t.feed({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]}) == []


def test_sse_frames_read_back_with_the_projects_parser():
    from routing.proxy.sse import SSEParser

    t = new_stream()
    frames = t.start() + t.feed(chunk("Hi")) + t.feed(chunk(finish_reason="stop")) + t.finish()
    payloads = SSEParser().feed(b"".join(frames))
    assert [orjson.loads(p)["type"] for p in payloads] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


# --- count_tokens, ids ---------------------------------------------------------------------------------------------


def test_count_tokens_estimates_like_outcomes_estimate_tokens():
    from routing.proxy.outcomes import estimate_tokens

    body = {"model": "m", "system": "x" * 10, "messages": [{"role": "user", "content": "y" * 30}]}
    assert translation.count_tokens(body) == {"input_tokens": estimate_tokens(40)}
    assert translation.estimate_tokens(41) == estimate_tokens(41) and translation.estimate_tokens(0) == 0


def test_count_tokens_counts_tools_and_images():
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    plain = translation.count_tokens({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    with_tools = translation.count_tokens(
        {"model": "m", "tools": [WEATHER_TOOL], "messages": [{"role": "user", "content": "hi"}]}
    )
    with_image = translation.count_tokens(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]}
    )
    assert with_tools["input_tokens"] > plain["input_tokens"]
    assert with_image["input_tokens"] == plain["input_tokens"] + translation.IMAGE_TOKENS
    anthropic.types.MessageTokensCount.model_validate(with_image)


def test_count_tokens_validates_like_messages():
    with pytest.raises(AnthropicError) as raised:
        translation.count_tokens({"model": "m", "messages": []})
    assert raised.value.status == 400 and raised.value.message.startswith("messages: ")


def test_the_module_is_pure():
    """No Django, no httpx, nothing of the project: importing it alone must not pull them in."""
    code = (
        "import sys; import routing.proxy.translation.anthropic; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'httpx', 'rest_framework', "
        "'redis', 'apikeys', 'usage', 'rainymodel_site') or m in ('routing.models', 'routing.snapshot')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[4],
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert result.stdout.strip() == "[]"


def test_ids_look_like_anthropics():
    ids = {translation.new_message_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("msg_") and len(i) == 28 and i[4:].isalnum() for i in ids)
    assert translation.new_tool_use_id().startswith("toolu_")
