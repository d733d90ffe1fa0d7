"""POST /v1/responses (the OpenAI Responses API) as an operation over the chat-completions upstreams.

The translation is routing/proxy/translation/responses.py (pure). This module wires it into the shared request
path (operations/__init__.py):

- `validate` checks every field but the input items (they may continue a stored conversation, read in `prepare`);
- `prepare` (async, after the key is known) loads the stored items of `previous_response_id` (404
  `previous_response_not_found` when unknown, expired or another key's), translates the whole request with
  `to_chat`, and returns the chat-completions payload: from then on the flow, the limits' estimate, the upstream
  body and the relay's continuation of a broken stream all work on chat, exactly as for /v1/chat/completions;
- `answer` (non-streamed) and `ResponsesEvents` (streamed) turn the chat answer back into a `response` object or
  the Responses event stream, chunk by chunk (`StreamTranslator`, never buffered); a stream that breaks and
  cannot be continued ends with `response.failed`, never `response.completed`;
- a response is stored (responses_store, written off the loop after the answer) only when the client sent
  `store: true`, or RAINYMODEL_RESPONSES_STORE_DEFAULT is on and it did not send `store: false`.

What one call needs between `prepare` and `answer`/the stream (its response id, the client's request, the items
to store) is kept in a ContextVar: the flow runs `prepare`, `answer` and `events(...)` in the call's own task.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

import orjson
from django.conf import settings

from rainymodel_site.api_errors import ApiError
from responses_store import store
from routing.proxy.call import Call
from routing.proxy.operations import Operation, StreamRules
from routing.proxy.operations.chat import usage as chat_usage
from routing.proxy.outcomes import estimate_tokens
from routing.proxy.relay import is_valid_first_event
from routing.proxy.translation.responses import (
    ResponsesRequestError,
    StreamTranslator,
    estimate_input_chars,
    from_chat,
    items_for_storage,
    new_response_id,
    to_chat,
)
from routing.proxy.upstream import CHAT_PATH, is_chat_completion
from routing.snapshot import RouteInfo

PREVIOUS_RESPONSE_NOT_FOUND = "previous_response_not_found"


@dataclass
class ResponsesCall:
    request: dict  # the client's Responses body
    response_id: str
    created_at: int
    key_id: int | None
    store: bool
    previous_items: list[dict] = field(default_factory=list)

    def remember(self, response: dict, output_items: list[dict]) -> None:
        """Store the response (off the loop, after the answer) when this call asked for storing."""
        response["store"] = self.store
        if self.store and self.key_id is not None:
            items = self.previous_items + items_for_storage(self.request.get("input") or [], output_items)
            store.save_later(self.response_id, self.key_id, response, items)


_current: ContextVar[ResponsesCall | None] = ContextVar("responses_call", default=None)


def _api_error(error: ResponsesRequestError) -> ApiError:
    return ApiError(error.status, error.code, error.message, type=error.type, param=error.param)


def validate(payload: dict) -> None:
    """Every field but the input items (checked in `prepare`, after the stored conversation is read)."""
    try:
        if payload.get("previous_response_id") is None:
            to_chat(payload)
        else:
            to_chat(dict(payload, input=None), previous=[{"type": "message", "role": "user", "content": "."}])
    except ResponsesRequestError as error:
        raise _api_error(error) from None


def should_store(payload: dict) -> bool:
    if payload.get("store") is None:
        return bool(settings.RAINYMODEL_RESPONSES_STORE_DEFAULT)
    return payload["store"] is True


async def prepare(call: Call, payload: dict) -> dict:
    previous: list[dict] = []
    previous_id = payload.get("previous_response_id")
    key_id = call.key.id if call.key else None
    if previous_id is not None:
        stored = await store.load(previous_id, key_id) if key_id is not None else None
        if stored is None:
            raise ApiError(
                404,
                PREVIOUS_RESPONSE_NOT_FOUND,
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
            )
        previous = list(stored.items)
    try:
        chat = to_chat(payload, previous=previous)
    except ResponsesRequestError as error:
        raise _api_error(error) from None
    # The stored conversation goes upstream too: the limits' estimate and a log row without upstream usage count it.
    call.prompt_estimate = estimate_tokens(estimate_input_chars(payload, previous=previous))
    _current.set(
        ResponsesCall(
            request=payload,
            response_id=new_response_id(),
            created_at=int(time.time()),
            key_id=key_id,
            store=should_store(payload),
            previous_items=previous,
        )
    )
    return chat


def upstream_body(payload: dict, route: RouteInfo) -> bytes:
    """The translated chat payload (`prepare`'s) for one route."""
    return orjson.dumps(dict(payload, model=route.upstream_model))


def answer(body: bytes, data: dict) -> bytes:
    ctx = _current.get()
    assert ctx is not None, "prepare runs before answer"
    response = from_chat(data, response_id=ctx.response_id, created_at=ctx.created_at, request=ctx.request)
    ctx.remember(response, response["output"])
    return orjson.dumps(response)


class ResponsesEvents:
    """Chat chunks in, Responses SSE events out (operations.StreamEvents), one chunk at a time."""

    def __init__(self, ctx: ResponsesCall):
        self.ctx = ctx
        # `store` as decided (the setting may store a request that did not send it), in every event's response.
        self.translator = StreamTranslator(
            response_id=ctx.response_id, created_at=ctx.created_at, request=dict(ctx.request, store=ctx.store)
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
        if not isinstance(chunk, dict):
            return b""
        return b"".join(self._start() + self.translator.feed(chunk))

    def done(self) -> bytes:
        out = self._start() + self.translator.finish()
        if out:  # the last event (response.completed or .incomplete) carries the final response object
            response = orjson.loads(out[-1].split(b"\ndata: ", 1)[1])["response"]
            self.ctx.remember(response, response["output"])
        return b"".join(out)

    def interrupted(self, reason: str) -> bytes:
        message = (
            f"The upstream stream was interrupted and could not be continued; the response is incomplete ({reason})."
        )
        return b"".join(self._start() + self.translator.fail("server_error", message))


def events(payload: dict) -> ResponsesEvents:
    ctx = _current.get()
    assert ctx is not None, "prepare runs before the stream"
    return ResponsesEvents(ctx)


RESPONSES = Operation(
    endpoint="responses",
    upstream_path=CHAT_PATH,
    validate=validate,
    upstream_body=upstream_body,
    check=is_chat_completion,
    usage=chat_usage,
    stream=StreamRules(first_event=is_valid_first_event, events=events),
    answer=answer,
    prepare=prepare,
    route_endpoint="chat",  # translated onto chat completions: the routes serving chat serve it
)
