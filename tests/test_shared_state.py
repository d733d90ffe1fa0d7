"""rainymodel_site/shared_state.py: the one back-off from an unreachable store (`Outage`), and the in-process
store's TTLs on an injected clock."""

from __future__ import annotations

from rainymodel_site.shared_state import MemoryState, Outage, RedisState


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_an_outage_leaves_the_store_alone_for_retry_s_then_tries_again():
    clock = Clock()
    outage = Outage(2.0, clock=clock)
    assert not outage.skip()
    assert outage.failed() is True  # a new outage: the caller logs it
    assert outage.skip()
    clock.now += 1.9
    assert outage.skip()
    clock.now += 0.2
    assert not outage.skip()  # time for one try
    assert outage.failed() is False  # still the same outage: nothing new to log
    assert outage.skip()
    assert outage.recovered() is True  # the caller can say the store is back
    assert not outage.skip() and outage.recovered() is False


def test_an_outage_warns_at_most_once_per_interval_for_each_thing():
    clock = Clock()
    outage = Outage(2.0, warn_every_s=10.0, clock=clock)
    assert outage.should_warn("rpm") and outage.should_warn("quota")
    clock.now += 9.0
    assert not outage.should_warn("rpm")
    clock.now += 1.0
    assert outage.should_warn("rpm")


def test_memory_state_ttls_run_out_on_its_clock():
    clock = Clock()
    store = MemoryState(clock=clock)
    assert store.incr_sync("n", 1, ttl=60) == 1
    assert store.add_sync("slot", "lease", ttl=5)
    clock.now += 5.0
    assert store.get_sync("slot") is None and store.get_sync("n") == 1
    assert store.ttl_sync("n") == 55.0
    clock.now += 55.0
    assert store.incr_sync("n", 1, ttl=60) == 1  # a new window


def test_a_fractional_increment_in_redis_returns_the_sum_with_its_fraction(redis_url):
    # A cost quota counter: int(1.6) would read as 1, and limits.quotas would take the counter for lost.
    store = RedisState(redis_url)
    assert store.incr_sync("cost", 1.0) == 1.0
    assert store.incr_sync("cost", 0.6) == 1.6
    assert store.incr_sync("cost", 0.5) == 2.1
