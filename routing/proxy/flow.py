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
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, StreamingHttpResponse
from django.http.request import RawPostDataException

import limits
from apikeys.auth import require_key
from rainymodel_site import error_codes as codes
from rainymodel_site.api_errors import ApiError, api_error_response
from rainymodel_site.request_ids import request_id_of
from routing import snapshot
from routing.proxy import breaker, outcomes
from routing.proxy.chain import build_chain, resolve_alias, resolve_policy, skip_for_context
from routing.proxy.relay import AttemptUsage, Relay, StreamState, is_valid_first_event
from routing.proxy.upstream import AttemptFailed, complete, open_stream
from routing.proxy.validation import client_ip, validate_chat_completion
from routing.snapshot import AliasInfo, KeyInfo, PolicyInfo, RouteInfo
from usage import writer

log = logging.getLogger(__name__)


class UpstreamClientError(Exception):
    """The upstream says the request itself is wrong: its status and body go back to the client unchanged."""

    def __init__(self, failed: AttemptFailed):
        super().__init__(failed.decision.reason)
        self.failed = failed


@dataclass
class Call:
    """Everything known about one call: drives the response headers and its RequestLog row."""

    request_id: str
    client_request_id: bool
    started: float
    created_at: datetime
    deadline: float
    client_ip: str | None
    user_agent: str
    endpoint: str = "chat"  # RequestLog.endpoint: which API operation this call is
    key: KeyInfo | None = None
    requested_model: str = ""
    alias: AliasInfo | None = None
    policy: PolicyInfo | None = None
    stream: bool = False
    attempts: list[dict] = field(default_factory=list)
    route: RouteInfo | None = None
    fallback_reason: str | None = None
    status: int = 0
    error_code: str = ""
    ttft_ms: int | None = None
    latency_ms: int | None = None
    usages: list[AttemptUsage] = field(default_factory=list)
    prompt_estimate: int = 0
    admission: object | None = None
    limit_headers: dict[str, str] = field(default_factory=dict)
    considered: list[RouteInfo] = field(default_factory=list)  # the chain before breakers, for error messages
    skipped: list[str] = field(default_factory=list)  # routes left out because their breaker was open
    finished: bool = False

    @classmethod
    def begin(cls, request) -> Call:
        now = time.monotonic()
        request_id, given = request_id_of(request)
        return cls(
            request_id=request_id,
            client_request_id=given,
            started=now,
            created_at=datetime.now(timezone.utc),
            deadline=now + settings.RAINYMODEL_DEADLINE_S,
            client_ip=client_ip(request.META.get("REMOTE_ADDR")),
            user_agent=request.headers.get("user-agent", "")[:300],
        )

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def record_attempt(self, route: RouteInfo, outcome: str, status: int | None, *, started: float | None = None,
                       detail: str | None = None, replace_last: bool = False) -> None:
        """Note one upstream attempt; `replace_last` updates the latest one (a stream that broke later)."""
        if replace_last and self.attempts:
            last = self.attempts[-1]
            last.update(outcome=outcome, status=status)
            if detail:
                last["detail"] = detail
            self.fallback_reason = outcome
            return
        entry = {"provider": route.provider.name, "upstream_model": route.upstream_model, "outcome": outcome,
                 "status": status,
                 "ms": int((time.monotonic() - started) * 1000) if started is not None else None}
        if detail:
            entry["detail"] = detail
        self.attempts.append(entry)
        if outcome not in ("ok", "continued", "restarted"):
            self.fallback_reason = outcome

    @property
    def tried(self) -> list[str]:
        seen = []
        for a in self.attempts:
            label = f"{a['provider']}/{a['upstream_model']}"
            if label not in seen:
                seen.append(label)
        return seen

    def tokens(self) -> tuple[int, int, bool, float]:
        """(prompt, completion, estimated, cost) summed over the attempts that produced output."""
        prompt = completion = 0
        estimated = False
        cost = 0.0
        for usage in self.usages:
            if usage.prompt_tokens is None or usage.completion_tokens is None:
                estimated = True
                p = self.prompt_estimate
                c = outcomes.estimate_tokens(usage.completion_chars)
            else:
                p, c = int(usage.prompt_tokens), int(usage.completion_tokens)
            prompt += p
            completion += c
            cost += outcomes.cost_usd(p, c, usage.route.input_price_per_mtok, usage.route.output_price_per_mtok)
        return prompt, completion, estimated, cost

    def headers(self) -> dict[str, str]:
        route = self.route
        h = {
            "x-request-id": self.request_id,
            "x-rainymodel-route": route.tier if route else "error",
            "x-rainymodel-upstream": route.provider.kind if route else "none",
            "x-rainymodel-attempts": str(len(self.attempts)),
            "x-rainymodel-latency-ms": str(self.latency_ms if self.latency_ms is not None else self.elapsed_ms()),
        }
        if route:
            h["x-rainymodel-provider"] = route.provider.name
            h["x-rainymodel-model"] = route.upstream_model
        if self.alias:
            h["x-rainymodel-alias"] = self.alias.name
        if self.policy:
            h["x-rainymodel-policy"] = self.policy.name
        if self.fallback_reason and self.attempts:
            h["x-rainymodel-fallback-reason"] = self.fallback_reason
        if self.attempts:
            h["x-rainymodel-tried"] = ",".join(self.tried)
        h.update(self.limit_headers)
        return h

    async def finish(self, status: int, error_code: str = "") -> None:
        """Settle limits and queue the log row. Reached exactly once per call, on every path."""
        if self.finished:
            return
        self.finished = True
        self.status = status
        self.error_code = error_code
        prompt, completion, estimated, cost = self.tokens()
        if self.admission is not None:
            try:
                await asyncio.shield(limits.settle(self.admission, tokens=prompt + completion, cost_usd=cost))
            except asyncio.CancelledError:
                pass
        route = self.route
        first_label = self.tried[0] if self.attempts else None
        writer.enqueue({
            "id": self.request_id,
            "_client_request_id": self.client_request_id,
            "created_at": self.created_at,
            "endpoint": self.endpoint,
            "api_key_id": self.key.id if self.key else None,
            "key_prefix": self.key.prefix if self.key else "",
            "requested_model": _loggable(self.requested_model, 200),
            "alias": self.alias.name if self.alias else "",
            "policy": self.policy.name if self.policy else "",
            "tier": route.tier if route else "",
            "provider": route.provider.name if route else "",
            "upstream_model": route.upstream_model if route else "",
            "status": status,
            "error_code": error_code,
            "admitted": self.admission is not None,  # passed the limits: what quotas count (limits)
            "stream": self.stream,
            "latency_ms": self.elapsed_ms(),
            "ttft_ms": self.ttft_ms,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "usage_estimated": estimated,
            "cost_usd": round(cost, 8),
            "attempts": self.attempts,
            "fallback": bool(route and first_label and first_label != route.label),
            "client_ip": self.client_ip,
            "user_agent": _loggable(self.user_agent, 300),
        })


