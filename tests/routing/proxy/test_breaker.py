"""The circuit breaker (SPEC §6): pure transitions first, then the shared-store functions the request path calls,
run against the in-process store and, when REDIS_URL is set, against real Redis."""

import asyncio
import os
import time

import pytest

from rainymodel_site import shared_state
from routing import breakers
from routing.breakers import CLOSED, HALF_OPEN, OPEN, BreakerState
from routing.proxy import breaker
from routing.snapshot import MASTER_KEY_INFO, AliasInfo, Snapshot
from tests.factories import make_key, make_provider, make_route

NOW = 1_700_000_000.0
ROUTE_PLAN = breakers.FailurePlan("route", threshold=3, cooldown_s=15.0, at_once=False)


def fail(st, reason="http_503", now=NOW, plan=ROUTE_PLAN):
    return breakers.on_failure(st, reason=reason, now=now, plan=plan)


# --- pure transitions ----------------------------------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_clean():
    st = BreakerState()
    assert breakers.status_at(st, NOW) == CLOSED
    assert st.is_clean
    assert breakers.seconds_until_half_open(st, NOW) == 0


def test_breaker_opens_after_threshold_consecutive_failures():
    st = fail(fail(BreakerState()))
    assert breakers.status_at(st, NOW) == CLOSED and st.failures == 2
    st = fail(st)
    assert breakers.status_at(st, NOW) == OPEN
    assert st.open_until == NOW + 15
    assert breakers.seconds_until_half_open(st, NOW + 5) == 10


def test_a_success_between_failures_resets_the_count():
    st = breakers.on_success(fail(fail(BreakerState())))
    assert st.failures == 0 and st.status == CLOSED
    assert breakers.status_at(fail(fail(st)), NOW) == CLOSED


def test_open_breaker_half_opens_when_the_cooldown_has_passed():
    st = fail(fail(fail(BreakerState())))
    assert breakers.status_at(st, NOW + 14.9) == OPEN
    assert breakers.status_at(st, NOW + 15) == HALF_OPEN
    assert breakers.seconds_until_half_open(st, NOW + 15) == 0


def test_failed_probe_reopens_for_another_cooldown_of_the_same_length():
    st = fail(fail(fail(BreakerState())))
    reopened = fail(st, now=NOW + 20)
    assert breakers.status_at(reopened, NOW + 20) == OPEN
    assert reopened.open_until == NOW + 35


def test_failed_probe_after_a_429_reopens_for_the_retry_after_length():
    plan = breakers.plan_failure(
        "http_429", breaker_failures=3, breaker_cooldown_s=15, credit_cooldown_s=3600, retry_after=7
    )
    st = fail(BreakerState(), reason="http_429", plan=plan)
    assert st.open_until == NOW + 7
    # The probe fails with an ordinary 503: it stays out for another 7 s, not the route's 15 s.
    reopened = fail(st, now=NOW + 8)
    assert reopened.open_until == NOW + 15


def test_late_failure_while_open_does_not_restart_the_cooldown():
    st = fail(fail(fail(BreakerState())))
    late = fail(st, now=NOW + 5)
    assert late.open_until == st.open_until
    assert late.failures == 4


def test_credits_exhausted_while_open_extends_to_the_credit_cooldown():
    st = fail(fail(fail(BreakerState())))
    plan = breakers.plan_failure("credits_exhausted", breaker_failures=3, breaker_cooldown_s=15, credit_cooldown_s=600)
    st = fail(st, reason="credits_exhausted", now=NOW + 1, plan=plan)
    assert st.open_until == NOW + 601


def test_success_closes_an_open_breaker_and_keeps_the_history():
    st = breakers.on_success(fail(fail(fail(BreakerState()))))
    assert st.status == CLOSED and st.open_until is None and st.is_clean
    assert [reason for _, reason in st.recent] == ["http_503"] * 3


def test_recent_failures_keep_only_the_newest():
    st = BreakerState()
    for i in range(8):
        st = fail(st, reason=f"http_50{i % 5}", now=NOW + i)
    assert len(st.recent) == breakers.RECENT_FAILURES_KEPT
    assert st.recent[-1] == (NOW + 7, "http_502")


