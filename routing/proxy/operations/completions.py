"""POST /v1/completions as an operation: OpenAI's legacy text completions, including `suffix` (fill-in-the-middle).

The body is forwarded unchanged but for `model` (and `stream_options.include_usage` on streams, so tokens are
counted); only the fields in FIELD_CHECKS are checked, every other field passes through (docs/api.md).

`prompt` may be a string, a list of strings, a token list or a list of token lists, as OpenAI accepts; `suffix`
needs a string prompt. A route serving `completions` is taken to support `suffix`; an upstream that answers 400 to
it has that 400 returned to the client (SPEC §5.6's outcome table), the chain does not move on.

Streams use the chat streaming rules (relay.py): headers after the first valid event (a completion chunk with
`choices[].text`), malformed events dropped, a missing `[DONE]` added after a finish_reason, a break after text
ends with the `stream_interrupted` error event and no `[DONE]`. A break is continued only by a restart on the next
route whose text begins exactly with the delivered text (the splice); no prefill, since appending the delivered
text to the prompt changes what a FIM model sees and is not the same request.
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.proxy.operations import Operation, StreamRules
from routing.proxy.relay import ChatEvents, completion_chunk
from routing.proxy.validation import (
    InvalidRequest,
    check_bool,
    check_object,
    check_stop,
    check_stream_options,
    check_string,
    integer,
    number,
)
from routing.snapshot import RouteInfo

UPSTREAM_PATH = "/completions"
MAX_PROMPTS = 2048  # entries in a list `prompt` (OpenAI's batch limit)
MAX_TOKEN_ID = 1_048_575  # above every current tokenizer's vocabulary (the largest are ~260k ids)
MAX_CHOICES = 128
MAX_BEST_OF = 20
MAX_LOGPROBS = 5


def _wrong_type(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest("invalid_type", f"Invalid type for '{param}': expected {expected}.", param)


def _check_tokens(tokens: list, param: str) -> None:
    for index, token in enumerate(tokens):
        integer(minimum=0, maximum=MAX_TOKEN_ID)(token, f"{param}[{index}]")


def check_prompt(value: Any, param: str = "prompt") -> None:
    """A string, a non-empty list of strings, a non-empty token list, or a non-empty list of token lists."""
    expected = "a string, an array of strings, an array of integers or an array of arrays of integers"
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _wrong_type(param, expected)
    if not value:
        raise InvalidRequest(
            "empty_array",
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param,
        )
    if len(value) > MAX_PROMPTS:
        raise InvalidRequest(
            "array_above_max_length",
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{MAX_PROMPTS}, but got an array with length {len(value)} instead.",
            param,
        )
    first = value[0]
    if isinstance(first, str):
        for index, item in enumerate(value):
            check_string(item, f"{param}[{index}]")
    elif isinstance(first, int) and not isinstance(first, bool):
        _check_tokens(value, param)
    elif isinstance(first, list):
        for index, item in enumerate(value):
            item_param = f"{param}[{index}]"
            if not isinstance(item, list):
                raise _wrong_type(item_param, "an array of integers")
            if not item:
                raise InvalidRequest("empty_array", f"Invalid '{item_param}': empty array.", item_param)
            _check_tokens(item, item_param)
    else:
        raise _wrong_type(f"{param}[0]", "a string, an integer or an array of integers")


FIELD_CHECKS = {
    "suffix": check_string,
    "stream": check_bool,
    "stream_options": check_stream_options,
    "max_tokens": integer(minimum=0),
    "n": integer(minimum=1, maximum=MAX_CHOICES),
    "best_of": integer(minimum=1, maximum=MAX_BEST_OF),
    "seed": integer(),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "echo": check_bool,
    "logprobs": integer(minimum=0, maximum=MAX_LOGPROBS),
    "logit_bias": check_object,
    "stop": check_stop,
    "user": check_string,
}


def validate(payload: dict) -> None:
    """Raise InvalidRequest (400, OpenAI's codes and `param`) for the first field OpenAI would refuse."""
    if "model" not in payload:
        raise InvalidRequest("missing_required_parameter", "Missing required parameter: 'model'.", "model")
    if not isinstance(payload["model"], str) or not payload["model"].strip():
        raise InvalidRequest("invalid_type", "'model' must be a non-empty string.", "model")
    if "prompt" not in payload or payload["prompt"] is None:
        raise InvalidRequest("missing_required_parameter", "Missing required parameter: 'prompt'.", "prompt")
    check_prompt(payload["prompt"])
    for name, check in FIELD_CHECKS.items():
        value = payload.get(name)
        if value is not None:
            check(value, name)
    if payload.get("suffix") is not None and not isinstance(payload["prompt"], str):
        raise InvalidRequest("invalid_value", "'suffix' (fill-in-the-middle) needs 'prompt' to be a string.", "suffix")
    if payload.get("stream_options") is not None and payload.get("stream") is not True:
        raise InvalidRequest(
            "invalid_value",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    best_of, n = payload.get("best_of"), payload.get("n") or 1
    if best_of is not None:
        if best_of < n:
            raise InvalidRequest("invalid_value", "'best_of' must be greater than or equal to 'n'.", "best_of")
        if best_of > 1 and payload.get("stream"):
            raise InvalidRequest("invalid_value", "'best_of' greater than 1 cannot be used with 'stream'.", "best_of")


def upstream_body(payload: dict, route: RouteInfo) -> bytes:
    """The client's body, unchanged but for `model` and (for streams) usage reporting."""
    body = dict(payload, model=route.upstream_model)
    if payload.get("stream"):
        body["stream_options"] = dict(payload.get("stream_options") or {}, include_usage=True)
    return orjson.dumps(body)


def check(data: dict) -> str | None:
    """None for a usable text completion: a non-empty `choices` whose entries carry a string `text`."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return "body is not a text completion"
    if not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in choices):
        return "a choice has no text"
    return None


def usage(data: dict) -> tuple[int | None, int | None, int]:
    reported = data["usage"] if isinstance(data.get("usage"), dict) else {}
    chars = sum(
        len(c["text"]) for c in data.get("choices") or () if isinstance(c, dict) and isinstance(c.get("text"), str)
    )
    return reported.get("prompt_tokens"), reported.get("completion_tokens"), chars


def is_valid_first_event(payload: bytes) -> bool:
    """Before headers are sent, only a completion chunk with `choices[].text` counts as the first event."""
    chunk = completion_chunk(payload)
    return (
        chunk is not None
        and bool(chunk["choices"])
        and all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in chunk["choices"])
    )


COMPLETIONS = Operation(
    endpoint="completions",
    upstream_path=UPSTREAM_PATH,
    validate=validate,
    upstream_body=upstream_body,
    check=check,
    usage=usage,
    # The relayed chunks go to the client as they came (the relay reads `choices[].text`), like chat's.
    stream=StreamRules(first_event=is_valid_first_event, events=lambda payload: ChatEvents()),
)
