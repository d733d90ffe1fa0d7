"""Exactly one RequestLog row per call (SPEC §5.9), whatever happened: successes, failovers, upstream errors, bad
input, rejected keys, client disconnects."""

import socket
import time

import httpx
import orjson

from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream
from tests.fakes.upstream import FakeUpstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 3}


def raw_post(proxy, body: bytes, key: str):
    return httpx.post(
        proxy.url + "/v1/chat/completions",
        content=body,
        timeout=10,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )


def test_a_mix_of_n_calls_leaves_exactly_n_rows(fake_upstream, make_routing, api_key, proxy):
    with FakeUpstream() as backup:
        make_routing(
            upstream(fake_upstream, max_retries=0, **FAST),
            upstream(backup, tier="premium", input_price_per_mtok=1, output_price_per_mtok=3),
        )
        _, key = api_key()
        proxy.reload()
        fake_upstream.script(fu.ok(), fu.status(503), fu.content_filter(), fu.ok(), fu.ok())
        statuses = [
            proxy.post(key, chat()).status_code,  # ok on the free route
            proxy.post(key, chat()).status_code,  # 503 -> fails over to premium
            proxy.post(key, chat()).status_code,  # 400 content filter, returned
            raw_post(proxy, b"{not json", key).status_code,  # bad input
            proxy.post("rm-nope-nope-nope-nope-nope-nope-nope-x", chat()).status_code,  # bad key
            proxy.post(key, chat(model="rainymodel/missing")).status_code,
            proxy.post(key, chat(), headers={"X-RainyModel-Policy": "cheap"}).status_code,
            proxy.post(key, chat(stream=True)).status_code,  # a stream
        ]
    assert statuses == [200, 200, 400, 400, 401, 404, 400, 200]
    rows = proxy.logs(len(statuses))
    assert len(rows) == len(statuses)
    assert [r.status for r in rows] == statuses
    assert [r.error_code for r in rows] == [
        "",
        "",
        "content_filter",
        "invalid_json",
        "invalid_api_key",
        "model_not_found",
        "unknown_policy",
        "",
    ]
    ok, failover = rows[0], rows[1]
    assert (ok.tier, len(ok.attempts), ok.prompt_tokens > 0, ok.completion_tokens, ok.fallback) == (
        "free",
        1,
        True,
        20,
        False,
    )
    assert failover.tier == "premium" and failover.fallback
    assert [a["outcome"] for a in failover.attempts] == ["http_503", "ok"]
    assert float(failover.cost_usd) == (failover.prompt_tokens * 1 + failover.completion_tokens * 3) / 1e6
    assert rows[4].api_key_id is None and rows[4].key_prefix == ""
    assert rows[7].stream and rows[7].ttft_ms is not None
    assert len({r.id for r in rows}) == len(rows)


def test_repeated_client_request_ids_still_get_a_row_each(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    for _ in range(3):
        assert proxy.post(key, chat(), headers={"X-Request-ID": "same-id"}).headers["x-request-id"] == "same-id"
        proxy.logs(1)  # flush between calls, so the repeats meet rows already written
    rows = proxy.logs(3)
    assert len(rows) == 3 and sum(r.id == "same-id" for r in rows) == 1


def test_client_disconnect_during_a_stream_is_logged(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.ok(tokens=30, token_delay=0.1)
    make_routing(upstream(fake_upstream, idle_timeout_s=5))
    _, key = api_key()
    proxy.reload()
    with httpx.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=chat(stream=True),
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if '"content": "' in line:
                break  # leave after the first token
    rows = proxy.logs(1)
    assert len(rows) == 1
    assert (rows[0].status, rows[0].error_code) == (499, "client_disconnected")
    # The upstream stream was closed too, not left running.
    request = fake_upstream.requests.chat()[0]
    assert request.client_closed.wait(3)


def test_client_disconnect_while_waiting_for_upstream_is_logged(fake_upstream, make_routing, api_key, proxy):
    fake_upstream.default = fu.first_token_delay(2)
    make_routing(upstream(fake_upstream, request_timeout_s=5))
    _, key = api_key()
    proxy.reload()
    body = orjson.dumps(chat())
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        time.sleep(0.5)  # RainyModel is now waiting on the upstream's 2 s delay
    rows = proxy.logs(1)
    assert [(r.status, r.error_code) for r in rows] == [(499, "client_disconnected")]


def test_a_host_outside_allowed_hosts_gets_a_json_400_and_a_row(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    r = proxy.post(key, chat(), headers={"Host": "evil.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
    assert r.headers["x-request-id"]
    assert [(row.status, row.error_code) for row in proxy.logs(1)] == [(400, "invalid_host")]


def test_sigterm_writes_every_buffered_row_before_the_worker_exits(
    fake_upstream, make_routing, api_key, rainymodel_server
):
    """With a flush interval far longer than the test, rows reach the database only through the lifespan
    shutdown's flush."""
    from usage.models import RequestLog

    make_routing(upstream(fake_upstream))
    _, key = api_key()
    server = rainymodel_server(env={"RAINYMODEL_LOG_FLUSH_S": "3600"})
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.post(
                server.url + "/v1/chat/completions",
                json=chat(stream=n % 2 == 0),
                headers={"Authorization": f"Bearer {key}"},
            ).status_code
            for n in range(25)
        ]
    assert statuses == [200] * 25
    assert RequestLog.objects.count() == 0  # still buffered in the worker
    assert server.stop() is True
    assert RequestLog.objects.count() == 25


def test_any_accept_header_gets_the_answer_and_its_row(fake_upstream, make_routing, api_key, proxy):
    """The API answers JSON (or SSE) whatever `Accept` says, as OpenAI's does; DRF's content negotiation used to
    answer 406 before the view ran, with no row."""
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    answers = [
        proxy.post(key, chat(), headers={"Accept": "text/html"}),
        proxy.post(key, chat(stream=True), headers={"Accept": "text/event-stream"}),
        proxy.post(key, chat(), headers={"Accept": "application/xml;q=0.9"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].headers["content-type"] == "application/json"
    assert answers[1].headers["content-type"].startswith("text/event-stream")
    assert answers[2].json()["object"] == "chat.completion"
    rows = proxy.logs(3)
    assert [r.status for r in rows] == [200, 200, 200]