@pytest.mark.parametrize("reason", ["connect_error", "http_401", "http_403"])
def test_whole_provider_reasons_count_against_the_provider(reason):
    plan = breakers.plan_failure(reason, breaker_failures=2, breaker_cooldown_s=9, credit_cooldown_s=3600)
    assert plan == breakers.FailurePlan("provider", 2, 9.0, at_once=False)


@pytest.mark.parametrize(
    "reason",
    ["reset", "timeout", "http_500", "http_503", "http_404", "invalid_response", "stream_interrupted", "http_429"],
)
def test_other_reasons_count_against_the_route(reason):
    plan = breakers.plan_failure(reason, breaker_failures=2, breaker_cooldown_s=9, credit_cooldown_s=3600)
    assert plan == breakers.FailurePlan("route", 2, 9.0, at_once=False)


def test_credits_exhausted_opens_the_provider_at_once_for_the_credit_cooldown():
    plan = breakers.plan_failure("credits_exhausted", breaker_failures=3, breaker_cooldown_s=15, credit_cooldown_s=3600)
    assert plan == breakers.FailurePlan("provider", 3, 3600.0, at_once=True)
    st = fail(BreakerState(), reason="credits_exhausted", plan=plan)
    assert breakers.status_at(st, NOW + 3599) == OPEN


def test_429_with_retry_after_opens_the_route_at_once_for_that_long():
    plan = breakers.plan_failure(
        "http_429", breaker_failures=3, breaker_cooldown_s=15, credit_cooldown_s=3600, retry_after=7
    )
    assert plan == breakers.FailurePlan("route", 3, 7.0, at_once=True)


@pytest.mark.parametrize("reason", ["http_400", "http_413", "http_422"])
def test_client_errors_are_refused(reason):
    with pytest.raises(ValueError, match="client errors"):
        breakers.plan_failure(reason, breaker_failures=3, breaker_cooldown_s=15, credit_cooldown_s=3600)


def test_state_survives_encoding():
    st = fail(fail(fail(BreakerState(), now=NOW)), reason="timeout", now=NOW + 1.25)
    assert breakers.decode(breakers.encode(st)) == st


@pytest.mark.parametrize("raw", ["not json", '{"x": 1}', '{"s": "open", "f": "many"}', "[]"])
def test_unreadable_state_counts_as_closed(raw):
    assert breakers.decode(raw) == BreakerState()


def test_describe_reports_open_until_and_recent_failures():
    st = fail(fail(fail(BreakerState())))
    desc = breakers.describe(st, NOW + 5)
    assert desc["state"] == OPEN and desc["retry_in_s"] == 10.0 and desc["last_reason"] == "http_503"
    assert desc["open_until"] == "2023-11-14T22:13:35+00:00"
    assert len(desc["recent_failures"]) == 3
    assert breakers.describe(st, NOW + 16)["state"] == HALF_OPEN
    assert breakers.describe_text(st, NOW + 5) == "open until 22:13:35 UTC (http_503)"
    assert breakers.describe_text(BreakerState(), NOW) == "closed"


# --- pure transitions: whose failure is it ------------------------------------------------------------------------


def key_fail(st, key, others_active=True, now=NOW, reason="http_500", plan=ROUTE_PLAN):
    return breakers.on_failure(st, reason=reason, now=now, plan=plan, key=key, others_active=others_active)


def test_one_keys_failures_do_not_open_the_route_while_other_keys_use_it():
    st = BreakerState()
    for _ in range(10):
        st = key_fail(st, "a")
    assert breakers.status_at(st, NOW) == CLOSED
    assert st.failures == 10 and st.keys == ("a",)


def test_failures_from_two_keys_open_the_route_at_the_threshold():
    st = key_fail(key_fail(BreakerState(), "a"), "a")
    assert breakers.status_at(st, NOW) == CLOSED
    st = key_fail(st, "b")
    assert breakers.status_at(st, NOW) == OPEN and st.keys == ("a", "b")


