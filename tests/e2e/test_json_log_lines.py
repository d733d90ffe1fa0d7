"""JSON log lines (rainymodel_site/log_lines.py, docs/observability.md "JSON log lines"): with
RAINYMODEL_LOG_REQUESTS=json a real server process writes exactly one JSON object per call to stderr, with the
call's facts and never its prompt, answer or key."""

import logging
import queue

import httpx
import orjson
import pytest

from rainymodel_site.log_lines import DroppingQueueHandler
from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.routing_config import upstream
from tests.fakes.server import RainyModelServer, ServerFailed
from tests.fakes.upstream import FakeUpstream

PROMPT = "my bank password is hunter2-hunter2"
FIELDS = {
    "ts",
    "request_id",
    "endpoint",
    "key_id",
    "key_name",
    "key_prefix",
    "requested_model",
    "alias",
    "policy",
    "route",
    "provider",
    "upstream_model",
    "tier",
    "status",
    "error_code",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "tried",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
    "cost_usd",
    "stream",
    "fallback_reason",
    "client_ip",
}


def json_lines(server: RainyModelServer) -> list[dict]:
    lines = []
    for text in server.log_text().splitlines():
        if text.startswith("{"):
            lines.append(orjson.loads(text))
    return lines


def post(server, key, body, request_id="call"):
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": request_id}
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


def test_one_line_per_call_with_its_facts_and_no_secrets(fake_upstream, make_routing, api_key, rainymodel_server):
    with FakeUpstream() as backup:
        make_routing(
            upstream(fake_upstream, max_retries=0, name="local"),
            upstream(backup, tier="premium", name="router", upstream_model="big", input_price_per_mtok=1),
        )
        key_row, key = api_key(name="laptop")
        server = rainymodel_server(env={"RAINYMODEL_LOG_REQUESTS": "json"})
        fake_upstream.script(fu.ok(), fu.status(503))
        ok = post(server, key, chat(content=PROMPT), "call-ok")
        failover = post(server, key, chat(content=PROMPT), "call-failover")
        rejected = post(server, key + "x", chat(content=PROMPT), "call-rejected")
        bad = httpx.post(
            server.url + "/v1/chat/completions",
            content=b"{" + PROMPT.encode(),
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": "call-bad"},
        )
        with httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json=chat(content=PROMPT, stream=True),
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": "call-stream"},
        ) as stream:
            streamed = stream.read().decode()
        answer = ok.json()["choices"][0]["message"]["content"]
        assert [ok.status_code, failover.status_code, rejected.status_code, bad.status_code] == [200, 200, 401, 400]
        assert server.stop()

    written = json_lines(server)
    lines = {line["request_id"]: line for line in written}
    assert sorted(line["request_id"] for line in written) == [
        "call-bad",
        "call-failover",
        "call-ok",
        "call-rejected",
        "call-stream",
    ]
    assert all(FIELDS <= set(line) and "trace_id" not in line for line in lines.values())

    first = lines["call-ok"]
    assert first["endpoint"] == "chat"
    assert (first["key_id"], first["key_name"], first["key_prefix"]) == (key_row.id, "laptop", key_row.prefix)
    assert (first["requested_model"], first["alias"], first["policy"]) == ("rainymodel/auto", "rainymodel/auto", "auto")
    assert (first["route"], first["provider"], first["upstream_model"], first["tier"]) == (
        "local/fake-model",
        "local",
        "fake-model",
        "free",
    )
    assert (first["status"], first["error_code"], first["stream"], first["ttft_ms"]) == (200, "", False, None)
    assert first["latency_ms"] >= 0 and first["attempts"] == 1
    assert [(t["provider"], t["outcome"], t["status"]) for t in first["tried"]] == [("local", "ok", 200)]
    assert first["prompt_tokens"] == ok.json()["usage"]["prompt_tokens"]
    assert first["completion_tokens"] == ok.json()["usage"]["completion_tokens"]
    assert first["fallback_reason"] is None and first["client_ip"] == "127.0.0.1"
    assert first["ts"].endswith("+00:00")

    second = lines["call-failover"]
    assert (second["route"], second["tier"], second["fallback_reason"], second["attempts"]) == (
        "router/big",
        "premium",
        "http_503",
        2,
    )
    assert [(t["provider"], t["outcome"], t["status"]) for t in second["tried"]] == [
        ("local", "http_503", 503),
        ("router", "ok", 200),
    ]
    assert second["cost_usd"] == second["prompt_tokens"] / 1e6

    assert (lines["call-rejected"]["status"], lines["call-rejected"]["error_code"]) == (401, "invalid_api_key")
    assert lines["call-rejected"]["key_id"] is None and lines["call-rejected"]["attempts"] == 0
    assert (lines["call-bad"]["status"], lines["call-bad"]["error_code"]) == (400, "invalid_json")

    stream_line = lines["call-stream"]
    assert "[DONE]" in streamed
    assert stream_line["stream"] is True and stream_line["status"] == 200 and stream_line["ttft_ms"] is not None

    text = server.log_text()
    for secret in (PROMPT, "hunter2", answer, key, key[12:]):
        assert secret not in text


def test_lines_carry_the_calls_trace_and_span_ids_when_tracing(fake_upstream, make_routing, api_key, rainymodel_server):
    with OtlpReceiver() as receiver:
        make_routing(upstream(fake_upstream))
        _, key = api_key()
        server = rainymodel_server(env={"RAINYMODEL_LOG_REQUESTS": "json", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
        assert post(server, key, chat()).status_code == 200
        assert server.stop()
    (line,) = json_lines(server)
    (span,) = [s for s in receiver.spans if s.kind == "server"]
    assert (line["trace_id"], line["span_id"]) == (span.trace_id, span.span_id)


def test_off_by_default(fake_upstream, make_routing, api_key, rainymodel_server):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    server = rainymodel_server()
    assert post(server, key, chat()).status_code == 200
    assert server.stop()
    assert json_lines(server) == []


def test_an_unknown_mode_stops_the_server_with_a_clear_message(transactional_db):
    server = RainyModelServer(env={"RAINYMODEL_LOG_REQUESTS": "yaml"})
    with pytest.raises(ServerFailed, match="RAINYMODEL_LOG_REQUESTS must be one of off, json, not 'yaml'"):
        server.start()
    server.stop()


def test_a_full_queue_drops_lines_instead_of_waiting():
    handler = DroppingQueueHandler(queue.SimpleQueue(), limit=2)
    for n in range(5):
        handler.handle(logging.LogRecord("rainymodel.requests", logging.INFO, "", 0, f"line {n}", None, None))
    assert handler.dropped == 3
    assert handler.simple_queue.qsize() == 2
