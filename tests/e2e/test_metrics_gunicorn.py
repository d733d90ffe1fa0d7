"""GET /metrics from the production server: ONE gunicorn (gunicorn.conf.py) with TWO workers, known traffic through
the fake upstream (answers, failures that fail over, streams), then scrapes that may land on either worker. Every
scrape must show the exact sums over both workers: prometheus-client's multiprocess mode, set up by gunicorn.conf.py.

With REDIS_URL set the two workers share breakers and limits, as in production; the traffic below opens no breaker
either way, so the expected numbers do not depend on it.

Each worker folds its calls into its multiprocess files once per RAINYMODEL_METRICS_FOLD_S (1 s) and before a scrape
it serves itself (rainymodel_site/metrics.py): the tests wait up to one fold interval for the other worker's
calls. With a fold interval longer than the test, only the scrape's own fold and the shutdown's can bring calls in:
`test_nothing_recorded_before_a_scrape_or_a_shutdown_is_lost`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream
from tests.fakes.server import ProductionServer

pytestmark = pytest.mark.multiprocess

TOKEN = "metrics-token-of-the-gunicorn-test"
FAILOVERS = 4  # calls whose first attempt gets a 500 and fails over to the second provider
FOLD_S = 1.0  # RAINYMODEL_METRICS_FOLD_S's default: how far another worker's files may lag behind its calls


def scrape(server) -> dict[tuple[str, tuple], float]:
    """One scrape on a fresh connection (either worker may take it): {(sample name, sorted labels): value}."""
    response = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: dict, name: str, **labels) -> float:
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def requests_per_worker(directory: Path) -> dict[int, float]:
    """rainymodel_requests_total in each worker's own counter file."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        counts[pid] = sum(
            s.value
            for metric in MultiProcessCollector.merge([str(path)], accumulate=True)
            if metric.name == "rainymodel_requests"
            for s in metric.samples
            if s.name == "rainymodel_requests_total"
        )
    return counts


