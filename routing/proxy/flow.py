"""One /v1/ request of any operation, top to bottom (SPEC §5):

    authenticate -> parse -> alias and policy -> chain for the endpoint -> limits -> breakers -> attempts
    -> relay -> log

What differs per endpoint (validation, endpoint name, upstream path, usage, the answer's and errors' shape,
streaming events) comes from its `Operation` (routing/proxy/operations/__init__.py says how to add one); the
attempts run in loop.py, the call's state and log row live in call.py.

The request path reads only the in-process snapshot and the shared state, and writes only to the shared state and
the log writer's queue: no database query, no blocking call on the event loop. Every call, whatever happens
(rejections, upstream failures, client disconnects), produces exactly one RequestLog row: `Call.finish` is
reached on every path and is idempotent.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, StreamingHttpResponse
from django.http.request import RawPostDataException
from django.http.response import HttpResponseBase

import limits
from apikeys.auth import require_key
from rainymodel_site import error_codes as codes
from rainymodel_site import metrics
from rainymodel_site.api_errors import ApiError, api_error_response
from routing import snapshot
from routing.proxy import breaker, outcomes
from routing.proxy.call import AttemptUsage, Call
from routing.proxy.chain import (
    build_chain,
    chain_for_endpoint,
    resolve_alias,
    resolve_policy,
)
from routing.proxy.loop import UpstreamClientError, failure_notes, run_attempts
from routing.proxy.operations import Operation, by_path
from routing.proxy.operations.chat import CHAT
from routing.proxy.relay import Relay, StreamState
from routing.proxy.upstream import complete, open_stream
from routing.proxy.validation import validate_chat_completion
from routing.snapshot import RouteInfo

log = logging.getLogger(__name__)


def json_response(body: bytes, status: int, headers: dict[str, str]) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response


async def chat_completions(request) -> HttpResponseBase:
    """The whole of `POST /v1/chat/completions`."""
    return await serve(CHAT, request)


async def serve(op: Operation, request) -> HttpResponseBase:
    """The whole of one /v1/ call of operation `op` (operations/__init__.py says what an operation supplies)."""
    call = Call.begin(request)
    call.endpoint = op.endpoint
    handed_off = False
    try:
        response = await _serve(op, call, request)
        handed_off = isinstance(response, StreamingHttpResponse)
        return response
    except ApiError as error:
        await call.finish(error.status, error.code)
        return _error_response(op, call, error)
    except UpstreamClientError as client_error:
        failed = client_error.failed
        body = failed.body or orjson.dumps(
            {
                "error": {
                    "message": "The upstream rejected the request.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": failed.decision.reason,
                }
            }
        )
        code = _error_code_of(body) or failed.decision.reason
        await call.finish(failed.status or 400, code)
        return json_response(op.upstream_error(body, failed.status or 400), failed.status or 400, call.headers())
    except asyncio.CancelledError:
        await call.finish(499, codes.CLIENT_DISCONNECTED)
        raise
    except Exception:
        log.exception("unexpected error serving %s", call.request_id)
        await call.finish(500, codes.INTERNAL_ERROR)
        return _error_response(
            op, call, ApiError(500, codes.INTERNAL_ERROR, "The server had an error while processing your request.")
        )
    finally:
        if not handed_off and not call.finished:
            await call.finish(499, codes.CLIENT_DISCONNECTED)


async def reject_early(request, status: int, code: str, message: str) -> HttpResponse:
    """Answer a request refused before its view ran; a call to an operation's path still gets its log row, in that
    operation's error shape."""
    call = Call.begin(request)
    error = ApiError(status, code, message)
    op = by_path(request.path) if request.method == "POST" else None
    if op is not None:
        call.endpoint = op.endpoint
        await call.finish(status, code)
    elif request.path.rstrip("/") == "/v1/messages/count_tokens":  # not logged, but answered in Anthropic's shape
        from routing.proxy.operations.messages import render_error

        return render_error(error)
    elif request.method == "GET" and (request.path == "/v1/models" or request.path.startswith("/v1/models/")):
        call.endpoint = "models"  # model lookups keep a row too (api.logged_lookup)
        call.requested_model = request.path[len("/v1/models/") :]
        await call.finish(status, code)
    return _error_response(op, call, error)


def _error_response(op: Operation | None, call: Call, error: ApiError) -> HttpResponse:
    response = op.render_error(error) if op is not None else api_error_response(error)
    for name, value in call.headers().items():
        response[name] = value
    return response


def _error_code_of(body: bytes) -> str | None:
    try:
        error = orjson.loads(body).get("error")
        return str(error.get("code") or error.get("type") or "")[:64] or None
    except (orjson.JSONDecodeError, AttributeError):
        return None


async def _serve(op: Operation, call: Call, request) -> HttpResponseBase:
    snap = snapshot.current()
    call.key = await require_key(request)
    payload = parse_body(request, op.validate)
    if op.prepare is not None:
        payload = await op.prepare(call, payload)
    call.requested_model = payload["model"]
    call.stream = bool(payload.get("stream"))
    call.alias = resolve_alias(snap, payload["model"], call.key)
    call.policy = resolve_policy(snap, request.headers.get("x-rainymodel-policy"), call.key, call.alias)
    # An operation's `prepare` may have estimated more (a stored conversation sent along); never less than the body.
    call.prompt_estimate = max(call.prompt_estimate, outcomes.estimate_tokens(len(request.body)))
    call.considered = chain_for_endpoint(
        call.alias, build_chain(call.alias, call.policy), op.route_endpoint or op.endpoint
    )
    await _admit(call, payload)
    chain, retry_after = await breaker.usable_routes(call.considered, call.key)
    if len(chain) < len(call.considered):
        kept = {id(route) for route in chain}
        call.skipped = [route.label for route in call.considered if id(route) not in kept]
    if not chain:
        wait = max(1, int(retry_after + 0.999)) if retry_after else 1
        raise ApiError(
            503,
            codes.NO_AVAILABLE_ROUTE,
            f"No route of '{call.alias.name}' is available under policy '{call.policy.name}' right now."
            f"{failure_notes(call)}",
            headers={"Retry-After": str(wait)},
        )
    if call.stream and op.stream is not None:
        return await _stream(op, call, chain, payload)
    return await _complete(op, call, chain, payload)


