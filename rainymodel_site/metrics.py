"""The Prometheus metrics (docs/observability.md): every `rainymodel_*` metric is defined here, once, and recorded
through the few functions below, so the request path, the log writer and the limits record without knowing
prometheus-client.

- `record_call(row, attempts, seconds)`: one call, from `Call.finish` (routing/proxy/call.py), with the RequestLog row
  it is about to queue: requests, request duration, time to first token, tokens, cost, and each upstream attempt
  with its final outcome (a stream attempt first recorded "ok" may later become `stream_interrupted`; counting at
  the end counts it once, as the log does).
- `record_limit_rejection(kind, scope)`: a 429 from a limit (routing/proxy/flow.py, where LimitExceeded is caught).
- `log_queue_rows(n)`, `log_flushed(written)`, `log_rows_dropped(n)`: the request-log writer (usage/writer.py).

Breaker state is not recorded here: it lives in the shared store, and the scrape reads it there
(rainymodel_site/metrics_view.py).

Across gunicorn workers prometheus-client's multiprocess mode sums every worker's values: gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client. Without it (`make run`, one process) the
values live in this process's default registry.

Cost: two dict lookups and one write per value (an mmap write in multiprocess mode), no I/O, no lock shared with
another request (bench/metrics_cost.py measures it; docs/benchmarks.md). Label children are cached per kind of call
and per kind of attempt, because `.labels()` validates and stringifies its arguments on every call. Labels are small
closed sets (names from the snapshot, status codes, reasons from routing/reasons.py); never the client's own text
(the requested model, a request id), never a secret.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds, resolving single milliseconds at the low end (loopback upstreams, cache hits) up to a long stream.
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

log = logging.getLogger(__name__)

# No `*_created` series: multiprocess mode has none, so one process and many expose the same names.
disable_created_metrics()

REQUEST_LABELS = ("endpoint", "alias", "policy", "tier", "provider", "status")
ROUTE_LABELS = ("alias", "provider", "tier")


class AttemptLike(Protocol):
    """What `record_call` reads of an attempt (routing.proxy.call.Attempt)."""

    provider: str
    tier: str
    outcome: str
    seconds: float | None


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when this process runs in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The metrics of one registry. `per_key` adds a `key` label (the key's prefix, `master` for the master key)
    to requests, tokens and cost: one series per key and label combination, so off by default."""

    def __init__(self, *, per_key: bool = False, registry: CollectorRegistry | None = REGISTRY):
        self.per_key = per_key
        key = ("key",) if per_key else ()
        self.requests = Counter(
            "rainymodel_requests",
            "Calls answered, one per request-log row, by endpoint, alias, policy, tier and provider that answered "
            "(empty when none did) and HTTP status code.",
            REQUEST_LABELS + key,
            registry=registry,
        )
        self.request_duration = Histogram(
            "rainymodel_request_duration_seconds",
            "Time from the request's arrival to its log row: the whole call, all attempts, the whole stream.",
            ("endpoint", "alias"),
            buckets=BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "rainymodel_time_to_first_token_seconds",
            "Streams: time from the request's arrival to the first completion chunk sent to the client "
            "(whole milliseconds, as logged), by the route that sent it.",
            ROUTE_LABELS,
            buckets=BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "rainymodel_upstream_attempts",
            "Upstream attempts by provider, tier and outcome (ok, continued, restarted, or the failure reason: "
            "routing/reasons.py).",
            ("provider", "tier", "outcome"),
            registry=registry,
        )
        self.attempt_duration = Histogram(
            "rainymodel_upstream_attempt_duration_seconds",
            "One upstream attempt: until the whole answer (non-streaming), the first event (streams) or the failure.",
            ("provider", "tier"),
            buckets=BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "rainymodel_tokens",
            "Tokens as logged (the upstream's usage, else the estimate), by kind: prompt or completion.",
            ROUTE_LABELS + ("kind",) + key,
            registry=registry,
        )
        self.cost = Counter(
            "rainymodel_cost_usd",
            "Cost in US dollars at the routes' prices, as logged.",
            ROUTE_LABELS + key,
            registry=registry,
        )
        self.limit_rejections = Counter(
            "rainymodel_limit_rejections",
            "Calls refused with 429 by a limit, by kind (rpm, tpm, concurrency, quota) and scope (key or user).",
            ("kind", "scope"),
            registry=registry,
        )
        self.log_queue = Gauge(
            "rainymodel_log_queue_rows",
            "Request-log rows buffered and not yet written, at the writer's last wake-up (summed over workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.log_last_flush = Gauge(
            "rainymodel_log_last_flush_timestamp_seconds",
            "Unix time of the request-log writer's last successful flush (the oldest over live workers); "
            "flush lag = time() - this.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.log_written = Counter(
            "rainymodel_log_rows_written", "Request-log rows written to the database.", registry=registry
        )
        self.log_dropped = Counter(
            "rainymodel_log_rows_dropped",
            "Request-log rows dropped: the buffer was full, or the database refused the row for good.",
            registry=registry,
        )
        self._calls: dict[tuple, CallSeries] = {}
        self._attempts: dict[tuple, AttemptSeries] = {}
        self._children: dict[tuple, Any] = {}

    def _child(self, metric, values: tuple) -> Any:
        cache_key = (id(metric), values)
        child = self._children.get(cache_key)
        if child is None:
            child = self._children[cache_key] = metric.labels(*[str(v) for v in values])
        return child

    def _call_series(self, values: tuple) -> CallSeries:
        endpoint, alias, policy, tier, provider, status, *key = values
        route = (alias, provider, tier)
        series = self._calls[values] = CallSeries(
            requests=self._child(self.requests, values),
            duration=self._child(self.request_duration, (endpoint, alias)),
            ttft=self._child(self.ttft, route),
            prompt=self._child(self.tokens, (*route, "prompt", *key)),
            completion=self._child(self.tokens, (*route, "completion", *key)),
            cost=self._child(self.cost, (*route, *key)),
        )
        return series

    def _attempt_series(self, values: tuple) -> AttemptSeries:
        provider, tier, _ = values
        series = self._attempts[values] = AttemptSeries(
            count=self._child(self.attempts, values), duration=self._child(self.attempt_duration, (provider, tier))
        )
        return series

    def record_call(self, row: Mapping[str, Any], attempts: Iterable[AttemptLike], seconds: float) -> None:
        """One call, from the RequestLog row it becomes (usage/writer.py's shape) and its attempts."""
        values: tuple = (row["endpoint"], row["alias"], row["policy"], row["tier"], row["provider"], row["status"])
        if self.per_key:
            values += (row["key_prefix"] or "none",)
        series = self._calls.get(values) or self._call_series(values)
        series.requests.inc()
        series.duration.observe(seconds)
        if row["ttft_ms"] is not None:
            series.ttft.observe(row["ttft_ms"] / 1000)
        # An upstream may report negative usage; a counter refuses to go down.
        if row["prompt_tokens"] > 0:
            series.prompt.inc(row["prompt_tokens"])
        if row["completion_tokens"] > 0:
            series.completion.inc(row["completion_tokens"])
        if row["cost_usd"] > 0:
            series.cost.inc(row["cost_usd"])
        for attempt in attempts:
            kind = (attempt.provider, attempt.tier, attempt.outcome)
            one = self._attempts.get(kind) or self._attempt_series(kind)
            one.count.inc()
            if attempt.seconds is not None:
                one.duration.observe(attempt.seconds)


