"""rainymodel_site/metrics.py: what one call and its attempts record, against a registry of the test's own.
Through the real request path: tests/e2e/test_metrics_request_path.py; across gunicorn workers:
tests/e2e/test_metrics_gunicorn.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from rainymodel_site.metrics import Metrics


@dataclass
class A:
    provider: str
    tier: str
    outcome: str
    seconds: float | None


def row(**changes) -> dict:
    values = {
        "endpoint": "chat",
        "alias": "rainymodel/auto",
        "policy": "auto",
        "tier": "premium",
        "provider": "openrouter",
        "status": 200,
        "key_prefix": "rm-abcdefgh",
        "ttft_ms": None,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "cost_usd": 0.0004,
    }
    return {**values, **changes}


def sample(registry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_one_call_counts_request_attempts_tokens_and_cost():
    registry = CollectorRegistry()
    m = Metrics(registry=registry)
    attempts = [A("hf", "free", "http_503", 0.0015), A("openrouter", "premium", "ok", 0.2)]
    m.record_call(row(), attempts, 0.25)
    m.record_call(row(status=502, tier="", provider="", prompt_tokens=0, completion_tokens=0, cost_usd=0.0), [], 0.01)
    m.fold()
    labels = {"endpoint": "chat", "alias": "rainymodel/auto", "policy": "auto"}
    assert sample(registry, "rainymodel_requests_total", **labels, tier="premium", provider="openrouter", status="200")
    assert sample(registry, "rainymodel_requests_total", **labels, tier="", provider="", status="502") == 1
    assert sample(registry, "rainymodel_upstream_attempts_total", provider="hf", tier="free", outcome="http_503") == 1
    assert sample(registry, "rainymodel_upstream_attempts_total", provider="openrouter", tier="premium", outcome="ok")
    route = {"alias": "rainymodel/auto", "provider": "openrouter", "tier": "premium"}
    assert sample(registry, "rainymodel_tokens_total", **route, kind="prompt") == 12
    assert sample(registry, "rainymodel_tokens_total", **route, kind="completion") == 30
    assert sample(registry, "rainymodel_cost_usd_total", **route) == pytest.approx(0.0004)
    assert sample(registry, "rainymodel_request_duration_seconds_count", endpoint="chat", alias="rainymodel/auto") == 2


def test_latency_buckets_resolve_single_milliseconds():
    registry = CollectorRegistry()
    m = Metrics(registry=registry)
    m.record_call(row(ttft_ms=4), [A("hf", "free", "ok", 0.0015)], 0.0015)
    m.fold()
    bucket = "rainymodel_upstream_attempt_duration_seconds_bucket"
    assert sample(registry, bucket, provider="hf", tier="free", le="0.001") == 0
    assert sample(registry, bucket, provider="hf", tier="free", le="0.002") == 1
    ttft = "rainymodel_time_to_first_token_seconds_bucket"
    route = {"alias": "rainymodel/auto", "provider": "openrouter", "tier": "premium"}
    assert sample(registry, ttft, **route, le="0.002") == 0
    assert sample(registry, ttft, **route, le="0.005") == 1


def test_no_key_label_unless_asked_for():
    registry = CollectorRegistry()
    m = Metrics(registry=registry)
    m.record_call(row(), [], 0.1)
    m.fold()
    names = {s.labels.get("key") for metric in registry.collect() for s in metric.samples}
    assert names == {None}

    registry = CollectorRegistry()
    m = Metrics(per_key=True, registry=registry)
    m.record_call(row(), [], 0.1)
    m.fold()
    assert sample(
        registry,
        "rainymodel_requests_total",
        endpoint="chat",
        alias="rainymodel/auto",
        policy="auto",
        tier="premium",
        provider="openrouter",
        status="200",
        key="rm-abcdefgh",
    )
    assert sample(
        registry,
        "rainymodel_tokens_total",
        alias="rainymodel/auto",
        provider="openrouter",
        tier="premium",
        kind="prompt",
        key="rm-abcdefgh",
    )


@pytest.mark.django_db(transaction=True)
def test_a_log_row_the_database_refuses_counts_as_dropped():
    from prometheus_client import REGISTRY

    from tests.usage.test_writer import row as log_row
    from usage.writer import LogWriter

    writer = LogWriter()
    writer.enqueue = writer._buffer.append  # no thread: flush by hand
    writer.enqueue(log_row("req_good"))
    writer.enqueue(log_row("req_bad", latency_ms=-5))  # a positive-integer column refuses it
    before = REGISTRY.get_sample_value("rainymodel_log_rows_dropped_total")
    assert writer.flush() == 1
    assert REGISTRY.get_sample_value("rainymodel_log_rows_dropped_total") == before + 1


def test_negative_usage_from_an_upstream_is_not_counted():
    registry = CollectorRegistry()
    m = Metrics(registry=registry)
    m.record_call(row(prompt_tokens=-5, completion_tokens=-1, cost_usd=-0.1), [], 0.1)
    m.fold()
    route = {"alias": "rainymodel/auto", "provider": "openrouter", "tier": "premium"}
    assert sample(registry, "rainymodel_tokens_total", **route, kind="prompt") == 0
    assert sample(registry, "rainymodel_cost_usd_total", **route) == 0
    assert (
        sample(
            registry,
            "rainymodel_requests_total",
            **{k: v for k, v in row().items() if k in ("endpoint", "alias", "policy", "tier", "provider")},
            status="200",
        )
        == 1
    )


def samples(registry) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for metric in registry.collect() for s in metric.samples}


def test_folded_calls_expose_what_observing_each_call_would():
    """`fold` writes a histogram's bucket counts and sum in bulk through prometheus-client internals: the result
    must be sample for sample what observing every value through the public API gives (bucket edges included)."""
    from rainymodel_site.metrics import BUCKETS

    durations = [*BUCKETS, 0.0, 0.0004, 0.0011, 0.3, 7.5, 119.9, 120.0, 121.0, 900.0]
    calls = [
        (row(ttft_ms=int(s * 1000) if i % 3 else None, prompt_tokens=i, cost_usd=i / 1e5), s)
        for i, s in enumerate(durations)
    ]
    attempts = [[A("hf", "free", "http_503", s / 2), A("openrouter", "premium", "ok", s)] for _, s in calls]
    folded = CollectorRegistry()
    m = Metrics(registry=folded)
    for (r, seconds), tried in zip(calls, attempts, strict=True):
        m.record_call(r, tried, seconds)
        if seconds == 0.3:
            m.fold()  # two folds: the second adds to the first
    m.fold()

    direct = CollectorRegistry()
    d = Metrics(registry=direct)
    route = ("rainymodel/auto", "openrouter", "premium")
    for (r, seconds), tried in zip(calls, attempts, strict=True):
        d.requests.labels("chat", "rainymodel/auto", "auto", "premium", "openrouter", "200").inc()
        d.request_duration.labels("chat", "rainymodel/auto").observe(seconds)
        d.ttft.labels(*route)  # a kind of call's series exist from its first call, observed or not
        if r["ttft_ms"] is not None:
            d.ttft.labels(*route).observe(r["ttft_ms"] / 1000)
        d.tokens.labels(*route, "prompt").inc(r["prompt_tokens"])
        d.tokens.labels(*route, "completion").inc(r["completion_tokens"])
        d.cost.labels(*route).inc(r["cost_usd"])
        for a in tried:
            d.attempts.labels(a.provider, a.tier, a.outcome).inc()
            d.attempt_duration.labels(a.provider, a.tier).observe(a.seconds)

    got, want = samples(folded), samples(direct)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value), name


def test_a_call_counts_only_once_folded_and_only_once():
    registry = CollectorRegistry()
    m = Metrics(registry=registry)
    m.record_call(row(), [A("hf", "free", "ok", 0.01)], 0.02)
    assert sample(registry, "rainymodel_upstream_attempts_total", provider="hf", tier="free", outcome="ok") == 0
    m.fold()
    m.fold()
    assert sample(registry, "rainymodel_upstream_attempts_total", provider="hf", tier="free", outcome="ok") == 1
    assert sample(registry, "rainymodel_request_duration_seconds_count", endpoint="chat", alias="rainymodel/auto") == 1


@pytest.mark.django_db
async def test_a_scrape_shows_a_call_recorded_just_before_it(async_client, settings):
    """No fold task runs here (no lifespan): the call can only reach the scrape through the scrape's own fold."""
    from prometheus_client.parser import text_string_to_metric_families

    from rainymodel_site import metrics

    settings.RAINYMODEL_METRICS_TOKEN = "scrape-token"
    metrics.record_call(row(alias="just-before-the-scrape"), [], 0.05)
    response = await async_client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert response.status_code == 200
    scraped = [
        s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
        if s.name == "rainymodel_requests_total" and s.labels["alias"] == "just-before-the-scrape"
    ]
    assert scraped == [1.0]
