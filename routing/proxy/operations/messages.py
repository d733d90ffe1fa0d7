"""POST /v1/messages (Anthropic Messages API) as an operation over the chat-completions upstream path (issue 13).

The translation itself is pure and lives in routing/proxy/translation/anthropic.py; this module plugs it into the
shared flow (operations/__init__.py): validation (`to_chat`), the upstream body, the answer (`from_chat`), every
error in Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`), and the stream events
(`StreamTranslator`: message_start, ping, content_block_*, message_delta, message_stop; an `error` event when a
stream breaks and cannot be continued).

The answer needs the client's request (its `model`, `stop_sequences` and the input estimate) but `Operation.answer`
gets only the upstream's body: `validate` keeps the request in a ContextVar, which the same call's task reads back
in `answer` (each request runs in its own task, so calls never see each other's).
"""

from __future__ import annotations

from contextvars import ContextVar

import orjson
from django.http import HttpResponse

from rainymodel_site.api_errors import ApiError
from routing.proxy import outcomes
from routing.proxy.operations import Operation, StreamRules
from routing.proxy.operations.chat import usage as chat_usage
from routing.proxy.relay import is_valid_first_event
from routing.proxy.translation import anthropic
from routing.proxy.upstream import CHAT_PATH, StreamBroken, is_chat_completion
from routing.snapshot import RouteInfo

ENDPOINT = "messages"

_request: ContextVar[dict] = ContextVar("anthropic_messages_request")


def validate(payload: dict) -> None:
    """A Messages request the translation accepts, else ApiError 400 (rendered in Anthropic's shape)."""
    try:
        anthropic.to_chat(payload)
    except anthropic.AnthropicError as error:
        raise ApiError(error.status, error.type, error.message) from None
    _request.set(payload)


def upstream_body(payload: dict, route: RouteInfo) -> bytes:
    chat = anthropic.to_chat(payload)
    chat["model"] = route.upstream_model
    return orjson.dumps(chat)


def input_estimate(payload: dict) -> int:
    try:
        return anthropic.count_tokens(payload)["input_tokens"]
    except anthropic.AnthropicError:
        return 0


def answer(body: bytes, data: dict) -> bytes:
    payload = _request.get({})
    message = anthropic.from_chat(
        data,
        message_id=anthropic.new_message_id(),
        model=str(payload.get("model", "")),
        stop_sequences=payload.get("stop_sequences"),
        input_tokens=input_estimate(payload),
    )
    return orjson.dumps(message)


def render_error(error: ApiError) -> HttpResponse:
    """Any error of this endpoint (auth, limits, validation, alias, routing, upstream) in Anthropic's shape, with
    the status and headers (`retry-after`, limit headers) of the ApiError."""
    translated = anthropic.error_for_status(error.status, error.message, error.code)
    response = HttpResponse(translated.body(), status=error.status, content_type="application/json")
    for name, value in error.headers.items():
        response[name] = value
    return response


def upstream_error(body: bytes, status: int) -> bytes:
    """An upstream 4xx (OpenAI-shaped, usually) as Anthropic's error: the upstream's message, Anthropic's type."""
    message = "The upstream rejected the request."
    try:
        error = orjson.loads(body).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(error, str):
            message = error
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return anthropic.error_for_status(status, message).body()


class MessagesEvents:
    """The relayed chat chunks of one call as Anthropic stream events (operations.StreamEvents)."""

    def __init__(self, payload: dict):
        self.translator = anthropic.StreamTranslator(
            message_id=anthropic.new_message_id(),
            model=str(payload.get("model", "")),
            input_tokens=input_estimate(payload),
            stop_sequences=payload.get("stop_sequences"),
        )
        self.started = False

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        return self.translator.start()

    def event(self, payload: bytes) -> bytes:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        try:
            return b"".join([*self._start(), *self.translator.feed(chunk)])
        except anthropic.StreamOutOfOrder:
            raise StreamBroken(outcomes.UPSTREAM_ERROR_EVENT) from None

    def done(self) -> bytes:
        return b"".join([*self._start(), *self.translator.finish()])

    def interrupted(self, reason: str) -> bytes:
        return b"".join(
            self.translator.fail(
                "api_error",
                f"The upstream stream was interrupted and could not be continued; the answer is incomplete ({reason}).",
            )
        )


MESSAGES = Operation(
    endpoint=ENDPOINT,
    upstream_path=CHAT_PATH,
    validate=validate,
    upstream_body=upstream_body,
    check=is_chat_completion,
    usage=chat_usage,
    stream=StreamRules(first_event=is_valid_first_event, events=MessagesEvents, wants_usage=True),
    answer=answer,
    render_error=render_error,
    upstream_error=upstream_error,
)


def count_tokens(payload: dict) -> bytes:
    """`POST /v1/messages/count_tokens`: the estimate as `{"input_tokens": N}`, or ApiError 400."""
    try:
        return orjson.dumps(anthropic.count_tokens(payload))
    except anthropic.AnthropicError as error:
        raise ApiError(error.status, error.type, error.message) from None
