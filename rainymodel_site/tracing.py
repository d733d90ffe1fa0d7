"""OpenTelemetry traces of /v1/ calls (docs/observability.md, "Traces"): a SERVER span per call and a CLIENT span
per upstream attempt (its child), with the attributes of OpenTelemetry's GenAI semantic conventions (operation,
provider, models, tokens) and RainyModel's own (alias, policy, route, tier, fallback reason, attempts).

On only when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set when a worker starts:
`start()` runs at ASGI lifespan startup, so each worker process (after gunicorn's fork) gets its own
TracerProvider, BatchSpanProcessor thread and OTLP/HTTP exporter; `stop()` at lifespan shutdown exports what is
left. Everything else is the SDK's own standard environment (OTEL_SERVICE_NAME, default "rainymodel";
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS, ...).

`enabled` is the one check the request path makes: while it is False nothing here runs, and no span (not even a
no-op one) is made. Hooks, one line each: `Call.begin` (`begin`), the attempt loop (`attempt_started`),
`Call.record_attempt` (`attempt_recorded`), the upstream request's headers (`inject`), `Call.finish` (`finish`).

The W3C trace context (`traceparent`, `tracestate`) is read from the client and sent to upstreams, nothing else:
no baggage, which would carry whatever a client put in it to third parties. Spans never hold the prompt, the
answer, a key or a header. No blocking call: spans end into the BatchSpanProcessor's queue, exported by its
thread. This module must stay below routing (docs/architecture.md, "Arrows"): it reads the Call it is given and
imports none of the request path.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from routing.proxy.call import Call
    from routing.snapshot import RouteInfo

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "rainymodel"
OK_OUTCOMES = ("ok", "continued", "restarted")  # as routing.proxy.call.OK_OUTCOMES (a floor above: not imported)

# gen_ai.operation.name of each RequestLog.endpoint (GenAI semantic conventions' well-known values); endpoints not
# listed (model lookups) are not GenAI operations and get no gen_ai.* attributes.
OPERATIONS = {
    "chat": "chat",
    "messages": "chat",  # Anthropic's Messages API is a chat
    "responses": "chat",  # OpenAI's Responses API, served over chat completions
    "completions": "text_completion",
    "embeddings": "embeddings",
}
# gen_ai.provider.name of each Provider.kind: the well-known value where there is one (openai), else the kind's
# own lower-case name (the conventions allow a custom value for providers they do not list).
PROVIDER_NAMES = {"openai": "openai", "openrouter": "openrouter", "ollama": "ollama", "hf": "huggingface"}

enabled = False  # the request path's one check; True only between start() and stop() in a process that traces
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None
_propagator = TraceContextTextMapPropagator()
# The open attempt span of the running task: what `inject` puts on the upstream request being built.
_attempt_span: contextvars.ContextVar[Span | None] = contextvars.ContextVar("rainymodel_attempt_span", default=None)


def configured() -> bool:
    """Whether this process is to export traces: an OTLP endpoint is set and the SDK is not disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def start(exporter: SpanExporter | None = None) -> bool:
    """Set up tracing in this worker (lifespan startup). Returns whether it is on.

    Without `exporter`: on when `configured()`, exporting over OTLP/HTTP through a BatchSpanProcessor. With one
    (tests: the SDK's InMemorySpanExporter), on regardless, exporting each span the moment it ends. A second call
    while on changes nothing (tests start it before the server's lifespan does)."""
    global enabled, _provider, _tracer
    if _provider is not None:
        return True
    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    elif configured():
        # Imported only in a process that exports: it brings protobuf and requests (0.2 s, memory per worker).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    else:
        return False
    _provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("rainymodel")
    enabled = True
    log.info("tracing on in process %s", os.getpid())
    return True


def stop() -> None:
    """Export the spans still queued and stop (lifespan shutdown; blocking: run it off the event loop)."""
    global enabled, _provider, _tracer
    enabled = False
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def _resource() -> Resource:
    resource = Resource.create({"process.pid": os.getpid()})  # + OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


