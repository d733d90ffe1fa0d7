"""apikeys.limits: every limit on the in-process store and on Redis (the Redis runs need REDIS_URL, e.g.
REDIS_URL=redis://127.0.0.1:6379/4), plus the quota rebuild from RequestLog and the fail-open behaviour."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from apikeys import limits, selectors
from apikeys.limits import base, concurrency, quotas, rate
from rainymodel_site.shared_state import MemoryState, Outage, RedisState
from routing.snapshot import MASTER_KEY_INFO, KeyInfo, QuotaInfo

_ids = iter(range(900_000, 10_000_000))


def make_key(*, rpm_limit=None, tpm_limit=None, max_concurrent=None, quotas=(), id=None) -> KeyInfo:
    return KeyInfo(
        id=id if id is not None else next(_ids), name="test", prefix="rm-testkey00", hashed_key="", expires_at=None,
        revoked=False, allowed_aliases=frozenset(), allowed_policies=frozenset(), default_policy=None,
        rpm_limit=rpm_limit, tpm_limit=tpm_limit, max_concurrent=max_concurrent, quotas=tuple(quotas),
    )


def day_quota(**kwargs) -> QuotaInfo:
    return QuotaInfo(period="day", max_requests=kwargs.get("requests"), max_tokens=kwargs.get("tokens"),
                     max_cost_usd=kwargs.get("cost"))


@pytest.fixture(autouse=True)
def store_not_marked_down(monkeypatch):
    """A failure left behind by one test must not make the next skip the store."""
    monkeypatch.setattr(base, "outage", Outage(base.STORE_RETRY_S))


@pytest.fixture(params=["memory", "redis"])
def store(request, monkeypatch):
    """The limits module running on a store of its own: a MemoryState, or a RedisState on REDIS_URL."""
    if request.param == "memory":
        shared = MemoryState()
    else:
        url = os.environ.get("REDIS_URL")
        if not url:
            pytest.skip("REDIS_URL is not set (e.g. REDIS_URL=redis://127.0.0.1:6379/4)")
        shared = RedisState(url)
        shared.flush_sync()
    monkeypatch.setattr(base, "store", lambda: shared)
    yield shared
    if request.param == "redis":
        shared.flush_sync()


class ExplodingState:
    """A store that fails the test if it is touched at all."""

    def __getattr__(self, name):
        raise AssertionError(f"shared state touched: {name}")


def log_row(key_id, *, status=200, error_code="", prompt=0, completion=0, cost=0.0, created_at=None, admitted=True):
    from usage.models import RequestLog

    return RequestLog.objects.create(
        id=uuid.uuid4().hex, created_at=created_at or datetime.now(UTC), api_key_id=key_id, status=status,
        error_code=error_code, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, admitted=admitted,
    )


# --- keys without limits -------------------------------------------------------------------------------------------

async def test_keys_without_limits_and_the_master_key_never_touch_shared_state(monkeypatch):
    monkeypatch.setattr(base, "store", lambda: ExplodingState())
    for key in (make_key(), MASTER_KEY_INFO):
        admission = await limits.admit(key, estimated_tokens=10_000_000)
        assert admission.headers == {}
        await limits.settle(admission, tokens=5_000_000, cost_usd=100.0)


# --- rpm ----------------------------------------------------------------------------------------------------------

async def test_rpm_admits_exactly_the_limit_under_concurrency(store):
    key = make_key(rpm_limit=60)
    results = await asyncio.gather(*(limits.admit(key, estimated_tokens=1) for _ in range(100)),
                                   return_exceptions=True)
    admitted = [r for r in results if isinstance(r, limits.Admission)]
    refused = [r for r in results if isinstance(r, limits.LimitExceeded)]
    assert len(admitted) == 60 and len(refused) == 40
    refusal = refused[0]
    assert (refusal.status, refusal.code, refusal.type) == (429, "rate_limit_exceeded", "requests")
    assert 0 < refusal.retry_after <= 60
    assert 1 <= int(refusal.headers["Retry-After"]) <= 60
    assert refusal.headers["x-ratelimit-limit-requests"] == "60"
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in admitted)
    assert remaining == list(range(60))


async def test_rpm_window_ends_after_its_length(store, monkeypatch):
    monkeypatch.setattr(rate, "WINDOW_S", 0.3)
    key = make_key(rpm_limit=2)
    await limits.admit(key, estimated_tokens=1)
    await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)
    await asyncio.sleep(0.4)
    admission = await limits.admit(key, estimated_tokens=1)
    assert admission.headers["x-ratelimit-remaining-requests"] == "1"


async def test_a_request_refused_by_a_later_limit_gives_its_rpm_back(store):
    key = make_key(rpm_limit=5, max_concurrent=1)
    held = await limits.admit(key, estimated_tokens=1)
    for _ in range(3):
        with pytest.raises(limits.LimitExceeded) as refused:
            await limits.admit(key, estimated_tokens=1)
        assert "concurrent" in refused.value.message
    await limits.settle(held, tokens=0, cost_usd=0)
    admission = await limits.admit(key, estimated_tokens=1)
    assert admission.headers["x-ratelimit-remaining-requests"] == "3"  # only the two admitted ones counted


# --- tpm ----------------------------------------------------------------------------------------------------------

async def test_tpm_counts_real_tokens_at_settle_and_refuses_when_the_estimate_does_not_fit(store):
    key = make_key(tpm_limit=1000)
    first = await limits.admit(key, estimated_tokens=500)
    assert first.headers["x-ratelimit-remaining-tokens"] == "1000"
    await limits.settle(first, tokens=800, cost_usd=0)
    second = await limits.admit(key, estimated_tokens=150)
    assert second.headers["x-ratelimit-remaining-tokens"] == "200"
    assert second.headers["x-ratelimit-reset-tokens"].endswith("s")
    await limits.settle(second, tokens=150, cost_usd=0)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=100)
    assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "tokens")
    assert 0 < refused.value.retry_after <= 60
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "50"
    await limits.admit(key, estimated_tokens=50)  # still fits


async def test_a_request_larger_than_the_tpm_limit_is_refused_outright(store):
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(make_key(tpm_limit=100), estimated_tokens=101)
    assert refused.value.type == "tokens" and "too large" in refused.value.message


# --- max_concurrent -----------------------------------------------------------------------------------------------

async def test_max_concurrent_holds_and_settle_frees_the_slot(store):
    key = make_key(max_concurrent=2)
    results = await asyncio.gather(*(limits.admit(key, estimated_tokens=1) for _ in range(10)),
                                   return_exceptions=True)
    admitted = [r for r in results if isinstance(r, limits.Admission)]
    refused = [r for r in results if isinstance(r, limits.LimitExceeded)]
    assert len(admitted) == 2 and len(refused) == 8
    assert refused[0].type == "requests" and refused[0].headers["Retry-After"] == "1"
    await limits.settle(admitted[0], tokens=10, cost_usd=0)
    third = await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)
    await limits.settle(admitted[1], tokens=10, cost_usd=0)
    await limits.settle(third, tokens=10, cost_usd=0)
    assert len([await limits.admit(key, estimated_tokens=1) for _ in range(2)]) == 2


async def test_settle_is_idempotent_and_never_frees_another_requests_slot(store):
    key = make_key(max_concurrent=1)
    first = await limits.admit(key, estimated_tokens=1)
    await limits.settle(first, tokens=1, cost_usd=0)
    second = await limits.admit(key, estimated_tokens=1)
    await limits.settle(first, tokens=1, cost_usd=0)  # a second settle of the first request
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)
    await limits.settle(second, tokens=1, cost_usd=0)


async def test_a_slot_held_by_a_dead_worker_frees_after_its_lease(store, monkeypatch):
    monkeypatch.setattr(concurrency, "lease_s", lambda: 0.3)
    key = make_key(max_concurrent=1)
    await limits.admit(key, estimated_tokens=1)  # never settled: its worker "died"
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)
    await asyncio.sleep(0.4)
    await limits.admit(key, estimated_tokens=1)


async def test_settle_finishes_even_when_the_caller_is_cancelled(store):
    key = make_key(max_concurrent=1)
    admission = await limits.admit(key, estimated_tokens=1)

    async def finish_then_get_cancelled():
        await limits.settle(admission, tokens=1, cost_usd=0)

    task = asyncio.ensure_future(finish_then_get_cancelled())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.05)
    await limits.admit(key, estimated_tokens=1)  # the slot was freed


# --- quotas -------------------------------------------------------------------------------------------------------

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
    results = await asyncio.gather(*(limits.admit(key, estimated_tokens=1) for _ in range(20)),
                                   return_exceptions=True)
    assert sum(isinstance(r, limits.Admission) for r in results) == 7
    refusal = next(r for r in results if isinstance(r, limits.LimitExceeded))
    assert refusal.code == "quota_exceeded" and "7 requests" in refusal.message
    usage = await asyncio.to_thread(limits.usage_from_log_sync, key.id,
                                    *limits.period_bounds("day", datetime.now(UTC)))
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


async def test_a_request_admitted_before_the_period_ended_is_counted_in_its_own_period(store, transactional_db,
                                                                                      monkeypatch):
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


@pytest.mark.parametrize("now, period, start, end", [
    (datetime(2026, 3, 1, 13, 5, tzinfo=UTC), "day", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
    (datetime(2026, 2, 28, 23, 59, tzinfo=UTC), "month", datetime(2026, 2, 1, tzinfo=UTC),
     datetime(2026, 3, 1, tzinfo=UTC)),
    (datetime(2026, 12, 31, 8, tzinfo=UTC), "month", datetime(2026, 12, 1, tzinfo=UTC),
     datetime(2027, 1, 1, tzinfo=UTC)),
    (datetime(2026, 3, 1, 23, 30, tzinfo=UTC) - timedelta(hours=24), "day", datetime(2026, 2, 28, tzinfo=UTC),
     datetime(2026, 3, 1, tzinfo=UTC)),
])
def test_quota_periods_are_utc_calendar_days_and_months(now, period, start, end):
    assert limits.period_bounds(period, now) == (start, end)


async def test_headers_come_from_the_tightest_quota_when_the_key_has_no_rpm(store, transactional_db):
    key = make_key(quotas=[day_quota(requests=10), QuotaInfo("month", 5, None, None)])
    admission = await limits.admit(key, estimated_tokens=1)
    assert admission.headers["x-ratelimit-limit-requests"] == "5"
    assert admission.headers["x-ratelimit-remaining-requests"] == "4"
    assert "x-ratelimit-limit-tokens" not in admission.headers


# --- an unreachable store -----------------------------------------------------------------------------------------

async def test_an_unreachable_store_fails_open_and_says_so(monkeypatch, caplog):
    dead = RedisState("redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setattr(base, "store", lambda: dead)
    key = make_key(rpm_limit=1, tpm_limit=10, max_concurrent=1, quotas=[day_quota(tokens=1)])
    with caplog.at_level(logging.ERROR, logger="apikeys.limits"):
        for _ in range(2):
            monkeypatch.setattr(base, "outage", Outage(base.STORE_RETRY_S))  # try the store every time
            first = await limits.admit(key, estimated_tokens=5)
            second = await limits.admit(key, estimated_tokens=5)
            monkeypatch.setattr(base, "outage", Outage(base.STORE_RETRY_S))
            await limits.settle(first, tokens=100, cost_usd=1)
            await limits.settle(second, tokens=100, cost_usd=1)
            monkeypatch.setattr(base, "outage", Outage(base.STORE_RETRY_S))
            await limits.check_auth_failures("10.0.0.1")
            await limits.record_auth_failure("10.0.0.1")
    assert "not enforced (failing open)" in caplog.text


async def test_after_a_store_failure_the_store_is_left_alone_for_a_while(monkeypatch):
    monkeypatch.setattr(base, "store", lambda: RedisState("redis://127.0.0.1:1/0"))
    monkeypatch.setattr(base.outage, "retry_s", 0.3)
    key = make_key(rpm_limit=1)
    await limits.admit(key, estimated_tokens=1)  # fails, fails open
    monkeypatch.setattr(base, "store", lambda: ExplodingState())
    admission = await limits.admit(key, estimated_tokens=1)
    await limits.settle(admission, tokens=1, cost_usd=0)
    await limits.check_auth_failures("10.0.0.1")
    await limits.record_auth_failure("10.0.0.1")
    await asyncio.sleep(0.35)
    working = MemoryState()
    monkeypatch.setattr(base, "store", lambda: working)
    assert (await limits.admit(key, estimated_tokens=1)).headers["x-ratelimit-remaining-requests"] == "0"


# --- failed authentication ----------------------------------------------------------------------------------------

async def test_failed_authentication_is_limited_per_client_ip(store, settings):
    settings.RAINYMODEL_AUTH_FAILURES_PER_MIN = 3
    for _ in range(3):
        await limits.check_auth_failures("10.0.0.1")
        await limits.record_auth_failure("10.0.0.1")
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.check_auth_failures("10.0.0.1")
    assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "requests")
    assert 0 < refused.value.retry_after <= 60 and "Retry-After" in refused.value.headers
    await limits.check_auth_failures("10.0.0.2")  # another address is not affected


# --- the admin's view ---------------------------------------------------------------------------------------------

def test_usage_for_key_shows_limits_current_usage_quotas_and_last_use(store, transactional_db):
    from apikeys.services import apikey_create

    api_key, _ = apikey_create(name="admin-view", rpm_limit=60, max_concurrent=3,
                               quotas=[("day", "max_tokens", 1000), ("month", "max_requests", 50)])
    log_row(api_key.id, prompt=120, completion=80, cost=0.01)
    log_row(api_key.id, prompt=10, completion=0)
    key = make_key(id=api_key.id, rpm_limit=60, max_concurrent=3,
                   quotas=[day_quota(tokens=1000), QuotaInfo("month", 50, None, None)])
    admission = asyncio.run(limits.admit(key, estimated_tokens=1))  # one request in flight

    usage = selectors.usage_for_key_sync(api_key.id)
    assert usage["limits"] == {"rpm_limit": 60, "tpm_limit": None, "max_concurrent": 3}
    assert usage["current"] == {"requests_this_minute": 1, "tokens_this_minute": 0, "in_flight": 1}
    day, month = usage["quotas"]
    assert day["period"] == "day" and day["tokens"] == {"used": 210, "max": 1000}
    assert day["requests"] == {"used": 2, "max": None}  # not limited: straight from the log
    assert month["requests"] == {"used": 3, "max": 50}  # 2 in the log + the one in flight
    assert usage["last_used_at"] is None and usage["shared_state_error"] is None
    asyncio.run(limits.settle(admission, tokens=5, cost_usd=0))


def test_the_admin_key_page_shows_usage_against_quotas(transactional_db, admin_client):
    from apikeys.services import apikey_create

    api_key, _ = apikey_create(name="admin-page", rpm_limit=60, quotas=[("day", "max_tokens", 1000)])
    log_row(api_key.id, prompt=300, completion=12)
    page = admin_client.get(f"/admin/apikeys/apikey/{api_key.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Usage now" in text and "tokens this day" in text and "312 of 1000" in text
    assert "requests this minute" in text and "0 of 60" in text


# --- what a 429 says: the headers of the limit that refused it, and readable waits ---------------------------------

def _reset_seconds(value: str) -> float:
    """Parse OpenAI's reset format ("0.5s", "6m0s", "11h46m11s") back into seconds."""
    import re

    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", value)
    assert match and value, value
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