def _loggable(text: str, limit: int) -> str:
    """Client-chosen text as the log can store it: PostgreSQL text refuses NUL characters."""
    return text.replace("\x00", "\ufffd")[:limit]


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
                       f"{_failure_notes(call)}", headers={"Retry-After": str(wait)})
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


async def run_chain(call: Call, chain: list[RouteInfo], attempt):
    """Try routes in order with retries, backoff, breaker claims and the overall deadline (SPEC §5.6).
    Returns (route, result) from the first attempt that succeeds; raises UpstreamClientError or ApiError."""
    queue = list(chain)
    context_failure: AttemptFailed | None = None
    while queue and time.monotonic() < call.deadline:
        route = queue.pop(0)
        if not await breaker.try_acquire(route, call.key):
            call.skipped.append(route.label)
            continue
        retries = 0
        while True:
            started = time.monotonic()
            try:
                result = await attempt(route)
            except AttemptFailed as failed:
                decision = failed.decision
                call.record_attempt(route, decision.reason, failed.status, started=started,
                                    detail=failed.detail or None)
                if decision.counts_against_breaker:
                    await breaker.record_failure(route, decision.reason, decision.cooldown, key=call.key)
                if decision.action == outcomes.RETURN:
                    raise UpstreamClientError(failed) from None
                if decision.action == outcomes.CONTEXT:
                    context_failure = failed
                    queue = skip_for_context(queue, route)
                    break
                if decision.action == outcomes.RETRY and retries < route.provider.max_retries:
                    wait = decision.wait if decision.wait is not None else outcomes.backoff_delay(retries)
                    if time.monotonic() + wait < call.deadline:
                        await asyncio.sleep(wait)
                        retries += 1
                        # A half-open probe gets one attempt: its failure re-opened the breaker, and another
                        # worker's failures may have opened it meanwhile.
                        if await breaker.try_acquire(route, call.key):
                            continue
                break
            call.record_attempt(route, "ok", 200, started=started)
            await breaker.record_success(route, call.key)
            return route, result
    if context_failure is not None:
        raise UpstreamClientError(context_failure)
    raise _all_failed(call)


def _all_failed(call: Call) -> ApiError:
    notes = _failure_notes(call)
    if not call.attempts:
        return ApiError(503, codes.NO_AVAILABLE_ROUTE,
                        f"No route was available to try (all are cooling down).{notes}", headers={"Retry-After": "1"})
    reasons = ", ".join(f"{a['provider']}/{a['upstream_model']} ({a['outcome']})" for a in call.attempts)
    if all(a["outcome"] == outcomes.TIMEOUT for a in call.attempts):
        return ApiError(504, codes.UPSTREAM_TIMEOUT, f"Every upstream timed out: {reasons}.{notes}")
    return ApiError(502, codes.ALL_UPSTREAMS_FAILED, f"All upstream routes failed: {reasons}.{notes}")


def _failure_notes(call: Call) -> str:
    """What an operator can act on when no route answered: providers of the chain whose secret variable is not set
    on this server, and routes skipped because their breaker was open. Names only, never URLs or secrets."""
    providers = {route.provider.name: route.provider for route in call.considered}
    notes = [f" {p.secret_unset_message}." for p in providers.values() if p.secret_unset]
    if call.skipped:
        notes.append(f" Skipped (breaker open): {', '.join(dict.fromkeys(call.skipped))}.")
    return "".join(notes)


async def _complete(call: Call, chain: list[RouteInfo], payload: dict) -> HttpResponse:
    async def attempt(route):
        return await complete(route, upstream_body(payload, route), call.deadline)

    route, (body, data) = await run_chain(call, chain, attempt)
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

    route, (stream, first) = await run_chain(call, chain, attempt)
    call.route = route
    call.usages.append(AttemptUsage(route=route))
    call.ttft_ms = call.latency_ms = call.elapsed_ms()
    remaining = chain[chain.index(route) + 1:] if route in chain else []
    relay = Relay(state=state, payload=payload, remaining_routes=remaining, deadline=call.deadline,
                  record_attempt=call.record_attempt, usages=call.usages, key=call.key)
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
