"""limits/selectors.py: a key's limits and current usage, for the admin."""

from __future__ import annotations

import asyncio

import limits
from limits import selectors
from routing.snapshot import QuotaInfo
from tests.limits.conftest import day_quota, log_row, make_key


def test_usage_for_key_shows_limits_current_usage_quotas_and_last_use(store, transactional_db):
    from apikeys.services import apikey_create

    api_key, _ = apikey_create(
        name="admin-view",
        rpm_limit=60,
        max_concurrent=3,
        quotas=[("day", "max_tokens", 1000), ("month", "max_requests", 50)],
    )
    log_row(api_key.id, prompt=120, completion=80, cost=0.01)
    log_row(api_key.id, prompt=10, completion=0)
    key = make_key(
        id=api_key.id,
        rpm_limit=60,
        max_concurrent=3,
        quotas=[day_quota(tokens=1000), QuotaInfo("month", 50, None, None)],
    )
    admission = asyncio.run(limits.admit(key, estimated_tokens=1))  # one request in flight

    usage = selectors.usage_for_key_sync(api_key.id)
    assert usage["limits"] == {"rpm_limit": 60, "tpm_limit": None, "max_concurrent": 3}
    assert usage["current"] == {"requests_this_minute": 1, "tokens_this_minute": 0, "in_flight": 1}
    day, month = usage["quotas"]
    assert day["period"] == "day" and day["tokens"] == {"used": 210, "max": 1000}
    assert day["requests"] == {"used": 2, "max": None}  # not limited: straight from the log
    assert month["requests"] == {"used": 3, "max": 50}  # 2 in the log + the one in flight
    assert usage["last_used_at"] is None and usage["shared_state_error"] is None
    asyncio.run(limits.settle(admission, tokens=5, cost_usd=0))


def test_the_admin_key_page_shows_usage_against_quotas(transactional_db, admin_client):
    from apikeys.services import apikey_create

    api_key, _ = apikey_create(name="admin-page", rpm_limit=60, quotas=[("day", "max_tokens", 1000)])
    log_row(api_key.id, prompt=300, completion=12)
    page = admin_client.get(f"/admin/apikeys/apikey/{api_key.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Usage now" in text and "tokens this day" in text and "312 of 1000" in text
    assert "requests this minute" in text and "0 of 60" in text
