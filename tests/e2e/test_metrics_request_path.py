"""What the request path records in rainymodel_site/metrics.py: the in-process proxy served over a real socket, the
process's own registry read before and after (one process, so no multiprocess mode: tests/e2e/test_metrics_gunicorn.py
covers that). A call reaches the registry at the server's next fold (RAINYMODEL_METRICS_FOLD_S, 1 s), so the tests
wait for it."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests_total(**labels) -> float:
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "rainymodel_requests"
        for s in metric.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def eventually(check, seconds: float = 5.0) -> None:
    """Until `check()` holds: the server folds its calls into the registry once a second."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the metrics never showed the call"
        time.sleep(0.02)


def test_a_failover_counts_one_request_and_both_attempts(proxy, fake_upstream, second_upstream, make_routing, api_key):
    make_routing(upstream(fake_upstream, name="first", max_retries=0), upstream(second_upstream, name="second"))
    _, key = api_key()
    fake_upstream.script(fu.status(500))
    before = requests_total(provider="second", status="200")
    first_failed = sample("rainymodel_upstream_attempts_total", provider="first", tier="free", outcome="http_500")
    second_ok = sample("rainymodel_upstream_attempts_total", provider="second", tier="free", outcome="ok")
    response = proxy.post(key, json=chat())
    assert response.status_code == 200 and response.headers["x-rainymodel-provider"] == "second"
    eventually(lambda: requests_total(provider="second", status="200") == before + 1)
    assert sample("rainymodel_upstream_attempts_total", provider="first", tier="free", outcome="http_500") == (
        first_failed + 1
    )
    assert sample("rainymodel_upstream_attempts_total", provider="second", tier="free", outcome="ok") == (second_ok + 1)


def test_a_stream_records_time_to_first_token(proxy, fake_upstream, make_routing, api_key):
    make_routing(upstream(fake_upstream, name="streamer", max_retries=0))
    _, key = api_key()
    labels = {"alias": "rainymodel/auto", "provider": "streamer", "tier": "free"}
    before = sample("rainymodel_time_to_first_token_seconds_count", **labels)
    with proxy.openai(key).chat.completions.create(model="rainymodel/auto", messages=chat()["messages"], stream=True):
        pass
    eventually(lambda: sample("rainymodel_time_to_first_token_seconds_count", **labels) > before)


def test_a_limit_refusal_is_counted_by_kind_and_scope(proxy, fake_upstream, make_routing, api_key):
    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=1)
    before = sample("rainymodel_limit_rejections_total", kind="rpm", scope="key")
    refused = requests_total(status="429")
    assert proxy.post(key, json=chat()).status_code == 200
    assert proxy.post(key, json=chat()).status_code == 429
    assert sample("rainymodel_limit_rejections_total", kind="rpm", scope="key") == before + 1
    eventually(lambda: requests_total(status="429") == refused + 1)


def test_the_log_writer_reports_its_flushes(proxy, fake_upstream, make_routing, api_key):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    written = sample("rainymodel_log_rows_written_total")
    started = time.time()
    assert proxy.post(key, json=chat()).status_code == 200
    deadline = time.monotonic() + 5
    while sample("rainymodel_log_rows_written_total") < written + 1:
        assert time.monotonic() < deadline, "the writer never reported the row"
        time.sleep(0.02)
    assert sample("rainymodel_log_last_flush_timestamp_seconds") >= started
