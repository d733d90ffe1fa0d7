"""Operations: what each /v1/ endpoint supplies to the one shared request path (flow.py).

The flow does everything that is the same for every endpoint: authenticate, parse the JSON body, alias and policy,
limits, the chain (`chain.chain_for_endpoint(alias, chain, operation.endpoint)`: 400 `unsupported_endpoint` when
no route of the alias serves it), breakers, the attempt loop (loop.py: retries, backoff, Retry-After, deadline,
context skipping), the x-rainymodel-* headers and the one RequestLog row (`Call.endpoint = operation.endpoint`).
An `Operation` supplies only what differs.

How to add an endpoint (embeddings, completions, responses, messages, ...):

1. Write `routing/proxy/operations/<name>.py` defining one `Operation` (see chat.py, the first one):
   - `endpoint`: the `routing.models.Endpoint` value ("embeddings"); it picks the routes (`Route.endpoints`) and is
     written to RequestLog.endpoint.
   - `upstream_path`: the path under the provider's base URL the attempt POSTs to ("/embeddings"). An operation
     translated onto chat completions (Responses, Anthropic Messages) keeps "/chat/completions".
   - `validate(payload)`: raise `ApiError(400, code, message, param=...)` for a bad body (chat: validation.py).
     It runs after the JSON parse and must accept only what the operation can serve (e.g. refuse `stream: true`
     where `stream` is None).
   - `upstream_body(payload, route) -> bytes`: the upstream request for one route (the client's body with
     `model` replaced by `route.upstream_model`, or its translation to chat completions).
   - `check(data) -> str | None`: for a non-streaming 200, None when the parsed body is a usable answer, else a
     short detail; the attempt then fails as `invalid_response` and the loop moves on.
   - `usage(data) -> (prompt_tokens | None, completion_tokens | None, completion_chars)`: what the upstream
     reported; None makes the log estimate (and mark `usage_estimated`).
   - `answer(body, data) -> bytes`: the client's body (default: the upstream's bytes unchanged; a translated
     operation renders its own API's response here).
   - `render_error(error: ApiError) -> HttpResponse`: every error of this endpoint in its API's own shape (OpenAI's
     `{"error": {...}}` for the OpenAI endpoints, Anthropic's `{"type": "error", "error": {...}}` for /v1/messages).
     The flow adds the x-rainymodel-* and limit headers and logs the call; the status stays the ApiError's.
   - `upstream_error(body, status) -> bytes`: an upstream client error (the loop's RETURN) as this API shows it
     (default: the upstream's body unchanged).
   - `stream`: `StreamRules` when the endpoint streams, else None.
   - `prepare` (optional, async): `(call, payload) -> payload`, run after the key and `validate`; what it returns
     is the payload from then on (Responses: reads the stored conversation off the loop, translates to chat).
   - `route_endpoint` (optional): the endpoint the routes must serve when it differs from `endpoint` (Responses
     and Messages run on the routes serving "chat" and are logged under their own name).
2. Streaming (`StreamRules`): the relay (relay.py) always reads the upstream's chat-completions SSE: headers wait
   until `first_event(payload)` accepts an event (a malformed or error event first still fails over to the next
   route), each later event is checked (malformed ones dropped, an `error` event is a break) and continuation after
   a break is shared. What the client receives is made by `events(payload)`, a fresh `StreamEvents` per call:
   `event(chat_chunk_payload) -> bytes` (0..n SSE events in the API's own format, b"" to send nothing yet),
   `done() -> bytes` (the end: chat's `[DONE]`, Responses' `response.completed`, Anthropic's `message_stop`) and
   `interrupted(reason) -> bytes` (a break nothing could continue: chat's `stream_interrupted` error event,
   Responses' `response.failed`, Anthropic's `error` event). A translated stream keeps its translation state in
   that object. The relay's `ChatEvents` is the chat one. `wants_usage=True` passes the upstream's usage-only
   chunk to `events` even when the client did not ask for it (Anthropic's message_delta carries usage). A broken
   stream is continued with `upstream_body(payload, route)`'s JSON (the translated request), never the client's.
3. Add a view in api.py (`return await flow.serve(operations.<NAME>, request._request)`), a URL in urls.py, and the
   operation to `BY_PATH` below so requests refused before the view (asgi.py) are logged under its endpoint.

The flow never looks inside a payload except through these functions (and `stream`, `model` and
`max_tokens`/`max_completion_tokens` for the limits' estimate).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.http import HttpResponse

from rainymodel_site.api_errors import ApiError, api_error_response
from routing.snapshot import RouteInfo

if TYPE_CHECKING:
    from routing.proxy.call import Call


class StreamEvents(Protocol):
    """Turns the relayed upstream chat chunks of one call into what the client receives (bytes of SSE)."""

    def event(self, payload: bytes) -> bytes: ...

    def done(self) -> bytes: ...

    def interrupted(self, reason: str) -> bytes: ...


@dataclass(frozen=True)
class StreamRules:
    first_event: Callable[[bytes], bool]  # may the response headers go out on this upstream event?
    events: Callable[[dict], StreamEvents]  # a fresh encoder per call, given the client's payload
    wants_usage: bool = False  # relay the upstream's usage-only chunk to `events` always


def _unchanged(body: bytes, data: dict) -> bytes:
    return body


def _upstream_error_unchanged(body: bytes, status: int) -> bytes:
    return body


@dataclass(frozen=True)
class Operation:
    endpoint: str
    upstream_path: str
    validate: Callable[[dict], None]
    upstream_body: Callable[[dict, RouteInfo], bytes]
    check: Callable[[dict], str | None]
    usage: Callable[[dict], tuple[int | None, int | None, int]]
    stream: StreamRules | None = None
    answer: Callable[[bytes, dict], bytes] = _unchanged
    render_error: Callable[[ApiError], HttpResponse] = api_error_response
    upstream_error: Callable[[bytes, int], bytes] = _upstream_error_unchanged
    # Optional, async: runs once the key and the validated body are known and returns the payload the flow uses
    # from then on (Responses: reads the stored conversation and translates to chat); its ApiError is the call's.
    prepare: Callable[[Call, dict], Awaitable[dict]] | None = None
    # Optional: the endpoint the routes must serve when it is not `endpoint` (Responses runs on routes serving
    # "chat" and is logged as "responses").
    route_endpoint: str | None = None


def by_path(path: str) -> Operation | None:
    """The operation served at a request path (`/v1/chat/completions`), None for any other path."""
    from routing.proxy.operations.chat import (
        CHAT,  # the operations import this module for Operation
    )
    from routing.proxy.operations.completions import COMPLETIONS  # likewise
    from routing.proxy.operations.embeddings import EMBEDDINGS  # likewise
    from routing.proxy.operations.messages import MESSAGES  # likewise
    from routing.proxy.operations.responses import RESPONSES  # likewise

    by = {
        "/v1/chat/completions": CHAT,
        "/v1/completions": COMPLETIONS,
        "/v1/embeddings": EMBEDDINGS,
        "/v1/responses": RESPONSES,
        "/v1/messages": MESSAGES,
    }
    return by.get(path.rstrip("/"))
