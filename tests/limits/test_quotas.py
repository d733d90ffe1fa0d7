"""limits/quotas.py: day/month quotas of requests, tokens and cost, and their rebuild from RequestLog."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import limits
from limits import base, quotas
from routing.snapshot import QuotaInfo
from tests.limits.conftest import _reset_seconds, day_quota, log_row, make_key


async def test_daily_token_quota_is_refused_once_used(store, transactional_db):
    key = make_key(quotas=[day_quota(tokens=1000)])
    for _ in range(2):
        admission = await limits.admit(key, estimated_tokens=10)
        await limits.settle(admission, tokens=500, cost_usd=0)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=10)
    error = refused.value
    assert (error.status, error.code, error.type) == (429, "quota_exceeded", "insufficient_quota")
    assert "daily quota of 1000 tokens" in error.message
    _, end = limits.period_bounds("day", datetime.now(UTC))
    assert abs(error.retry_after - (end - datetime.now(UTC)).total_seconds()) < 5
    assert error.headers["x-ratelimit-limit-tokens"] == "1000"
    assert error.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_request_quota_counts_each_admitted_request_exactly_under_concurrency(store, transactional_db):
    key = make_key(quotas=[day_quota(requests=7)])
    results = await asyncio.gather(*(limits.admit(key, estimated_tokens=1) for _ in range(20)), return_exceptions=True)
    assert sum(isinstance(r, limits.Admission) for r in results) == 7
    refusal = next(r for r in results if isinstance(r, limits.LimitExceeded))
    assert refusal.code == "quota_exceeded" and "7 requests" in refusal.message
    usage = await asyncio.to_thread(limits.usage_from_log_sync, key.id, *limits.period_bounds("day", datetime.now(UTC)))
    assert usage["requests"] == 0  # nothing in the log: these came from the counters alone
    counter = quotas.quota_counter(key.id, "day", limits.period_bounds("day", datetime.now(UTC))[0], "requests")
    assert await store.get(counter) == quotas.COUNTER_BASE + 7  # refused requests were given back


async def test_cost_quota_counts_settled_cost(store, transactional_db):
    key = make_key(quotas=[day_quota(cost=0.01)])
    admission = await limits.admit(key, estimated_tokens=1)
    await limits.settle(admission, tokens=100, cost_usd=0.006)
    admission = await limits.admit(key, estimated_tokens=1)
    await limits.settle(admission, tokens=100, cost_usd=0.006)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    assert refused.value.code == "quota_exceeded" and "$0.01" in refused.value.message


async def test_a_lost_quota_counter_is_rebuilt_from_the_request_log(store, transactional_db):
    key = make_key(quotas=[day_quota(tokens=1000, requests=100, cost=1.0)])
    await asyncio.to_thread(log_row, key.id, prompt=400, completion=300, cost=0.25)
    await asyncio.to_thread(log_row, key.id, prompt=100, completion=250, cost=0.5)
    # Rows that never counted against the quota (refused before or by the limits), and other periods and keys:
    await asyncio.to_thread(log_row, key.id, status=429, error_code="quota_exceeded", admitted=False)
    await asyncio.to_thread(log_row, key.id, status=401, error_code="invalid_api_key", admitted=False)
    await asyncio.to_thread(log_row, key.id, prompt=5000, created_at=datetime.now(UTC) - timedelta(days=2))
    await asyncio.to_thread(log_row, key.id + 1, prompt=5000)
    with pytest.raises(limits.LimitExceeded) as refused:  # 1,050 tokens used according to the log
        await limits.admit(key, estimated_tokens=1)
    assert "1000 tokens" in refused.value.message
    start, _ = limits.period_bounds("day", datetime.now(UTC))
    values = await store.get_many([quotas.quota_counter(key.id, "day", start, m) for m in limits.METRICS])
    assert sorted(v - quotas.COUNTER_BASE for v in values.values()) == pytest.approx([0.75, 2, 1050])


class NotShared(dict):
    """A registry of in-flight rebuilds that never shares one, like two separate worker processes."""

    def __setitem__(self, key, value):
        pass


async def test_two_workers_rebuilding_at_once_do_not_double_count(store, transactional_db, monkeypatch):
    key = make_key(quotas=[day_quota(requests=10)])
    for _ in range(4):
        await asyncio.to_thread(log_row, key.id)
    monkeypatch.setattr(quotas, "_rebuilds", NotShared())  # as in two processes: each runs its own rebuild
    admissions = await asyncio.gather(limits.admit(key, estimated_tokens=1), limits.admit(key, estimated_tokens=1))
    assert len(admissions) == 2
    start, _ = limits.period_bounds("day", datetime.now(UTC))
    counter = quotas.quota_counter(key.id, "day", start, "requests")
    assert await store.get(counter) == quotas.COUNTER_BASE + 6  # 4 from the log + the 2 just admitted


async def test_a_settle_after_the_counter_was_lost_does_not_leave_a_partial_counter(store, transactional_db):
    key = make_key(quotas=[day_quota(tokens=1000)])
    admission = await limits.admit(key, estimated_tokens=1)
    start, _ = limits.period_bounds("day", datetime.now(UTC))
    counter = quotas.quota_counter(key.id, "day", start, "tokens")
    await store.delete(counter)  # the store lost it (flush, restart) while the request was in flight
    await limits.settle(admission, tokens=900, cost_usd=0)
    assert await store.get(counter) is None  # not re-created holding just 900
    # The request's log row reaches the database; the next admit rebuilds the whole day from it.
    await asyncio.to_thread(log_row, key.id, prompt=900)
    await asyncio.to_thread(log_row, key.id, prompt=200)
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)


async def test_a_request_admitted_before_the_period_ended_is_counted_in_its_own_period(
    store, transactional_db, monkeypatch
):
    key = make_key(quotas=[day_quota(tokens=1000)])
    before_midnight = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    monkeypatch.setattr(base, "utcnow", lambda: before_midnight)
    admission = await limits.admit(key, estimated_tokens=1)
    monkeypatch.setattr(base, "utcnow", lambda: before_midnight + timedelta(seconds=2))
    await limits.settle(admission, tokens=1000, cost_usd=0)
    await limits.admit(key, estimated_tokens=1)  # a new day
    monkeypatch.setattr(base, "utcnow", lambda: before_midnight)
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)


@pytest.mark.parametrize(
    "now, period, start, end",
    [
        (
            datetime(2026, 3, 1, 13, 5, tzinfo=UTC),
            "day",
            datetime(2026, 3, 1, tzinfo=UTC),
            datetime(2026, 3, 2, tzinfo=UTC),
        ),
        (
            datetime(2026, 2, 28, 23, 59, tzinfo=UTC),
            "month",
            datetime(2026, 2, 1, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 31, 8, tzinfo=UTC),
            "month",
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 1, 23, 30, tzinfo=UTC) - timedelta(hours=24),
            "day",
            datetime(2026, 2, 28, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
    ],
)
def test_quota_periods_are_utc_calendar_days_and_months(now, period, start, end):
    assert limits.period_bounds(period, now) == (start, end)


async def test_headers_come_from_the_tightest_quota_when_the_key_has_no_rpm(store, transactional_db):
    key = make_key(quotas=[day_quota(requests=10), QuotaInfo("month", 5, None, None)])
    admission = await limits.admit(key, estimated_tokens=1)
    assert admission.headers["x-ratelimit-limit-requests"] == "5"
    assert admission.headers["x-ratelimit-remaining-requests"] == "4"
    assert "x-ratelimit-limit-tokens" not in admission.headers


async def test_a_request_quota_429_carries_the_quotas_headers_not_the_rpm_allowance(store, transactional_db):
    key = make_key(rpm_limit=5, quotas=[day_quota(requests=3)])
    for _ in range(3):
        await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    _, end = limits.period_bounds("day", datetime.now(UTC))
    to_end = (end - datetime.now(UTC)).total_seconds()
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert abs(_reset_seconds(headers["x-ratelimit-reset-requests"]) - to_end) < 5
    if to_end >= 3600:
        assert "h" in refused.value.message.split("resets in ")[1].split(" ")[0]


async def test_a_token_quota_429_resets_at_the_period_boundary(store, transactional_db):
    key = make_key(rpm_limit=5, quotas=[day_quota(tokens=100)])
    await limits.settle(await limits.admit(key, estimated_tokens=1), tokens=150, cost_usd=0)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    to_end = (limits.period_bounds("day", datetime.now(UTC))[1] - datetime.now(UTC)).total_seconds()
    assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == ("100", "0")
    assert abs(_reset_seconds(headers["x-ratelimit-reset-tokens"]) - to_end) < 5
    assert headers["x-ratelimit-limit-requests"] == "5"  # the rpm figures stay what they are: true, just not why


async def test_a_cost_quota_429_says_no_request_remains_until_the_period_ends(store, transactional_db):
    key = make_key(rpm_limit=5, quotas=[day_quota(cost=0.01)])
    await limits.settle(await limits.admit(key, estimated_tokens=1), tokens=10, cost_usd=0.02)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    to_end = (limits.period_bounds("day", datetime.now(UTC))[1] - datetime.now(UTC)).total_seconds()
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert abs(_reset_seconds(headers["x-ratelimit-reset-requests"]) - to_end) < 5
