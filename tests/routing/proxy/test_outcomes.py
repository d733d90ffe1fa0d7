"""routing/proxy/outcomes.py: SPEC §5.6's table as a pure function, one test per row."""

import random

import pytest

from routing.proxy import outcomes as o


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_retries_same_route_with_backoff(status):
    d = o.classify_status(status)
    assert (d.action, d.reason, d.wait, d.counts_against_breaker) == (o.RETRY, f"http_{status}", None, True)


def test_429_with_short_retry_after_retries_same_route_after_that_wait():
    d = o.classify_status(429, retry_after=2)
    assert (d.action, d.wait, d.cooldown) == (o.RETRY, 2, None)


def test_429_without_retry_after_backs_off_like_a_5xx():
    d = o.classify_status(429)
    assert (d.action, d.wait) == (o.RETRY, None)


def test_429_with_long_retry_after_moves_on_and_cools_the_route_down():
    d = o.classify_status(429, retry_after=30)
    assert (d.action, d.cooldown) == (o.NEXT, 30)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_credentials_or_model_wrong_moves_on_and_counts(status):
    d = o.classify_status(status)
    assert (d.action, d.counts_against_breaker) == (o.NEXT, True)


def test_402_is_credits_exhausted():
    d = o.classify_status(402)
    assert (d.action, d.reason) == (o.NEXT, "credits_exhausted")


def test_context_length_is_its_own_decision_and_not_a_breaker_failure():
    d = o.classify_status(400, "context_length_exceeded")
    assert (d.action, d.counts_against_breaker) == (o.CONTEXT, False)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_client_errors_go_back_to_the_client_and_never_count(status):
    d = o.classify_status(status, "content_filter")
    assert (d.action, d.counts_against_breaker) == (o.RETURN, False)


def test_connect_errors_and_resets_retry_but_timeouts_move_on():
    assert o.classify_transport(o.CONNECT_ERROR).action == o.RETRY
    assert o.classify_transport(o.RESET).action == o.RETRY
    assert o.classify_transport(o.TIMEOUT).action == o.NEXT
    assert o.classify_transport(o.INVALID_RESPONSE).action == o.NEXT


def test_retry_after_parses_seconds_and_http_dates():
    assert o.parse_retry_after("7") == 7
    assert o.parse_retry_after(None) is None
    assert o.parse_retry_after("soon") is None
    assert 0 <= o.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.001


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap():
    rng = random.Random(1)
    for n in range(8):
        ceiling = min(o.BACKOFF_CAP_S, o.BACKOFF_BASE_S * 2**n)
        values = [o.backoff_delay(n, rng) for _ in range(200)]
        assert max(values) <= ceiling
        assert min(values) >= 0
        # Full jitter spreads over the whole range: the largest of 200 draws is near the ceiling, the mean near half.
        assert max(values) >= 0.9 * ceiling
        assert 0.35 * ceiling <= sum(values) / len(values) <= 0.65 * ceiling


def test_context_error_recognised_by_message_too():
    assert o.looks_like_context_error({"error": {"message": "This model's maximum context length is 8192"}})
    assert not o.looks_like_context_error({"error": {"message": "bad"}})
    assert not o.looks_like_context_error(None)


def test_cost_uses_per_million_prices():
    assert o.cost_usd(1_000_000, 500_000, 0.12, 0.39) == pytest.approx(0.12 + 0.195)
