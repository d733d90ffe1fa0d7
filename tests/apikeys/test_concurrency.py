"""apikeys/limits/concurrency.py: max_concurrent slots with leases, and settle surviving cancellation."""

from __future__ import annotations

import asyncio

import pytest

from apikeys import limits
from apikeys.limits import concurrency
from tests.apikeys.conftest import make_key


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


async def test_a_concurrency_429_says_no_request_remains_for_a_second(store):
    key = make_key(rpm_limit=10, max_concurrent=1)
    await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"