def test_two_keys_below_the_threshold_do_not_open():
    st = key_fail(key_fail(BreakerState(), "a"), "b")
    assert breakers.status_at(st, NOW) == CLOSED


def test_the_only_active_key_opens_the_route_at_the_threshold():
    """A single-tenant deployment (or an outage only one customer is around to see) still opens the breaker."""
    st = BreakerState()
    for _ in range(2):
        st = key_fail(st, "a", others_active=False)
    assert breakers.status_at(st, NOW) == CLOSED
    st = key_fail(st, "a", others_active=False)
    assert breakers.status_at(st, NOW) == OPEN


def test_a_success_from_any_key_ends_the_run():
    st = breakers.on_success(key_fail(key_fail(BreakerState(), "a"), "a"))
    assert st.keys == () and st.failures == 0 and st.is_clean
    st = key_fail(key_fail(st, "b"), "b")
    assert breakers.status_at(st, NOW) == CLOSED  # the earlier failures of "a" no longer count


def test_failed_probe_of_one_key_while_others_use_the_route_closes_it():
    st = key_fail(
        key_fail(key_fail(BreakerState(), "a", others_active=False), "a", others_active=False), "a", others_active=False
    )
    assert breakers.status_at(st, NOW) == OPEN
    # Key "b" came back meanwhile; the probe is again one of "a"'s failing requests.
    probed = key_fail(st, "a", others_active=True, now=NOW + 16)
    assert breakers.status_at(probed, NOW + 16) == CLOSED and probed.open_until is None
    # The run goes on: a failure of "b" is a second key, so the route opens for everyone.
    assert breakers.status_at(key_fail(probed, "b", now=NOW + 17), NOW + 17) == OPEN


def test_failed_probe_with_outage_evidence_reopens():
    st = key_fail(key_fail(key_fail(BreakerState(), "a"), "b"), "a")
    assert breakers.status_at(st, NOW) == OPEN
    reopened = key_fail(st, "a", now=NOW + 16)
    assert breakers.status_at(reopened, NOW + 16) == OPEN and reopened.open_until == NOW + 31


def test_failures_the_content_cannot_cause_count_for_everyone():
    provider_plan = breakers.plan_failure(
        "connect_error", breaker_failures=1, breaker_cooldown_s=15, credit_cooldown_s=600
    )
    assert not provider_plan.attributed
    assert breakers.status_at(key_fail(BreakerState(), "a", plan=provider_plan), NOW) == OPEN
    long_429 = breakers.plan_failure(
        "http_429", breaker_failures=3, breaker_cooldown_s=15, credit_cooldown_s=600, retry_after=30
    )
    assert breakers.status_at(key_fail(BreakerState(), "a", plan=long_429, reason="http_429"), NOW) == OPEN
    assert ROUTE_PLAN.attributed


def test_run_keys_are_bounded_and_survive_encoding():
    st = BreakerState()
    for i in range(9):
        st = key_fail(st, str(i))
    assert st.keys == tuple(str(i) for i in range(breakers.RUN_KEYS_KEPT))
    assert breakers.decode(breakers.encode(st)) == st
    assert breakers.describe(st, NOW)["failing_keys"] == breakers.RUN_KEYS_KEPT


def test_activity_is_windowed_bounded_and_excludes_the_asking_key():
    activity = {}
    for i in range(12):
        activity = breakers.mark_active(activity, f"k{i}", NOW + i)
    assert len(activity) == breakers.ACTIVE_KEPT and "k11" in activity and "k0" not in activity
    assert not breakers.others_active({"a": NOW}, "a", NOW)
    assert breakers.others_active({"a": NOW, "b": NOW - 30}, "a", NOW)
    assert not breakers.others_active({"a": NOW, "b": NOW - breakers.ACTIVE_WINDOW_S - 1}, "a", NOW)
    assert breakers.mark_active({"b": NOW - breakers.ACTIVE_WINDOW_S - 1}, "a", NOW) == {"a": NOW}
    assert breakers.decode_activity("not json") == {} and breakers.decode_activity(None) == {}


# --- the shared store --------------------------------------------------------------------------------------------

