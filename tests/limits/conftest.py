"""What the limits tests share: keys with limits, the store each test runs on (in-process and, with REDIS_URL,
Redis: REDIS_URL=redis://127.0.0.1:6379/4), and request-log rows for the quota rebuild."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime

import pytest

from limits import base
from rainymodel_site.shared_state import MemoryState, Outage, RedisState
from routing.snapshot import KeyInfo, QuotaInfo

_ids = iter(range(900_000, 10_000_000))  # key ids no other test uses


def make_key(*, rpm_limit=None, tpm_limit=None, max_concurrent=None, quotas=(), id=None) -> KeyInfo:
    return KeyInfo(
        id=id if id is not None else next(_ids),
        name="test",
        prefix="rm-testkey00",
        hashed_key="",
        expires_at=None,
        revoked=False,
        allowed_aliases=frozenset(),
        allowed_policies=(),
        default_policy=None,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        max_concurrent=max_concurrent,
        quotas=tuple(quotas),
    )


def day_quota(**kwargs) -> QuotaInfo:
    return QuotaInfo(
        period="day",
        max_requests=kwargs.get("requests"),
        max_tokens=kwargs.get("tokens"),
        max_cost_usd=kwargs.get("cost"),
    )


@pytest.fixture(autouse=True)
def store_not_marked_down(monkeypatch):
    """A failure left behind by one test must not make the next skip the store."""
    monkeypatch.setattr(base, "outage", Outage(base.STORE_RETRY_S))


class FakeClock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", "redis"])
def store(request, monkeypatch):
    """The limits module running on a store of its own: a MemoryState, or a RedisState on REDIS_URL."""
    if request.param == "memory":
        shared = MemoryState(clock=FakeClock())
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


@pytest.fixture
def elapse(store):
    """`await elapse(seconds)`: let time pass for the store's TTLs. The in-process store's clock is moved (no
    sleep); Redis keeps its own time, so there the test sleeps."""

    async def elapse(seconds: float) -> None:
        if isinstance(store, MemoryState):
            store._clock.now += seconds
        else:
            await asyncio.sleep(seconds)

    return elapse


class ExplodingState:
    """A store that fails the test if it is touched at all."""

    def __getattr__(self, name):
        raise AssertionError(f"shared state touched: {name}")


def log_row(key_id, *, status=200, error_code="", prompt=0, completion=0, cost=0.0, created_at=None, admitted=True):
    from usage.models import RequestLog

    return RequestLog.objects.create(
        id=uuid.uuid4().hex,
        created_at=created_at or datetime.now(UTC),
        api_key_id=key_id,
        status=status,
        error_code=error_code,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost,
        admitted=admitted,
    )


def _reset_seconds(value: str) -> float:
    """Parse OpenAI's reset format ("0.5s", "6m0s", "11h46m11s") back into seconds."""
    import re

    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", value)
    assert match and value, value
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
