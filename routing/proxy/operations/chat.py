"""POST /v1/chat/completions as an operation: the first one, and the model for the others (see __init__.py)."""

from __future__ import annotations

import orjson

from routing.proxy.operations import Operation, StreamRules
from routing.proxy.relay import ChatEvents, is_valid_first_event
from routing.proxy.upstream import CHAT_PATH, is_chat_completion
from routing.proxy.validation import validate_chat_completion
from routing.snapshot import RouteInfo


def upstream_body(payload: dict, route: RouteInfo) -> bytes:
    """The client's body, unchanged but for `model` and (for streams) usage reporting."""
    body = dict(payload, model=route.upstream_model)
    if payload.get("stream"):
        body["stream_options"] = dict(payload.get("stream_options") or {}, include_usage=True)
    return orjson.dumps(body)


def usage(data: dict) -> tuple[int | None, int | None, int]:
    reported = data["usage"] if isinstance(data.get("usage"), dict) else {}
    content = ""
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            content += message["content"]
    return reported.get("prompt_tokens"), reported.get("completion_tokens"), len(content)


CHAT = Operation(
    endpoint="chat",
    upstream_path=CHAT_PATH,
    validate=validate_chat_completion,
    upstream_body=upstream_body,
    check=is_chat_completion,
    usage=usage,
    stream=StreamRules(first_event=is_valid_first_event, events=lambda payload: ChatEvents()),
)