# --- the request path (only while `enabled`) ------------------------------------------------------------------------


@dataclass(slots=True)
class CallTrace:
    """A call's spans: its SERVER span and the CLIENT span of the attempt still open, if any. A successful attempt's
    span stays open until the call finishes (a stream: until it ends or breaks), so it covers the whole upstream
    answer and carries the tokens that answer reported."""

    span: Span
    attempt: Span | None = None
    attempt_usage: int = 0  # index in Call.usages of the open attempt's usage (appended once it succeeded)


# Each entry point below catches what it raises: a tracing fault must never fail a call or lose its log row.


def begin(request) -> CallTrace | None:
    """The call's SERVER span, child of the client's `traceparent` when it sent a valid one. Named and described
    at `finish`, once the call knows what it was."""
    try:
        assert _tracer is not None  # only called while enabled
        parent = _propagator.extract(request.headers)
        span = _tracer.start_span(
            "rainymodel",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path[:200]},
        )
        return CallTrace(span=span)
    except Exception:
        log.exception("tracing: could not start the span of a call")
        return None


def attempt_started(call: Call, route: RouteInfo) -> None:
    """Open the CLIENT span of one attempt on `route` (the attempt loop, just before it sends), and make it what
    `inject` puts on the upstream request."""
    try:
        _start_attempt(call, route, None)
    except Exception:
        log.exception("tracing: could not start the span of an attempt")


def _start_attempt(call: Call, route: RouteInfo, start_time: int | None) -> Span:
    assert _tracer is not None and call.trace is not None  # only called while enabled, on a traced call
    ct = call.trace
    if ct.attempt is not None:
        _end_attempt(call)
    operation = OPERATIONS.get(call.endpoint)
    host, port = _server_of(route.provider.base_url)
    attributes: dict = {
        "gen_ai.provider.name": PROVIDER_NAMES.get(route.provider.kind, route.provider.kind),
        "gen_ai.request.model": route.upstream_model,
        "gen_ai.request.stream": call.stream,
        "server.address": host,
        "rainymodel.provider": route.provider.name,
        "rainymodel.route": route.label,
        "rainymodel.tier": route.tier,
    }
    if operation:
        attributes["gen_ai.operation.name"] = operation
    if port:
        attributes["server.port"] = port
    if call.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = call.max_tokens
    span = _tracer.start_span(
        f"{operation or call.endpoint} {route.upstream_model}",
        context=trace.set_span_in_context(ct.span),
        kind=SpanKind.CLIENT,
        attributes=attributes,
        start_time=start_time,
    )
    ct.attempt = span
    ct.attempt_usage = len(call.usages)
    _attempt_span.set(span)
    return span


def attempt_recorded(call: Call, route: RouteInfo, replace_last: bool) -> None:
    """`Call.record_attempt` noted an outcome for the latest attempt: a failure ends its span now, a success
    leaves it open (see CallTrace)."""
    try:
        _attempt_recorded(call, route, replace_last)
    except Exception:
        log.exception("tracing: could not record an attempt")


def _attempt_recorded(call: Call, route: RouteInfo, replace_last: bool) -> None:
    ct = call.trace
    assert ct is not None  # only called on a traced call
    attempt = call.attempts[-1]
    span = ct.attempt
    if span is None and not replace_last:
        # An attempt recorded without passing the loop's start: the restart after a refused prefill, which runs
        # within the same loop attempt as the refusal. Its span begins when it did.
        began = time.time_ns() - (attempt.ms or 0) * 1_000_000
        span = _start_attempt(call, route, began)
    if span is None:
        return
    attributes: dict = {"rainymodel.outcome": attempt.outcome}
    if attempt.status is not None:
        attributes["http.response.status_code"] = attempt.status
    if attempt.detail:
        attributes["rainymodel.outcome_detail"] = attempt.detail[:200]
    failed = attempt.outcome not in OK_OUTCOMES
    if failed:
        attributes["error.type"] = attempt.outcome
    span.set_attributes(attributes)
    if failed:
        span.set_status(Status(StatusCode.ERROR, attempt.outcome))
        _end_attempt(call)


