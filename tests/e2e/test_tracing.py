"""Traces (rainymodel_site/tracing.py, docs/observability.md "Traces"): a SERVER span per call, a CLIENT span per
upstream attempt, GenAI and RainyModel attributes, the W3C trace context from the client and to the upstream.

The server runs in this process (tests/e2e/conftest.py's in-process uvicorn, with its lifespan) so the SDK's
InMemorySpanExporter sees every span; the fake upstreams are real sockets on loopback. The export over OTLP/HTTP
from a real server process is tests/e2e/test_tracing_export.py."""

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from rainymodel_site import tracing
from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream
from tests.fakes.upstream import FakeUpstream

PROMPT = "the secret plans are in the blue folder"
CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"


@pytest.fixture
def spans():
    """Tracing on with an in-memory exporter, before the in-process server starts (its lifespan then keeps it)."""
    exporter = InMemorySpanExporter()
    assert tracing.start(exporter)
    yield exporter
    tracing.stop()


def split(exporter):
    finished = exporter.get_finished_spans()
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    clients = [s for s in finished if s.kind == SpanKind.CLIENT]
    return servers, clients


def traceparent_of(span) -> str:
    context = span.get_span_context()
    return f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-{context.trace_flags:02x}"


def test_failover_makes_a_server_span_and_a_client_span_per_attempt(spans, fake_upstream, make_routing, api_key, proxy):
    with FakeUpstream() as backup:
        make_routing(
            upstream(fake_upstream, max_retries=0, name="local", kind="ollama", upstream_model="llama3"),
            upstream(backup, tier="premium", name="router", kind="openrouter", upstream_model="big-model"),
        )
        key_row, key = api_key()
        fake_upstream.script(fu.status(503))
        response = proxy.post(key, chat(content=PROMPT, max_tokens=64))
    assert response.status_code == 200
    usage = response.json()["usage"]
    servers, clients = split(spans)
    assert len(servers) == 1 and len(clients) == 2
    server = servers[0]
    assert server.name == "chat rainymodel/auto"
    assert all(c.parent.span_id == server.context.span_id for c in clients)
    assert {c.context.trace_id for c in clients} == {server.context.trace_id}
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "rainymodel/auto"
    assert server.attributes["gen_ai.request.max_tokens"] == 64
    assert server.attributes["gen_ai.request.stream"] is False
    assert server.attributes["gen_ai.provider.name"] == "openrouter"
    assert server.attributes["gen_ai.response.model"] == "big-model"
    assert server.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert server.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["rainymodel.alias"] == "rainymodel/auto"
    assert server.attributes["rainymodel.policy"] == "auto"
    assert server.attributes["rainymodel.route"] == "router/big-model"
    assert server.attributes["rainymodel.tier"] == "premium"
    assert server.attributes["rainymodel.fallback_reason"] == "http_503"
    assert server.attributes["rainymodel.attempts"] == 2
    assert server.attributes["rainymodel.request_id"] == response.headers["x-request-id"]
    assert server.attributes["rainymodel.key_id"] == key_row.id
    assert "error.type" not in server.attributes
    assert server.status.status_code == StatusCode.UNSET

    failed, answered = sorted(clients, key=lambda s: s.start_time)
    assert failed.name == "chat llama3"
    assert failed.attributes["gen_ai.provider.name"] == "ollama"
    assert failed.attributes["gen_ai.request.model"] == "llama3"
    assert failed.attributes["server.address"] == "127.0.0.1"
    assert failed.attributes["server.port"] == fake_upstream.port
    assert failed.attributes["rainymodel.outcome"] == "http_503"
    assert failed.attributes["error.type"] == "http_503"
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.status.status_code == StatusCode.ERROR
    assert "gen_ai.usage.input_tokens" not in failed.attributes

    assert answered.name == "chat big-model"
    assert answered.attributes["gen_ai.provider.name"] == "openrouter"
    assert answered.attributes["rainymodel.route"] == "router/big-model"
    assert answered.attributes["rainymodel.tier"] == "premium"
    assert answered.attributes["rainymodel.outcome"] == "ok"
    assert answered.attributes["gen_ai.response.model"] == "big-model"
    assert answered.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert answered.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert "error.type" not in answered.attributes
    assert answered.end_time <= server.end_time


def test_each_upstream_gets_its_attempt_span_as_traceparent(spans, fake_upstream, make_routing, api_key, proxy):
    with FakeUpstream() as backup:
        make_routing(upstream(fake_upstream, max_retries=1), upstream(backup, tier="premium"))
        _, key = api_key()
        fake_upstream.script(fu.status(503), fu.status(503))  # one retry on the same route, then the backup
        assert proxy.post(key, chat()).status_code == 200
        received = [r.headers.get("traceparent") for r in fake_upstream.requests + backup.requests]
    _, clients = split(spans)
    assert len(clients) == 3
    assert received == [traceparent_of(c) for c in sorted(clients, key=lambda s: s.start_time)]
    assert len(set(received)) == 3
    assert not any("baggage" in r.headers for r in fake_upstream.requests)


