"""limits/tokens.py: tpm_limit, counted from real tokens at settle."""

from __future__ import annotations

import pytest

import limits
from tests.limits.conftest import _reset_seconds, make_key


async def test_tpm_counts_real_tokens_at_settle_and_refuses_when_the_estimate_does_not_fit(store):
    key = make_key(tpm_limit=1000)
    first = await limits.admit(key, estimated_tokens=500)
    assert first.headers["x-ratelimit-remaining-tokens"] == "1000"
    await limits.settle(first, tokens=800, cost_usd=0)
    second = await limits.admit(key, estimated_tokens=150)
    assert second.headers["x-ratelimit-remaining-tokens"] == "200"
    assert second.headers["x-ratelimit-reset-tokens"].endswith("s")
    await limits.settle(second, tokens=150, cost_usd=0)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=100)
    assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "tokens")
    assert 0 < refused.value.retry_after <= 60
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "50"
    await limits.admit(key, estimated_tokens=50)  # still fits


async def test_a_request_larger_than_the_tpm_limit_is_refused_outright(store):
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(make_key(tpm_limit=100), estimated_tokens=101)
    assert refused.value.type == "tokens" and "too large" in refused.value.message


async def test_a_tpm_429_carries_the_token_limits_figures(store):
    key = make_key(rpm_limit=10, tpm_limit=100)
    await limits.settle(await limits.admit(key, estimated_tokens=1), tokens=90, cost_usd=0)
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.admit(key, estimated_tokens=20)
    headers = refused.value.headers
    assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == ("100", "10")
    assert 0 < _reset_seconds(headers["x-ratelimit-reset-tokens"]) <= 60
