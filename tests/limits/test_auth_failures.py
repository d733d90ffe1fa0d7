"""limits/auth_failures.py: the per-IP limit on failed authentication."""

from __future__ import annotations

import pytest

import limits
from tests.limits.conftest import _reset_seconds


async def test_failed_authentication_is_limited_per_client_ip(store, settings):
    settings.RAINYMODEL_AUTH_FAILURES_PER_MIN = 3
    for _ in range(3):
        await limits.check_auth_failures("10.0.0.1")
        await limits.record_auth_failure("10.0.0.1")
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.check_auth_failures("10.0.0.1")
    assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "requests")
    assert 0 < refused.value.retry_after <= 60 and "Retry-After" in refused.value.headers
    await limits.check_auth_failures("10.0.0.2")  # another address is not affected


async def test_a_failed_authentication_429_carries_the_per_ip_limit(store, settings):
    settings.RAINYMODEL_AUTH_FAILURES_PER_MIN = 2
    for _ in range(2):
        await limits.record_auth_failure("10.0.0.9")
    with pytest.raises(limits.LimitExceeded) as refused:
        await limits.check_auth_failures("10.0.0.9")
    headers = refused.value.headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("2", "0")
    assert 0 < _reset_seconds(headers["x-ratelimit-reset-requests"]) <= 60