def test_the_clients_traceparent_is_the_parent_of_the_call(spans, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    headers = {"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01", "baggage": "user=someone"}
    assert proxy.post(key, chat(), headers=headers).status_code == 200
    servers, clients = split(spans)
    (server,) = servers
    assert format_trace_id(server.context.trace_id) == CLIENT_TRACE_ID
    assert format_span_id(server.parent.span_id) == CLIENT_SPAN_ID
    assert server.parent.is_remote
    (attempt,) = clients
    assert fake_upstream.requests[0].headers["traceparent"] == traceparent_of(attempt)
    assert traceparent_of(attempt).startswith(f"00-{CLIENT_TRACE_ID}-")
    assert "baggage" not in fake_upstream.requests[0].headers  # the client's baggage goes nowhere


def test_a_malformed_traceparent_starts_a_new_trace(spans, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    response = proxy.post(key, chat(), headers={"traceparent": "00-not-a-trace-01"})
    assert response.status_code == 200
    (server,), _ = split(spans)
    assert server.parent is None


def test_every_route_failing_sets_error_type_on_the_call(spans, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, max_retries=0))
    _, key = api_key()
    fake_upstream.script(fu.status(500))
    response = proxy.post(key, chat())
    assert response.status_code == 502
    (server,), (attempt,) = split(spans)
    assert server.attributes["error.type"] == "all_upstreams_failed"
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["rainymodel.fallback_reason"] == "http_500"
    assert server.status.status_code == StatusCode.ERROR
    assert "gen_ai.response.model" not in server.attributes
    assert attempt.attributes["error.type"] == "http_500"


def test_a_rejected_call_has_a_server_span_and_no_attempt(spans, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    response = proxy.post("rm-nope-nope-nope-nope-nope-nope-nope-x", chat())
    assert response.status_code == 401
    servers, clients = split(spans)
    assert clients == [] and len(servers) == 1
    assert servers[0].attributes["error.type"] == "invalid_api_key"
    assert servers[0].attributes["http.response.status_code"] == 401
    assert servers[0].status.status_code == StatusCode.UNSET  # a client's error is not the server's
    assert servers[0].name == "chat"


def test_a_stream_keeps_its_attempt_span_open_until_the_answer_ends(spans, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream, kind="hf"))
    _, key = api_key()
    fake_upstream.script(fu.ok(tokens=5, token_delay=0.05))
    with httpx.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        json=chat(stream=True, stream_options={"include_usage": True}),
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ) as response:
        body = response.read().decode()
    assert response.status_code == 200 and "[DONE]" in body
    (server,), (attempt,) = split(spans)
    assert server.attributes["gen_ai.request.stream"] is True
    assert server.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert server.attributes["gen_ai.provider.name"] == "huggingface"
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 5
    assert attempt.attributes["rainymodel.outcome"] == "ok"
    # the five chunks took >= 0.2 s after the first: the attempt span covers them, not just the first event
    assert (attempt.end_time - attempt.start_time) / 1e9 >= 0.2


def test_a_stream_broken_mid_answer_and_continued_ends_the_broken_attempt_span(
    spans, fake_upstream, make_routing, api_key, proxy
):
    with FakeUpstream() as backup:
        make_routing(upstream(fake_upstream, max_retries=0), upstream(backup, tier="premium", supports_prefill=True))
        _, key = api_key()
        fake_upstream.script(fu.cut_after(3))
        with httpx.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=chat(stream=True),
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ) as response:
            body = response.read().decode()
    assert "[DONE]" in body
    (server,), clients = split(spans)
    broken, continued = sorted(clients, key=lambda s: s.start_time)
    assert broken.attributes["rainymodel.outcome"] == "stream_interrupted"
    assert broken.attributes["error.type"] == "stream_interrupted"
    assert broken.end_time <= continued.start_time
    assert continued.attributes["rainymodel.outcome"] == "continued"
    assert server.attributes["rainymodel.fallback_reason"] == "stream_interrupted"
    assert backup.requests[0].headers["traceparent"] == traceparent_of(continued)


def test_spans_hold_no_prompt_answer_or_key(spans, fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    response = proxy.post(key, chat(content=PROMPT))
    answer = response.json()["choices"][0]["message"]["content"]
    proxy.post(key + "x", chat(content=PROMPT))  # a wrong key
    finished = spans.get_finished_spans()
    assert len(finished) == 3
    text = repr([(s.name, dict(s.attributes), s.events) for s in finished])
    for secret in (PROMPT, answer, key, key[12:]):
        assert secret not in text


def test_nothing_is_traced_without_an_otlp_endpoint(monkeypatch, fake_upstream, make_routing, api_key, proxy):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    assert (
        proxy.post(key, chat(), headers={"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"}).status_code == 200
    )
    assert tracing.enabled is False and tracing._provider is None
    assert "traceparent" not in fake_upstream.requests[0].headers


def test_configured_reads_the_standard_environment(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.configured()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.configured()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configured()
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    assert tracing.configured()
