"""Traces leave a real server over OTLP/HTTP (rainymodel_site/tracing.py): the production command (gunicorn, two
workers) started with OTEL_EXPORTER_OTLP_ENDPOINT sets tracing up in each worker after the fork, batches spans and
exports what is left at SIGTERM, to a tiny OTLP/HTTP receiver on loopback (tests/fakes/otlp.py)."""

import httpx

from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.routing_config import upstream
from tests.fakes.server import ProductionServer
from tests.fakes.upstream import FakeUpstream

CALLS = 6


def test_spans_of_each_worker_reach_the_otlp_endpoint(fake_upstream, make_routing, api_key, transactional_db):
    with FakeUpstream() as backup, OtlpReceiver() as receiver:
        make_routing(upstream(fake_upstream, max_retries=0, breaker_failures=1000), upstream(backup, tier="premium"))
        _, key = api_key()
        fake_upstream.default = fu.status(503)  # every call: a failed attempt, then the backup answers
        server = ProductionServer(
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_SERVICE_NAME": "rainymodel-test",
                "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before the shutdown's flush
            },
            workers=2,
        ).start()
        try:
            workers = set(server._children())
            for _ in range(CALLS):
                with httpx.Client() as client:  # a connection per call: the workers share them out
                    response = client.post(
                        server.url + "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {key}"}
                    )
                assert response.status_code == 200
            assert receiver.spans == []  # batched in each worker, not sent per span
        finally:
            assert server.stop()
        traceparents = [r.headers["traceparent"] for r in fake_upstream.requests + backup.requests]

    assert len(workers) == 2 and server.pid not in workers
    servers = [s for s in receiver.spans if s.kind == "server"]
    clients = [s for s in receiver.spans if s.kind == "client"]
    assert len(servers) == CALLS and len(clients) == 2 * CALLS
    assert {s.resource["service.name"] for s in receiver.spans} == {"rainymodel-test"}
    # set up in the workers (after the fork), never in gunicorn's master
    pids = {s.resource["process.pid"] for s in receiver.spans}
    assert pids <= workers
    by_id = {s.span_id: s for s in servers}
    for attempt in clients:
        parent = by_id[attempt.parent_span_id]
        assert parent.trace_id == attempt.trace_id
        assert f"00-{attempt.trace_id}-{attempt.span_id}-" in " ".join(traceparents)
    for span in servers:
        assert span.name == "chat rainymodel/auto"
        assert span.attributes["rainymodel.fallback_reason"] == "http_503"
        assert span.attributes["gen_ai.usage.output_tokens"] == 20
        assert span.attributes["rainymodel.attempts"] == 2
    assert sorted(s.attributes["rainymodel.outcome"] for s in clients) == ["http_503"] * CALLS + ["ok"] * CALLS
