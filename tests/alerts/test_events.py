"""alerts/events.py: what the request path queues (pure: no database, no server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from alerts import events
from alerts.events import AliasAnswered, AliasFailed, QuotaCrossed

START = datetime(2026, 11, 26, tzinfo=UTC)


@dataclass
class Subject:
    kind: str = "key"
    id: int = 7
    label: str = "rm-abcdef012"


@dataclass
class Quota:
    maxima: dict[str, float]
    subject: Subject = field(default_factory=Subject)
    period: str = "day"
    start: datetime = START
    end: datetime = datetime(2026, 11, 27, tzinfo=UTC)


def test_a_request_quota_counted_up_one_by_one_crosses_80_95_and_100_percent_once_each(alert_queue):
    quota = Quota({"requests": 20})
    for used in range(1, 26):
        events.quota_used(quota, "requests", used, 1)
    crossed = [(e.threshold, e.used) for e in alert_queue]
    assert crossed == [(80, 16), (95, 19), (100, 20)]
    first = alert_queue[0]
    assert isinstance(first, QuotaCrossed)
    assert (first.subject_kind, first.subject_id, first.metric, first.period_start) == ("key", 7, "requests", START)


def test_one_big_settle_that_jumps_past_several_thresholds_queues_each_of_them(alert_queue):
    quota = Quota({"tokens": 1000})
    events.quota_used(quota, "tokens", 700, 700)
    events.quota_used(quota, "tokens", 1300, 600)
    assert [e.threshold for e in alert_queue] == [80, 95, 100]


def test_cost_quotas_compare_as_numbers_and_metrics_without_a_maximum_queue_nothing(alert_queue):
    quota = Quota({"cost": 0.5})
    events.quota_used(quota, "cost", 0.4, 0.4)  # exactly 80 %
    events.quota_used(quota, "tokens", 10**9, 10**9)  # not limited by this quota
    events.quota_used(quota, "cost", 0.4, -0.1)  # a refund (a refused request given back) is no crossing
    assert [(e.metric, e.threshold) for e in alert_queue] == [("cost", 80)]


def test_a_call_that_found_every_route_failing_queues_an_alias_failure(alert_queue):
    for code in ("all_upstreams_failed", "upstream_timeout", "no_available_route"):
        events.call_finished("rainymodel/auto", 502, code)
    events.call_finished("rainymodel/auto", 429, "quota_exceeded")
    events.call_finished("rainymodel/auto", 400, "invalid_value")
    events.call_finished("rainymodel/auto", 400, "no_available_route")  # an upstream's own 4xx code, passed through
    events.call_finished(None, 401, "invalid_api_key")
    assert [type(e) for e in alert_queue] == [AliasFailed] * 3
    assert [e.error_code for e in alert_queue] == ["all_upstreams_failed", "upstream_timeout", "no_available_route"]


def test_a_success_is_queued_only_for_an_alias_that_is_failing(alert_queue):
    events.call_finished("rainymodel/auto", 200, "")
    assert not alert_queue
    events.failing_aliases = frozenset({"rainymodel/auto"})
    events.call_finished("rainymodel/auto", 200, "")
    events.call_finished("rainymodel/chat", 200, "")
    assert [(type(e), e.alias) for e in alert_queue] == [(AliasAnswered, "rainymodel/auto")]


def test_the_queue_is_bounded_and_counts_what_it_dropped(alert_queue, monkeypatch):
    monkeypatch.setattr(events, "MAX_QUEUED", 3)
    before = events.dropped
    for i in range(5):
        events.breaker_opened(f"p{i}", "connect_error", 15.0)
    assert [e.provider for e in alert_queue] == ["p2", "p3", "p4"]
    assert events.dropped - before == 2


def test_switched_off_nothing_is_queued(alert_queue, monkeypatch):
    monkeypatch.setattr(events, "enabled", False)
    events.breaker_closed("hf")
    events.call_finished("rainymodel/auto", 502, "all_upstreams_failed")
    assert not alert_queue
