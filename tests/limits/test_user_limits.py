"""A user's limits (issue 14): every key the user owns counts against the user's rpm, tpm, concurrency and quotas
on top of its own; a refusal says whose limit it was; a lost user quota counter is rebuilt from the log rows of
all the user's keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import limits
from limits import quotas
from routing.snapshot import UserLimitsInfo
from tests.limits.conftest import day_quota, log_row, make_key

_user_ids = iter(range(700_000, 800_000))


def owner(*, rpm_limit=None, tpm_limit=None, max_concurrent=None, quotas=(), user_id=None) -> UserLimitsInfo:
    return UserLimitsInfo(
        user_id=user_id if user_id is not None else next(_user_ids),
        username="alice",
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        max_concurrent=max_concurrent,
        quotas=tuple(quotas),
    )


def keys_of(user: UserLimitsInfo, n=2, **key_limits):
    from dataclasses import replace

    return [replace(make_key(**key_limits), owner_limits=user) for _ in range(n)]


async def test_two_keys_of_one_user_share_the_users_rpm_exactly_under_concurrency(store):
    first, second = keys_of(owner(rpm_limit=7))
    results = await asyncio.gather(
        *(limits.admit(k, estimated_tokens=1) for _ in range(10) for k in (first, second)), return_exceptions=True
    )
    assert sum(isinstance(r, limits.Admission) for r in results) == 7
    refusal = next(r for r in results if isinstance(r, limits.LimitExceeded))
    assert refusal.code == "rate_limit_exceeded"
    assert "your user's (all your keys together) limit of 7 requests per minute" in refusal.message
    assert refusal.headers["x-ratelimit-scope"] == "user"
    assert refusal.headers["x-ratelimit-limit-requests"] == "7"
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"


async def test_the_keys_own_limit_still_applies_and_is_named_as_the_keys(store):
    (key,) = keys_of(owner(rpm_limit=100), n=1, rpm_limit=2)
    for _ in range(2):
        admission = await limits.admit(key, estimated_tokens=1)
        # the headers show the tighter of the two rpm limits
        assert admission.headers["x-ratelimit-limit-requests"] == "2"
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=1)
    assert refused.value.headers["x-ratelimit-scope"] == "key"
    assert "this key's limit of 2 requests per minute" in refused.value.message


async def test_a_key_refused_by_its_own_limit_does_not_use_up_the_users(store):
    user = owner(rpm_limit=3)
    (tight,) = keys_of(user, n=1, max_concurrent=1)
    (other,) = keys_of(user, n=1)
    held = await limits.admit(tight, estimated_tokens=1)
    for _ in range(5):
        with pytest.raises(limits.LimitExceeded) as refused:
            await limits.admit(tight, estimated_tokens=1)
        assert refused.value.headers["x-ratelimit-scope"] == "key"
    await limits.settle(held, tokens=0, cost_usd=0)
    await limits.admit(other, estimated_tokens=1)
    await limits.admit(other, estimated_tokens=1)  # 3 of the user's 3: the refused ones gave their count back
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(other, estimated_tokens=1)
    assert refused.value.headers["x-ratelimit-scope"] == "user"


async def test_user_concurrency_is_shared_by_the_users_keys(store):
    first, second = keys_of(owner(max_concurrent=1))
    held = await limits.admit(first, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(second, estimated_tokens=1)
    assert "your user's (all your keys together) limit is 1 at a time" in refused.value.message
    assert refused.value.headers["x-ratelimit-scope"] == "user"
    await limits.settle(held, tokens=0, cost_usd=0)
    await limits.settle(await limits.admit(second, estimated_tokens=1), tokens=0, cost_usd=0)


async def test_user_tpm_counts_the_tokens_of_every_key(store):
    first, second = keys_of(owner(tpm_limit=1000))
    await limits.settle(await limits.admit(first, estimated_tokens=10), tokens=600, cost_usd=0)
    await limits.settle(await limits.admit(second, estimated_tokens=10), tokens=300, cost_usd=0)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(first, estimated_tokens=200)
    assert refused.value.type == "tokens" and refused.value.headers["x-ratelimit-scope"] == "user"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "100"


async def test_user_quota_is_shared_and_says_it_is_the_users(store, transactional_db):
    first, second = keys_of(owner(quotas=[day_quota(requests=3)]))
    for key in (first, second, first):
        await limits.admit(key, estimated_tokens=1)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(second, estimated_tokens=1)
    error = refused.value
    assert error.code == "quota_exceeded"
    assert "your user's (all your keys together) daily quota of 3 requests" in error.message
    assert error.headers["x-ratelimit-scope"] == "user"


async def test_a_lost_user_quota_counter_is_rebuilt_from_all_the_users_keys_rows(store, transactional_db):
    from django.contrib.auth import get_user_model

    from apikeys.models import APIKey

    def setup():
        alice = get_user_model().objects.create(username=f"alice-{next(_user_ids)}")
        bob = get_user_model().objects.create(username=f"bob-{next(_user_ids)}")
        a1, a2 = (APIKey.objects.create(name=n, owner=alice, prefix=f"rm-{n}{alice.id}"[:12]) for n in ("a1", "a2"))
        b1 = APIKey.objects.create(name="b1", owner=bob, prefix=f"rm-b1{bob.id}"[:12])
        log_row(a1.id, prompt=400, completion=100, cost=0.25)
        log_row(a2.id, prompt=300, completion=0, cost=0.5)
        log_row(a2.id, status=429, error_code="quota_exceeded", admitted=False)  # never counted
        log_row(a1.id, prompt=9000, created_at=datetime.now(UTC) - timedelta(days=2))  # another day
        log_row(b1.id, prompt=9000)  # another user's key
        return alice, a1

    alice, a1 = await asyncio.to_thread(setup)
    user = owner(user_id=alice.id, quotas=[day_quota(tokens=900, requests=100, cost=1.0)])
    (key,) = keys_of(user, n=1)
    await limits.admit(key, estimated_tokens=1)  # 800 tokens used: admitted
    start, _ = limits.period_bounds("day", datetime.now(UTC))
    counter_id = f"user:{alice.id}"
    values = await store.get_many([quotas.quota_counter(counter_id, "day", start, m) for m in limits.METRICS])
    used = {k.rsplit(":", 1)[1]: v - quotas.COUNTER_BASE for k, v in values.items()}
    assert used == pytest.approx({"requests": 3, "tokens": 800, "cost": 0.75})  # 2 from the log + this one
