"""POST /v1/embeddings as an operation (issue 12; see __init__.py for what an operation supplies).

The client's body goes upstream unchanged but for `model`: `input` (a string, a list of strings, a list of token
ids or a list of token-id lists), `encoding_format` (float or base64), `dimensions` and `user` pass through.
No streaming: `stream: true` is a 400. Tokens are the upstream's `usage.prompt_tokens` (estimated when absent),
completion tokens 0, so the cost is prompt tokens x the route's input price.

Validation follows OpenAI's documented limits (https://platform.openai.com/docs/api-reference/embeddings/create):
at most 2048 inputs, no empty string or empty array, token ids are non-negative integers. A bad body is refused
here, with `param` naming the field, before it costs an upstream attempt on every route of the chain.
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.proxy.operations import Operation
from routing.proxy.validation import InvalidRequest, _missing, _wrong_type, check_string, integer
from routing.snapshot import RouteInfo

MAX_INPUTS = 2048
MAX_TOKEN_ID = 2**31 - 1
ENCODING_FORMATS = ("float", "base64")
INPUT_SHAPE = "a string, an array of strings, an array of integers or an array of arrays of integers"


def validate_embeddings(payload: dict) -> None:
    """Raise InvalidRequest (400, OpenAI's shape with `param`) for the first field OpenAI would refuse."""
    if "model" not in payload:
        raise _missing("model")
    if not isinstance(payload["model"], str) or not payload["model"].strip():
        raise InvalidRequest("invalid_type", "'model' must be a non-empty string.", "model")
    if "input" not in payload or payload["input"] is None:
        raise _missing("input")
    check_input(payload["input"])
    stream = payload.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _wrong_type("stream", "a boolean", stream)
        if stream:
            raise InvalidRequest(
                "invalid_value", "Embeddings cannot be streamed: 'stream' must be false or absent.", "stream"
            )
    encoding = payload.get("encoding_format")
    if encoding is not None:
        check_string(encoding, "encoding_format")
        if encoding not in ENCODING_FORMATS:
            shown = encoding if len(encoding) <= 40 else encoding[:40] + "..."
            raise InvalidRequest(
                "invalid_value",
                f"Invalid value: '{shown}'. Supported values are: 'float' and 'base64'.",
                "encoding_format",
            )
    if payload.get("dimensions") is not None:
        integer(minimum=1)(payload["dimensions"], "dimensions")
    if payload.get("user") is not None:
        check_string(payload["user"], "user")


def check_input(value: Any) -> None:
    if isinstance(value, str):
        if not value:
            raise _empty("input", "string")
        return
    if not isinstance(value, list):
        raise _wrong_type("input", INPUT_SHAPE, value)
    if not value:
        raise _empty("input", "array")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(
            "array_above_max_length",
            f"Invalid 'input': array too long. Expected an array with maximum length {MAX_INPUTS}, "
            f"but got an array with length {len(value)} instead.",
            "input",
        )
    first = value[0]
    if isinstance(first, str):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise _wrong_type(f"input[{index}]", "a string (every item of a list of strings)", item)
            if not item:
                raise _empty(f"input[{index}]", "string")
    elif isinstance(first, list):
        for index, item in enumerate(value):
            if not isinstance(item, list):
                raise _wrong_type(f"input[{index}]", "an array of integers (every item of a list of token lists)", item)
            if not item:
                raise _empty(f"input[{index}]", "array")
            _check_tokens(item, f"input[{index}]")
    elif isinstance(first, int) and not isinstance(first, bool):
        _check_tokens(value, "input")
    else:
        raise _wrong_type("input[0]", "a string, an integer or an array of integers", first)


def _check_tokens(tokens: list, param: str) -> None:
    check = integer(minimum=0, maximum=MAX_TOKEN_ID)
    for index, token in enumerate(tokens):
        check(token, f"{param}[{index}]")


def _empty(param: str, what: str) -> InvalidRequest:
    return InvalidRequest("invalid_value", f"Invalid '{param}': an empty {what} cannot be embedded.", param)


def upstream_body(payload: dict, route: RouteInfo) -> bytes:
    return orjson.dumps(dict(payload, model=route.upstream_model))


def check(data: dict) -> str | None:
    """None when `data` is an embedding list: `data` a non-empty array of objects whose `embedding` is a
    non-empty array starting with a number (float) or a non-empty string (base64)."""
    items = data.get("data")
    if not isinstance(items, list) or not items:
        return "no embeddings in the answer"
    for item in items:
        if not isinstance(item, dict):
            return "an embedding is not an object"
        vector = item.get("embedding")
        if isinstance(vector, str):
            if not vector:
                return "an empty base64 embedding"
        elif (
            not isinstance(vector, list)
            or not vector
            or isinstance(vector[0], bool)
            or not isinstance(vector[0], (int, float))
        ):
            # The first number of each vector only: a batch can hold millions of numbers, and a wrong answer is
            # a wrong shape (an error object, a chat completion, nested lists), not one bad number in a vector.
            return "an embedding is not an array of numbers"
    return None


def usage(data: dict) -> tuple[int | None, int | None, int]:
    reported = data["usage"] if isinstance(data.get("usage"), dict) else {}
    prompt = reported.get("prompt_tokens")
    if isinstance(prompt, bool) or not isinstance(prompt, int) or prompt < 0:
        return None, 0, 0  # the log estimates from the request and marks usage_estimated
    return prompt, 0, 0


EMBEDDINGS = Operation(
    endpoint="embeddings",
    upstream_path="/embeddings",
    validate=validate_embeddings,
    upstream_body=upstream_body,
    check=check,
    usage=usage,
)
