"""limits/rate.py: rpm_limit, exact under concurrency and across processes (Redis runs need REDIS_URL)."""

from __future__ import annotations

import asyncio

import pytest

import limits
from limits import rate
from tests.limits.conftest import _reset_seconds, make_key


async def test_rpm_admits_exactly_the_limit_under_concurrency(store):
    key = make_key(rpm_limit=60)
    results = await asyncio.gather(*(limits.admit(key, estimated_tokens=1) for _ in range(100)), return_exceptions=True)
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


async def test_rpm_window_ends_after_its_length(store, elapse, monkeypatch):
    monkeypatch.setattr(rate, "WINDOW_S", 0.3)
    key = make_key(rpm_limit=2)
    await limits.admit(key, estimated_tokens=1)
    await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)
    await elapse(0.4)
    admission = await limits.admit(key, estimated_tokens=1)
    assert admission.headers["x-ratelimit-remaining-requests"] == "1"


async def test_an_rpm_429_carries_remaining_zero_and_the_windows_reset(store):
    key = make_key(rpm_limit=2)
    for _ in range(2):
        await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("2", "0")
    assert 0 < _reset_seconds(headers["x-ratelimit-reset-requests"]) <= 60