def _end_attempt(call: Call) -> None:
    ct = call.trace
    assert ct is not None and ct.attempt is not None
    span, ct.attempt = ct.attempt, None
    if ct.attempt_usage < len(call.usages):
        usage = call.usages[ct.attempt_usage]
        attributes: dict = {"gen_ai.response.model": usage.route.upstream_model}
        if usage.prompt_tokens is not None and usage.completion_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = int(usage.prompt_tokens)
            attributes["gen_ai.usage.output_tokens"] = int(usage.completion_tokens)
        span.set_attributes(attributes)
    span.end()


def inject(headers: dict[str, str]) -> None:
    """Put the running attempt's trace context (`traceparent`, `tracestate`) on an upstream request's headers."""
    try:
        span = _attempt_span.get()
        if span is not None:
            _propagator.inject(headers, context=trace.set_span_in_context(span))
    except Exception:
        log.exception("tracing: could not put the trace context on an upstream request")


def finish(call: Call, row: dict) -> None:
    """Describe and end the call's spans (`Call.finish`; `row` is its RequestLog row)."""
    try:
        _finish(call, row)
    except Exception:
        log.exception("tracing: could not end the span of a call")


def _finish(call: Call, row: dict) -> None:
    ct = call.trace
    assert ct is not None  # only called on a traced call
    if ct.attempt is not None:
        _end_attempt(call)
    span = ct.span
    operation = OPERATIONS.get(call.endpoint)
    route = call.route
    attributes: dict = {
        "http.response.status_code": row["status"],
        "rainymodel.request_id": call.request_id,
        "rainymodel.endpoint": call.endpoint,
        "rainymodel.attempts": len(call.attempts),
    }
    if operation:
        attributes["gen_ai.operation.name"] = operation
        attributes["gen_ai.request.stream"] = call.stream
        if call.requested_model:
            attributes["gen_ai.request.model"] = row["requested_model"]
        if call.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = call.max_tokens
    if call.key is not None:
        attributes["rainymodel.key_id"] = call.key.id if call.key.id is not None else "master"
    if call.alias is not None:
        attributes["rainymodel.alias"] = call.alias.name
    if call.policy is not None:
        attributes["rainymodel.policy"] = call.policy.name
    if route is not None:
        attributes["rainymodel.route"] = route.label
        attributes["rainymodel.provider"] = route.provider.name
        attributes["rainymodel.tier"] = route.tier
        attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(route.provider.kind, route.provider.kind)
        attributes["gen_ai.response.model"] = route.upstream_model
    if call.usages:
        attributes["gen_ai.usage.input_tokens"] = row["prompt_tokens"]
        attributes["gen_ai.usage.output_tokens"] = row["completion_tokens"]
        attributes["rainymodel.usage_estimated"] = row["usage_estimated"]
        attributes["rainymodel.cost_usd"] = row["cost_usd"]
    if call.stream and call.ttft_ms is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = call.ttft_ms / 1000
    if call.fallback_reason and call.attempts:
        attributes["rainymodel.fallback_reason"] = call.fallback_reason
    if row["error_code"]:
        attributes["error.type"] = row["error_code"]
    span.set_attributes(attributes)
    if row["status"] >= 500:
        span.set_status(Status(StatusCode.ERROR, row["error_code"] or str(row["status"])))
    # GenAI's span name, `{gen_ai.operation.name} {gen_ai.request.model}`, with the alias the model resolved to
    # (a bounded set) rather than the client's own text.
    name = operation or call.endpoint
    span.update_name(f"{name} {call.alias.name}" if call.alias is not None else name)
    span.end()


def ids(call: Call) -> tuple[str, str] | None:
    """(trace id, span id) of the call's SERVER span in hex, for the JSON log line; None when it is not traced."""
    if call.trace is None:
        return None
    context = call.trace.span.get_span_context()
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


@lru_cache(maxsize=256)
def _server_of(base_url: str) -> tuple[str, int | None]:
    """server.address and server.port of a provider's base URL (the port only when the URL names one)."""
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "", port
