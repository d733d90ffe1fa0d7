"""The numbers on the usage pages against what really happened (issue 9): real calls through the in-process server
(tests/e2e/conftest.py) with the openai SDK, then the rows, the limiter's rebuild and the pages compared."""

from __future__ import annotations

from datetime import UTC, datetime

import openai
import pytest

from tests.e2e.conftest import chat, proxy  # noqa: F401  (proxy is a fixture)
from tests.fakes.routing_config import upstream


def test_quota_bar_counts_exactly_what_the_limiter_counted(
    fake_upstream,
    make_routing,
    api_key,
    proxy,  # noqa: F811
    admin_client,
):
    import limits
    from usage.reports import quota_usage

    make_routing(upstream(fake_upstream))
    api, key = api_key(quotas=[("day", "max_requests", 3)], allowed_policies=["auto"])
    client = proxy.openai(key)
    for _ in range(3):  # refused before the limits: a policy this key may not use
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(
                model="rainymodel/auto", messages=chat()["messages"], extra_headers={"X-RainyModel-Policy": "premium"}
            )
    for _ in range(3):
        client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
    with pytest.raises(openai.RateLimitError):  # refused by the quota itself
        client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])

    rows = proxy.logs(expected=7)
    assert [(r.status, r.admitted) for r in rows] == [(403, False)] * 3 + [(200, True)] * 3 + [(429, False)]

    # The limiter's rebuild after a lost shared state counts the same three.
    usage = limits.usage_from_log_sync(api.id, *limits.period_bounds("day", datetime.now(UTC)))
    assert usage["requests"] == 3

    # So does the key page.
    [day] = quota_usage(api, datetime.now(UTC))
    assert (day["limits"][0]["used"], day["limits"][0]["percent"]) == (3, 100)
    page = admin_client.get(f"/usage/keys/{api.id}/").content.decode()
    assert "3 of 3" in page and "(100%)" in page
    assert "7 of 3" not in page


def test_a_request_of_a_few_milliseconds_shows_as_a_few_milliseconds(
    fake_upstream, make_routing, api_key, proxy, admin_client
):  # noqa: F811
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    proxy.openai(key).chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
    [row] = proxy.logs(expected=1)  # a few ms on an idle machine; how long is not what this test checks
    from usage.models import LATENCY_BUCKET_EDGES_MS
    from usage.rollups import latency_bucket

    totals = admin_client.get("/usage/?period=24h").context["totals"]
    # Read from the bucket holding the request, which below 50 ms is a few ms wide (1,2,3,5,7,10,15,20,30,50).
    index = latency_bucket(row.latency_ms)
    lower, upper = (LATENCY_BUCKET_EDGES_MS[index - 1] if index else 0), LATENCY_BUCKET_EDGES_MS[index]
    assert lower <= totals.latency_p50 <= upper
    if row.latency_ms < 50:
        assert upper - lower <= 20


def test_a_3_ms_request_reads_3_to_5_ms_not_27(db, admin_client):
    from django.utils import timezone

    from tests.usage.conftest import make_row, write

    write([make_row(created_at=timezone.now(), latency_ms=3, ttft_ms=2)])
    response = admin_client.get("/usage/?period=24h")
    totals = response.context["totals"]
    assert 3 <= totals.latency_p50 < 5 and 3 <= totals.latency_p95 < 5
    assert 2 <= totals.ttft_p50 < 3
    page = response.content.decode()
    assert 'data-figure="latency-p50">4 ms<' in page


def test_a_quota_429_through_the_server_shows_the_quota_not_the_rpm_allowance(
    fake_upstream, make_routing, api_key, proxy
):  # noqa: F811
    import re

    make_routing(upstream(fake_upstream))
    _, key = api_key(rpm_limit=5, quotas=[("day", "max_requests", 2)])
    client = proxy.openai(key)
    for _ in range(2):
        client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="rainymodel/auto", messages=chat()["messages"])
    headers = refused.value.response.headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("2", "0")
    reset = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?([\d.]+)s", headers["x-ratelimit-reset-requests"])
    hours, minutes, seconds = reset.groups()
    to_midnight = 86400 - (datetime.now(UTC) - datetime.now(UTC).replace(hour=0, minute=0, second=0)).total_seconds()
    assert abs(int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds) - to_midnight) < 5
    if to_midnight >= 3600:  # "It resets in 11h46m (UTC day boundary)", not "706m11s"
        assert re.search(r"resets in \d+h\d+m \(UTC day", refused.value.message), refused.value.message