BACKENDS = ["memory"] + (["redis"] if os.environ.get("REDIS_URL") else [])


@pytest.fixture(params=BACKENDS)
def store(request, monkeypatch):
    """A clean shared store of each kind; `state()` returns it for the duration of the test."""
    store = (
        shared_state.MemoryState() if request.param == "memory" else shared_state.RedisState(os.environ["REDIS_URL"])
    )
    store.flush_sync()
    monkeypatch.setattr(shared_state, "_state", store)
    monkeypatch.setattr(breakers, "seen", {})
    monkeypatch.setattr(breaker, "_marked", {})
    monkeypatch.setattr(breaker, "_outage", shared_state.Outage(breaker.STORE_RETRY_S))
    yield store
    store.flush_sync()


def forget_seen():
    """What another worker knows: nothing but the shared store."""
    breakers.seen.clear()
    breaker._marked.clear()


KEY_A, KEY_B, KEY_C = make_key(1), make_key(2), make_key(3)


async def test_closed_routes_are_all_usable(store):
    p = make_provider()
    routes = [make_route(1, p), make_route(2, p)]
    assert await breaker.usable_routes(routes) == (routes, None)
    assert await breaker.try_acquire(routes[0])


async def test_route_failures_open_only_that_route_for_every_worker(store):
    p = make_provider(failures=2, cooldown=30)
    r1, r2 = make_route(1, p), make_route(2, p)
    await breaker.record_failure(r1, "http_503")
    forget_seen()
    assert (await breaker.usable_routes([r1, r2]))[0] == [r1, r2]
    await breaker.record_failure(r1, "http_503")
    forget_seen()
    usable, retry_after = await breaker.usable_routes([r1, r2])
    assert usable == [r2]
    assert 29 < retry_after <= 30
    assert not await breaker.try_acquire(r1)


async def test_provider_failure_takes_every_route_of_that_provider_out(store):
    p, other = make_provider("p1", failures=1, cooldown=30), make_provider("p2")
    r1, r2, r3 = make_route(1, p), make_route(2, p), make_route(3, other)
    await breaker.record_failure(r1, "connect_error")
    forget_seen()
    assert (await breaker.usable_routes([r1, r2, r3]))[0] == [r3]


async def test_all_open_gives_seconds_until_the_first_half_opens(store):
    p1, p2 = make_provider("p1", failures=1, cooldown=30), make_provider("p2", failures=1, cooldown=10)
    r1, r2 = make_route(1, p1), make_route(2, p2)
    await breaker.record_failure(r1, "http_500")
    await breaker.record_failure(r2, "http_500")
    usable, retry_after = await breaker.usable_routes([r1, r2])
    assert usable == [] and 9 < retry_after <= 10


async def test_exactly_one_caller_probes_a_half_open_route(store):
    p = make_provider(failures=1, cooldown=0.3)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "http_503")
    assert not await breaker.try_acquire(r1)
    await asyncio.sleep(0.35)
    forget_seen()
    assert (await breaker.usable_routes([r1]))[0] == [r1]  # half-open routes stay in the chain
    results = await asyncio.gather(*(breaker.try_acquire(r1) for _ in range(20)))
    assert results.count(True) == 1
    forget_seen()
    assert not await breaker.try_acquire(r1)  # another worker, same cooldown: still no


async def test_successful_probe_closes_and_traffic_returns(store):
    p = make_provider(failures=1, cooldown=0.2)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "http_503")
    await asyncio.sleep(0.25)
    assert await breaker.try_acquire(r1)
    await breaker.record_success(r1)
    forget_seen()
    assert await breaker.try_acquire(r1) and await breaker.try_acquire(r1)
    st = breakers.states_sync([breakers.route_key(1)])[breakers.route_key(1)]
    assert st.is_clean and st.last_reason == "http_503"


