"""limits/concurrency.py: max_concurrent slots with leases, and settle surviving cancellation."""

from __future__ import annotations

import asyncio

import pytest

import limits
from limits import base, concurrency, quotas
from limits.tokens import tpm_counter
from tests.limits.conftest import day_quota, make_key


async def test_max_concurrent_holds_and_settle_frees_the_slot(store):
    key = make_key(max_concurrent=2)
    results = await asyncio.gather(*(limits.admit(key, estimated_tokens=1) for _ in range(10)), return_exceptions=True)
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


async def test_a_slot_held_by_a_dead_worker_frees_after_its_lease(store, elapse, monkeypatch):
    monkeypatch.setattr(concurrency, "lease_s", lambda: 0.3)
    key = make_key(max_concurrent=1)
    await limits.admit(key, estimated_tokens=1)  # never settled: its worker "died"
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(key, estimated_tokens=1)
    await elapse(0.4)
    await limits.admit(key, estimated_tokens=1)


class PausingStore:
    """The test's store, except that the first store call after `arm()` waits until the test says `resume`: a
    settle caught in the middle of its writes."""

    def __init__(self, inner):
        self.inner = inner
        self.armed = False
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    def arm(self):
        self.armed = True

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not self.armed or not asyncio.iscoroutinefunction(attr):
            return attr

        async def paused(*args, **kwargs):
            self.armed = False
            self.paused.set()
            await self.resume.wait()
            return await attr(*args, **kwargs)

        return paused


async def test_settle_finishes_even_when_the_caller_is_cancelled_in_the_middle(store, monkeypatch, transactional_db):
    """The client goes away while settle is writing: the slot is still freed and the tokens still counted (tpm and
    the token quota), because settle shields its work from the caller's cancellation."""
    key = make_key(max_concurrent=1, tpm_limit=1000, quotas=[day_quota(tokens=1000)])
    admission = await limits.admit(key, estimated_tokens=1)
    pausing = PausingStore(store)
    monkeypatch.setattr(base, "store", lambda: pausing)
    pausing.arm()
    task = asyncio.ensure_future(limits.settle(admission, tokens=7, cost_usd=0))
    await asyncio.wait_for(pausing.paused.wait(), 5)  # settle is now inside its first store call
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pausing.resume.set()
    tpm = tpm_counter(base.Subject("key", key.id, key.prefix))
    for _ in range(200):  # the shielded settle finishes in the background
        if await store.get(tpm) == 7:
            break
        await asyncio.sleep(0.01)
    assert await store.get(tpm) == 7
    start = quotas.period_bounds("day", base.utcnow())[0]
    assert await store.get(quotas.quota_counter(key.id, "day", start, "tokens")) == quotas.COUNTER_BASE + 7
    await limits.admit(key, estimated_tokens=1)  # the slot was freed


async def test_a_concurrency_429_says_no_request_remains_for_a_second(store):
    key = make_key(rpm_limit=10, max_concurrent=1)
    await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    headers = refused.value.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"