def test_two_workers_scrape_to_the_exact_sums(
    fake_upstream, second_upstream, make_routing, api_key, transactional_db, tmp_path
):
    from usage.models import RequestLog

    prices = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}
    make_routing(
        upstream(fake_upstream, name="primary", max_retries=0, breaker_failures=1000, **prices),
        upstream(second_upstream, name="secondary", max_retries=0, breaker_failures=1000, **prices),
    )
    _, key = api_key()
    auth = {"Authorization": f"Bearer {key}"}
    fake_upstream.script(*[fu.status(500)] * FAILOVERS)
    server = ProductionServer(
        workers=2,
        env={"RAINYMODEL_METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"},
    ).start()
    try:
        sent = {"plain": 0, "stream": 0}

        def plain(_) -> int:
            r = httpx.post(server.url + "/v1/chat/completions", json=chat(), headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            return 1

        def stream(_) -> int:
            with httpx.stream(
                "POST", server.url + "/v1/chat/completions", json=chat(stream=True), headers=auth, timeout=30
            ) as r:
                assert r.status_code == 200
                assert r.read().rstrip().endswith(b"data: [DONE]")
            return 1

        # Concurrent batches until both workers have served calls (the kernel picks the worker per connection).
        with ThreadPoolExecutor(8) as pool:
            for _ in range(20):
                sent["plain"] += sum(pool.map(plain, range(8)))
                sent["stream"] += sum(pool.map(stream, range(4)))
                time.sleep(FOLD_S + 0.2)  # each worker's files show its calls from its next fold
                if len([n for n in requests_per_worker(tmp_path).values() if n]) == 2:
                    break
        assert len([n for n in requests_per_worker(tmp_path).values() if n]) == 2, "one worker served everything"
        calls = sent["plain"] + sent["stream"]

        deadline = time.monotonic() + 15
        while total(scrape(server), "rainymodel_requests_total") < calls:
            assert time.monotonic() < deadline, "the scrape never reached the calls sent"
            time.sleep(0.1)
        deadline = time.monotonic() + 15
        while RequestLog.objects.count() < calls:
            assert time.monotonic() < deadline, "the request log never reached the calls sent"
            time.sleep(0.1)
        rows = list(RequestLog.objects.all())
        assert len(rows) == calls

        for _ in range(8):  # each scrape on a new connection: either worker answers, with the same sums
            samples = scrape(server)
            ok = {"endpoint": "chat", "alias": "rainymodel/auto", "policy": "auto", "status": "200"}
            assert total(samples, "rainymodel_requests_total") == calls
            assert total(samples, "rainymodel_requests_total", **ok, provider="secondary") == FAILOVERS
            assert total(samples, "rainymodel_requests_total", **ok, provider="primary") == calls - FAILOVERS
            assert total(samples, "rainymodel_upstream_attempts_total") == calls + FAILOVERS
            assert total(samples, "rainymodel_upstream_attempts_total", provider="primary", outcome="http_500") == (
                FAILOVERS
            )
            assert total(samples, "rainymodel_upstream_attempts_total", provider="secondary", outcome="ok") == (
                FAILOVERS
            )
            assert total(samples, "rainymodel_time_to_first_token_seconds_count") == sent["stream"]
            assert total(samples, "rainymodel_request_duration_seconds_count") == calls
            assert total(samples, "rainymodel_upstream_attempt_duration_seconds_count") == calls + FAILOVERS
            assert total(samples, "rainymodel_tokens_total", kind="prompt") == sum(r.prompt_tokens for r in rows)
            assert total(samples, "rainymodel_tokens_total", kind="completion") == sum(
                r.completion_tokens for r in rows
            )
            assert total(samples, "rainymodel_cost_usd_total") == pytest.approx(sum(float(r.cost_usd) for r in rows))
            assert total(samples, "rainymodel_log_rows_written_total") == calls
            assert total(samples, "rainymodel_log_rows_dropped_total") == 0
            assert time.time() - 10 < total(samples, "rainymodel_log_last_flush_timestamp_seconds") <= time.time()
            assert total(samples, "rainymodel_breaker_state", scope="provider", provider="primary", state="closed") == 1
    finally:
        server.stop()


def requests_in_files(directory: Path) -> float:
    return sum(requests_per_worker(directory).values())


def test_nothing_recorded_before_a_scrape_or_a_shutdown_is_lost(
    fake_upstream, make_routing, api_key, transactional_db, tmp_path
):
    """A fold interval longer than the test: the calls reach the metrics only through the fold before a scrape
    (first batch) and the fold at lifespan shutdown, before gunicorn marks the worker dead (second batch)."""
    make_routing(upstream(fake_upstream, name="primary", max_retries=0))
    _, key = api_key()
    auth = {"Authorization": f"Bearer {key}"}
    server = ProductionServer(
        workers=1,
        env={
            "RAINYMODEL_METRICS_TOKEN": TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "RAINYMODEL_METRICS_FOLD_S": "3600",
            "LOG_LEVEL": "WARNING",
        },
    ).start()
    try:
        for _ in range(3):
            r = httpx.post(server.url + "/v1/chat/completions", json=chat(), headers=auth, timeout=30)
            assert r.status_code == 200, r.text
        assert requests_in_files(tmp_path) == 0  # not folded yet: the scrape's own fold must bring them in
        assert total(scrape(server), "rainymodel_requests_total") == 3
        assert total(scrape(server), "rainymodel_upstream_attempts_total", outcome="ok") == 3
        for _ in range(2):
            r = httpx.post(server.url + "/v1/chat/completions", json=chat(), headers=auth, timeout=30)
            assert r.status_code == 200, r.text
        assert requests_in_files(tmp_path) == 3
    finally:
        server.stop()
    assert requests_in_files(tmp_path) == 5
