"""Anthropic Messages API (`POST /v1/messages`) served from chat-completions upstreams: the translation, as pure
functions over parsed JSON (issue 13).

    to_chat(body)            validate a Messages request, build the chat-completions payload (or AnthropicError)
    from_chat(chat, ...)     a non-streamed chat completion -> an Anthropic `message`
    StreamTranslator         chat chunks -> Anthropic SSE events, chunk by chunk (start / feed / finish / fail)
    count_tokens(body)       `POST /v1/messages/count_tokens`: an estimate
    error_for_status(...)    our OpenAI-style errors (status, code) -> AnthropicError, for every error path

It must never do I/O: no Django, no httpx, no settings, no clock, no logging of bodies; only the stdlib and orjson,
so the request path can call it per request and tests can call it without a server.

Decisions (the docs in docs/api.md, "Anthropic Messages API" say the same to users):
- `model` in answers is the `model` the caller passes: the alias the client asked for, because Anthropic clients
  (Claude Code, the SDK) compare it with what they sent; the upstream model is in the response headers and log.
- `top_k` is validated and then dropped: chat completions has no such field and strict upstreams reject unknown
  fields. `thinking`, `cache_control`, `container`, `service_tier`, `mcp_servers` are ignored (see the docs).
- Tool arguments that are not a JSON object (some small models emit broken JSON) are kept, not lost:
  `input = {"_raw_arguments": "<the string>"}`, so the client's tool fails visibly instead of running with `{}`.
- `stop_sequence`: chat completions says only `finish_reason: "stop"`. We report `stop_sequence` when the upstream
  names the match (vLLM's `choices[].stop_reason`, SGLang's `matched_stop`) or when the text ends with one of the
  client's `stop_sequences` (some upstreams keep it; it is then cut from the text, as Anthropic does, in
  non-streamed answers; a stream cannot take back sent text). Otherwise `end_turn`.
- An upstream that reports `finish_reason: "stop"` after emitting tool calls (Ollama does) gives `tool_use`.
- `content_filter` becomes `refusal`. Reasoning deltas (`reasoning_content`) are not relayed (no thinking blocks).

References checked (docs corpus, Nov 2026): docs.claude.com/en/api/errors (status -> error type, error shape),
docs.anthropic.com/en/api/messages-streaming (event flow: message_start, content blocks with start / delta / stop
and `index`, message_delta, message_stop, ping; `error` events mid-stream), platform.claude.com/docs/en/
build-with-claude/handling-stop-reasons (stop_reason values), and the anthropic Python SDK 2.14 types
(Message, RawMessageStreamEvent, ErrorType incl. `timeout_error` for 504, ToolChoice* with
`disable_parallel_tool_use`), which the tests validate our output against.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

import orjson

# --- errors -------------------------------------------------------------------------------------------------------

# docs.claude.com/en/api/errors; 504 is the SDK's GatewayTimeoutError ("timeout_error"). Anthropic documents no
# 502/503: a 502 (every upstream failed) is an api_error, a 503 (no route can take it now) is the "temporarily
# overloaded, retry" case the anthropic SDK retries, i.e. overloaded_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicError(Exception):
    """An error to answer in Anthropic's shape: {"type": "error", "error": {"type": ..., "message": ...}}."""

    def __init__(self, status: int, type: str, message: str):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    def body(self) -> bytes:
        return error_body(self.type, self.message)


def error_body(type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type, "message": message}})


