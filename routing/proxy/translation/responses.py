"""The OpenAI Responses API (`POST /v1/responses`) served from a chat-completions upstream, by translation.

- `to_chat(body, previous=...)` validates a Responses request and builds the chat-completions payload;
- `from_chat(...)` turns a non-streamed chat completion into a `response` object;
- `StreamTranslator` turns chat-completion chunks, one at a time, into the Responses event stream;
- `new_response_id`, `input_items`, `items_for_storage`, `estimate_input_chars` are what the request path needs to
  log, limit and store a call.

Pure: stdlib + orjson only. No Django, no database, no httpx, no I/O, so every function is tested without a
server (tests/routing/proxy/translation/test_responses.py) and costs the request path only dict work. It must
never buffer streamed text: each chunk's text leaves as a delta event in the same `feed` call.

Bad input raises `ResponsesRequestError` (status, code, message, param) in the words OpenAI's own 400s use (the
wording of routing/proxy/validation.py). It does not subclass routing.proxy.errors.ApiError because that module
imports django.http and rest_framework; the request path turns it into an ApiError with `as_api_error` semantics:
`ApiError(e.status, e.code, e.message, param=e.param)`.

What was checked, and where:
- Request fields, item types (`message`, `function_call`, `function_call_output`), content parts (`input_text`,
  `input_image`, `output_text`), flat function tools, `tool_choice`, `text.format`: OpenAI API reference "Create a
  model response" (platform.openai.com/docs/api-reference/responses/create) and the openai-python 3.57 types in
  openai/types/responses (response_create_params.py, response_input_item_param.py, function_tool.py).
- The `response` object: openai/types/responses/response.py. `output_text` there is an SDK @property that joins
  the output_text parts, not a wire field, so it is not sent. `usage` is response_usage.py (input_tokens,
  output_tokens, total_tokens, input_tokens_details.cached_tokens and .cache_write_tokens (both required by the
  3.57 SDK types), output_tokens_details.reasoning_tokens).
- Stream events, names and fields: developers.openai.com/api/reference/resources/responses/streaming-events and
  openai/types/responses/response_stream_event.py: response.created, response.in_progress,
  response.output_item.added, response.content_part.added, response.output_text.delta (with `logprobs: []`),
  response.output_text.done, response.content_part.done, response.output_item.done,
  response.function_call_arguments.delta/.done, response.completed | response.incomplete | response.failed; every
  event carries `sequence_number`, increasing from 0. SSE framing `event: <type>\\ndata: <json>\\n\\n`.
- incomplete_details.reason is "max_output_tokens" or "content_filter" (response.py IncompleteDetails).
The tests validate every object and event built here against those pydantic types.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

import orjson

from routing.proxy.wording import invalid_value_message, wrong_type_message

# Built-in tools OpenAI runs itself; a chat-completions upstream cannot, so asking for one is a 400, never a tool
# silently dropped (the model would answer without the search/file/computer the client thinks it has).
BUILT_IN_TOOLS = (
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "web_search_2025_08_26",
    "file_search",
    "computer_use_preview",
    "computer_use",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
    "tool_search",
    "namespace",
)
TOOL_CHOICE_MODES = ("none", "auto", "required")
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
ITEM_TYPES = ("message", "function_call", "function_call_output")
TEXT_FORMAT_TYPES = ("text", "json_object", "json_schema")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
USER_PART_TYPES = ("input_text", "input_image")
ASSISTANT_PART_TYPES = ("output_text", "refusal", "input_text")
MAX_METADATA_PAIRS = 16
# Fields that ask for server-side features no chat upstream has: refused rather than ignored, because ignoring
# them changes what the client gets without telling it.
UNSUPPORTED_FIELDS = {
    "background": "background mode (queued responses polled later) is not supported; send the request without it",
    "conversation": "conversation objects are not supported; continue a response with 'previous_response_id'",
    "prompt": "stored prompt templates are not supported; send 'instructions' and 'input' instead",
}


class ResponsesRequestError(Exception):
    """A Responses request the proxy refuses: the request path returns it in OpenAI's error shape
    {"error": {"message", "type", "param", "code"}} with `status`."""

    def __init__(
        self, code: str, message: str, param: str | None, *, status: int = 400, type: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------------------------------------------
# Request: Responses → chat completions


def to_chat(body: dict, *, previous: list[dict] | None = None) -> dict:
    """Validate the Responses request `body` and return the chat-completions payload for the upstream.

    `previous` holds the stored items (input and output, in Responses item form) of the response named by
    `previous_response_id`; they come before this request's input. The `model` is passed as sent: the request
    path resolves aliases on the chat payload as it does for chat. `metadata`, `store` and
    `previous_response_id` are validated but not forwarded (they are the proxy's, not the upstream's)."""
    if not isinstance(body, dict):
        raise _wrong_type("body", "an object", body)
    for field, reason in UNSUPPORTED_FIELDS.items():
        if body.get(field) not in (None, False):
            raise ResponsesRequestError("unsupported_parameter", f"Unsupported parameter: '{field}': {reason}.", field)
    if "model" not in body:
        raise _missing("model")
    _check_string(body["model"], "model")

    chat: dict[str, Any] = {"model": body["model"]}
    messages: list[dict] = []
    instructions = body.get("instructions")
    if instructions is not None:
        _check_string(instructions, "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    items = list(previous or []) + input_items(body, allow_empty=bool(previous))
    offset = len(previous or [])
    call_ids: set[str] = set()
    for index, item in enumerate(items):
        param = f"input[{index - offset}]" if index >= offset else f"previous_response.items[{index}]"
        _append_item(messages, item, param, call_ids)
    chat["messages"] = messages

    if body.get("tools") is not None:
        tools = _chat_tools(body["tools"])
        if tools:
            chat["tools"] = tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(body["tool_choice"], "tool_choice")
    if body.get("parallel_tool_calls") is not None:
        _check_bool(body["parallel_tool_calls"], "parallel_tool_calls")
        if "tools" in chat:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("text") is not None:
        response_format = _chat_response_format(body["text"])
        if response_format is not None:
            chat["response_format"] = response_format
    if body.get("max_output_tokens") is not None:
        _check_integer(body["max_output_tokens"], "max_output_tokens", minimum=1)
        chat["max_tokens"] = body["max_output_tokens"]
    for field, maximum in (("temperature", 2), ("top_p", 1)):
        if body.get(field) is not None:
            _check_number(body[field], field, 0, maximum)
            chat[field] = body[field]
    if body.get("reasoning") is not None:
        effort = _reasoning_effort(body["reasoning"])
        if effort is not None:
            chat["reasoning_effort"] = effort
    if body.get("metadata") is not None:
        _check_metadata(body["metadata"])
    if body.get("user") is not None:
        _check_string(body["user"], "user")
        chat["user"] = body["user"]
    for field in ("store", "stream"):
        if body.get(field) is not None:
            _check_bool(body[field], field)
    if body.get("previous_response_id") is not None:
        _check_string(body["previous_response_id"], "previous_response_id")
    if body.get("include") is not None:
        _check_array(body["include"], "include")
    if body.get("truncation") is not None and body["truncation"] not in ("auto", "disabled"):
        raise _invalid_value("truncation", body["truncation"], ("auto", "disabled"))
    if body.get("stream"):
        chat["stream"] = True
        # Usage arrives only when asked for; response.completed must carry it (and the quota counts it).
        chat["stream_options"] = {"include_usage": True}
    return chat


def input_items(body: dict, *, allow_empty: bool = False) -> list[dict]:
    """The request's `input` as a list of Responses items (a string becomes one user message), checked to be a
    non-empty string or array; the items themselves are checked by `to_chat`."""
    if "input" not in body or body["input"] is None:
        if allow_empty:
            return []
        raise _missing("input")
    value = body["input"]
    if isinstance(value, str):
        if not value and not allow_empty:
            raise ResponsesRequestError(
                "empty_string",
                "Invalid 'input': empty string. Expected a string with "
                "minimum length 1, but got an empty string instead.",
                "input",
            )
        return [_user_message(value)] if value else []
    if not isinstance(value, list):
        raise _wrong_type("input", "a string or an array", value)
    if not value and not allow_empty:
        raise ResponsesRequestError(
            "empty_array",
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "input",
        )
    return value


def _user_message(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _append_item(messages: list[dict], item: Any, param: str, call_ids: set[str]) -> None:
    if not isinstance(item, dict):
        raise _wrong_type(param, "an object", item)
    kind = item.get("type")
    if kind is None:
        if "role" not in item:
            raise _missing(f"{param}.type")
        kind = "message"  # an "easy input message": {role, content} without a type
    _check_string(kind, f"{param}.type")
    if kind == "message":
        messages.append(_chat_message(item, param))
    elif kind == "function_call":
        call_id = _required_string(item, "call_id", param)
        name = _required_string(item, "name", param)
        arguments = _required_string(item, "arguments", param)
        call_ids.add(call_id)
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        last = messages[-1] if messages else None
        # Consecutive calls (parallel tool calls) and the text just before them are one assistant turn in chat.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        call_id = _required_string(item, "call_id", param)
        if "output" not in item:
            raise _missing(f"{param}.output")
        output = item["output"]
        if isinstance(output, list):
            output = _joined_text(output, f"{param}.output", ("input_text", "output_text"))
        elif not isinstance(output, str):
            raise _wrong_type(f"{param}.output", "a string or an array", output)
        if call_id not in call_ids:
            raise ResponsesRequestError(
                "invalid_value",
                f"No tool call found for function call output with call_id {call_id}.",
                f"{param}.call_id",
            )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
    else:
        raise _invalid_value(f"{param}.type", kind, ITEM_TYPES)


def _chat_message(item: dict, param: str) -> dict:
    if "role" not in item:
        raise _missing(f"{param}.role")
    role = item["role"]
    _check_string(role, f"{param}.role")
    if role not in MESSAGE_ROLES:
        raise _invalid_value(f"{param}.role", role, MESSAGE_ROLES)
    if "content" not in item:
        raise _missing(f"{param}.content")
    content = item["content"]
    # developer → system: the chat upstreams RainyModel routes to (HF, Ollama, OpenRouter) all know "system",
    # not all know "developer", and for a chat model the two mean the same.
    chat_role = "system" if role == "developer" else role
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise _wrong_type(f"{param}.content", "a string or an array", content)
    if role != "user":
        # Only user turns can carry images; system and assistant turns are text, which every upstream accepts.
        allowed = ASSISTANT_PART_TYPES if role == "assistant" else ("input_text",)
        return {"role": chat_role, "content": _joined_text(content, f"{param}.content", allowed)}
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        part_param = f"{param}.content[{index}]"
        kind = _part_type(part, part_param, USER_PART_TYPES)
        if kind == "input_text":
            parts.append({"type": "text", "text": _required_string(part, "text", part_param)})
        else:
            url = part.get("image_url")
            if url is None:
                if part.get("file_id") is not None:
                    raise ResponsesRequestError(
                        "unsupported_parameter",
                        "Unsupported parameter: 'file_id': the "
                        "Files API is not supported; send the image as 'image_url' (an "
                        "https or data: URL).",
                        f"{part_param}.file_id",
                    )
                raise _missing(f"{part_param}.image_url")
            _check_string(url, f"{part_param}.image_url")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                detail = part["detail"]
                if detail not in ("low", "high", "auto"):
                    raise _invalid_value(f"{part_param}.detail", detail, ("low", "high", "auto"))
                image["detail"] = detail
            parts.append({"type": "image_url", "image_url": image})
    if len(parts) == 1 and parts[0]["type"] == "text":
        # One text part is sent as a plain string, the form every chat upstream accepts.
        return {"role": chat_role, "content": parts[0]["text"]}
    return {"role": chat_role, "content": parts}


def _part_type(part: Any, param: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(part, dict):
        raise _wrong_type(param, "an object", part)
    if "type" not in part:
        raise _missing(f"{param}.type")
    kind = part["type"]
    _check_string(kind, f"{param}.type")
    if kind not in allowed:
        raise _invalid_value(f"{param}.type", kind, allowed)
    return kind


def _joined_text(parts: list, param: str, allowed: tuple[str, ...]) -> str:
    texts = []
    for index, part in enumerate(parts):
        part_param = f"{param}[{index}]"
        kind = _part_type(part, part_param, allowed)
        field = "refusal" if kind == "refusal" else "text"
        texts.append(_required_string(part, field, part_param))
    return "".join(texts)


def _chat_tools(value: Any) -> list[dict]:
    _check_array(value, "tools")
    tools = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        _check_object(tool, param)
        if "type" not in tool:
            raise _missing(f"{param}.type")
        kind = tool["type"]
        _check_string(kind, f"{param}.type")
        if kind in BUILT_IN_TOOLS or kind.startswith(("web_search", "computer_use")):
            raise ResponsesRequestError(
                "invalid_value",
                f"Invalid value: '{kind}'. Built-in tools are not supported "
                "by this proxy: its upstreams speak chat completions and cannot run them. "
                "Supported values are: 'function'.",
                f"{param}.type",
            )
        if kind != "function":
            raise _invalid_value(f"{param}.type", kind, ("function",))
        function = {"name": _required_string(tool, "name", param)}
        if tool.get("description") is not None:
            _check_string(tool["description"], f"{param}.description")
            function["description"] = tool["description"]
        if tool.get("parameters") is not None:
            _check_object(tool["parameters"], f"{param}.parameters")
            function["parameters"] = tool["parameters"]
        if tool.get("strict") is not None:
            _check_bool(tool["strict"], f"{param}.strict")
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    return tools


def _chat_tool_choice(value: Any, param: str) -> str | dict:
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            raise _invalid_value(param, value, TOOL_CHOICE_MODES)
        return value
    if not isinstance(value, dict):
        raise _wrong_type(param, "a string or an object", value)
    if "type" not in value:
        raise _missing(f"{param}.type")
    _check_string(value["type"], f"{param}.type")
    if value["type"] != "function":
        raise _invalid_value(f"{param}.type", value["type"], ("function",))
    return {"type": "function", "function": {"name": _required_string(value, "name", param)}}


def _chat_response_format(text: Any) -> dict | None:
    _check_object(text, "text")
    if text.get("format") is None:
        return None
    fmt = text["format"]
    _check_object(fmt, "text.format")
    if "type" not in fmt:
        raise _missing("text.format.type")
    kind = fmt["type"]
    _check_string(kind, "text.format.type")
    if kind not in TEXT_FORMAT_TYPES:
        raise _invalid_value("text.format.type", kind, TEXT_FORMAT_TYPES)
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema = {"name": _required_string(fmt, "name", "text.format")}
    if "schema" not in fmt:
        raise _missing("text.format.schema")
    _check_object(fmt["schema"], "text.format.schema")
    schema["schema"] = fmt["schema"]
    if fmt.get("description") is not None:
        _check_string(fmt["description"], "text.format.description")
        schema["description"] = fmt["description"]
    if fmt.get("strict") is not None:
        _check_bool(fmt["strict"], "text.format.strict")
        schema["strict"] = fmt["strict"]
    return {"type": "json_schema", "json_schema": schema}


def _reasoning_effort(value: Any) -> str | None:
    _check_object(value, "reasoning")
    effort = value.get("effort")
    if effort is None:
        return None
    _check_string(effort, "reasoning.effort")
    if effort not in REASONING_EFFORTS:
        raise _invalid_value("reasoning.effort", effort, REASONING_EFFORTS)
    return effort


def _check_metadata(value: Any) -> None:
    _check_object(value, "metadata")
    if len(value) > MAX_METADATA_PAIRS:
        raise ResponsesRequestError(
            "object_above_max_properties",
            f"Invalid 'metadata': too many properties. "
            f"Expected an object with at most {MAX_METADATA_PAIRS} properties, but got "
            f"{len(value)} instead.",
            "metadata",
        )
    for key, item in value.items():
        _check_string(item, f"metadata.{key}")


# ---------------------------------------------------------------------------------------------------------------
# Response: chat completion → response object


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _new_item_id(prefix: str) -> str:
    return f"{prefix}_" + secrets.token_hex(24)


def from_chat(chat_response: dict, *, response_id: str, created_at: int, request: dict) -> dict:
    """The `response` object for a non-streamed chat completion answering `request` (the Responses body)."""
    choices = chat_response.get("choices") or [{}]
    choice = choices[0] or {}
    message = choice.get("message") or {}
    status, reason = _status_for(choice.get("finish_reason"))
    item_status = "incomplete" if status == "incomplete" else "completed"
    output = []
    parts: list[dict[str, Any]] = []
    if message.get("content"):
        parts.append({"type": "output_text", "text": message["content"], "annotations": [], "logprobs": []})
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(
            {"id": _new_item_id("msg"), "type": "message", "status": item_status, "role": "assistant", "content": parts}
        )
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            {
                "id": _new_item_id("fc"),
                "type": "function_call",
                "status": item_status,
                "call_id": call.get("id") or _new_item_id("call"),
                "name": function.get("name") or "",
                "arguments": function.get("arguments") or "",
            }
        )
    response = response_shell(
        response_id=response_id,
        created_at=created_at,
        request=request,
        model=chat_response.get("model") or request.get("model"),
        status=status,
    )
    response["output"] = output
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = usage_of(chat_response.get("usage"))
    return response


def _status_for(finish_reason: str | None) -> tuple[str, str | None]:
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def usage_of(chat_usage: dict | None) -> dict | None:
    """Responses `usage` from a chat `usage` (prompt/completion tokens and their details), or None."""
    if not chat_usage:
        return None
    input_tokens = int(chat_usage.get("prompt_tokens") or 0)
    output_tokens = int(chat_usage.get("completion_tokens") or 0)
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or 0
    cache_write = prompt_details.get("cache_write_tokens") or 0  # OpenRouter reports it; most upstreams do not
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": int(cache_write)},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(chat_usage.get("total_tokens") or input_tokens + output_tokens),
    }


def response_shell(*, response_id: str, created_at: int, request: dict, model: str | None, status: str) -> dict:
    """A `response` object without output: the echoed request fields as the real API returns them."""
    text: dict[str, Any] = request["text"] if isinstance(request.get("text"), dict) else {}
    reasoning: dict[str, Any] = request["reasoning"] if isinstance(request.get("reasoning"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        # Whether it is stored is the request path's decision (store: true or the setting); it may overwrite this.
        "store": bool(request.get("store")),
        "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [_echoed_tool(tool) for tool in request.get("tools") or []],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _echoed_tool(tool: dict) -> dict:
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True),
    }


# ---------------------------------------------------------------------------------------------------------------
# Streaming: chat chunks → Responses events


class StreamTranslator:
    """Chat-completion chunks in, Responses SSE events out, one chunk at a time and never buffered.

    `start()` → response.created, response.in_progress; `feed(chunk)` → the events for that chunk's text and tool
    call deltas; `finish(usage)` → the ...done events and response.completed (or response.incomplete on
    finish_reason length/content_filter); `fail(code, message)` → response.failed, never response.completed after
    a break. `output_items` and `usage` are what was produced, for the stored response and the request log.

    Items are sequential as in the real API: text opens a message item; a tool call index opens a function_call
    item (closing the item before it); text after a tool call opens a new message item."""

    def __init__(self, *, response_id: str, created_at: int, request: dict):
        self.response_id = response_id
        self.created_at = created_at
        self.request = request
        self.model = request.get("model")
        self.output_items: list[dict] = []
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.ended = False
        self._sequence = 0
        self._open: dict | None = None  # the output item receiving deltas
        self._open_tool_index: int | None = None
        self._text: list[str] = []

    def start(self) -> list[bytes]:
        shell = self._response("in_progress")
        return [
            self._event("response.created", {"response": shell}),
            self._event("response.in_progress", {"response": shell}),
        ]

    def feed(self, chunk: dict) -> list[bytes]:
        if self.ended:
            return []
        if chunk.get("model"):
            self.model = chunk["model"]
        if chunk.get("usage"):
            self.usage = usage_of(chunk["usage"])
        events: list[bytes] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def finish(self, usage: dict | None = None) -> list[bytes]:
        """The closing events after the upstream's stream ended cleanly. `usage` (chat-shaped) overrides the
        usage seen in the chunks."""
        if self.ended:
            return []
        if usage:
            self.usage = usage_of(usage)
        status, reason = _status_for(self.finish_reason)
        events = self._close_open("incomplete" if status == "incomplete" else "completed")
        self.ended = True
        response = self._response(status)
        response["output"] = copy.deepcopy(self.output_items)
        response["incomplete_details"] = {"reason": reason} if reason else None
        response["usage"] = self.usage
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return events + [self._event(kind, {"response": response})]

    def fail(self, code: str, message: str) -> list[bytes]:
        """response.failed after a stream broke: what was sent stays as output with status incomplete, no ...done
        events claim it finished. `code` should be one OpenAI uses in ResponseError (server_error,
        rate_limit_exceeded, ...) for strict clients."""
        if self.ended:
            return []
        self.ended = True
        if self._open is not None:
            self._sync_open()
            self._open["status"] = "incomplete"
            self._open = None
        response = self._response("failed")
        response["output"] = copy.deepcopy(self.output_items)
        response["error"] = {"code": code, "message": message}
        response["usage"] = self.usage
        return [self._event("response.failed", {"response": response})]

    # -- items

    def _text_delta(self, text: str) -> list[bytes]:
        events = []
        if self._open is None or self._open["type"] != "message":
            events += self._close_open("completed")
            item = {
                "id": _new_item_id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            events += self._add_item(item)
            events.append(
                self._event(
                    "response.content_part.added",
                    {
                        "item_id": item["id"],
                        "output_index": self._index,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                    },
                )
            )
            self._text = []
        self._text.append(text)
        assert self._open is not None  # opened above when it was not
        events.append(
            self._event(
                "response.output_text.delta",
                {
                    "item_id": self._open["id"],
                    "output_index": self._index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
            )
        )
        return events

    def _tool_delta(self, call: dict) -> list[bytes]:
        events = []
        index = call.get("index") or 0
        function = call.get("function") or {}
        call_id = call.get("id")
        if (
            self._open is None
            or self._open["type"] != "function_call"
            or self._open_tool_index != index
            or (call_id and call_id != self._open["call_id"])
        ):
            # A new index, or a new id on the same index (upstreams that send each whole call as index 0).
            events += self._close_open("completed")
            item = {
                "id": _new_item_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call_id or _new_item_id("call"),
                "name": function.get("name") or "",
                "arguments": "",
            }
            self._open_tool_index = index
            events += self._add_item(item)
        elif function.get("name"):
            self._open["name"] += function["name"]
        open_item = self._open
        assert open_item is not None  # the call's item, opened above when it was not
        arguments = function.get("arguments")
        if arguments:
            open_item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    {"item_id": open_item["id"], "output_index": self._index, "delta": arguments},
                )
            )
        return events

    def _add_item(self, item: dict) -> list[bytes]:
        self.output_items.append(item)
        self._open = item
        return [self._event("response.output_item.added", {"output_index": self._index, "item": dict(item)})]

    @property
    def _index(self) -> int:
        return len(self.output_items) - 1

    def _sync_open(self) -> None:
        if self._open is not None and self._open["type"] == "message":
            self._open["content"] = [
                {"type": "output_text", "text": "".join(self._text), "annotations": [], "logprobs": []}
            ]

    def _close_open(self, status: str) -> list[bytes]:
        item = self._open
        if item is None:
            return []
        self._open = None
        item["status"] = status
        base = {"item_id": item["id"], "output_index": self.output_items.index(item)}
        events = []
        if item["type"] == "message":
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item["content"] = [part]
            events.append(
                self._event("response.output_text.done", {**base, "content_index": 0, "text": text, "logprobs": []})
            )
            events.append(self._event("response.content_part.done", {**base, "content_index": 0, "part": part}))
        else:
            events.append(
                self._event("response.function_call_arguments.done", {**base, "arguments": item["arguments"]})
            )
        events.append(
            self._event(
                "response.output_item.done", {"output_index": base["output_index"], "item": copy.deepcopy(item)}
            )
        )
        return events

    # -- framing

    def _response(self, status: str) -> dict:
        return response_shell(
            response_id=self.response_id,
            created_at=self.created_at,
            request=self.request,
            model=self.model,
            status=status,
        )

    def _event(self, kind: str, fields: dict) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# ---------------------------------------------------------------------------------------------------------------
# Helpers for the request path


def items_for_storage(request_items: str | list[dict], output_items: list[dict]) -> list[dict]:
    """The items a stored response keeps so `previous_response_id` can continue it: this request's input items
    (a string input as one user message) then the output items, which are valid input items as they are. For a
    continued conversation the request path prepends the previous response's stored items."""
    if isinstance(request_items, str):
        request_items = [_user_message(request_items)] if request_items else []
    return copy.deepcopy(list(request_items)) + copy.deepcopy(list(output_items))


