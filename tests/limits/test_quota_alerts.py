"""limits/quotas.py tells alerts when a counter passes 80, 95 and 100 % of a quota (alerts/events.py queues it):
requests when admit counts them, tokens and cost when settle does, for a key's quotas and a user's shared ones."""

from __future__ import annotations

import pytest

import limits
from alerts import events
from tests.limits.conftest import day_quota, make_key
from tests.limits.test_user_limits import keys_of, owner


@pytest.fixture(autouse=True)
def alert_queue():
    events.queue.clear()
    events.enabled = True
    yield events.queue
    events.queue.clear()


def crossings(queue) -> list[tuple]:
    return [(e.subject_kind, e.metric, e.threshold, e.used) for e in queue]


async def test_a_key_request_quota_crosses_each_threshold_once_and_refusals_cross_nothing(
    store, transactional_db, alert_queue
):
    key = make_key(quotas=[day_quota(requests=20)])
    for _ in range(20):
        admission = await limits.admit(key, estimated_tokens=1)
        await limits.settle(admission, tokens=0, cost_usd=0)
    for _ in range(3):
        with pytest.raises(limits.LimitExceeded):
            await limits.admit(key, estimated_tokens=1)
    assert crossings(alert_queue) == [
        ("key", "requests", 80, 16),
        ("key", "requests", 95, 19),
        ("key", "requests", 100, 20),
    ]
    assert {e.subject_id for e in alert_queue} == {key.id}


async def test_tokens_and_cost_cross_when_settle_counts_them(store, transactional_db, alert_queue):
    key = make_key(quotas=[day_quota(tokens=1000, cost=1.0)])
    for tokens, cost in ((700, 0.5), (200, 0.46), (300, 0.2)):
        admission = await limits.admit(key, estimated_tokens=1)
        await limits.settle(admission, tokens=tokens, cost_usd=cost)
    assert [(e.metric, e.threshold) for e in alert_queue] == [
        ("tokens", 80),  # 900 of 1000
        ("cost", 80),  # $0.96 of $1
        ("cost", 95),
        ("tokens", 95),  # 1200
        ("tokens", 100),
        ("cost", 100),  # $1.16
    ]


async def test_a_users_shared_quota_crosses_as_the_users_keys_use_it(store, transactional_db, alert_queue):
    user = owner(quotas=[day_quota(requests=10)])
    first, second = keys_of(user)
    for i in range(10):
        await limits.admit((first, second)[i % 2], estimated_tokens=1)
    assert crossings(alert_queue) == [
        ("user", "requests", 80, 8),
        ("user", "requests", 95, 10),
        ("user", "requests", 100, 10),
    ]
    assert {(e.subject_id, e.subject_label) for e in alert_queue} == {(user.user_id, "alice")}