def error_type_for(status: int) -> str:
    """Anthropic's error type for an HTTP status: other 4xx are invalid_request_error (as Anthropic documents),
    other 5xx api_error."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_for_status(status: int, message: str, code: str | None = None) -> AnthropicError:
    """Our error (an ApiError's status, message and OpenAI `code`) in Anthropic's shape, status unchanged. Headers
    such as `retry-after` are the caller's to keep: this only builds the body."""
    if code == "request_too_large":
        return AnthropicError(413, "request_too_large", message)
    return AnthropicError(status, error_type_for(status), message)


def _invalid(param: str, problem: str) -> AnthropicError:
    return AnthropicError(400, "invalid_request_error", f"{param}: {problem}")


# --- request: Messages -> chat completions ----------------------------------------------------------------------

ROLES = ("user", "assistant")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
# The characters both Anthropic and OpenAI allow in a tool name. The length is kept generous (long MCP names such as
# mcp__server__tool): the upstream enforces its own limit and its 400 reaches the client.
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
IMAGE_TOKENS = 1600  # Anthropic's per-image cost is about width*height/750, capped near 1600 tokens


def to_chat(body: Any) -> dict:
    """Validate an Anthropic Messages request and return the chat-completions payload for the upstream.

    Raises AnthropicError(400, "invalid_request_error", "<path>: <problem>") for anything malformed, with the path
    in Anthropic's dotted style (`messages.1.content.0.tool_use_id`). Fields not listed here are dropped, never
    forwarded: an unknown Anthropic field means nothing to a chat upstream.
    """
    _check_object(body, "body")
    chat: dict[str, Any] = {"model": _required_string(body, "model")}
    chat["max_tokens"] = _max_tokens(body)
    messages = _system_messages(body.get("system"))
    tools = _tools(body.get("tools"))
    messages.extend(_messages(body.get("messages", _MISSING)))
    chat["messages"] = messages
    if tools:
        chat["tools"] = tools
    _tool_choice(body.get("tool_choice"), tools, chat)
    stop = _stop_sequences(body.get("stop_sequences"))
    if stop:
        chat["stop"] = stop
    for field, maximum in (("temperature", 1.0), ("top_p", 1.0)):
        value = body.get(field)
        if value is not None:
            chat[field] = _number(value, field, 0.0, maximum)
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _invalid("top_k", "Input should be a non-negative integer")
    user = _metadata_user(body.get("metadata"))
    if user is not None:
        chat["user"] = user
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a valid boolean")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_object(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise _invalid(param, "Input should be a valid dictionary")


def _required_string(obj: dict, field: str, param: str | None = None) -> str:
    param = param or field
    value = obj.get(field, _MISSING)
    if value is _MISSING or value is None:
        raise _invalid(param, "Field required")
    if not isinstance(value, str):
        raise _invalid(param, "Input should be a valid string")
    if not value:
        raise _invalid(param, "String should have at least 1 character")
    return value


def _max_tokens(body: dict) -> int:
    value = body.get("max_tokens", _MISSING)
    if value is _MISSING or value is None:
        raise _invalid("max_tokens", "Field required")
    if not _is_int(value):
        raise _invalid("max_tokens", "Input should be a valid integer")
    if value < 1:
        raise _invalid("max_tokens", "Input should be greater than or equal to 1")
    return value


def _number(value: Any, param: str, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(param, "Input should be a valid number")
    if not minimum <= value <= maximum:
        raise _invalid(param, f"Input should be between {minimum:g} and {maximum:g}")
    return value


def _text_of_blocks(blocks: Any, param: str) -> str:
    """A string, or a list of text blocks, as one string (blocks joined with newlines)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _invalid(param, "Input should be a valid string or a list of text blocks")
    texts = []
    for i, block in enumerate(blocks):
        texts.append(_text_block(block, f"{param}.{i}"))
    return "\n".join(texts)


def _text_block(block: Any, param: str) -> str:
    _check_object(block, param)
    if block.get("type") != "text":
        raise _invalid(f"{param}.type", "Input should be 'text'")
    text = block.get("text", _MISSING)
    if not isinstance(text, str):
        raise _invalid(f"{param}.text", "Field required" if text is _MISSING else "Input should be a valid string")
    return text


def _system_messages(system: Any) -> list[dict]:
    if system is None:
        return []
    text = _text_of_blocks(system, "system")
    return [{"role": "system", "content": text}] if text else []


def _image_url(block: dict, param: str) -> str:
    source = block.get("source", _MISSING)
    if source is _MISSING:
        raise _invalid(f"{param}.source", "Field required")
    _check_object(source, f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise _invalid(f"{param}.source.media_type", "Input should be " + ", ".join(IMAGE_MEDIA_TYPES))
        data = source.get("data")
        if not isinstance(data, str) or not data:
            raise _invalid(f"{param}.source.data", "Field required")
        return f"data:{media_type};base64,{data}"
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise _invalid(f"{param}.source.url", "Input should be an http(s) URL")
        return url
    raise _invalid(f"{param}.source.type", "Input should be 'base64' or 'url' (file sources are not supported)")


def _messages(messages: Any) -> list[dict]:
    if messages is _MISSING or messages is None:
        raise _invalid("messages", "Field required")
    if not isinstance(messages, list):
        raise _invalid("messages", "Input should be a valid list")
    if not messages:
        raise _invalid("messages", "at least one message is required")
    chat: list[dict] = []
    pending_tool_ids: list[str] = []  # tool_use ids of the previous assistant turn, awaiting their tool_result
    for i, message in enumerate(messages):
        param = f"messages.{i}"
        _check_object(message, param)
        role = message.get("role", _MISSING)
        if role is _MISSING:
            raise _invalid(f"{param}.role", "Field required")
        if role not in ROLES:
            raise _invalid(f"{param}.role", "Input should be 'user' or 'assistant'")
        content = message.get("content", _MISSING)
        if content is _MISSING or content is None:
            raise _invalid(f"{param}.content", "Field required")
        if not isinstance(content, (str, list)):
            raise _invalid(f"{param}.content", "Input should be a valid string or list of content blocks")
        if role == "assistant":
            if pending_tool_ids:
                raise _unanswered(pending_tool_ids, i)
            converted, pending_tool_ids = _assistant_message(content, param)
            chat.append(converted)
        else:
            chat.extend(_user_messages(content, param, pending_tool_ids))
            pending_tool_ids = []
    return chat


def _unanswered(tool_ids: list[str], index: int) -> AnthropicError:
    return _invalid(
        f"messages.{index}",
        "`tool_use` ids were found without `tool_result` blocks immediately after: "
        + ", ".join(tool_ids)
        + ". Each `tool_use` block must have a corresponding `tool_result` block "
        "in the next message.",
    )


def _assistant_message(content: str | list, param: str) -> tuple[dict, list[str]]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}, []
    texts: list[str] = []
    tool_calls: list[dict] = []
    for j, block in enumerate(content):
        bparam = f"{param}.content.{j}"
        _check_object(block, bparam)
        kind = block.get("type")
        if kind == "text":
            texts.append(_text_block(block, bparam))
        elif kind == "tool_use":
            tool_id = _required_string(block, "id", f"{bparam}.id")
            name = _required_string(block, "name", f"{bparam}.name")
            tool_input = block.get("input", _MISSING)
            if tool_input is _MISSING:
                raise _invalid(f"{bparam}.input", "Field required")
            _check_object(tool_input, f"{bparam}.input")
            tool_calls.append(
                {
                    "id": tool_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(tool_input).decode()},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' reasoning: chat upstreams take no such input (docs: thinking not supported)
        elif kind == "tool_result":
            raise _invalid(f"{bparam}.type", "`tool_result` blocks are only allowed in user messages")
        else:
            raise _unsupported_block(kind, f"{bparam}.type")
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    elif message["content"] is None:
        message["content"] = ""
    return message, [call["id"] for call in tool_calls]


def _unsupported_block(kind: Any, param: str) -> AnthropicError:
    if not isinstance(kind, str):
        return _invalid(param, "Field required" if kind is None else "Input should be a valid string")
    return _invalid(
        param, f"content block type '{kind}' is not supported here (supported: text, image, tool_use, tool_result)"
    )


def _user_messages(content: str | list, param: str, pending_tool_ids: list[str]) -> list[dict]:
    """The tool messages for this turn's tool_result blocks (first, in order: chat upstreams require them right
    after the assistant message with the calls), then one user message with the rest, if any."""
    if isinstance(content, str):
        if pending_tool_ids:
            raise _unanswered(pending_tool_ids, int(param.rsplit(".", 1)[1]))
        return [{"role": "user", "content": content}]
    tool_messages: list[dict] = []
    parts: list[dict] = []
    answered: set[str] = set()
    result_images: list[dict] = []
    for j, block in enumerate(content):
        bparam = f"{param}.content.{j}"
        _check_object(block, bparam)
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _text_block(block, bparam)})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, bparam)}})
        elif kind == "tool_result":
            tool_id = _required_string(block, "tool_use_id", f"{bparam}.tool_use_id")
            if tool_id not in pending_tool_ids:
                raise _invalid(
                    f"{bparam}.tool_use_id",
                    f"unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{tool_id}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message.",
                )
            answered.add(tool_id)
            text, images = _tool_result(block, bparam, tool_id)
            tool_messages.append({"role": "tool", "tool_call_id": tool_id, "content": text})
            result_images.extend(images)
        elif kind == "tool_use":
            raise _invalid(f"{bparam}.type", "`tool_use` blocks are only allowed in assistant messages")
        else:
            raise _unsupported_block(kind, f"{bparam}.type")
    missing = [tool_id for tool_id in pending_tool_ids if tool_id not in answered]
    if missing:
        raise _unanswered(missing, int(param.rsplit(".", 1)[1]))
    messages = list(tool_messages)
    parts = result_images + parts
    if parts:
        if all(part["type"] == "text" for part in parts):
            messages.append({"role": "user", "content": "\n".join(part["text"] for part in parts)})
        else:
            messages.append({"role": "user", "content": parts})
    elif not tool_messages:
        messages.append({"role": "user", "content": ""})
    return messages


def _tool_result(block: dict, param: str, tool_id: str) -> tuple[str, list[dict]]:
    """The tool message's text, and the image parts of the result. Chat tool messages carry only text, so images
    (Claude Code's Read tool returns screenshots this way) go into the user message that follows the tool
    messages, and the text says so."""
    content = block.get("content", "")
    if content is None:
        content = ""
    images: list[dict] = []
    if isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            if isinstance(inner, dict) and inner.get("type") == "image":
                images.append({"type": "image_url", "image_url": {"url": _image_url(inner, f"{param}.content.{k}")}})
            else:
                texts.append(_text_block(inner, f"{param}.content.{k}"))
        text = "\n".join(texts)
    else:
        text = _text_of_blocks(content, f"{param}.content")
    if images:
        note = f"[{len(images)} image(s) from tool result {tool_id} follow in the next user message]"
        text = f"{text}\n{note}" if text else note
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _invalid(f"{param}.is_error", "Input should be a valid boolean")
    # Chat tool messages have no error flag: say it in the text, where the model will read it.
    return (f"Error: {text}" if is_error else text), images


def _tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("tools", "Input should be a valid list")
    chat_tools = []
    for i, tool in enumerate(tools):
        param = f"tools.{i}"
        _check_object(tool, param)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _invalid(
                f"{param}.type",
                f"tool type '{kind}' is not supported: server tools (web search, code "
                "execution, computer use, ...) need Anthropic's servers; only custom "
                "tools with an input_schema work here",
            )
        name = _required_string(tool, "name", f"{param}.name")
        if not TOOL_NAME.match(name):
            raise _invalid(f"{param}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
        schema = tool.get("input_schema", _MISSING)
        if schema is _MISSING:
            raise _invalid(f"{param}.input_schema", "Field required")
        _check_object(schema, f"{param}.input_schema")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        description = tool.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise _invalid(f"{param}.description", "Input should be a valid string")
            function["description"] = description
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _tool_choice(choice: Any, tools: list[dict], chat: dict) -> None:
    if choice is None:
        return
    _check_object(choice, "tool_choice")
    kind = choice.get("type")
    if kind not in TOOL_CHOICE_TYPES:
        raise _invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "none":
        chat["tool_choice"] = "none"
        return
    if not tools:
        raise _invalid("tool_choice", f"tool_choice '{kind}' requires `tools`")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    else:
        name = _required_string(choice, "name", "tool_choice.name")
        if name not in {tool["function"]["name"] for tool in tools}:
            raise _invalid("tool_choice.name", f"tool '{name}' is not in `tools`")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        if not isinstance(disable, bool):
            raise _invalid("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean")
        if disable:
            chat["parallel_tool_calls"] = False


def _stop_sequences(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("stop_sequences", "Input should be a valid list")
    for i, sequence in enumerate(value):
        if not isinstance(sequence, str):
            raise _invalid(f"stop_sequences.{i}", "Input should be a valid string")
        if not sequence:
            raise _invalid(f"stop_sequences.{i}", "String should have at least 1 character")
    return list(value)


def _metadata_user(metadata: Any) -> str | None:
    if metadata is None:
        return None
    _check_object(metadata, "metadata")
    user_id = metadata.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise _invalid("metadata.user_id", "Input should be a valid string")
    return user_id or None


# --- token estimate ------------------------------------------------------------------------------------------------


def estimate_tokens(text_chars: int) -> int:
    """The rule of routing/proxy/outcomes.estimate_tokens (about 4 characters a token), kept here so this module
    imports nothing impure."""
    return max(1, (text_chars + 3) // 4) if text_chars else 0


def count_tokens(body: Any) -> dict:
    """`POST /v1/messages/count_tokens`: {"input_tokens": N}, an estimate over the chat payload the request would
    become (system, messages, tool calls and results, tool definitions) plus IMAGE_TOKENS per image. The body is
    validated like a Messages request, except that `max_tokens` is not required."""
    _check_object(body, "body")
    chat = to_chat({**body, "max_tokens": 1, "stream": False})
    chars = 0
    images = 0
    for message in chat["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if part["type"] == "text":
                    chars += len(part["text"])
                else:
                    images += 1
        for call in message.get("tool_calls", ()):
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    if chat.get("tools"):
        chars += len(orjson.dumps(chat["tools"]))
    return {"input_tokens": estimate_tokens(chars) + images * IMAGE_TOKENS}


ID_ALPHABET = string.ascii_letters + string.digits  # Anthropic ids look like msg_01XFDUDYJgAACzvnptvVoYEL


def new_message_id() -> str:
    return "msg_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(24))


def new_tool_use_id() -> str:
    return "toolu_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(24))


# --- response: chat completion -> message ------------------------------------------------------------------------

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _matched_stop(choice: dict, stop_sequences: list[str] | None) -> str | None:
    """The client's stop sequence the upstream says it stopped on (vLLM `stop_reason`, SGLang `matched_stop`)."""
    if not stop_sequences:
        return None
    for field in ("stop_reason", "matched_stop"):
        value = choice.get(field)
        if isinstance(value, str) and value in stop_sequences:
            return value
    return None


def _stop_reason(finish_reason: Any, has_tool_use: bool) -> str:
    if has_tool_use and finish_reason in (None, "stop", "tool_calls", "function_call"):
        return "tool_use"
    return STOP_REASONS.get(finish_reason, "end_turn")


def tool_input(arguments: Any) -> dict:
    """Tool-call arguments (a JSON string) as the object Anthropic's `input` must be; see the module docstring."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        return {"_raw_arguments": arguments if isinstance(arguments, str) else str(arguments)}
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def from_chat(
    chat_response: dict, *, message_id: str, model: str, stop_sequences: list[str] | None = None, input_tokens: int = 0
) -> dict:
    """A non-streamed chat completion as an Anthropic `message`. `model` is what the client asked for;
    `stop_sequences` are the client's (for the stop_sequence heuristic); `input_tokens` is used when the upstream
    reports no usage."""
    choices = chat_response.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    text = message.get("content")
    text = text if isinstance(text, str) else ""
    finish_reason = choice.get("finish_reason")
    stop_sequence = None
    tool_calls = [call for call in (message.get("tool_calls") or []) if isinstance(call, dict)]
    if finish_reason == "stop" and not tool_calls:
        stop_sequence = _matched_stop(choice, stop_sequences)
        if stop_sequence is None:
            for sequence in stop_sequences or ():
                if text.endswith(sequence):
                    stop_sequence, text = sequence, text[: -len(sequence)]
                    break
    content: list[dict] = []
    if text:
        content.append({"type": "text", "text": text})
    for call in tool_calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_tool_use_id(),
                "name": function.get("name") or "",
                "input": tool_input(function.get("arguments")),
            }
        )
    stop_reason = "stop_sequence" if stop_sequence else _stop_reason(finish_reason, bool(tool_calls))
    usage = chat_response.get("usage") or {}
    output_chars = len(text) + sum(
        len(orjson.dumps(block.get("input"))) for block in content if block["type"] == "tool_use"
    )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": _int(usage.get("prompt_tokens"), input_tokens),
            "output_tokens": _int(usage.get("completion_tokens"), estimate_tokens(output_chars)),
        },
    }


def _int(value: Any, default: int) -> int:
    return value if _is_int(value) and value >= 0 else default


# --- streaming: chat chunks -> Anthropic events ---------------------------------------------------------------------


def sse(type: str, payload: dict) -> bytes:
    """One Anthropic SSE event: `event: <type>` and the JSON data, which carries the same `type`."""
    return b"event: " + type.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class StreamOutOfOrder(Exception):
    """The upstream sent argument pieces for a tool call whose block is already closed: Anthropic blocks are
    sequential, so this cannot be relayed; the caller treats it as a broken stream."""


class StreamTranslator:
    """Chat-completion chunks in, Anthropic stream events out, one chunk at a time and never buffering text.

        t = StreamTranslator(message_id=new_message_id(), model=alias, input_tokens=estimate)
        send(t.start())                       # message_start, ping
        for chunk in upstream_chunks: send(t.feed(chunk))
        send(t.finish(usage))                 # content_block_stop, message_delta, message_stop
    or, when the stream breaks and cannot be continued: send(t.fail("api_error", "...")) — an `error` event and no
    message_stop. After finish or fail, every call returns [].

    Only choice 0 is translated (Anthropic has no `n`). The text the client has received is `delivered_text`, so a
    caller continuing a broken stream elsewhere can splice as it does for chat.
    """

    def __init__(self, *, message_id: str, model: str, input_tokens: int = 0, stop_sequences: list[str] | None = None):
        self.message_id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self.stop_sequences = stop_sequences or []
        self.finish_reason: str | None = None
        self.matched_stop: str | None = None
        self.usage: dict | None = None
        self.delivered_text = ""
        self._tail = ""  # the last characters sent, enough to see a stop sequence at the end
        self._output_chars = 0
        self._index = -1  # index of the open block, -1 before the first
        self._open: str | None = None  # "text" or "tool_use"
        self._tool_ids: dict[int, str] = {}  # chat tool_calls[].index -> the id of the call its block holds
        self._open_tool: int | None = None
        self._has_tool_use = False
        self._ended = False

    def start(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [sse("message_start", {"type": "message_start", "message": message}), sse("ping", {"type": "ping"})]

    def feed(self, chunk: dict) -> list[bytes]:
        if self._ended or not isinstance(chunk, dict):
            return []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices") or []
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None:
            return []
        events: list[bytes] = []
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            events.extend(self._text(text))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events.extend(self._tool_call(call))
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            self.finish_reason = finish_reason
            self.matched_stop = _matched_stop(choice, self.stop_sequences)
        return events

    def _text(self, text: str) -> list[bytes]:
        events = []
        if self._open != "text":
            events.extend(self._close())
            events.append(self._open_block("text", {"type": "text", "text": ""}))
        self.delivered_text += text
        self._output_chars += len(text)
        longest = max((len(s) for s in self.stop_sequences), default=0)
        self._tail = (self._tail + text)[-longest:] if longest else ""
        events.append(
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": {"type": "text_delta", "text": text}},
            )
        )
        return events

    def _tool_call(self, call: dict) -> list[bytes]:
        events = []
        chat_index = call.get("index", 0)
        function = call.get("function") or {}
        call_id = call.get("id")
        # A new call: an index not seen yet, or a seen index with another id (some upstreams send each complete
        # call with index 0); pieces after the first carry no id and belong to the call open at that index.
        if chat_index not in self._tool_ids or (call_id and call_id != self._tool_ids[chat_index]):
            events.extend(self._close())
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id or new_tool_use_id(),
                "name": function.get("name") or "",
                "input": {},
            }
            events.append(self._open_block("tool_use", block))
            self._tool_ids[chat_index] = block["id"]
            self._open_tool = chat_index
            self._has_tool_use = True
        elif self._open_tool != chat_index:
            raise StreamOutOfOrder(f"arguments for tool call {chat_index} arrived after its block was closed")
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._output_chars += len(arguments)
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append(
                sse("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
            )
        return events

    def _open_block(self, kind: str, block: dict) -> bytes:
        self._index += 1
        self._open = kind
        return sse("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        self._open_tool = None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    @property
    def usage_estimated(self) -> bool:
        """True when no chunk carried usage, so output tokens are the estimate (the log's `usage_estimated`)."""
        return self.usage is None

    def stop_reason(self) -> tuple[str, str | None]:
        """(stop_reason, stop_sequence) for what has been seen so far."""
        if not self._has_tool_use and self.finish_reason in (None, "stop"):
            matched = self.matched_stop or next((s for s in self.stop_sequences if self._tail.endswith(s)), None)
            if matched:
                return "stop_sequence", matched
        return _stop_reason(self.finish_reason, self._has_tool_use), None

    def finish(self, usage: dict | None = None) -> list[bytes]:
        """End the message: close the open block, then message_delta (stop_reason, output tokens: the upstream's
        usage if given or seen in a chunk, else an estimate) and message_stop."""
        if self._ended:
            return []
        self._ended = True
        usage = usage if isinstance(usage, dict) else (self.usage or {})
        stop_reason, stop_sequence = self.stop_reason()
        output_tokens = _int(usage.get("completion_tokens"), estimate_tokens(self._output_chars))
        delta_usage = {"output_tokens": output_tokens}
        if _is_int(usage.get("prompt_tokens")):
            delta_usage["input_tokens"] = usage["prompt_tokens"]
        return [
            *self._close(),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": delta_usage,
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]

    def fail(self, type: str, message: str) -> list[bytes]:
        """A broken stream: one `error` event in Anthropic's shape, and nothing after it."""
        if self._ended:
            return []
        self._ended = True
        return [b"event: error\ndata: " + error_body(type, message) + b"\n\n"]
