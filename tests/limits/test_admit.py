"""limits.admit and settle: the loop over a key's limits, giving back, failing open on an unreachable store, and
the wording of waits."""

from __future__ import annotations

import logging

import pytest

import limits
from limits import base
from rainymodel_site.shared_state import MemoryState, Outage, RedisState
from routing.snapshot import MASTER_KEY_INFO
from tests.limits.conftest import ExplodingState, FakeClock, day_quota, make_key


async def test_keys_without_limits_and_the_master_key_never_touch_shared_state(monkeypatch):
    monkeypatch.setattr(base, "store", lambda: ExplodingState())
    for key in (make_key(), MASTER_KEY_INFO):
        admission = await limits.admit(key, estimated_tokens=10_000_000)
        assert admission.headers == {}
        await limits.settle(admission, tokens=5_000_000, cost_usd=100.0)


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


async def test_an_unreachable_store_fails_open_and_says_so(monkeypatch, caplog):
    dead = RedisState("redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setattr(base, "store", lambda: dead)
    key = make_key(rpm_limit=1, tpm_limit=10, max_concurrent=1, quotas=[day_quota(tokens=1)])
    with caplog.at_level(logging.ERROR, logger="limits"):
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
    clock = FakeClock()
    monkeypatch.setattr(base, "outage", Outage(0.3, clock=clock))
    key = make_key(rpm_limit=1)
    await limits.admit(key, estimated_tokens=1)  # fails, fails open
    monkeypatch.setattr(base, "store", lambda: ExplodingState())
    admission = await limits.admit(key, estimated_tokens=1)
    await limits.settle(admission, tokens=1, cost_usd=0)
    await limits.check_auth_failures("10.0.0.1")
    await limits.record_auth_failure("10.0.0.1")
    clock.now += 0.35
    working = MemoryState()
    monkeypatch.setattr(base, "store", lambda: working)
    assert (await limits.admit(key, estimated_tokens=1)).headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize(
    "seconds, header, words",
    [
        (0.5, "0.5s", "0.5s"),
        (1, "1s", "1s"),
        (360, "6m0s", "6m0s"),
        (3723, "1h2m3s", "1h2m"),
        (706 * 60 + 11, "11h46m11s", "11h46m"),
        (29 * 86400 + 3 * 3600 + 59, "699h0m59s", "29d3h"),
    ],
)
def test_resets_read_in_openais_format_in_headers_and_in_hours_in_messages(seconds, header, words):
    assert base.duration(seconds) == header
    assert base.wait_words(seconds) == words