async def _admit(call: Call, payload: dict) -> None:
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    estimate = call.prompt_estimate + (max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0)
    call.max_tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
    assert call.key is not None  # authenticated before the limits
    try:
        call.admission = await limits.admit(call.key, estimated_tokens=estimate)
    except limits.LimitExceeded as exceeded:
        call.limit_headers = dict(exceeded.headers)
        metrics.record_limit_rejection(exceeded.kind, exceeded.scope)
        raise _limit_error(exceeded) from None
    call.limit_headers = dict(call.admission.headers)


def _limit_error(exceeded) -> ApiError:
    return ApiError(429, exceeded.code, exceeded.message, type=exceeded.type, headers=dict(exceeded.headers))


def parse_body(request, validate=validate_chat_completion) -> dict:
    """The request body as a dict that passed `validate` (the operation's), or ApiError 400/413."""
    try:
        raw = request.body
    except RawPostDataException:
        raw = b""
    except RequestDataTooBig:
        raise _too_big() from None
    if len(raw) > settings.RAINYMODEL_MAX_BODY_BYTES:
        raise _too_big()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, codes.INVALID_JSON, "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise ApiError(400, codes.INVALID_JSON, "The request body must be a JSON object.")
    validate(payload)
    return payload


def _too_big() -> ApiError:
    return ApiError(
        413, codes.REQUEST_TOO_LARGE, f"The request body is larger than {settings.RAINYMODEL_MAX_BODY_BYTES} bytes."
    )


async def _complete(op: Operation, call: Call, chain: list[RouteInfo], payload: dict) -> HttpResponse:
    async def attempt(route):
        return await complete(route, op.upstream_body(payload, route), call.deadline, op.upstream_path, op.check)

    found = await run_attempts(call, list(chain), attempt)
    assert found is not None  # without `rescue`, running out of routes raises instead
    route, (body, data) = found
    call.route = route
    prompt_tokens, completion_tokens, chars = op.usage(data)
    call.usages.append(
        AttemptUsage(
            route=route, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, completion_chars=chars
        )
    )
    call.latency_ms = call.elapsed_ms()
    await call.finish(200)
    return json_response(op.answer(body, data), 200, call.headers())


async def _stream(op: Operation, call: Call, chain: list[RouteInfo], payload: dict) -> StreamingHttpResponse:
    rules = op.stream
    assert rules is not None  # only an operation that streams is served here
    include_usage = rules.wants_usage or bool((payload.get("stream_options") or {}).get("include_usage"))
    state = StreamState(include_usage=include_usage)

    async def attempt(route):
        stream, first = await open_stream(route, op.upstream_body(payload, route), call.deadline, op.upstream_path)
        # Headers wait for a real first event: a malformed or error event first still fails over.
        while not any(rules.first_event(e) for e in first):
            first = await stream.first_events(route.provider.first_token_timeout_s)
        return stream, first

    queue = list(chain)
    found = await run_attempts(call, queue, attempt)
    assert found is not None  # without `rescue`, running out of routes raises instead
    route, (stream, first) = found
    call.route = route
    call.usages.append(AttemptUsage(route=route))
    call.ttft_ms = call.latency_ms = call.elapsed_ms()
    # The relay continues a broken stream with the upstream's request (a translated operation's chat payload),
    # never the client's own body.
    upstream_payload = orjson.loads(op.upstream_body(payload, route))
    relay = Relay(
        call=call,
        state=state,
        payload=upstream_payload,
        remaining_routes=queue,
        events=rules.events(payload),
        upstream_path=op.upstream_path,
    )
    response = StreamingHttpResponse(_relay_and_log(call, relay, stream, first), content_type="text/event-stream")
    for name, value in call.headers().items():
        response[name] = value
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"

    async def on_close():  # the contract: rainymodel_site.asgi.ApiHandler; a no-op once the stream logged the call
        if not call.finished:
            await stream.close()
            await call.finish(499, codes.CLIENT_DISCONNECTED)

    response.on_close = on_close  # type: ignore[attr-defined]  # our own attribute: the ApiHandler contract
    return response


async def _relay_and_log(call: Call, relay: Relay, stream, first):
    """The response body of a stream; the call is logged when it ends, however it ends."""
    status, code = 200, ""
    try:
        async for chunk in relay.run(stream, first):
            yield chunk
        if relay.interrupted_reason:
            status, code = 502, codes.STREAM_INTERRUPTED
        call.route = relay.usages[-1].route
    except (asyncio.CancelledError, GeneratorExit):
        status, code = 499, codes.CLIENT_DISCONNECTED
        raise
    except Exception:
        log.exception("stream relay failed for %s", call.request_id)
        status, code = 502, codes.STREAM_INTERRUPTED
        yield relay.events.interrupted(codes.INTERNAL_ERROR)
    finally:
        await stream.close()
        await call.finish(status, code)