async def test_failed_probe_reopens_for_another_cooldown(store):
    p = make_provider(failures=1, cooldown=0.3)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "http_503")
    await asyncio.sleep(0.35)
    assert await breaker.try_acquire(r1)
    await breaker.record_failure(r1, "http_503")
    forget_seen()
    usable, retry_after = await breaker.usable_routes([r1])
    assert usable == [] and 0.2 < retry_after <= 0.3
    await asyncio.sleep(0.35)
    assert await breaker.try_acquire(r1)  # the next cooldown has its own probe


async def test_half_open_provider_gets_one_probe_across_its_routes(store):
    p = make_provider(failures=1, cooldown=0.2)
    r1, r2 = make_route(1, p), make_route(2, p)
    await breaker.record_failure(r1, "http_401")
    await asyncio.sleep(0.25)
    results = await asyncio.gather(breaker.try_acquire(r1), breaker.try_acquire(r2), breaker.try_acquire(r1))
    assert results.count(True) == 1


async def test_success_on_a_healthy_route_writes_nothing(store):
    p = make_provider()
    r1 = make_route(1, p)
    await breaker.usable_routes([r1])
    await breaker.record_success(r1)
    assert store.get_many_sync([breakers.route_key(1), breakers.provider_key("p1")]) == {}


async def test_success_clears_the_failure_count(store):
    p = make_provider(failures=2, cooldown=30)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "timeout")
    await breaker.record_success(r1)
    await breaker.record_failure(r1, "timeout")
    forget_seen()
    assert (await breaker.usable_routes([r1]))[0] == [r1]


async def test_credits_exhausted_skips_the_provider_for_credit_cooldown(store):
    p = make_provider(failures=3, cooldown=0.1, credit=30)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "credits_exhausted")
    usable, retry_after = await breaker.usable_routes([r1])
    assert usable == [] and 29 < retry_after <= 30


async def test_429_retry_after_keeps_the_route_out_that_long(store):
    p = make_provider(failures=3, cooldown=0.1)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "http_429", retry_after=7)
    usable, retry_after = await breaker.usable_routes([r1])
    assert usable == [] and 6.5 < retry_after <= 7


async def test_reset_closes_provider_and_route(store):
    p = make_provider(failures=1, cooldown=30)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "http_500")
    await breaker.record_failure(r1, "connect_error")
    assert (await breaker.usable_routes([r1]))[0] == []
    breakers.reset_sync(route_id=1)
    assert (await breaker.usable_routes([r1]))[0] == []
    breakers.reset_sync(provider="p1")
    assert (await breaker.usable_routes([r1]))[0] == [r1]
    with pytest.raises(ValueError):
        breakers.reset_sync()


async def test_describe_all_reports_providers_and_routes(store):
    p, q = make_provider("p1", failures=1, cooldown=30), make_provider("p2")
    r1, r2 = make_route(1, p), make_route(2, q)
    await breaker.record_failure(r1, "http_502")
    snap = Snapshot(
        version=1,
        providers={"p1": p, "p2": q},
        aliases={
            "a": AliasInfo(
                name="a", description="", enabled=True, listed=True, default_policy=None, routes=(r1, r2), created=0
            )
        },
        policies={},
        default_policy=None,
        catch_all_alias=None,
        keys_by_prefix={},
    )
    desc = breakers.describe_all_sync(snap)
    assert desc["providers"]["p1"]["state"] == CLOSED and desc["providers"]["p2"]["state"] == CLOSED
    assert desc["routes"]["1"]["state"] == OPEN and desc["routes"]["1"]["route"] == "p1/m1"
    assert desc["routes"]["1"]["recent_failures"][0]["reason"] == "http_502"
    assert desc["routes"]["2"] == {"route": "p2/m2", "alias": "a", "state": CLOSED, "failures": 0}


class UnreachableState(shared_state.RedisState):
    """A real Redis client pointed at a port where nothing listens."""


