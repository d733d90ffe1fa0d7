"""Request-body validation for `POST /v1/chat/completions`: the checks OpenAI's API makes on the fields clients
commonly send, with OpenAI's codes, `param` paths and wording (SPEC §5.1).

Why it matters here: fields such as `max_tokens` feed the tokens-per-minute estimate and quota checks, so a value
of the wrong type (5000.0, "5000", 1e30, true) must be a 400 `invalid_type`, never a way around a limit, and a
malformed body is refused here instead of costing an upstream attempt on every route of the chain.

Pure functions over the parsed JSON: no Django settings, no database, no I/O, cheap enough for the request path
(a dict lookup per field the client sent). Only the fields listed in FIELD_CHECKS (and the messages) are
checked; every other field, unknown future ones included, passes through untouched (SPEC §5.6). A null value is
accepted wherever OpenAI accepts one for an optional field.

Hand-written rather than a JSON Schema: a schema validator's errors would have to be translated back into
OpenAI's codes and `param` paths anyway, and it would cost more per request than these few type checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from rainymodel_site.api_errors import ApiError
from routing.proxy.wording import invalid_value_message, wrong_type_message

MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
TOOL_CHOICE_MODES = ("none", "auto", "required")
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 128
MAX_TOP_LOGPROBS = 20


class InvalidRequest(ApiError):
    """A 400 in OpenAI's shape: `code` is OpenAI's (`invalid_type`, `invalid_value`, ...), `param` the JSON path."""

    def __init__(self, code: str, message: str, param: str | None):
        super().__init__(400, code, message, param=param)


def validate_chat_completion(payload: dict) -> None:
    """Raise InvalidRequest for the first field of a chat-completions body that OpenAI would refuse.

    `payload` is the decoded JSON object. Checks `model`, `messages` (and each message's role, content and
    tool-call id), then the optional fields of FIELD_CHECKS that are present and not null.
    """
    if "model" not in payload:
        raise _missing("model")
    if not isinstance(payload["model"], str) or not payload["model"].strip():
        raise InvalidRequest("invalid_type", "'model' must be a non-empty string.", "model")
    if "messages" not in payload:
        raise _missing("messages")
    messages = payload["messages"]
    # SPEC §5.1 names invalid_type for an empty list (OpenAI itself says `empty_array`).
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("invalid_type", "'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        check_message(message, f"messages[{index}]")
    for name, check in FIELD_CHECKS.items():
        value = payload.get(name)
        if value is not None:
            check(value, name)


def check_message(message: Any, param: str) -> None:
    if not isinstance(message, dict):
        raise _wrong_type(param, "an object", message)
    if "role" not in message:
        raise _missing(f"{param}.role")
    role = message["role"]
    if not isinstance(role, str):
        raise _wrong_type(f"{param}.role", "a string", role)
    if role not in MESSAGE_ROLES:
        raise _invalid_value(f"{param}.role", role, MESSAGE_ROLES)
    content = message.get("content")
    if content is None:
        # OpenAI requires content except on assistant messages that carry tool or function calls instead.
        if role != "assistant" and role != "function":
            raise _missing(f"{param}.content")
    elif isinstance(content, list):
        for index, part in enumerate(content):
            part_param = f"{param}.content[{index}]"
            if not isinstance(part, dict):
                raise _wrong_type(part_param, "an object", part)
            if "type" not in part:
                raise _missing(f"{part_param}.type")
            if not isinstance(part["type"], str):
                raise _wrong_type(f"{part_param}.type", "a string", part["type"])
    elif not isinstance(content, str):
        raise _wrong_type(f"{param}.content", "a string or an array", content)
    if role == "tool":
        if "tool_call_id" not in message:
            raise _missing(f"{param}.tool_call_id")
        check_string(message["tool_call_id"], f"{param}.tool_call_id")
    if message.get("name") is not None:
        check_string(message["name"], f"{param}.name")
    if message.get("tool_calls") is not None:
        calls = message["tool_calls"]
        check_array(calls, f"{param}.tool_calls")
        for index, call in enumerate(calls):
            if not isinstance(call, dict):
                raise _wrong_type(f"{param}.tool_calls[{index}]", "an object", call)


# Field checkers: each takes the value and its param path, and raises InvalidRequest or returns.


def check_bool(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        raise _wrong_type(param, "a boolean", value)


def check_string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise _wrong_type(param, "a string", value)


def check_object(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise _wrong_type(param, "an object", value)


def check_array(value: Any, param: str) -> None:
    if not isinstance(value, list):
        raise _wrong_type(param, "an array", value)


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any, str], None]:
    """A checker for a JSON integer (not a decimal number, string or boolean) within [minimum, maximum]."""

    def check(value: Any, param: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(param, "an integer", value)
        if minimum is not None and value < minimum:
            raise InvalidRequest(
                "integer_below_min_value",
                f"Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, "
                f"but got {value} instead.",
                param,
            )
        if maximum is not None and value > maximum:
            raise InvalidRequest(
                "integer_above_max_value",
                f"Invalid '{param}': integer above maximum value. Expected a value <= {maximum}, "
                f"but got {value} instead.",
                param,
            )

    return check


def number(minimum: float, maximum: float) -> Callable[[Any, str], None]:
    """A checker for a JSON number (integer or decimal, not a string or boolean) within [minimum, maximum]."""

    def check(value: Any, param: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong_type(param, "a number", value)
        if value < minimum:
            raise InvalidRequest(
                "decimal_below_min_value",
                f"Invalid '{param}': decimal below minimum value. Expected a value >= {minimum:g}, "
                f"but got {value} instead.",
                param,
            )
        if value > maximum:
            raise InvalidRequest(
                "decimal_above_max_value",
                f"Invalid '{param}': decimal above maximum value. Expected a value <= {maximum:g}, "
                f"but got {value} instead.",
                param,
            )

    return check


def check_stop(value: Any, param: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _wrong_type(param, "a string or an array", value)
    if len(value) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            "array_above_max_length",
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{MAX_STOP_SEQUENCES}, but got an array with length {len(value)} instead.",
            param,
        )
    for index, item in enumerate(value):
        check_string(item, f"{param}[{index}]")


def check_stream_options(value: Any, param: str) -> None:
    check_object(value, param)
    if value.get("include_usage") is not None:
        check_bool(value["include_usage"], f"{param}.include_usage")


def check_tools(value: Any, param: str) -> None:
    check_array(value, param)
    for index, tool in enumerate(value):
        tool_param = f"{param}[{index}]"
        check_object(tool, tool_param)
        if "type" not in tool:
            raise _missing(f"{tool_param}.type")
        check_string(tool["type"], f"{tool_param}.type")
        if tool["type"] == "function":
            if "function" not in tool:
                raise _missing(f"{tool_param}.function")
            function = tool["function"]
            check_object(function, f"{tool_param}.function")
            if "name" not in function:
                raise _missing(f"{tool_param}.function.name")
            check_string(function["name"], f"{tool_param}.function.name")
            if function.get("parameters") is not None:
                check_object(function["parameters"], f"{tool_param}.function.parameters")


def check_tool_choice(value: Any, param: str) -> None:
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            raise _invalid_value(param, value, TOOL_CHOICE_MODES)
        return
    if not isinstance(value, dict):
        raise _wrong_type(param, "a string or an object", value)
    if "type" not in value:
        raise _missing(f"{param}.type")
    check_string(value["type"], f"{param}.type")


def check_response_format(value: Any, param: str) -> None:
    check_object(value, param)
    if "type" not in value:
        raise _missing(f"{param}.type")
    kind = value["type"]
    check_string(kind, f"{param}.type")
    if kind not in RESPONSE_FORMAT_TYPES:
        raise _invalid_value(f"{param}.type", kind, RESPONSE_FORMAT_TYPES)
    if kind == "json_schema":
        if "json_schema" not in value:
            raise _missing(f"{param}.json_schema")
        schema = value["json_schema"]
        check_object(schema, f"{param}.json_schema")
        if "name" not in schema:
            raise _missing(f"{param}.json_schema.name")
        check_string(schema["name"], f"{param}.json_schema.name")


FIELD_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "stream": check_bool,
    "stream_options": check_stream_options,
    "max_tokens": integer(minimum=1),
    "max_completion_tokens": integer(minimum=1),
    "n": integer(minimum=1, maximum=MAX_CHOICES),
    "seed": integer(),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "logprobs": check_bool,
    "top_logprobs": integer(minimum=0, maximum=MAX_TOP_LOGPROBS),
    "logit_bias": check_object,
    "stop": check_stop,
    "tools": check_tools,
    "tool_choice": check_tool_choice,
    "parallel_tool_calls": check_bool,
    "response_format": check_response_format,
    "user": check_string,
    "metadata": check_object,
}


def client_ip(remote_addr: str | None) -> str | None:
    """The client address as logged and rate-limited: REMOTE_ADDR, which the ASGI server set from the peer or,
    for a trusted proxy (FORWARDED_ALLOW_IPS), from X-Forwarded-For. A trusted proxy can still pass on whatever the
    client wrote there, so anything that is not an IP address is dropped: a PostgreSQL `inet` column would refuse
    the call's log row."""
    if not remote_addr:
        return None
    try:
        return str(ipaddress.ip_address(remote_addr))
    except ValueError:
        return None


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest("invalid_type", wrong_type_message(param, expected, value), param)


def _invalid_value(param: str, value: Any, supported: tuple[str, ...]) -> InvalidRequest:
    return InvalidRequest("invalid_value", invalid_value_message(value, supported), param)