@pytest.mark.parametrize("seconds, header, words", [
    (0.5, "0.5s", "0.5s"), (1, "1s", "1s"), (360, "6m0s", "6m0s"), (3723, "1h2m3s", "1h2m"),
    (706 * 60 + 11, "11h46m11s", "11h46m"), (29 * 86400 + 3 * 3600 + 59, "699h0m59s", "29d3h"),
])
def test_resets_read_in_openais_format_in_headers_and_in_hours_in_messages(seconds, header, words):
    assert base.duration(seconds) == header
    assert base.wait_words(seconds) == words


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


async def test_an_rpm_429_carries_remaining_zero_and_the_windows_reset(store):
    key = make_key(rpm_limit=2)
    for _ in range(2):
        await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("2", "0")
    assert 0 < _reset_seconds(headers["x-ratelimit-reset-requests"]) <= 60


async def test_a_concurrency_429_says_no_request_remains_for_a_second(store):
    key = make_key(rpm_limit=10, max_concurrent=1)
    await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"


async def test_a_tpm_429_carries_the_token_limits_figures(store):
    key = make_key(rpm_limit=10, tpm_limit=100)
    await limits.settle(await limits.admit(key, estimated_tokens=1), tokens=90, cost_usd=0)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=20)
    headers = refused.value.headers
    assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == ("100", "10")
    assert 0 < _reset_seconds(headers["x-ratelimit-reset-tokens"]) <= 60


async def test_a_failed_authentication_429_carries_the_per_ip_limit(store, settings):
    settings.RAINYMODEL_AUTH_FAILURES_PER_MIN = 2
    for _ in range(2):
        await limits.record_auth_failure("10.0.0.9")
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.check_auth_failures("10.0.0.9")
    headers = refused.value.headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("2", "0")
    assert 0 < _reset_seconds(headers["x-ratelimit-reset-requests"]) <= 60
