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

Cost: a call is not written to prometheus-client as it happens. `record_call` adds it to plain per-process sums
(one list per kind of call and per kind of attempt: counts, token and cost sums, histogram observations binned with
bisect), and `fold` adds those sums to the prometheus-client values, one write per value per fold instead of one
per value per call: every RAINYMODEL_METRICS_FOLD_S (1 s) from a task on the event loop (`start_folding`, at
lifespan startup), before every scrape this process serves (metrics_view.py), and at lifespan shutdown
(`stop_folding`: before a gunicorn worker exits, so its last calls are in its multiprocess files before the master
marks it dead). Recording and folding both run on the event loop's thread, so neither needs a lock. The price: a
scrape served by one worker may miss up to one fold interval of the OTHER workers' latest calls (a worker killed
outright loses its unfolded calls, as it loses its unwritten log rows). bench/metrics_cost.py measures both halves
(docs/benchmarks.md). Label children are cached per kind of call and per kind of attempt, because `.labels()`
validates and stringifies its arguments on every call. Labels are small
closed sets (names from the snapshot, status codes, reasons from routing/reasons.py); never the client's own text
(the requested model, a request id), never a secret.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from bisect import bisect_left
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
        self._pending_calls: dict[tuple, list] = {}
        self._pending_attempts: dict[tuple, list] = {}

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
        """One call, from the RequestLog row it becomes (usage/writer.py's shape) and its attempts: added to this
        process's pending sums, which `fold` adds to the metrics. Plain list arithmetic, no prometheus-client call."""
        values: tuple = (row["endpoint"], row["alias"], row["policy"], row["tier"], row["provider"], row["status"])
        if self.per_key:
            values += (row["key_prefix"] or "none",)
        pending = self._pending_calls.get(values)
        if pending is None:
            pending = self._pending_calls[values] = [0, 0, 0, 0.0, 0.0, [0] * _BINS, 0.0, [0] * _BINS]
        pending[_REQUESTS] += 1
        pending[_DURATION_SUM] += seconds
        pending[_DURATION_BINS][bisect_left(BUCKETS, seconds)] += 1
        ttft_ms = row["ttft_ms"]
        if ttft_ms is not None:
            ttft = ttft_ms / 1000
            pending[_TTFT_SUM] += ttft
            pending[_TTFT_BINS][bisect_left(BUCKETS, ttft)] += 1
        # An upstream may report negative usage; a counter refuses to go down.
        if row["prompt_tokens"] > 0:
            pending[_PROMPT] += row["prompt_tokens"]
        if row["completion_tokens"] > 0:
            pending[_COMPLETION] += row["completion_tokens"]
        if row["cost_usd"] > 0:
            pending[_COST] += row["cost_usd"]
        for attempt in attempts:
            kind = (attempt.provider, attempt.tier, attempt.outcome)
            one = self._pending_attempts.get(kind)
            if one is None:
                one = self._pending_attempts[kind] = [0, 0.0, [0] * _BINS]
            one[0] += 1
            if attempt.seconds is not None:
                one[1] += attempt.seconds
                one[2][bisect_left(BUCKETS, attempt.seconds)] += 1

    def fold(self) -> None:
        """Add the calls recorded since the last fold to the prometheus-client values (in multiprocess mode, this
        worker's files). Runs on the thread that records (the event loop), so no call lands in sums being folded.
        Attempts first and each call's request count last: a scrape that counts every request sees the rest too."""
        calls, self._pending_calls = self._pending_calls, {}
        attempts, self._pending_attempts = self._pending_attempts, {}
        for kind, (count, seconds, bins) in attempts.items():
            tried = self._attempts.get(kind) or self._attempt_series(kind)
            _observe_many(tried.duration, bins, seconds)
            tried.count.inc(count)
        for values, pending in calls.items():
            series = self._calls.get(values) or self._call_series(values)
            _observe_many(series.duration, pending[_DURATION_BINS], pending[_DURATION_SUM])
            _observe_many(series.ttft, pending[_TTFT_BINS], pending[_TTFT_SUM])
            if pending[_PROMPT]:
                series.prompt.inc(pending[_PROMPT])
            if pending[_COMPLETION]:
                series.completion.inc(pending[_COMPLETION])
            if pending[_COST]:
                series.cost.inc(pending[_COST])
            series.requests.inc(pending[_REQUESTS])


# A call's pending sums (one list per kind of call, indexed by these): requests, prompt and completion tokens, cost,
# then each histogram as its sum and its per-bucket counts (the last bin is +Inf), as prometheus-client keeps them.
_REQUESTS, _PROMPT, _COMPLETION, _COST, _DURATION_SUM, _DURATION_BINS, _TTFT_SUM, _TTFT_BINS = range(8)
_BINS = len(BUCKETS) + 1


def _observe_many(histogram: Any, bins: list[int], total: float) -> None:
    """What `observe` would have done for each of `sum(bins)` values adding up to `total`: prometheus-client keeps
    a histogram child as a sum and one non-cumulative count per bucket (`_sum`, `_buckets`), and has no public bulk
    observe. Internals: tests/test_framework_pins.py fails when the installed prometheus-client changes them."""
    if not any(bins):
        return
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, bins, strict=True):
        if count:
            bucket.inc(count)


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


def fold() -> None:
    """Fold this process's pending calls into the metrics: every RAINYMODEL_METRICS_FOLD_S (`start_folding`),
    before a scrape this process serves, and at shutdown. Call it on the event loop's thread, where calls record."""
    try:
        METRICS.fold()
    except Exception:  # a metric must never fail the call or the scrape around it
        log.exception("folding the metrics failed")


_folder: asyncio.Task | None = None


async def _fold_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        fold()


def start_folding() -> None:
    """Lifespan startup: fold on this event loop every RAINYMODEL_METRICS_FOLD_S."""
    global _folder
    if _folder is None or _folder.done():
        _folder = asyncio.get_running_loop().create_task(_fold_every(settings.RAINYMODEL_METRICS_FOLD_S))


def stop_folding() -> None:
    """Lifespan shutdown (before a gunicorn worker exits and the master marks it dead): the last fold."""
    global _folder
    if _folder is not None:
        _folder.cancel()
        _folder = None
    fold()


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