@dataclass(slots=True)
class CallSeries:
    """The label children one kind of call records into, looked up once per call instead of once per metric."""

    requests: Any
    duration: Any
    ttft: Any
    prompt: Any
    completion: Any
    cost: Any


@dataclass(slots=True)
class AttemptSeries:
    count: Any
    duration: Any


METRICS = Metrics(per_key=settings.RAINYMODEL_METRICS_PER_KEY)


def record_call(row: Mapping[str, Any], attempts: Iterable[AttemptLike], seconds: float) -> None:
    try:
        METRICS.record_call(row, attempts, seconds)
    except Exception:  # a metric must never fail the call it describes
        log.exception("recording the metrics of %s failed", row.get("id"))


def record_limit_rejection(kind: str, scope: str) -> None:
    METRICS._child(METRICS.limit_rejections, (kind or "other", scope or "key")).inc()


def log_queue_rows(rows: int) -> None:
    METRICS.log_queue.set(rows)


def log_flushed(written: int) -> None:
    METRICS.log_last_flush.set(time.time())
    if written:
        METRICS.log_written.inc(written)


def log_rows_dropped(rows: int = 1) -> None:
    METRICS.log_dropped.inc(rows)


def exposition(*extra: CollectorRegistry) -> bytes:
    """The Prometheus text format of every worker's metrics (multiprocess mode) or this process's, followed by
    `extra` registries (collectors read at scrape time). Reads the multiprocess files: call it off the event loop."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return b"".join(generate_latest(r) for r in (registry, *extra))