def estimate_input_chars(body: dict, *, previous: list[dict] | None = None) -> int:
    """Characters of prompt the request sends (instructions, input text, tool definitions, and the `previous`
    stored items it continues), for the tokens-per-minute estimate before the upstream counts tokens. Images count
    as nothing; never raises."""
    total = sum(_item_chars(item) for item in previous or [])
    if isinstance(body.get("instructions"), str):
        total += len(body["instructions"])
    value = body.get("input")
    if isinstance(value, str):
        total += len(value)
    elif isinstance(value, list):
        for item in value:
            total += _item_chars(item)
    if isinstance(body.get("tools"), list):
        try:
            total += len(orjson.dumps(body["tools"]))
        except TypeError:
            pass
    return total


def _item_chars(item: Any) -> int:
    if not isinstance(item, dict):
        return 0
    total = 0
    for field in ("arguments", "output", "name"):
        if isinstance(item.get(field), str):
            total += len(item[field])
    content = item.get("content")
    if isinstance(content, str):
        total += len(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
    if isinstance(item.get("output"), list):
        total += sum(len(p["text"]) for p in item["output"] if isinstance(p, dict) and isinstance(p.get("text"), str))
    return total


# ---------------------------------------------------------------------------------------------------------------
# Checks, worded as OpenAI's 400s are (routing/proxy/validation.py)


def _required_string(obj: dict, field: str, param: str) -> str:
    if field not in obj or obj[field] is None:
        raise _missing(f"{param}.{field}")
    _check_string(obj[field], f"{param}.{field}")
    return obj[field]


def _check_string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise _wrong_type(param, "a string", value)


def _check_bool(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        raise _wrong_type(param, "a boolean", value)


def _check_object(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise _wrong_type(param, "an object", value)


def _check_array(value: Any, param: str) -> None:
    if not isinstance(value, list):
        raise _wrong_type(param, "an array", value)


def _check_integer(value: Any, param: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(param, "an integer", value)
    if value < minimum:
        raise ResponsesRequestError(
            "integer_below_min_value",
            f"Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, but got {value} instead.",
            param,
        )


def _check_number(value: Any, param: str, minimum: float, maximum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type(param, "a number", value)
    if value < minimum:
        raise ResponsesRequestError(
            "decimal_below_min_value",
            f"Invalid '{param}': decimal below minimum value. "
            f"Expected a value >= {minimum:g}, but got {value} instead.",
            param,
        )
    if value > maximum:
        raise ResponsesRequestError(
            "decimal_above_max_value",
            f"Invalid '{param}': decimal above maximum value. "
            f"Expected a value <= {maximum:g}, but got {value} instead.",
            param,
        )


def _missing(param: str) -> ResponsesRequestError:
    return ResponsesRequestError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def _wrong_type(param: str, expected: str, value: Any) -> ResponsesRequestError:
    return ResponsesRequestError("invalid_type", wrong_type_message(param, expected, value), param)


def _invalid_value(param: str, value: Any, supported: tuple[str, ...]) -> ResponsesRequestError:
    return ResponsesRequestError("invalid_value", invalid_value_message(value, supported), param)
