"""One chat-completions request, top to bottom (SPEC §5):

    authenticate -> parse -> alias and policy -> limits -> chain -> attempts -> relay -> log

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

import limits
from apikeys.auth import require_key
from rainymodel_site import error_codes as codes
from rainymodel_site.api_errors import ApiError, api_error_response
from routing import snapshot
from routing.proxy import breaker, outcomes
from routing.proxy.call import AttemptUsage, Call
from routing.proxy.chain import build_chain, resolve_alias, resolve_policy
from routing.proxy.loop import UpstreamClientError, failure_notes, run_attempts
from routing.proxy.relay import Relay, StreamState, is_valid_first_event
from routing.proxy.upstream import complete, open_stream
from routing.proxy.validation import validate_chat_completion
from routing.snapshot import RouteInfo

log = logging.getLogger(__name__)


def json_response(body: bytes, status: int, headers: dict[str, str]) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response


async def chat_completions(request) -> HttpResponse:
    """The whole of `POST /v1/chat/completions`."""
    call = Call.begin(request)
    handed_off = False
    try:
        response = await _serve(call, request)
        handed_off = isinstance(response, StreamingHttpResponse)
        return response
    except ApiError as error:
        await call.finish(error.status, error.code)
        return _error_response(call, error)
    except UpstreamClientError as client_error:
        failed = client_error.failed
        body = failed.body or orjson.dumps({"error": {"message": "The upstream rejected the request.",
                                                      "type": "invalid_request_error", "param": None,
                                                      "code": failed.decision.reason}})
        code = _error_code_of(body) or failed.decision.reason
        await call.finish(failed.status or 400, code)
        return json_response(body, failed.status or 400, call.headers())
    except asyncio.CancelledError:
        await call.finish(499, codes.CLIENT_DISCONNECTED)
        raise
    except Exception:
        log.exception("unexpected error serving %s", call.request_id)
        await call.finish(500, codes.INTERNAL_ERROR)
        return _error_response(call, ApiError(500, codes.INTERNAL_ERROR,
                                              "The server had an error while processing your request."))
    finally:
        if not handed_off and not call.finished:
            await call.finish(499, codes.CLIENT_DISCONNECTED)


async def reject_early(request, status: int, code: str, message: str) -> HttpResponse:
    """Answer a request refused before its view ran; a chat-completions call still gets its log row."""
    call = Call.begin(request)
    error = ApiError(status, code, message)
    if request.method == "POST" and request.path.rstrip("/").endswith("/chat/completions"):
        await call.finish(status, code)
    return _error_response(call, error)


def _error_response(call: Call, error: ApiError) -> HttpResponse:
    response = api_error_response(error)
    for name, value in call.headers().items():
        response[name] = value
    return response


def _error_code_of(body: bytes) -> str | None:
    try:
        error = orjson.loads(body).get("error")
        return str(error.get("code") or error.get("type") or "")[:64] or None
    except (orjson.JSONDecodeError, AttributeError):
        return None


async def _serve(call: Call, request) -> HttpResponse:
    snap = snapshot.current()
    call.key = await require_key(request)
    payload = parse_body(request)
    call.requested_model = payload["model"]
    call.stream = bool(payload.get("stream"))
    call.alias = resolve_alias(snap, payload["model"], call.key)
    call.policy = resolve_policy(snap, request.headers.get("x-rainymodel-policy"), call.key, call.alias)
    call.prompt_estimate = outcomes.estimate_tokens(len(request.body))
    await _admit(call, payload)
    call.considered = build_chain(call.alias, call.policy)
    chain, retry_after = await breaker.usable_routes(call.considered, call.key)
    if len(chain) < len(call.considered):
        kept = {id(route) for route in chain}
        call.skipped = [route.label for route in call.considered if id(route) not in kept]
    if not chain:
        wait = max(1, int(retry_after + 0.999)) if retry_after else 1
        raise ApiError(503, codes.NO_AVAILABLE_ROUTE,
                       f"No route of '{call.alias.name}' is available under policy '{call.policy.name}' right now."
                       f"{failure_notes(call)}", headers={"Retry-After": str(wait)})
    if call.stream:
        return await _stream(call, chain, payload)
    return await _complete(call, chain, payload)


async def _admit(call: Call, payload: dict) -> None:
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    estimate = call.prompt_estimate + (max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0)
    try:
        call.admission = await limits.admit(call.key, estimated_tokens=estimate)
    except limits.LimitExceeded as exceeded:
        call.limit_headers = dict(exceeded.headers)
        raise _limit_error(exceeded) from None
    call.limit_headers = dict(call.admission.headers)


def _limit_error(exceeded) -> ApiError:
    return ApiError(429, exceeded.code, exceeded.message, type=exceeded.type, headers=dict(exceeded.headers))


def parse_body(request) -> dict:
    """The request body as a dict that passed `validate_chat_completion`, or ApiError 400/413."""
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
    validate_chat_completion(payload)
    return payload


def _too_big() -> ApiError:
    return ApiError(413, codes.REQUEST_TOO_LARGE,
                    f"The request body is larger than {settings.RAINYMODEL_MAX_BODY_BYTES} bytes.")


def upstream_body(payload: dict, route: RouteInfo) -> bytes:
    """The client's body, unchanged but for `model` and (for streams) usage reporting."""
    body = dict(payload, model=route.upstream_model)
    if payload.get("stream"):
        body["stream_options"] = dict(payload.get("stream_options") or {}, include_usage=True)
    return orjson.dumps(body)


async def _complete(call: Call, chain: list[RouteInfo], payload: dict) -> HttpResponse:
    async def attempt(route):
        return await complete(route, upstream_body(payload, route), call.deadline)

    route, (body, data) = await run_attempts(call, list(chain), attempt)
    call.route = route
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    content = ""
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            content += message["content"]
    call.usages.append(AttemptUsage(route=route, prompt_tokens=usage.get("prompt_tokens"),
                                    completion_tokens=usage.get("completion_tokens"),
                                    completion_chars=len(content)))
    call.latency_ms = call.elapsed_ms()
    await call.finish(200)
    return json_response(body, 200, call.headers())


async def _stream(call: Call, chain: list[RouteInfo], payload: dict) -> HttpResponse:
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    state = StreamState(include_usage=include_usage)

    async def attempt(route):
        stream, first = await open_stream(route, upstream_body(payload, route), call.deadline)
        # Headers wait for a real completion chunk: a malformed or error event first still fails over.
        while not any(is_valid_first_event(e) for e in first):
            first = await stream.first_events(route.provider.first_token_timeout_s)
        return stream, first

    queue = list(chain)
    route, (stream, first) = await run_attempts(call, queue, attempt)
    call.route = route
    call.usages.append(AttemptUsage(route=route))
    call.ttft_ms = call.latency_ms = call.elapsed_ms()
    relay = Relay(call=call, state=state, payload=payload, remaining_routes=queue)
    response = StreamingHttpResponse(_relay_and_log(call, relay, stream, first), content_type="text/event-stream")
    for name, value in call.headers().items():
        response[name] = value
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"

    async def on_close():  # the contract: rainymodel_site.asgi.ApiHandler; a no-op once the stream logged the call
        if not call.finished:
            await stream.close()
            await call.finish(499, codes.CLIENT_DISCONNECTED)

    response.on_close = on_close
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
        yield relay.interruption_event(codes.INTERNAL_ERROR)
    finally:
        await stream.close()
        await call.finish(status, code)
