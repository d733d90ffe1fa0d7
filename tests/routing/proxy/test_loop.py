"""routing/proxy/loop.py, the one attempt loop, driven by a fake `attempt` function (no server): retries, the
upstream's Retry-After, the breaker re-claim before a retry, the deadline, context-length skipping, RETURN raising
the client error, and the rescue mode a stream continuation uses. The breaker is the real one (in-process state)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from rainymodel_site.api_errors import ApiError
from routing.proxy import loop, outcomes
from routing.proxy.call import Call
from routing.proxy.loop import UpstreamClientError, run_attempts
from routing.proxy.upstream import AttemptFailed
from tests.factories import make_provider, make_route


def new_call(deadline: float = float("inf")) -> Call:
    return Call(
        request_id="t",
        client_request_id=False,
        started=time.monotonic(),
        created_at=datetime.now(UTC),
        deadline=deadline,
        client_ip=None,
        user_agent="",
    )


def failing(*decisions, result="answer", status=503):
    """An attempt function that fails with `decisions` in turn (one per call), then returns `result`."""
    seen = []

    async def attempt(route):
        seen.append(route.label)
        if len(seen) <= len(decisions):
            raise AttemptFailed(decisions[len(seen) - 1], status=status)
        return result

    attempt.seen = seen
    return attempt


@pytest.fixture(autouse=True)
def forget_seen_breakers():
    """The breaker's per-process read cache (routing.breakers.seen) outlives conftest's shared-state flush for
    SEEN_FRESH_S: a breaker opened by one test would still look open to the next."""
    from routing import breakers

    breakers.seen.clear()
    yield
    breakers.seen.clear()


@pytest.fixture
def waits(monkeypatch):
    spent = []

    async def fake_sleep(seconds):
        spent.append(seconds)

    monkeypatch.setattr(loop, "sleep", fake_sleep)
    return spent


async def test_a_retryable_failure_is_retried_on_the_same_route(waits):
    route = make_route(1, make_provider(failures=100, max_retries=2))
    call = new_call()
    attempt = failing(outcomes.classify_status(503), outcomes.classify_status(503))
    assert await run_attempts(call, [route], attempt) == (route, "answer")
    assert attempt.seen == [route.label] * 3
    assert [a.outcome for a in call.attempts] == ["http_503", "http_503", "ok"]
    assert len(waits) == 2 and all(0 <= w <= outcomes.BACKOFF_CAP_S for w in waits)


async def test_retries_stop_at_max_retries_and_the_next_route_answers(waits):
    first = make_route(1, make_provider(failures=100, max_retries=1))
    second = make_route(2, make_provider("p2", failures=100))
    call = new_call()
    attempt = failing(*[outcomes.classify_status(503)] * 2)
    assert await run_attempts(call, [first, second], attempt) == (second, "answer")
    assert attempt.seen == [first.label, first.label, second.label]


async def test_a_short_retry_after_is_waited_exactly(waits):
    route = make_route(1, make_provider(failures=100, max_retries=1))
    call = new_call()
    await run_attempts(call, [route], failing(outcomes.classify_status(429, retry_after=2.5), status=429))
    assert waits == [2.5]


async def test_no_retry_when_the_breaker_cannot_be_claimed_again(waits):
    # One failure opens this provider's breaker: the retry's re-claim fails, so the loop moves on.
    first = make_route(1, make_provider(failures=1, max_retries=3, cooldown=60))
    second = make_route(2, make_provider("p2", failures=100))
    call = new_call()
    attempt = failing(outcomes.classify_status(503))
    assert await run_attempts(call, [first, second], attempt) == (second, "answer")
    assert attempt.seen == [first.label, second.label]


async def test_a_passed_deadline_tries_nothing_and_answers_503(waits):
    call = new_call(deadline=time.monotonic() - 1)
    attempt = failing()
    with pytest.raises(ApiError) as error:
        await run_attempts(call, [make_route(1)], attempt)
    assert error.value.status == 503 and attempt.seen == []


async def test_a_retry_whose_wait_would_pass_the_deadline_is_not_made(waits):
    route = make_route(1, make_provider(failures=100, max_retries=3))
    call = new_call(deadline=time.monotonic() + 1)
    attempt = failing(outcomes.classify_status(429, retry_after=5.0), status=429)
    with pytest.raises(ApiError) as error:
        await run_attempts(call, [route], attempt)
    assert error.value.status == 502 and waits == [] and attempt.seen == [route.label]


async def test_context_length_skips_routes_with_no_larger_window(waits):
    small = make_route(1, make_provider(failures=100), context_window=8000)
    same = make_route(2, make_provider("p2", failures=100), context_window=8000)
    large = make_route(3, make_provider("p3", failures=100), context_window=128000)
    call = new_call()
    attempt = failing(outcomes.classify_status(400, outcomes.CONTEXT_LENGTH_EXCEEDED), status=400)
    assert await run_attempts(call, [small, same, large], attempt) == (large, "answer")
    assert attempt.seen == [small.label, large.label]


async def test_context_length_everywhere_returns_the_upstream_error(waits):
    route = make_route(1, make_provider(failures=100), context_window=8000)
    with pytest.raises(UpstreamClientError) as error:
        await run_attempts(
            new_call(), [route], failing(outcomes.classify_status(400, outcomes.CONTEXT_LENGTH_EXCEEDED), status=400)
        )
    assert error.value.failed.status == 400


async def test_a_return_decision_raises_the_client_error_at_once(waits):
    first, second = make_route(1, make_provider(failures=100)), make_route(2, make_provider("p2", failures=100))
    attempt = failing(outcomes.classify_status(422), status=422)
    with pytest.raises(UpstreamClientError) as error:
        await run_attempts(new_call(), [first, second], attempt)
    assert error.value.failed.status == 422 and attempt.seen == [first.label]


async def test_rescue_mode_moves_past_client_errors_and_returns_none_when_out_of_routes(waits):
    first, second = make_route(1, make_provider(failures=100)), make_route(2, make_provider("p2", failures=100))
    call = new_call()
    attempt = failing(outcomes.classify_status(422), outcomes.classify_status(503), status=422)
    assert await run_attempts(call, [first, second], attempt, retries=False, rescue=True) is None
    assert attempt.seen == [first.label, second.label]


async def test_what_is_left_of_the_queue_stays_for_a_later_call(waits):
    routes = [make_route(i, make_provider(f"p{i}", failures=100)) for i in (1, 2, 3)]
    queue = list(routes)
    assert await run_attempts(new_call(), queue, failing(outcomes.classify_status(404), status=404)) == (
        routes[1],
        "answer",
    )
    assert queue == [routes[2]]


async def test_all_failed_names_every_attempt_and_the_skipped_routes(waits):
    first = make_route(1, make_provider(failures=1, cooldown=60))
    call = new_call()
    with pytest.raises(ApiError) as error:
        await run_attempts(call, [first], failing(outcomes.classify_status(503)))
    assert error.value.status == 502 and f"{first.label} (http_503)" in error.value.message
    call2 = new_call()
    with pytest.raises(ApiError) as again:
        await run_attempts(call2, [first], failing())
    assert again.value.status == 503 and "Skipped (breaker open)" in again.value.message
    assert call.attempts[0].as_log() == {
        "provider": "p1",
        "upstream_model": "m1",
        "outcome": "http_503",
        "status": 503,
        "ms": call.attempts[0].ms,
    }