@pytest.fixture
def unreachable(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = UnreachableState(f"redis://127.0.0.1:{port}/0")
    monkeypatch.setattr(breakers, "seen", {})
    monkeypatch.setattr(breaker, "_outage", shared_state.Outage(breaker.STORE_RETRY_S))
    # Restored by hand, not by monkeypatch: the shared clean-up fixture must never see this store.
    previous, shared_state._state = shared_state._state, store
    yield store
    shared_state._state = previous


async def test_unreachable_store_fails_open_and_logs_once(unreachable, caplog):
    p = make_provider()
    routes = [make_route(1, p), make_route(2, p)]
    started = time.monotonic()
    assert await breaker.usable_routes(routes) == (routes, None)
    assert await breaker.usable_routes(routes) == (routes, None)
    forget_seen()
    assert await breaker.try_acquire(routes[0])
    await breaker.record_failure(routes[0], "http_503")
    await breaker.record_success(routes[0])
    assert time.monotonic() - started < 5
    errors = [r for r in caplog.records if r.name == "routing.proxy.breaker" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "fail open" in errors[0].getMessage()


async def test_silent_store_costs_one_timeout_then_is_left_alone_for_a_moment(monkeypatch):
    """Redis that accepts connections but never answers (a black hole): only the first call waits."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # never accepted, never answered
    store = UnreachableState(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
    monkeypatch.setattr(breakers, "seen", {})
    monkeypatch.setattr(breaker, "_outage", shared_state.Outage(breaker.STORE_RETRY_S))
    previous, shared_state._state = shared_state._state, store
    try:
        p = make_provider()
        routes = [make_route(1, p)]
        assert await breaker.usable_routes(routes) == (routes, None)  # waits for the socket timeout
        started = time.monotonic()
        for _ in range(10):
            assert await breaker.usable_routes(routes) == (routes, None)
            assert await breaker.try_acquire(routes[0])
            await breaker.record_failure(routes[0], "timeout")
            await breaker.record_success(routes[0])
        assert time.monotonic() - started < 0.5
    finally:
        shared_state._state = previous
        listener.close()


async def test_client_error_passed_by_mistake_is_ignored(store):
    p = make_provider(failures=1)
    r1 = make_route(1, p)
    await breaker.record_failure(r1, "http_400")
    forget_seen()
    assert (await breaker.usable_routes([r1]))[0] == [r1]


# --- the shared store: whose failure is it -------------------------------------------------------------------------


async def test_one_keys_failures_take_the_route_out_for_that_key_only(store):
    p = make_provider(failures=2, cooldown=30)
    r1, r2 = make_route(1, p), make_route(2, p)
    assert (await breaker.usable_routes([r1, r2], KEY_B))[0] == [r1, r2]  # B uses the route
    for _ in range(5):
        await breaker.record_failure(r1, "http_500", key=KEY_A)
    forget_seen()
    assert (await breaker.usable_routes([r1, r2], KEY_B))[0] == [r1, r2]
    assert await breaker.try_acquire(r1, KEY_B)
    usable, retry_after = await breaker.usable_routes([r1, r2], KEY_A)
    assert usable == [r2] and 29 < retry_after <= 30
    assert not await breaker.try_acquire(r1, KEY_A)
    route_state = breakers.states_sync([breakers.route_key(1)])[breakers.route_key(1)]
    assert route_state.status == CLOSED and route_state.keys == ("1",)


async def test_failures_of_two_keys_open_the_route_for_every_key(store):
    p = make_provider(failures=2, cooldown=30)
    r1 = make_route(1, p)
    for key in (KEY_A, KEY_B, KEY_C):
        await breaker.usable_routes([r1], key)
    await breaker.record_failure(r1, "http_500", key=KEY_A)
    await breaker.record_failure(r1, "timeout", key=KEY_B)
    forget_seen()
    assert (await breaker.usable_routes([r1], KEY_C))[0] == []
    assert not await breaker.try_acquire(r1, KEY_C)


async def test_the_only_key_using_a_route_opens_it_on_an_outage(store):
    p = make_provider(failures=2, cooldown=30)
    r1 = make_route(1, p)
    await breaker.usable_routes([r1], MASTER_KEY_INFO)  # the master key counts as a key
    await breaker.record_failure(r1, "http_503", key=MASTER_KEY_INFO)
    await breaker.record_failure(r1, "http_503", key=MASTER_KEY_INFO)
    forget_seen()
    assert (await breaker.usable_routes([r1], KEY_B))[0] == []  # a key that shows up later is kept out too
    st = breakers.states_sync([breakers.route_key(1)])[breakers.route_key(1)]
    assert st.status == OPEN and st.keys == ("master",)


async def test_a_success_from_another_key_ends_the_run(store):
    p = make_provider(failures=2, cooldown=30)
    r1 = make_route(1, p)
    await breaker.usable_routes([r1], KEY_A)
    await breaker.record_failure(r1, "http_500", key=KEY_A)
    await breaker.record_success(r1, KEY_B)
    await breaker.record_failure(r1, "http_500", key=KEY_B)  # two keys, but not in the same run
    forget_seen()
    assert (await breaker.usable_routes([r1], KEY_C))[0] == [r1]


async def test_a_key_alone_can_keep_the_route_only_until_another_key_shows_up(store):
    p = make_provider(failures=1, cooldown=0.3)
    r1 = make_route(1, p)
    await breaker.usable_routes([r1], KEY_A)
    await breaker.record_failure(r1, "http_500", key=KEY_A)  # alone on the route: open for everyone
    assert (await breaker.usable_routes([r1], KEY_B))[0] == []  # B is kept out, but now counts as using it
    await asyncio.sleep(0.35)
    forget_seen()
    assert await breaker.try_acquire(r1, KEY_A)  # A wins the probe (route and its own key breaker)...
    await breaker.record_failure(r1, "http_500", key=KEY_A)  # ...and fails it: A's problem, not the route's
    forget_seen()
    assert (await breaker.usable_routes([r1], KEY_B))[0] == [r1]
    assert (await breaker.usable_routes([r1], KEY_A))[0] == []


async def test_concurrent_failures_are_all_counted(store):
    """Compare-and-set: failures recorded at the same moment by many callers all count (a plain read-modify-write
    loses most of them)."""
    p = make_provider(failures=1000, cooldown=30)
    r1 = make_route(1, p)
    await asyncio.gather(*(breaker.record_failure(r1, "http_500", key=key) for key in [KEY_A, KEY_B] * 10))
    st = breakers.states_sync([breakers.route_key(1)])[breakers.route_key(1)]
    assert st.failures == 20 and set(st.keys) == {"1", "2"}


async def test_key_breaker_half_opens_with_one_probe_for_that_key(store):
    p = make_provider(failures=1, cooldown=0.3)
    r1 = make_route(1, p)
    await breaker.usable_routes([r1], KEY_B)
    await breaker.record_failure(r1, "http_500", key=KEY_A)
    assert not await breaker.try_acquire(r1, KEY_A)
    await asyncio.sleep(0.35)
    forget_seen()
    assert (await breaker.usable_routes([r1], KEY_A))[0] == [r1]
    results = await asyncio.gather(*(breaker.try_acquire(r1, KEY_A) for _ in range(10)))
    assert results.count(True) == 1
    await breaker.record_success(r1, KEY_A)
    forget_seen()
    assert await breaker.try_acquire(r1, KEY_A) and await breaker.try_acquire(r1, KEY_A)


async def test_activity_marks_are_throttled_per_process(store):
    p = make_provider()
    r1 = make_route(1, p)
    await breaker.usable_routes([r1], KEY_A)
    assert set(breakers.decode_activity(store.get_sync(breakers.activity_key(1)))) == {"1"}
    store.delete_sync(breakers.activity_key(1))
    await breaker.usable_routes([r1], KEY_A)
    assert store.get_sync(breakers.activity_key(1)) is None  # marked a moment ago: no write
    await breaker.usable_routes([r1], KEY_B)
    assert set(breakers.decode_activity(store.get_sync(breakers.activity_key(1)))) == {"2"}


async def test_reset_of_a_route_closes_every_keys_breaker_on_it(store):
    p = make_provider(failures=1, cooldown=30)
    r1, r11 = make_route(1, p), make_route(11, p)
    await breaker.usable_routes([r1, r11], KEY_B)
    await breaker.record_failure(r1, "http_500", key=KEY_A)
    await breaker.record_failure(r11, "http_500", key=KEY_A)
    assert (await breaker.usable_routes([r1, r11], KEY_A))[0] == []
    breakers.reset_sync(route_id=1)
    assert (await breaker.usable_routes([r1, r11], KEY_A))[0] == [r1]  # route 11's key breaker stays


async def test_compare_and_set_writes_only_when_nothing_changed(store):
    assert await store.compare_and_set({"x": None}, {"x": ("one", None), "y": ("two", 10)})
    assert not await store.compare_and_set({"x": None}, {"x": ("three", None)})
    assert not await store.compare_and_set({"x": "one", "y": "other"}, {"x": ("three", None)})
    assert await store.compare_and_set({"x": "one", "y": "two"}, {"x": ("three", None)})
    assert store.get_many_sync(["x", "y"]) == {"x": "three", "y": "two"}
    assert 0 < store.ttl_sync("y") <= 10 and store.ttl_sync("x") is None


# --- admin: breaker state shown and reset (routing/admin.py) ------------------------------------------------------


def open_breaker_sync(key, reason="http_503", seconds=60.0):
    now = time.time()
    plan = breakers.FailurePlan("route", threshold=1, cooldown_s=seconds, at_once=True)
    st = breakers.on_failure(BreakerState(), reason=reason, now=now, plan=plan)
    shared_state.state().set_sync(key, breakers.encode(st))


@pytest.fixture
def routing_rows(make_routing):
    from tests.fakes.routing_config import upstream

    return make_routing(
        upstream("http://127.0.0.1:9/v1", tier="free", name="flaky", upstream_model="m-1"),
        upstream("http://127.0.0.1:9/v1", tier="free", name="flaky", upstream_model="m-2"),
    )


def test_admin_shows_provider_and_route_breakers(admin_client, routing_rows):
    route = routing_rows.routes[0]
    open_breaker_sync(breakers.provider_key("flaky"), reason="connect_error")
    open_breaker_sync(breakers.route_key(route.id), reason="http_502")

    listing = admin_client.get("/admin/routing/provider/").content.decode()
    assert "open until" in listing and "(connect_error)" in listing
    provider_page = admin_client.get(f"/admin/routing/provider/{routing_rows.providers[0].pk}/change/")
    assert "(connect_error)" in provider_page.content.decode()
    alias_page = admin_client.get(f"/admin/routing/alias/{routing_rows.alias.pk}/change/").content.decode()
    assert "(http_502)" in alias_page and "closed" in alias_page  # the second route is closed


def test_admin_reset_provider_breaker_closes_provider_and_its_routes(admin_client, routing_rows):
    route = routing_rows.routes[1]
    open_breaker_sync(breakers.provider_key("flaky"), reason="http_401")
    open_breaker_sync(breakers.route_key(route.id))
    response = admin_client.post(
        "/admin/routing/provider/",
        {"action": "reset_breakers", "_selected_action": [routing_rows.providers[0].pk]},
        follow=True,
    )
    assert response.status_code == 200 and "reset" in response.content.decode()
    states = breakers.states_sync([breakers.provider_key("flaky"), breakers.route_key(route.id)])
    assert all(st == BreakerState() for st in states.values())


def test_admin_reset_alias_route_breakers(admin_client, routing_rows):
    keys = [breakers.route_key(r.id) for r in routing_rows.routes]
    for key in keys:
        open_breaker_sync(key)
    admin_client.post(
        "/admin/routing/alias/",
        {"action": "reset_route_breakers", "_selected_action": [routing_rows.alias.pk]},
        follow=True,
    )
    assert all(st == BreakerState() for st in breakers.states_sync(keys).values())


def test_admin_breaker_text_when_store_is_unreachable(unreachable, monkeypatch):
    monkeypatch.setattr(breakers, "_admin_outage", shared_state.Outage(breakers.ADMIN_RETRY_AFTER_FAILURE_S))
    started = time.monotonic()
    texts = [breakers.breaker_text_sync(route_id=i) for i in range(5)]
    assert texts == ["unknown (shared state unreachable)"] * 5
    assert time.monotonic() - started < 3  # one timeout at most, not one per row
